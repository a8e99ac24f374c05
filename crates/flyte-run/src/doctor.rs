//! `flyte-run doctor`: check what the debug flow needs on this machine, naming each problem with
//! its fix. It reads and asks; it creates no key and starts no sandbox (getting a token may
//! refresh the token cache, as any call would).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use crate::config::EndpointSource;
use crate::context::AppContext;
use crate::control_plane;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    /// Not a problem yet: something that will be set up on first use.
    Note,
    Fail,
}

#[derive(Debug)]
struct Check {
    status: Status,
    what: &'static str,
    detail: String,
}

impl Check {
    fn new(status: Status, what: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            what,
            detail: detail.into(),
        }
    }

    fn line(&self) -> String {
        let mark = match self.status {
            Status::Ok => "ok  ",
            Status::Note => "note",
            Status::Fail => "FAIL",
        };
        format!("{mark}  {:<11} {}", self.what, self.detail)
    }
}

// doctor asks the system ssh client for its version.
#[allow(clippy::disallowed_methods)]
fn ssh_client() -> Check {
    match std::process::Command::new("ssh").arg("-V").output() {
        Ok(out) if out.status.success() => {
            // `ssh -V` writes its version to stderr.
            let version = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            Check::new(Status::Ok, "ssh client", version)
        }
        Ok(out) => Check::new(
            Status::Fail,
            "ssh client",
            format!(
                "`ssh -V` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ),
        Err(e) => Check::new(
            Status::Fail,
            "ssh client",
            format!("cannot run ssh ({e}); install OpenSSH: apt-get install openssh-client"),
        ),
    }
}

fn mode(path: &Path) -> Option<u32> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

fn key_pair(home: &Path) -> Check {
    let debug = flyte_home::FlyteHome::new(home).debug();
    let (dir, key) = (debug.path(), debug.private_key());
    let Some(key_mode) = mode(&key) else {
        return Check::new(
            Status::Note,
            "key pair",
            format!(
                "{} does not exist yet; it is created on first use",
                key.display()
            ),
        );
    };
    if key_mode & 0o077 != 0 {
        return Check::new(
            Status::Fail,
            "key pair",
            format!(
                "{} is readable by others (mode {key_mode:o}); ssh refuses it: chmod 600 {}",
                key.display(),
                key.display()
            ),
        );
    }
    if let Some(dir_mode) = mode(dir).filter(|m| m & 0o077 != 0) {
        return Check::new(
            Status::Fail,
            "key pair",
            format!(
                "{} is open to others (mode {dir_mode:o}): chmod 700 {}",
                dir.display(),
                dir.display()
            ),
        );
    }
    let public = key.with_extension("pub");
    match std::fs::read_to_string(&public)
        .ok()
        .and_then(|line| flyte_keys::public_key_fingerprint(&line).ok())
    {
        Some(fingerprint) => Check::new(
            Status::Ok,
            "key pair",
            format!("{} ({fingerprint})", key.display()),
        ),
        None => Check::new(
            Status::Note,
            "key pair",
            format!(
                "{} is missing or unreadable; it is rewritten from the private key on next use",
                public.display()
            ),
        ),
    }
}

fn ssh_config(home: &Path) -> Check {
    let path = flyte_home::FlyteHome::new(home).ssh_config();
    match std::fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Check::new(
            Status::Note,
            "ssh config",
            format!(
                "{} does not exist; it is created on install",
                path.display()
            ),
        ),
        Err(e) => Check::new(
            Status::Fail,
            "ssh config",
            format!("cannot read {}: {e}", path.display()),
        ),
        Ok(bytes) => {
            let Ok(text) = String::from_utf8(bytes) else {
                return Check::new(
                    Status::Fail,
                    "ssh config",
                    format!(
                        "{} is not UTF-8; flyte-run will not edit it",
                        path.display()
                    ),
                );
            };
            let config = flyte_ssh_config::Config::parse(&text);
            match flyte_ssh_config::shadowing(&config) {
                Ok(found) if !found.is_empty() => {
                    let problems: Vec<String> = found.iter().map(ToString::to_string).collect();
                    return Check::new(
                        Status::Fail,
                        "ssh config",
                        format!("{}: {}", path.display(), problems.join("; ")),
                    );
                }
                Ok(_) | Err(_) => {}
            }
            match flyte_ssh_config::managed_blocks(&config) {
                Ok(blocks) => {
                    let aliases: Vec<&str> = blocks.iter().map(|b| b.alias.as_str()).collect();
                    Check::new(
                        Status::Ok,
                        "ssh config",
                        format!(
                            "{} ({} managed block(s){})",
                            path.display(),
                            blocks.len(),
                            if aliases.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", aliases.join(", "))
                            }
                        ),
                    )
                }
                Err(e) => Check::new(
                    Status::Fail,
                    "ssh config",
                    format!("{}: {e}", path.display()),
                ),
            }
        }
    }
}

