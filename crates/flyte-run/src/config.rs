//! `~/.flyte/flyte-run.json`: the control plane to use when neither `--endpoint` nor
//! `FLYTE_ENDPOINT` names one; `flyte-run config init|show`.

use std::path::{Path, PathBuf};

use flyte_config::{Layer, Place, Resolved, Source};
use flyte_debug_client::RunScope;
use flyte_home::FlyteHome;
use std::process::ExitCode;

use anyhow::{Context as _, bail};

use crate::env_vars;

pub(crate) const FILE_NAME: &str = flyte_home::SETTINGS_FILE;

/// The file's contents. Unknown keys are refused so a typo is not silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// `https://host`, `dns:///host:port`, `http://127.0.0.1:port`; absent: the local sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) endpoint: Option<String>,
    /// Plain http (as Flyte's `insecure`) for this file's endpoint, also to a host other than
    /// this machine, credentials included.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) insecure: bool,
    /// Where `runner::` reaches the cluster network; `DAP_RUNNER_*` variables win over it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) runner: Option<RunnerSettings>,
}

/// The `runner` section: the management host, its key, the VM, and an ssh config file to use.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunnerSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ssh_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ssh_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) vm: Option<String>,
    /// An ssh config file passed with `-F` (else ssh's default, `~/.ssh/config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ssh_config: Option<String>,
}

pub(crate) fn path(home: &Path) -> PathBuf {
    FlyteHome::new(home).settings_file()
}

