//! Which control plane flyte-run talks to (commands and script modules alike), and with what
//! credentials.

use flyte_api::Endpoint;
use flyte_config::Source;
use flyte_debug_client::{ControlPlane, Credential, PlaneOptions};

use crate::context::AppContext;

/// What to do when no endpoint is configured and no sandbox runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenNone {
    /// Say how to configure one.
    Fail,
    /// Start the local sandbox in the background and use it.
    StartSandbox,
}

/// The control plane: `--endpoint`, else `FLYTE_ENDPOINT`/`FLYTE_ADMIN_ENDPOINT`, else
/// `~/.flyte/flyte-run.json`, else Flyte's config file (see `config::resolve`), else the sandbox
/// running on this machine (started first with `WhenNone::StartSandbox`).
pub(crate) fn endpoint(host: &AppContext, when_none: WhenNone) -> Result<Endpoint, String> {
    use crate::config::EndpointSource;
    let source = crate::config::endpoint_source(&host.home, host.endpoint.as_deref())?;
    let insecure = matches!(source, EndpointSource::Configured { insecure: true, .. });
    let raw = match source {
        EndpointSource::Configured { endpoint, .. } | EndpointSource::Sandbox(Some(endpoint)) => {
            endpoint
        }
        EndpointSource::Sandbox(None) => match when_none {
            WhenNone::Fail => {
                return Err(format!(
                    "no control plane endpoint: pass --endpoint URL, set {}, run `flyte-run config init --endpoint URL`, or start the local sandbox with `flyte-run sandbox start`",
                    crate::env_vars::FLYTE_ENDPOINT
                ));
            }
            WhenNone::StartSandbox => {
                let dir = host.layout().sandbox();
                let (pid, endpoint, fresh) =
                    crate::sandbox::start(&dir, &crate::sandbox::ServeArgs::default())
                        .map_err(|e| format!("cannot start the local sandbox: {e:#}"))?;
                if fresh {
                    eprintln!(
                        "started the local sandbox at {endpoint} (pid {pid}); stop it with `flyte-run sandbox stop`"
                    );
                }
                endpoint
            }
        },
    };
    Endpoint::parse(&raw, insecure).map_err(|e| {
        format!(
            "{e} (set {}=1, or insecure: true beside the endpoint in the file that names it, to allow plain http to this host)",
            crate::env_vars::FLYTE_INSECURE
        )
    })
}

/// The control plane at `endpoint`, with a client authenticated by the credential Flyte's
/// configuration names (see [`plane_options`]), else the best one at hand (the local
/// sandbox's, else a stored API key made for this endpoint or the one
/// `FLYTE_RUN_ALLOW_KEY_ENDPOINT` names).
pub(crate) fn plane(host: &AppContext, endpoint: Endpoint) -> Result<ControlPlane, String> {
    let options = plane_options(host, &endpoint)?;
    host.block_on(ControlPlane::open(host.layout(), endpoint, options))
        .map_err(|e| e.to_string())
}

/// [`endpoint`], then [`plane`].
pub(crate) fn connect(host: &AppContext, when_none: WhenNone) -> Result<ControlPlane, String> {
    plane(host, endpoint(host, when_none)?)
}