/// The login flow Flyte's configuration names, where it is set, and whether flyte-run uses it.
fn auth_note(host: &AppContext, used: Option<&flyte_debug_client::Credential>) -> Option<Check> {
    use flyte_config::AuthType;
    let auth = host
        .config()
        .and_then(|r| r.auth_type().map_err(|e| e.to_string()))
        .ok()??;
    let used = match (used, auth.value) {
        (Some(flyte_debug_client::Credential::ApiKey(_)), _) => "FLYTE_API_KEY is used instead",
        (Some(_), _) => "used",
        (None, AuthType::Passthrough) => {
            "flyte-run sends no credential of its own (what stands in front of the control plane adds one)"
        }
        (None, _) => "not used: it is set beside another endpoint than the one in effect",
    };
    Some(Check::new(
        Status::Note,
        "auth",
        format!("{} (from {}); {used}", auth.value.name(), auth.source),
    ))
}

/// The person's login (`flow`) cached for `endpoint`, if any.
fn login_check(
    host: &AppContext,
    endpoint: &flyte_debug_client::Endpoint,
    flow: flyte_auth::LoginFlow,
) -> Check {
    match flyte_debug_client::cached_login(&host.layout(), endpoint, flow) {
        Some(token) => Check::new(
            Status::Ok,
            "token",
            format!(
                "from a {} login; valid for {} more minute(s)",
                flow.name(),
                token
                    .exp
                    .map_or(0, |exp| (exp - flyte_auth::token::unix_now()).max(0) / 60)
            ),
        ),
        None => Check::new(
            Status::Note,
            "token",
            format!(
                "no {} login yet (or it expired): the next command that needs one asks for it",
                flow.name()
            ),
        ),
    }
}

