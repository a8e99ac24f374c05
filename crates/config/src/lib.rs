//! Flyte's configuration, read as the Flyte SDK reads it, with flyte-run's own settings and the
//! command line layered on top, and where every effective value came from.
//!
//! - [`find_flyte_config`]: the SDK's search order for `config.yaml` (first found wins; an
//!   explicit `--config` overrides), as a pure function of the places it looks.
//! - [`SETTINGS`]: every key flyte-run reads from Flyte's file (`admin.endpoint`,
//!   `admin.authType`, `task.project` ...) with the environment variables that set it, in the
//!   order the SDK reads them (its aliases first, then the derived `FLYTE_<SECTION>_<KEY>`).
//! - [`resolve`]: Flyte's config file < flyte-run's own settings < environment < flags, merged with the `config` crate (which also parses the YAML); each value carries its
//!   [`Source`], and secrets are never shown ([`Resolved::render`]).
//!
//! Unknown keys in Flyte's file are ignored (Flyte has many that are not ours). Reads one file;
//! the environment comes in as a lookup function.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

/// The places the search looks, as the caller finds them (so the search itself is pure).
#[derive(Debug, Clone, Default)]
pub struct SearchPlaces {
    /// The working directory.
    pub cwd: PathBuf,
    /// The root of the git work tree the working directory is in, if any.
    pub git_root: Option<PathBuf>,
    /// The user's home directory.
    pub home: PathBuf,
    /// `$UCTL_CONFIG`.
    pub uctl_config: Option<PathBuf>,
    /// `$FLYTECTL_CONFIG`.
    pub flytectl_config: Option<PathBuf>,
}

/// The environment variables the search reads, by name.
pub const ENV_UCTL_CONFIG: &str = "UCTL_CONFIG";
pub const ENV_FLYTECTL_CONFIG: &str = "FLYTECTL_CONFIG";

/// Where a config file was found. Files in the working directory or the git work tree come with
/// whatever directory the user stands in (a cloned repository, `/tmp`): they may set where to
/// connect, but not run a command or read a secret ([`Place::is_chosen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// `./config.yaml` or `./.flyte/config.yaml`.
    WorkingDirectory,
    /// `<git root>/.flyte/config.yaml`.
    GitRoot,
    /// `$UCTL_CONFIG`, `$FLYTECTL_CONFIG` or `--config`: named by the user.
    Named,
    /// `~/.union/config.yaml` or `~/.flyte/config.yaml`.
    Home,
}

impl Place {
    /// Whether the user chose this file (named it, or keeps it in their home), rather than it
    /// coming with the directory they stand in.
    pub fn is_chosen(self) -> bool {
        matches!(self, Place::Named | Place::Home)
    }
}

/// Where the Flyte SDK finds its `config.yaml`, in its order, first found wins:
/// `./config.yaml`, `./.flyte/config.yaml`, `<git root>/.flyte/config.yaml`, `$UCTL_CONFIG`,
/// `$FLYTECTL_CONFIG`, `~/.union/config.yaml`, `~/.flyte/config.yaml`.
pub fn candidates(places: &SearchPlaces) -> Vec<(PathBuf, Place)> {
    let mut found = vec![
        (places.cwd.join("config.yaml"), Place::WorkingDirectory),
        (
            places.cwd.join(".flyte").join("config.yaml"),
            Place::WorkingDirectory,
        ),
    ];
    if let Some(root) = &places.git_root {
        found.push((root.join(".flyte").join("config.yaml"), Place::GitRoot));
    }
    for named in [&places.uctl_config, &places.flytectl_config]
        .into_iter()
        .flatten()
    {
        found.push((named.clone(), Place::Named));
    }
    found.push((places.home.join(".union").join("config.yaml"), Place::Home));
    found.push((places.home.join(".flyte").join("config.yaml"), Place::Home));
    found
}

/// The first of [`candidates`] that `exists`, and where it was found.
pub fn find_flyte_config(
    places: &SearchPlaces,
    exists: impl Fn(&Path) -> bool,
) -> Option<(PathBuf, Place)> {
    let home_files = [
        places.home.join(".union").join("config.yaml"),
        places.home.join(".flyte").join("config.yaml"),
    ];
    candidates(places)
        .into_iter()
        .find(|(p, _)| exists(p))
        // Standing in the home directory, `./.flyte/config.yaml` is the user's own file.
        .map(|(p, place)| {
            let place = if home_files.contains(&p) {
                Place::Home
            } else {
                place
            };
            (p, place)
        })
}

