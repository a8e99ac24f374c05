//! [`PlaneOptions`] from Flyte's configuration (flyte-config's [`Resolved`]): the CA to trust
//! and the credential to use, as Flyte's SDK would, with flyte-run's rules on top (a file's
//! credential goes only to that file's endpoint; nothing over plain http to another machine
//! without the caller's opt-in; a secret file others can read is refused).

use flyte_api::Endpoint;
use flyte_config::{Resolved, Source};

use crate::{Credential, DebugClientError, PlaneOptions, Result};

/// What Flyte's configuration says about reaching `endpoint`: `admin.caCertFilePath`, and the
/// credential (`FLYTE_API_KEY` when it was made for this endpoint; `admin.authType:
/// ClientSecret` with `admin.clientId` and `admin.clientSecretLocation` or
/// `admin.clientSecretEnvVar`; `ExternalCommand` with `admin.command`). Settings from a file apply only to that file's own endpoint,
/// so a credential is never sent to an endpoint given some other way; settings from the
/// environment apply to any.
///
/// `credentials_over_http`: the caller's explicit opt-in to send credentials over plain http to
/// another machine; without it none is sent there, as Flyte's SDK sends none. `env` reads the
/// variable `admin.clientSecretEnvVar` names.
pub fn plane_options(
    resolved: &Resolved,
    endpoint: &Endpoint,
    credentials_over_http: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PlaneOptions> {
    options_from(resolved, endpoint, credentials_over_http, env)
        .map_err(DebugClientError::Configuration)
}

fn options_from(
    resolved: &Resolved,
    endpoint: &Endpoint,
    credentials_over_http: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PlaneOptions, String> {
    let mut options = PlaneOptions::default();
    if !endpoint.is_https() && !endpoint.is_loopback() && !credentials_over_http {
        options.anonymous = true;
        return Ok(options);
    }
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
        options.ca = Some(crate::CaFile {
            // The tunnel runs from wherever ssh starts it: the path it is given is absolute.
            path: std::path::absolute(&ca.value).unwrap_or_else(|_| ca.value.clone().into()),
            pem,
        });
    }
    options.skip_tls_verify = resolved
        .flag(flyte_config::INSECURE_SKIP_VERIFY)
        .map_err(|e| e.to_string())?
        .is_some_and(|f| f.value && applies(&f.source));
    options.http_proxy = setting(flyte_config::HTTP_PROXY_URL).map(|p| p.value);
    options.proxy_command =
        Some(command(resolved, flyte_config::PROXY_COMMAND, &applies)).filter(|a| !a.is_empty());
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
                "{} holds an API key made for {}, not for {}; a key is sent only to its own endpoint",
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
            options.credential = Some(client_secret(
                &auth.source,
                &setting,
                &applies,
                resolved,
                env,
            )?);
        }
        flyte_config::AuthType::ExternalCommand => {
            let argv = command(resolved, flyte_config::COMMAND, &applies);
            if argv.is_empty() {
                return Err(format!(
                    "admin.authType is ExternalCommand ({}) but admin.command (or FLYTE_AUTH_COMMAND) names no command; give the program that prints a token",
                    auth.source
                ));
            }
            options.credential = Some(Credential::Command(argv));
        }
        flyte_config::AuthType::DeviceFlow | flyte_config::AuthType::Pkce => {
            options.credential = Some(Credential::Login {
                flow: if auth.value == flyte_config::AuthType::Pkce {
                    flyte_auth::LoginFlow::Pkce
                } else {
                    flyte_auth::LoginFlow::DeviceFlow
                },
                scopes: scopes(resolved, &applies),
                audience: setting(flyte_config::AUDIENCE).map(|a| a.value),
                prompt: None,
            });
        }
        // Flyte's Passthrough sends what the program puts in its context and nothing of its
        // own; a command line has no such context, so it sends nothing: whatever stands in front
        // of the control plane (a proxy, a sidecar) authenticates the request.
        flyte_config::AuthType::Passthrough => options.anonymous = true,
    }
    Ok(options)
}

/// A command setting (`admin.command`, `admin.proxyCommand`), program first, where it applies
/// to this endpoint; empty when unset.
fn command(resolved: &Resolved, key: &str, applies: &dyn Fn(&Source) -> bool) -> Vec<String> {
    match resolved
        .get(key)
        .filter(|c| applies(&c.source))
        .map(|c| &c.value)
    {
        Some(flyte_config::Value::List(argv)) => argv.clone(),
        Some(flyte_config::Value::Text(text)) => shlex::split(text).unwrap_or_default(),
        None => Vec::new(),
    }
}

/// `admin.scopes`, where it applies to this endpoint.
fn scopes(resolved: &Resolved, applies: &dyn Fn(&Source) -> bool) -> Vec<String> {
    match resolved
        .get(flyte_config::SCOPES)
        .filter(|s| applies(&s.source))
        .map(|s| &s.value)
    {
        Some(flyte_config::Value::List(items)) => items.clone(),
        Some(flyte_config::Value::Text(text)) => vec![text.clone()],
        None => Vec::new(),
    }
}

/// Flyte's `ClientSecret` credential: `admin.clientId`, and the secret from the file
/// `admin.clientSecretLocation` names (refused when others can read it, as OpenSSH refuses
/// such key files) or the variable `admin.clientSecretEnvVar` names.
fn client_secret(
    auth_source: &Source,
    setting: &dyn Fn(&str) -> Option<flyte_config::Sourced<String>>,
    applies: &dyn Fn(&Source) -> bool,
    resolved: &Resolved,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credential, String> {
    let client_id = setting(flyte_config::CLIENT_ID).ok_or_else(|| {
        format!(
            "admin.authType is ClientSecret ({auth_source}) but admin.clientId is not set; add it to the same configuration"
        )
    })?;
    let secret = if let Some(location) = setting(flyte_config::CLIENT_SECRET_LOCATION) {
        let path = std::path::Path::new(&location.value);
        if let Some(problem) = readable_by_others(path) {
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
        env(&var.value).ok_or_else(|| {
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
    Ok(Credential::ClientSecret {
        client_id: client_id.value,
        secret: flyte_api::Secret::new(secret),
        scopes: scopes(resolved, applies),
        audience: setting(flyte_config::AUDIENCE).map(|a| a.value),
    })
}

/// Why a secret file others can read must not be used, if they can (as OpenSSH refuses private
/// keys readable by others); the message names the fix.
fn readable_by_others(path: &std::path::Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mode = std::fs::metadata(path).ok()?.mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "the secret file is readable by other users (mode {mode:03o}); fix it with `chmod 600 {}`",
            path.display()
        )
    })
}
