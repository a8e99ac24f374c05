//! Which control plane script modules talk to, and with what credentials.

use std::sync::Arc;

use flyte_api::{Client, Endpoint, HttpClient};
use flyte_auth::{ApiKey, ClientCredentials};

use super::Host;

/// What to do when no endpoint is configured and no sandbox runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenNone {
    /// Say how to configure one.
    Fail,
    /// Start the local sandbox in the background and use it.
    StartSandbox,
}

/// The control plane: `--endpoint`, else `FLYTE_ENDPOINT`, else the sandbox running on this
/// machine (started first with `WhenNone::StartSandbox`).
pub(crate) fn endpoint(host: &Host, when_none: WhenNone) -> Result<Endpoint, String> {
    let env = std::env::var(crate::env_vars::FLYTE_ENDPOINT).ok();
    let dir = crate::sandbox::state_dir(&host.home);
    let sandbox = match (
        flyte_api::resolve(host.endpoint.as_deref(), env.as_deref()),
        when_none,
    ) {
        (Some(_), _) => None,
        (None, WhenNone::Fail) => crate::sandbox::running(&dir).map(|(_, endpoint)| endpoint),
        (None, WhenNone::StartSandbox) => {
            let (pid, endpoint, fresh) =
                crate::sandbox::start(&dir, &crate::sandbox::ServeArgs::default())
                    .map_err(|e| format!("cannot start the local sandbox: {e:#}"))?;
            if fresh {
                eprintln!(
                    "started the local sandbox at {endpoint} (pid {pid}); stop it with `flyte-run sandbox stop`"
                );
            }
            Some(endpoint)
        }
    };
    let raw = flyte_api::resolve(host.endpoint.as_deref(), env.as_deref())
        .or(sandbox.as_deref())
        .ok_or_else(|| {
            format!(
                "no control plane endpoint: pass --endpoint URL, set {}, or start the local sandbox with `flyte-run sandbox start`",
                crate::env_vars::FLYTE_ENDPOINT
            )
        })?;
    let insecure = std::env::var(crate::env_vars::FLYTE_INSECURE)
        .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"));
    Endpoint::parse(raw, insecure).map_err(|e| {
        format!(
            "{e} (set {}=1 to allow plain http to this host)",
            crate::env_vars::FLYTE_INSECURE
        )
    })
}

/// A client for `endpoint`, authenticated with the best credential at hand: the sandbox's
/// bootstrap credential when it is this machine's sandbox (tokens cached beside it), else the
/// user's stored API key, else none.
pub(crate) async fn client_for(host: &Host, endpoint: &Endpoint) -> Result<Client, String> {
    let client = Client::new(endpoint).map_err(|e| e.to_string())?;
    let dir = crate::sandbox::state_dir(&host.home);
    let is_sandbox = crate::sandbox::running(&dir)
        .is_some_and(|(_, e)| Endpoint::parse(&e, false).is_ok_and(|e| &e == endpoint));
    let debug_dir = flyte_keys::default_dir(&host.home);
    let (key_file, cache) = if is_sandbox {
        (
            dir.join(flyte_sandbox::CREDENTIAL_FILE),
            dir.join("bearer.json"),
        )
    } else {
        (
            debug_dir.join(flyte_auth::API_KEY_FILE),
            debug_dir.join("bearer.json"),
        )
    };
    let Ok(text) = std::fs::read_to_string(&key_file) else {
        return Ok(client);
    };
    let key = ApiKey::decode(&text).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let config = flyte_auth::oauth::discover(&client)
        .await
        .map_err(|e| e.to_string())?;
    let tokens = ClientCredentials::new(
        HttpClient::default(),
        config.clone(),
        key.client_id,
        key.client_secret,
        endpoint.authority(),
        cache,
    );
    client
        .with_tokens(Arc::new(tokens))
        .with_auth_header(&config.header_name)
        .map_err(|e| e.to_string())
}