/// The git work tree `dir` is in: the nearest ancestor (itself included) holding `.git`.
pub fn git_root(dir: &Path, exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| exists(&d.join(".git")))
        .map(Path::to_owned)
}

/// One setting: its key in Flyte's file and the environment variables that set it, first
/// found wins (the SDK's hand-written aliases, then the derived `FLYTE_<SECTION>_<KEY>`).
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub key: &'static str,
    pub env: &'static [&'static str],
    /// Never shown: only whether it is set.
    pub secret: bool,
}

const fn setting(key: &'static str, env: &'static [&'static str]) -> Setting {
    Setting {
        key,
        env,
        secret: false,
    }
}

/// `admin.endpoint`.
pub const ENDPOINT: &str = "admin.endpoint";
/// `admin.insecure`: plain http (and, for flyte-run, permission to send tokens over it).
pub const INSECURE: &str = "admin.insecure";
pub const INSECURE_SKIP_VERIFY: &str = "admin.insecureSkipVerify";
pub const CA_CERT_FILE_PATH: &str = "admin.caCertFilePath";
pub const AUTH_TYPE: &str = "admin.authType";
pub const CLIENT_ID: &str = "admin.clientId";
pub const CLIENT_SECRET_LOCATION: &str = "admin.clientSecretLocation";
pub const CLIENT_SECRET_ENV_VAR: &str = "admin.clientSecretEnvVar";
pub const SCOPES: &str = "admin.scopes";
pub const AUDIENCE: &str = "admin.audience";
pub const COMMAND: &str = "admin.command";
pub const PROXY_COMMAND: &str = "admin.proxyCommand";
pub const HTTP_PROXY_URL: &str = "admin.httpProxyURL";
pub const ORG: &str = "task.org";
pub const PROJECT: &str = "task.project";
pub const DOMAIN: &str = "task.domain";
/// Not a key of the file: Flyte's API key, from the environment only.
pub const API_KEY: &str = "FLYTE_API_KEY";

/// The org Flyte's SDK sends when neither the caller nor `task.org` names one: the first label
/// of the endpoint's host when it has more than two (`dns:///acme.cloud.example.com` -> `acme`).
/// Like the SDK, the host of a `dns:///` endpoint keeps its port, so `dns:///127.0.0.1:8089`
/// gives `127`; the same org on the wire is what lets runs one tool creates be found by the
/// other on an org-aware deployment.
pub fn org_from_endpoint(endpoint: &str) -> Option<String> {
    let host = match endpoint.strip_prefix("dns:///") {
        Some(rest) => rest,
        None => match endpoint.split_once("://") {
            Some((_, rest)) => rest.split(['/', '?', '#']).next().unwrap_or_default(),
            None => endpoint
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default(),
        },
    };
    let labels: Vec<&str> = host.split('.').collect();
    (labels.len() > 2).then(|| labels[0].to_owned())
}

/// Settings that run a command or read a secret: taken only from a file the user chose
/// ([`Place::is_chosen`]), the environment or a flag.
pub const PRIVILEGED: &[&str] = &[
    COMMAND,
    PROXY_COMMAND,
    CLIENT_SECRET_LOCATION,
    CLIENT_SECRET_ENV_VAR,
];

/// Every setting flyte-run reads, in the order `config show` lists them. flyte-run's own
/// variables (`FLYTE_ENDPOINT`, `FLYTE_INSECURE`) come before Flyte's for the same key.
pub const SETTINGS: &[Setting] = &[
    setting(ENDPOINT, &["FLYTE_ENDPOINT", "FLYTE_ADMIN_ENDPOINT"]),
    setting(INSECURE, &["FLYTE_INSECURE", "FLYTE_ADMIN_INSECURE"]),
    setting(INSECURE_SKIP_VERIFY, &["FLYTE_ADMIN_INSECURESKIPVERIFY"]),
    setting(CA_CERT_FILE_PATH, &["FLYTE_ADMIN_CACERTFILEPATH"]),
    setting(AUTH_TYPE, &["FLYTE_AUTH_TYPE", "FLYTE_ADMIN_AUTHTYPE"]),
    setting(CLIENT_ID, &["FLYTE_ADMIN_CLIENTID"]),
    setting(
        CLIENT_SECRET_LOCATION,
        &["FLYTE_ADMIN_CLIENTSECRETLOCATION"],
    ),
    setting(CLIENT_SECRET_ENV_VAR, &["FLYTE_ADMIN_CLIENTSECRETENVVAR"]),
    setting(SCOPES, &["FLYTE_ADMIN_SCOPES"]),
    setting(AUDIENCE, &["FLYTE_ADMIN_AUDIENCE"]),
    setting(COMMAND, &["FLYTE_AUTH_COMMAND", "FLYTE_ADMIN_COMMAND"]),
    setting(
        PROXY_COMMAND,
        &["FLYTE_AUTH_PROXY_COMMAND", "FLYTE_ADMIN_PROXYCOMMAND"],
    ),
    setting(HTTP_PROXY_URL, &["FLYTE_ADMIN_HTTPPROXYURL"]),
    setting(ORG, &["FLYTE_TASK_ORG"]),
    setting(PROJECT, &["FLYTE_TASK_PROJECT"]),
    setting(DOMAIN, &["FLYTE_TASK_DOMAIN"]),
    Setting {
        key: API_KEY,
        env: &[API_KEY],
        secret: true,
    },
];

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Flyte's config file, at this key.
    FlyteConfig { path: PathBuf, key: &'static str },
    /// flyte-run's own settings file, at this key.
    Settings { path: PathBuf, key: &'static str },
    /// This environment variable.
    Env(&'static str),
    /// This command-line flag.
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::FlyteConfig { path, key } | Source::Settings { path, key } => {
                write!(f, "{}: {key}", path.display())
            }
            Source::Env(name) => write!(f, "${name}"),
            Source::Flag(name) => f.write_str(name),
        }
    }
}

/// A value: text, or a list (`admin.command`, `admin.scopes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    List(Vec<String>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(text) => f.write_str(text),
            Value::List(items) => write!(f, "[{}]", items.join(", ")),
        }
    }
}