/// The config file, or the default when there is none. A file that cannot be read or parsed is
/// an error naming it: guessing would send requests somewhere the user did not mean.
pub(crate) fn load(home: &Path) -> Result<Config, String> {
    let path = path(home);
    // As OpenSSH refuses a config others can write: they could point flyte-run (and the
    // credentials it sends) at a server of theirs.
    for trusted in [path.as_path()].into_iter().chain(path.parent()) {
        if let Some(problem) = crate::paths::unsafe_for_secrets(trusted) {
            return Err(problem);
        }
    }
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            format!(
                "{}: {e}; fix it or write a new one with `flyte-run config init --force`",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ConfigCommand {
    /// Write ~/.flyte/flyte-run.json. Without --endpoint it selects the local sandbox.
    Init {
        /// The control plane: `https://host`, `dns:///host:port` or `http://127.0.0.1:port`.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// Allow plain http to a host other than this machine (tokens travel unencrypted).
        #[arg(long)]
        insecure: bool,
        /// Replace an existing file (atomically; otherwise it is left as it is).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        flyte: FlyteFileArgs,
    },
    /// Print the settings in effect and where each comes from.
    Show,
}

/// `config init --flyte`: Flyte's own `config.yaml` instead of flyte-run's settings.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FlyteFileArgs {
    /// Write Flyte's `~/.flyte/config.yaml` (which Flyte's CLI and SDK read too) for --endpoint,
    /// instead of flyte-run's own settings.
    #[arg(long)]
    flyte: bool,
    /// With --flyte: `admin.authType` (Pkce, DeviceFlow, ClientSecret, ExternalCommand,
    /// Passthrough). Default: what the deployment offers (Pkce, else DeviceFlow).
    #[arg(long, value_name = "TYPE", requires = "flyte")]
    auth_type: Option<String>,
    /// With --flyte: `admin.caCertFilePath`, a CA bundle (PEM) the endpoint's certificate chains
    /// to.
    #[arg(long, value_name = "FILE", requires = "flyte")]
    ca_cert: Option<PathBuf>,
    /// With --flyte: `task.project`, where runs go.
    #[arg(long, default_value = flyte_debug_client::DEFAULT_PROJECT, requires = "flyte")]
    project: String,
    /// With --flyte: `task.domain`.
    #[arg(long, default_value = flyte_debug_client::DEFAULT_DOMAIN, requires = "flyte")]
    domain: String,
}

pub(crate) fn run(command: &ConfigCommand) -> anyhow::Result<ExitCode> {
    let home = crate::paths::home_dir()?;
    match command {
        ConfigCommand::Init {
            endpoint,
            insecure,
            force,
            flyte,
        } if flyte.flyte => init_flyte(&home, endpoint.as_deref(), *insecure, *force, flyte),
        ConfigCommand::Init {
            endpoint,
            insecure,
            force,
            ..
        } => init(&home, endpoint.as_deref(), *insecure, *force),
        ConfigCommand::Show => show(&home),
    }
}

fn init(
    home: &Path,
    endpoint: Option<&str>,
    insecure: bool,
    force: bool,
) -> anyhow::Result<ExitCode> {
    if insecure && endpoint.is_none() {
        bail!("--insecure applies to the endpoint given with --endpoint; give one");
    }
    if let Some(raw) = endpoint {
        flyte_api::Endpoint::parse(raw, insecure).with_context(|| {
            format!("--endpoint {raw:?} (pass --insecure to allow plain http to this host)")
        })?;
    }
    let path = path(home);
    if path.exists() && !force {
        bail!(
            "{} already exists; it was left as it is (pass --force to replace it)",
            path.display()
        );
    }
    let config = Config {
        endpoint: endpoint.map(str::to_owned),
        insecure,
        runner: None,
    };
    let text = serde_json::to_string_pretty(&config)? + "\n";
    let dir = path.parent().context("the config path has a parent")?;
    flyte_fs::create_private_dir(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    flyte_fs::replace(&path, text.as_bytes(), 0o644)
        .with_context(|| format!("cannot write {}", path.display()))?;
    match endpoint {
        Some(e) => eprintln!("wrote {}: endpoint {e}", path.display()),
        None => eprintln!(
            "wrote {}: no endpoint, so the local sandbox is used (started on first use)",
            path.display()
        ),
    }
    eprintln!("check it with `flyte-run doctor`");
    Ok(ExitCode::SUCCESS)
}

/// `config init --flyte`: Flyte's `~/.flyte/config.yaml` for `endpoint`, asking nothing the
/// deployment can tell (its login flow); an existing file is kept unless `force`.
fn init_flyte(
    home: &Path,
    endpoint: Option<&str>,
    insecure: bool,
    force: bool,
    args: &FlyteFileArgs,
) -> anyhow::Result<ExitCode> {
    let raw = endpoint.context("--flyte writes Flyte's file for a cluster: give --endpoint URL")?;
    let endpoint = flyte_api::Endpoint::parse(raw, insecure).with_context(|| {
        format!("--endpoint {raw:?} (pass --insecure to allow plain http to this host)")
    })?;
    let path = home.join(".flyte").join("config.yaml");
    if path.exists() && !force {
        bail!(
            "{} already exists; it was left as it is (pass --force to replace it)",
            path.display()
        );
    }
    let ca_cert = match &args.ca_cert {
        Some(file) => {
            let absolute = std::fs::canonicalize(file)
                .with_context(|| format!("--ca-cert {}", file.display()))?;
            let pem = std::fs::read(&absolute)
                .with_context(|| format!("--ca-cert {}", absolute.display()))?;
            Some((absolute, pem))
        }
        None => None,
    };
    let auth_type = match &args.auth_type {
        Some(name) => Some(flyte_config::AuthType::from_name(name).with_context(|| {
            format!(
                "--auth-type {name:?} is not one of Flyte's: {}",
                flyte_config::AuthType::names().join(", ")
            )
        })?),
        None => offered_login(&endpoint, ca_cert.as_ref().map(|(_, pem)| pem.as_slice())),
    };
    let file = flyte_config::FlyteFile {
        endpoint: format!("dns:///{}", endpoint.authority()),
        insecure: !endpoint.is_https(),
        ca_cert_file_path: ca_cert.map(|(p, _)| p.display().to_string()),
        auth_type,
        client_id: None,
        client_secret_location: None,
        project: args.project.clone(),
        domain: args.domain.clone(),
    };
    let text = file.render("Written by flyte-run config init; Flyte's CLI and SDK read it too.");
    let dir = path.parent().context("the config path has a parent")?;
    flyte_fs::create_private_dir(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    flyte_fs::replace(&path, text.as_bytes(), flyte_fs::SECRET_MODE)
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "wrote {}: endpoint {}, authType {}",
        path.display(),
        file.endpoint,
        auth_type.map_or(
            "not set (Flyte's default, Pkce)",
            flyte_config::AuthType::name
        )
    );
    eprintln!("check it with `flyte-run doctor`");
    Ok(ExitCode::SUCCESS)
}

/// The person's login the deployment at `endpoint` offers (Pkce first, as Flyte defaults to
/// it), from its OAuth2 metadata; `None` when it cannot be asked or offers neither.
fn offered_login(
    endpoint: &flyte_api::Endpoint,
    ca_pem: Option<&[u8]>,
) -> Option<flyte_config::AuthType> {
    let client = flyte_api::Client::with_ca(endpoint, ca_pem).ok()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    match runtime.block_on(flyte_auth::oauth::discover(&client)) {
        Ok(config) if config.authorization_endpoint.is_some() && config.redirect_uri.is_some() => {
            Some(flyte_config::AuthType::Pkce)
        }
        Ok(config) if config.device_authorization_endpoint.is_some() => {
            Some(flyte_config::AuthType::DeviceFlow)
        }
        Ok(_) => None,
        Err(e) => {
            eprintln!(
                "cannot ask {} which login it offers ({e}); authType left to Flyte's default",
                endpoint.base_url()
            );
            None
        }
    }
}

/// `--config FILE`, set once at start-up before any command runs (a global flag that every
/// command's configuration honours).
static FLYTE_CONFIG_FLAG: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

pub(crate) fn set_flyte_config_flag(path: Option<PathBuf>) {
    let _ = FLYTE_CONFIG_FLAG.set(path);
}

/// Flyte's config file in effect and where it was found: `--config FILE`, else the first of
/// the Flyte SDK's search order that exists. A file named by `--config`, `$UCTL_CONFIG` or
/// `$FLYTECTL_CONFIG` must exist (falling through to another file could mean another cluster's
/// credentials); a file others could have written is refused, as for flyte-run.json.
fn flyte_config_file(home: &Path) -> Result<Option<(PathBuf, Place)>, String> {
    let named = |what: &str, path: PathBuf| -> Result<(PathBuf, Place), String> {
        if !path.is_file() {
            return Err(format!(
                "{what} {}: no such file; give the path of a Flyte config.yaml",
                path.display()
            ));
        }
        Ok((path, Place::Named))
    };
    let found = if let Some(path) = FLYTE_CONFIG_FLAG.get().cloned().flatten() {
        Some(named("--config", path)?)
    } else {
        for var in [
            flyte_config::ENV_UCTL_CONFIG,
            flyte_config::ENV_FLYTECTL_CONFIG,
        ] {
            if let Some(path) = env_vars::get_os(var).filter(|p| !p.is_empty()) {
                named(&format!("${var}"), PathBuf::from(path))?;
            }
        }
        let cwd = std::env::current_dir().unwrap_or_default();
        let places = flyte_config::SearchPlaces {
            git_root: flyte_config::git_root(&cwd, Path::exists),
            cwd,
            home: home.to_owned(),
            uctl_config: env_vars::get_os(flyte_config::ENV_UCTL_CONFIG)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            flytectl_config: env_vars::get_os(flyte_config::ENV_FLYTECTL_CONFIG)
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        };
        flyte_config::find_flyte_config(&places, Path::is_file)
    };
    if let Some((path, _)) = &found {
        for checked in std::iter::once(path.as_path()).chain(path.parent()) {
            if let Some(problem) = crate::paths::unsafe_for_secrets(checked) {
                return Err(format!("Flyte's config file {}: {problem}", path.display()));
            }
        }
    }
    Ok(found)
}

/// Every setting in effect, with where it came from: Flyte's config file < flyte-run's own
/// settings file < the environment < `--endpoint`.
pub(crate) fn resolve(home: &Path, endpoint_flag: Option<&str>) -> Result<Resolved, String> {
    let flyte_file = flyte_config_file(home)?;
    let own = load(home)?;
    let mut settings = Layer {
        path: Some(PathBuf::from(format!("~/.flyte/{FILE_NAME}"))),
        values: Vec::new(),
    };
    if let Some(endpoint) = own.endpoint {
        settings
            .values
            .push((flyte_config::ENDPOINT, "endpoint", endpoint));
    }
    if own.insecure {
        settings
            .values
            .push((flyte_config::INSECURE, "insecure", "true".to_owned()));
    }
    let mut flags = Layer::default();
    if let Some(endpoint) = endpoint_flag.filter(|e| !e.trim().is_empty()) {
        flags
            .values
            .push((flyte_config::ENDPOINT, "--endpoint", endpoint.to_owned()));
    }
    flyte_config::resolve(&flyte_config::Inputs {
        flyte_config: flyte_file
            .as_ref()
            .map(|(path, place)| (path.as_path(), *place)),
        settings,
        env: &env_vars::get,
        flags,
    })
    .map_err(|e| e.to_string())
}

/// The org, project and domain a run goes to when a call names none: Flyte's `task.org`,
/// `task.project` and `task.domain` (file or `FLYTE_TASK_*`), else Flyte's defaults; an org
/// nothing names is derived from the configured endpoint as Flyte's SDK derives it. A
/// configuration that cannot be read (`None`) gives the defaults here; connecting reports the
/// problem.
pub(crate) fn run_defaults(resolved: Option<&Resolved>) -> RunScope {
    let get = |key: &str, default: &str| {
        resolved
            .and_then(|r| r.text(key))
            .map(|s| s.value)
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    let derived_org = || {
        resolved
            .and_then(|r| r.text(flyte_config::ENDPOINT))
            .and_then(|e| flyte_config::org_from_endpoint(&e.value))
            .unwrap_or_default()
    };
    RunScope {
        org: Some(get(flyte_config::ORG, ""))
            .filter(|org| !org.is_empty())
            .unwrap_or_else(derived_org),
        project: get(flyte_config::PROJECT, flyte_debug_client::DEFAULT_PROJECT),
        domain: get(flyte_config::DOMAIN, flyte_debug_client::DEFAULT_DOMAIN),
    }
}

/// Where the endpoint comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndpointSource {
    /// Set by a flag, the environment, flyte-run's settings or Flyte's config file.
    Configured {
        endpoint: String,
        source: Source,
        /// `admin.insecure` applies to it: plain http, as Flyte means it, allowed to any host.
        insecure: bool,
        /// The insecure setting is flyte-run's own (`FLYTE_INSECURE`, flyte-run.json), whose
        /// documented meaning includes sending credentials over plain http. Flyte's own
        /// (`admin.insecure`) sends none, as Flyte's SDK does.
        credentials_over_http: bool,
    },
    Sandbox(Option<String>),
}

impl std::fmt::Display for EndpointSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointSource::Configured {
                endpoint, source, ..
            } => write!(f, "{endpoint} (from {source})"),
            EndpointSource::Sandbox(Some(e)) => write!(f, "{e} (the local sandbox, running)"),
            EndpointSource::Sandbox(None) => {
                write!(f, "the local sandbox (not running; started on first use)")
            }
        }
    }
}