/// The endpoint, whether it answers, and whether a token can be had for it.
fn control_plane_checks(host: &AppContext) -> Vec<Check> {
    let source = match host.endpoint_source() {
        Ok(source) => source,
        Err(e) => return vec![Check::new(Status::Fail, "endpoint", e)],
    };
    if source == EndpointSource::Sandbox(None) {
        return vec![Check::new(Status::Note, "endpoint", source.to_string())];
    }
    let endpoint = match control_plane::endpoint(host, control_plane::WhenNone::Fail) {
        Ok(endpoint) => endpoint,
        Err(e) => return vec![Check::new(Status::Fail, "endpoint", e)],
    };
    let options = match control_plane::plane_options(host, &endpoint) {
        Ok(options) => options,
        Err(e) => {
            return vec![
                Check::new(Status::Note, "endpoint", source.to_string()),
                Check::new(Status::Fail, "token", e),
            ];
        }
    };
    // A key made for another endpoint is reported whether or not this one answers.
    let files = flyte_debug_client::CredentialFiles::for_endpoint(&host.layout(), &endpoint);
    if options.credential.is_none()
        && let Err(e) =
            flyte_debug_client::stored_key(&files, &endpoint, options.allow_key_endpoint.as_deref())
    {
        return vec![
            Check::new(Status::Note, "endpoint", source.to_string()),
            Check::new(Status::Fail, "token", e.to_string()),
        ];
    }
    let client = match flyte_api::Client::with_http(&endpoint, &options.http()) {
        Ok(client) => client,
        Err(e) => return vec![Check::new(Status::Fail, "endpoint", e.to_string())],
    };
    let started = Instant::now();
    let reachable = host.block_on(flyte_auth::oauth::discover(&client));
    let mut checks = vec![match &reachable {
        Ok(_) => Check::new(
            Status::Ok,
            "endpoint",
            format!("{source}; answered in {} ms", started.elapsed().as_millis()),
        ),
        Err(e) => Check::new(
            Status::Fail,
            "endpoint",
            format!("{source}; it does not answer: {e}"),
        ),
    }];
    checks.extend(auth_note(host, options.credential.as_ref()));
    if reachable.is_err() {
        return checks;
    }
    if let Some(flyte_debug_client::Credential::Login { flow, .. }) = &options.credential {
        // A check never starts a person's login: it reports the one there is.
        checks.push(login_check(host, &endpoint, *flow));
        return checks;
    }
    let key_file = files.key_file.clone();
    let token = host
        .block_on(flyte_debug_client::ControlPlane::open(
            host.layout(),
            endpoint,
            options,
        ))
        .and_then(|plane| host.block_on(plane.token()))
        .map_err(|e| e.to_string());
    checks.push(match token {
        Ok(Some((token, what))) => Check::new(
            Status::Ok,
            "token",
            match token.exp {
                Some(exp) => {
                    let now = flyte_auth::token::unix_now();
                    format!(
                        "from {what}; valid for {} more minute(s)",
                        (exp - now).max(0) / 60
                    )
                }
                None => format!("from {what}"),
            },
        ),
        Ok(None) => Check::new(
            Status::Note,
            "token",
            format!(
                "no credential at {}; create one with `flyte-run -e 'auth::ensure_api_key(\"flyte-ssh-debug\")'`",
                key_file.display()
            ),
        ),
        Err(e) => Check::new(
            Status::Fail,
            "token",
            format!("with {}: {e}", key_file.display()),
        ),
    });
    checks
}

/// The runner VM, when one is configured: reached through the whole chain with a no-op.
fn runner_check(host: &AppContext) -> Check {
    let configured = crate::env_vars::get(flyte_runner_proxy::ENV_SSH_HOST)
        .is_some_and(|v| !v.trim().is_empty())
        || crate::config::load(&host.home)
            .ok()
            .and_then(|c| c.runner)
            .is_some_and(|r| r.ssh_host.is_some());
    if !configured {
        return Check::new(
            Status::Note,
            "runner",
            format!(
                "not configured (set {} or the \"runner\" section of ~/.flyte/{}); only runner:: playbooks need it",
                flyte_runner_proxy::ENV_SSH_HOST,
                crate::config::FILE_NAME
            ),
        );
    }
    let runner = match host.runner() {
        Ok(runner) => runner,
        Err(e) => return Check::new(Status::Fail, "runner", e),
    };
    let target = format!("{} -> {}", runner.config().ssh_host, runner.config().vm);
    let started = Instant::now();
    match host.block_on(runner.run("true", None, std::time::Duration::from_secs(20))) {
        Ok(out) if out.code == 0 => Check::new(
            Status::Ok,
            "runner",
            format!("{target}; answered in {} ms", started.elapsed().as_millis()),
        ),
        Ok(out) => Check::new(
            Status::Fail,
            "runner",
            format!(
                "{target}: `true` exited with {}: {}",
                out.code,
                out.stderr.trim()
            ),
        ),
        Err(e) => Check::new(Status::Fail, "runner", format!("{target}: {e}")),
    }
}

pub(crate) fn run(endpoint: Option<String>) -> anyhow::Result<ExitCode> {
    let host = AppContext::new(crate::paths::home_dir()?, endpoint);
    let mut checks = vec![ssh_client(), key_pair(&host.home), ssh_config(&host.home)];
    checks.extend(control_plane_checks(&host));
    checks.push(runner_check(&host));
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    for check in &checks {
        println!("{}", check.line());
    }
    if failed == 0 {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{failed} check(s) failed");
        Ok(ExitCode::FAILURE)
    }
}