/// An effective value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

/// A layer above Flyte's file: flyte-run's settings or the command line, as (key, value).
#[derive(Debug, Clone, Default)]
pub struct Layer {
    /// The settings file (`None` for flags).
    pub path: Option<PathBuf>,
    /// (Flyte key, where it is set: the settings file's own key or the flag's name, value).
    pub values: Vec<(&'static str, &'static str, String)>,
}

/// What [`resolve`] works from.
pub struct Inputs<'a> {
    /// Flyte's config file ([`find_flyte_config`], or `--config`), and where it was found.
    pub flyte_config: Option<(&'a Path, Place)>,
    /// flyte-run's own settings file, in Flyte's keys.
    pub settings: Layer,
    /// The environment.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// The command line, in Flyte's keys.
    pub flags: Layer,
}

impl fmt::Debug for Inputs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inputs")
            .field("flyte_config", &self.flyte_config)
            .field("settings", &self.settings)
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

/// Everything that can go wrong reading the configuration. Messages name the file or variable
/// and never show a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: not a Flyte config file ({detail}); fix the YAML, or point --config at another file", path.display())]
    FlyteConfig { path: PathBuf, detail: String },
    #[error(
        "{} (found in {place}) sets {key}, which runs a command or reads a secret; flyte-run takes that only from a config file you name (--config, $FLYTECTL_CONFIG, $UCTL_CONFIG) or keep in ~/.flyte or ~/.union, or from the environment",
        path.display()
    )]
    Untrusted {
        path: PathBuf,
        place: &'static str,
        key: &'static str,
    },
    #[error("{source_name} sets {key} to {value:?}, which is not {want}")]
    Invalid {
        source_name: String,
        key: &'static str,
        value: String,
        want: &'static str,
    },
}

/// `Result` with this crate's error.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

/// The effective configuration.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// Flyte's config file that was read, if any.
    pub flyte_config: Option<PathBuf>,
    /// Where that file was found.
    pub flyte_config_place: Option<Place>,
    values: BTreeMap<&'static str, Sourced<Value>>,
}