/// Which endpoint is in effect (see [`resolve`]), else the local sandbox. `admin.insecure` from
/// the environment or a flag applies to any endpoint; from a file, only to that file's own
/// endpoint (a file must not open plain http for an endpoint given some other way).
pub(crate) fn endpoint_source(resolved: &Resolved, home: &Path) -> Result<EndpointSource, String> {
    let Some(endpoint) = resolved
        .text(flyte_config::ENDPOINT)
        .filter(|e| !e.value.trim().is_empty())
    else {
        return Ok(EndpointSource::Sandbox(
            FlyteHome::new(home).sandbox().running().map(|s| s.endpoint),
        ));
    };
    let flag = resolved
        .flag(flyte_config::INSECURE)
        .map_err(|e| e.to_string())?
        .filter(|flag| flag.value);
    let insecure = flag.as_ref().is_some_and(|flag| {
        matches!(
            (&flag.source, &endpoint.source),
            (Source::Env(_) | Source::Flag(_), _)
                | (Source::Settings { .. }, Source::Settings { .. })
                | (Source::FlyteConfig { .. }, Source::FlyteConfig { .. })
        )
    });
    let credentials_over_http = flag.is_some_and(|flag| {
        matches!(
            flag.source,
            Source::Env(env_vars::FLYTE_INSECURE) | Source::Settings { .. } | Source::Flag(_)
        )
    });
    Ok(EndpointSource::Configured {
        endpoint: endpoint.value,
        source: endpoint.source,
        insecure,
        credentials_over_http,
    })
}

fn show(home: &Path) -> anyhow::Result<ExitCode> {
    let resolved = resolve(home, None).map_err(anyhow::Error::msg)?;
    let source = endpoint_source(&resolved, home).map_err(anyhow::Error::msg)?;
    let insecure = matches!(source, EndpointSource::Configured { insecure: true, .. });
    println!("config file: {}", path(home).display());
    println!("endpoint:    {source}");
    println!("insecure:    {insecure}");
    let layout = FlyteHome::new(home);
    println!("ssh debug:   {}", layout.debug().path().display());
    println!("ssh config:  {}", layout.ssh_config().display());
    // Every setting shared with Flyte's SDK, effective value and source (secrets hidden).
    println!();
    print!(
        "{}",
        resolve(home, None).map_err(anyhow::Error::msg)?.render()
    );
    Ok(ExitCode::SUCCESS)
}