/// What Flyte's configuration says about reaching `endpoint`: `admin.caCertFilePath`, and the
/// credential (`FLYTE_API_KEY` when it was made for this endpoint; `admin.authType:
/// ClientSecret` with `admin.clientId` and `admin.clientSecretLocation` or
/// `admin.clientSecretEnvVar`; `ExternalCommand` with `admin.command`). Settings from a file apply only to that file's own endpoint,
/// so a credential is never sent to an endpoint given some other way; settings from the
/// environment apply to any.
pub(crate) fn plane_options(
    host: &AppContext,
    endpoint: &Endpoint,
) -> Result<PlaneOptions, String> {
    let mut options = PlaneOptions {
        allow_key_endpoint: crate::env_vars::get(crate::env_vars::FLYTE_RUN_ALLOW_KEY_ENDPOINT),
        ..PlaneOptions::default()
    };
    // Plain http to another machine by Flyte's `admin.insecure`: as Flyte's SDK, no credential
    // at all (flyte-run's own FLYTE_INSECURE is the explicit opt-in to send them anyway).
    if !endpoint.is_https() && !endpoint.is_loopback() {
        let source = crate::config::endpoint_source(&host.home, host.endpoint.as_deref())?;
        if !matches!(
            source,
            crate::config::EndpointSource::Configured {
                credentials_over_http: true,
                ..
            }
        ) {
            options.anonymous = true;
            return Ok(options);
        }
    }
    let resolved = crate::config::resolve(&host.home, host.endpoint.as_deref())?;
    let endpoint_source = resolved.text(flyte_config::ENDPOINT).map(|e| e.source);
    let applies = |source: &Source| match source {
        Source::Env(_) | Source::Flag(_) => true,
        Source::FlyteConfig { .. } => {
            matches!(endpoint_source, Some(Source::FlyteConfig { .. }))
        }
        Source::Settings { .. } => matches!(endpoint_source, Some(Source::Settings { .. })),
    };
    let setting = |key: &str| resolved.text(key).filter(|s| applies(&s.source));
    if let Some(ca) = setting(flyte_config::CA_CERT_FILE_PATH) {
        let pem = std::fs::read(&ca.value)
            .map_err(|e| format!("{} ({}): cannot read the CA file: {e}", ca.value, ca.source))?;
        options.ca_pem = Some(pem);
    }
    if let Some(key) = setting(flyte_config::API_KEY) {
        let key =
            flyte_auth::ApiKey::decode(&key.value).map_err(|e| format!("{}: {e}", key.source))?;
        let matches = flyte_auth::key_matches_endpoint(
            &key.endpoint,
            endpoint.authority(),
            endpoint.is_https(),
        );
        if !matches && endpoint.is_loopback() {
            // A key exported for Flyte's SDK and a cluster: not for the local sandbox, which has
            // its own credential.
            tracing::debug!("FLYTE_API_KEY is for another endpoint; not used for the sandbox");
        } else if !matches {
            return Err(format!(
                "{} holds an API key made for {}, not for {}; flyte-run sends a key only to its own endpoint",
                flyte_config::API_KEY,
                key.endpoint,
                endpoint.authority()
            ));
        } else {
            options.credential = Some(Credential::ApiKey(key));
            return Ok(options);
        }
    }
    let auth = resolved.auth_type().map_err(|e| e.to_string())?;
    let Some(auth) = auth.filter(|a| applies(&a.source)) else {
        return Ok(options);
    };
    match auth.value {
        flyte_config::AuthType::ClientSecret => {
            options.credential = Some(client_secret(&auth.source, &setting, &applies, &resolved)?);
        }
        flyte_config::AuthType::ExternalCommand => {
            let argv = match resolved
                .get(flyte_config::COMMAND)
                .filter(|c| applies(&c.source))
                .map(|c| &c.value)
            {
                Some(flyte_config::Value::List(argv)) => argv.clone(),
                Some(flyte_config::Value::Text(text)) => shlex::split(text).unwrap_or_default(),
                None => Vec::new(),
            };
            if argv.is_empty() {
                return Err(format!(
                    "admin.authType is ExternalCommand ({}) but admin.command (or FLYTE_AUTH_COMMAND) names no command; give the program that prints a token",
                    auth.source
                ));
            }
            options.credential = Some(Credential::Command(argv));
        }
        // Not implemented yet: the best credential at hand (doctor says so).
        flyte_config::AuthType::Pkce
        | flyte_config::AuthType::DeviceFlow
        | flyte_config::AuthType::Passthrough => {}
    }
    Ok(options)
}

/// Flyte's `ClientSecret` credential: `admin.clientId`, and the secret from the file
/// `admin.clientSecretLocation` names (refused when others can read it, as OpenSSH refuses
/// such key files) or the variable `admin.clientSecretEnvVar` names.
fn client_secret(
    auth_source: &Source,
    setting: &dyn Fn(&str) -> Option<flyte_config::Sourced<String>>,
    applies: &dyn Fn(&Source) -> bool,
    resolved: &flyte_config::Resolved,
) -> Result<Credential, String> {
    let client_id = setting(flyte_config::CLIENT_ID).ok_or_else(|| {
        format!(
            "admin.authType is ClientSecret ({auth_source}) but admin.clientId is not set; add it to the same configuration"
        )
    })?;
    let secret = if let Some(location) = setting(flyte_config::CLIENT_SECRET_LOCATION) {
        let path = std::path::Path::new(&location.value);
        if let Some(problem) = crate::paths::readable_by_others(path) {
            return Err(format!(
                "{} ({}): {problem}",
                location.value, location.source
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "{} ({}): cannot read the client secret: {e}",
                location.value, location.source
            )
        })?;
        text.trim().to_owned()
    } else if let Some(var) = setting(flyte_config::CLIENT_SECRET_ENV_VAR) {
        crate::env_vars::get(&var.value).ok_or_else(|| {
            format!(
                "{} ({}) names the variable holding the client secret, and it is not set",
                var.value, var.source
            )
        })?
    } else {
        return Err(format!(
            "admin.authType is ClientSecret ({auth_source}) but neither admin.clientSecretLocation nor admin.clientSecretEnvVar says where the secret is"
        ));
    };
    if secret.is_empty() {
        return Err("the client secret is empty".to_owned());
    }
    let scopes = match resolved
        .get(flyte_config::SCOPES)
        .filter(|s| applies(&s.source))
        .map(|s| &s.value)
    {
        Some(flyte_config::Value::List(items)) => items.clone(),
        Some(flyte_config::Value::Text(text)) => vec![text.clone()],
        None => Vec::new(),
    };
    Ok(Credential::ClientSecret {
        client_id: client_id.value,
        secret: flyte_api::Secret::new(secret),
        scopes,
        audience: setting(flyte_config::AUDIENCE).map(|a| a.value),
    })
}