/// Layer everything in `inputs`: Flyte's file < flyte-run's settings < environment < flags (an
/// empty variable counts as unset); settings that run a command or read a secret are refused
/// from a file the user did not choose ([`PRIVILEGED`], [`Place`]). The `config` crate parses the file and merges the layers; the source of each value
/// is the highest layer that sets it.
pub fn resolve(inputs: &Inputs<'_>) -> Result<Resolved> {
    let mut builder = config::Config::builder();
    let flyte_path = inputs.flyte_config.map(|(path, _)| path);
    if let Some(path) = flyte_path {
        builder = builder.add_source(
            config::File::from(path)
                .format(config::FileFormat::Yaml)
                .required(true),
        );
    }
    let file_error = |e: config::ConfigError| ConfigError::FlyteConfig {
        path: flyte_path.map(Path::to_owned).unwrap_or_default(),
        detail: e.to_string(),
    };
    let file = builder.clone().build().map_err(file_error)?;
    let mut sources: BTreeMap<&'static str, Source> = BTreeMap::new();
    for setting in SETTINGS {
        if let Some((path, place)) = inputs.flyte_config
            && !setting.secret
            && file
                .get::<config::Value>(setting.key)
                .is_ok_and(|v| !is_empty(&v))
        {
            if PRIVILEGED.contains(&setting.key) && !place.is_chosen() {
                return Err(ConfigError::Untrusted {
                    path: path.to_owned(),
                    place: match place {
                        Place::GitRoot => "the git work tree",
                        _ => "the working directory",
                    },
                    key: setting.key,
                });
            }
            sources.insert(
                setting.key,
                Source::FlyteConfig {
                    path: path.to_owned(),
                    key: setting.key,
                },
            );
        }
    }
    for (key, name, value) in &inputs.settings.values {
        builder = builder
            .set_override(*key, value.clone())
            .map_err(file_error)?;
        sources.insert(
            key,
            Source::Settings {
                path: inputs.settings.path.clone().unwrap_or_default(),
                key: name,
            },
        );
    }
    for setting in SETTINGS {
        if let Some((name, value)) = setting.env.iter().find_map(|name| {
            (inputs.env)(name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (*name, v))
        }) {
            let value = match setting.key {
                COMMAND | PROXY_COMMAND => config::Value::from(command_words(&value)),
                SCOPES => config::Value::from(scope_list(&value)),
                _ => config::Value::from(value),
            };
            builder = builder
                .set_override(setting.key, value)
                .map_err(file_error)?;
            sources.insert(setting.key, Source::Env(name));
        }
    }
    for (key, name, value) in &inputs.flags.values {
        builder = builder
            .set_override(*key, value.clone())
            .map_err(file_error)?;
        sources.insert(key, Source::Flag(name));
    }
    let merged = builder.build().map_err(file_error)?;
    let mut values = BTreeMap::new();
    for (key, source) in sources {
        let value = merged
            .get::<config::Value>(key)
            .map_err(file_error)
            .map(|v| to_value(key, v))??;
        values.insert(key, Sourced { value, source });
    }
    Ok(Resolved {
        flyte_config: flyte_path.map(Path::to_owned),
        flyte_config_place: inputs.flyte_config.map(|(_, place)| place),
        values,
    })
}

/// A command the environment gives as text, as the SDK reads it: a JSON array of strings, else
/// words split as a POSIX shell would (quotes kept together).
fn command_words(text: &str) -> Vec<String> {
    json_strings(text).unwrap_or_else(|| shlex::split(text).unwrap_or_default())
}

/// Scopes the environment gives as text, as the SDK reads them: a JSON array, else split on
/// commas and whitespace.
fn scope_list(text: &str) -> Vec<String> {
    json_strings(text).unwrap_or_else(|| {
        text.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

fn json_strings(text: &str) -> Option<Vec<String>> {
    serde_json::from_str(text.trim()).ok()
}

fn is_empty(value: &config::Value) -> bool {
    match &value.kind {
        config::ValueKind::Nil => true,
        config::ValueKind::String(s) => s.is_empty(),
        _ => false,
    }
}

fn to_value(key: &'static str, value: config::Value) -> Result<Value> {
    let text = |v: config::Value| -> Result<String> {
        match v.kind {
            config::ValueKind::Table(_) | config::ValueKind::Array(_) => {
                Err(ConfigError::Invalid {
                    source_name: "the configuration".to_owned(),
                    key,
                    value: v.to_string(),
                    want: "a single value",
                })
            }
            _ => Ok(v.to_string()),
        }
    };
    match value.kind {
        config::ValueKind::Array(items) => Ok(Value::List(
            items.into_iter().map(text).collect::<Result<_>>()?,
        )),
        _ => text(value).map(Value::Text),
    }
}

/// A value as `config show` prints it: a command's arguments and a URL's credentials may be
/// secrets, so only the program and the URL without them are shown.
fn shown(key: &str, value: &Value) -> String {
    match (key, value) {
        (COMMAND | PROXY_COMMAND, Value::List(argv)) => match argv.split_first() {
            Some((program, [])) => program.clone(),
            Some((program, rest)) => format!("{program} <{} argument(s) hidden>", rest.len()),
            None => String::new(),
        },
        (HTTP_PROXY_URL, Value::Text(url)) => match url.split_once("://") {
            Some((scheme, rest)) => {
                let authority = rest.split('/').next().unwrap_or_default();
                match authority.rsplit_once('@') {
                    Some((_, host)) => {
                        let path = &rest[authority.len()..];
                        format!("{scheme}://<credentials hidden>@{host}{path}")
                    }
                    None => url.clone(),
                }
            }
            None => url.clone(),
        },
        _ => value.to_string(),
    }
}

/// Flyte's login flows (`admin.authType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    Pkce,
    DeviceFlow,
    ClientSecret,
    ExternalCommand,
    Passthrough,
}

impl AuthType {
    const ALL: [(&'static str, AuthType); 5] = [
        ("Pkce", AuthType::Pkce),
        ("DeviceFlow", AuthType::DeviceFlow),
        ("ClientSecret", AuthType::ClientSecret),
        ("ExternalCommand", AuthType::ExternalCommand),
        ("Passthrough", AuthType::Passthrough),
    ];

    /// The type Flyte's file names `name` (exactly as Flyte spells it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }

    /// Every name Flyte's file may use.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|(n, _)| *n).collect()
    }

    /// The name Flyte's file uses.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map_or("Pkce", |(n, _)| n)
    }
}

impl Resolved {
    /// A setting's effective value, when anything sets it.
    pub fn get(&self, key: &str) -> Option<&Sourced<Value>> {
        self.values.get(key)
    }

    /// A text setting.
    pub fn text(&self, key: &str) -> Option<Sourced<String>> {
        self.get(key).map(|s| Sourced {
            value: s.value.to_string(),
            source: s.source.clone(),
        })
    }

    /// A boolean setting (`true`/`false`, `1`/`0`, `yes`/`no`, any case).
    pub fn flag(&self, key: &'static str) -> Result<Option<Sourced<bool>>> {
        let Some(found) = self.get(key) else {
            return Ok(None);
        };
        let text = found.value.to_string();
        let value = match text.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" | "" => false,
            _ => {
                return Err(ConfigError::Invalid {
                    source_name: found.source.to_string(),
                    key,
                    value: text,
                    want: "true or false",
                });
            }
        };
        Ok(Some(Sourced {
            value,
            source: found.source.clone(),
        }))
    }

    /// `admin.authType`, when something sets it (Flyte's own default is `Pkce`).
    pub fn auth_type(&self) -> Result<Option<Sourced<AuthType>>> {
        let Some(found) = self.get(AUTH_TYPE) else {
            return Ok(None);
        };
        let text = found.value.to_string();
        let auth = AuthType::ALL
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text.trim()))
            .map(|(_, t)| *t)
            .ok_or_else(|| ConfigError::Invalid {
                source_name: found.source.to_string(),
                key: AUTH_TYPE,
                value: text.clone(),
                want: "one of Pkce, DeviceFlow, ClientSecret, ExternalCommand, Passthrough",
            })?;
        Ok(Some(Sourced {
            value: auth,
            source: found.source.clone(),
        }))
    }

    /// Every setting as `config show` prints it: `key = value  (source)`, unset ones as
    /// `(not set)`, secrets as `<set, hidden>`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let width = SETTINGS.iter().map(|s| s.key.len()).max().unwrap_or(0);
        let file = self
            .flyte_config
            .as_ref()
            .map_or_else(|| "none found".to_owned(), |p| p.display().to_string());
        let _ = writeln!(out, "{:width$}   {file}", "Flyte config");
        for setting in SETTINGS {
            let line = match self.get(setting.key) {
                None => "(not set)".to_owned(),
                Some(found) if setting.secret => format!("<set, hidden>   ({})", found.source),
                Some(found) => format!("{}   ({})", shown(setting.key, &found.value), found.source),
            };
            let _ = writeln!(out, "{:width$} = {line}", setting.key);
        }
        out
    }
}

#[cfg(test)]
mod tests;
mod write;

pub use write::FlyteFile;
