//! Which control plane flyte-run talks to (commands and script modules alike), and with what
//! credentials.

use std::path::PathBuf;
use std::sync::Arc;

use flyte_api::{Client, Endpoint, HttpClient};
use flyte_auth::{ApiKey, ClientCredentials};

use crate::context::AppContext;

/// What to do when no endpoint is configured and no sandbox runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenNone {
    /// Say how to configure one.
    Fail,
    /// Start the local sandbox in the background and use it.
    StartSandbox,
}

/// The control plane: `--endpoint`, else `FLYTE_ENDPOINT`, else `~/.flyte/flyte-run.json`, else
/// the sandbox running on this machine (started first with `WhenNone::StartSandbox`).
pub(crate) fn endpoint(host: &AppContext, when_none: WhenNone) -> Result<Endpoint, String> {
    use crate::config::EndpointSource;
    let source = crate::config::endpoint_source(&host.home, host.endpoint.as_deref())?;
    let insecure = crate::config::insecure(&host.home, &source)?;
    let raw = match source {
        EndpointSource::Flag(e)
        | EndpointSource::Env(e)
        | EndpointSource::File(e)
        | EndpointSource::Sandbox(Some(e)) => e,
        EndpointSource::Sandbox(None) => match when_none {
            WhenNone::Fail => {
                return Err(format!(
                    "no control plane endpoint: pass --endpoint URL, set {}, run `flyte-run config init --endpoint URL`, or start the local sandbox with `flyte-run sandbox start`",
                    crate::env_vars::FLYTE_ENDPOINT
                ));
            }
            WhenNone::StartSandbox => {
                let dir = crate::sandbox::state_dir(&host.home);
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
            "{e} (set {}=1, or \"insecure\": true in ~/.flyte/{}, to allow plain http to this host)",
            crate::env_vars::FLYTE_INSECURE,
            crate::config::FILE_NAME
        )
    })
}

/// Where a control plane's credential comes from, and where its tokens are cached.
#[derive(Debug)]
pub(crate) struct CredentialFiles {
    pub(crate) key_file: PathBuf,
    pub(crate) cache: PathBuf,
}

/// The best credential at hand for `endpoint`: the sandbox's bootstrap credential when it is this
/// machine's sandbox (tokens cached beside it), else the user's stored API key.
pub(crate) fn credential_files(host: &AppContext, endpoint: &Endpoint) -> CredentialFiles {
    let dir = crate::sandbox::state_dir(&host.home);
    let is_sandbox = crate::sandbox::running(&dir)
        .is_some_and(|(_, e)| Endpoint::parse(&e, false).is_ok_and(|e| &e == endpoint));
    if is_sandbox {
        CredentialFiles {
            key_file: dir.join(flyte_sandbox::CREDENTIAL_FILE),
            cache: dir.join(flyte_auth::BEARER_FILE),
        }
    } else {
        api_key_files(host)
    }
}

/// The user's stored API key (`auth::ensure_api_key`) and the bearer cache Flyte shares.
pub(crate) fn api_key_files(host: &AppContext) -> CredentialFiles {
    let debug_dir = flyte_keys::default_dir(&host.home);
    CredentialFiles {
        key_file: debug_dir.join(flyte_auth::API_KEY_FILE),
        cache: debug_dir.join(flyte_auth::BEARER_FILE),
    }
}

/// The API key in `files`, when there is one and it may be sent to `endpoint`.
///
/// A key is sent only to the endpoint it was made for (the user's own key file could have been
/// made for another deployment, or the endpoint pointed elsewhere), unless the user names this
/// endpoint in `FLYTE_RUN_ALLOW_KEY_ENDPOINT`: an explicit, per-endpoint opt-out.
pub(crate) fn stored_key(
    files: &CredentialFiles,
    endpoint: &Endpoint,
) -> Result<Option<ApiKey>, String> {
    let Ok(text) = std::fs::read_to_string(&files.key_file) else {
        return Ok(None);
    };
    let key = ApiKey::decode(&text).map_err(|e| format!("{}: {e}", files.key_file.display()))?;
    let allowed = std::env::var(crate::env_vars::FLYTE_RUN_ALLOW_KEY_ENDPOINT)
        .is_ok_and(|v| v.trim() == endpoint.authority());
    if allowed
        || flyte_auth::key_matches_endpoint(
            &key.endpoint,
            endpoint.authority(),
            endpoint.is_https(),
        )
    {
        return Ok(Some(key));
    }
    Err(format!(
        "{} holds an API key made for {}, not for {}; flyte-run sends a key only to its own endpoint. \
         Point flyte-run at {} (--endpoint, FLYTE_ENDPOINT), make a key for this endpoint with \
         auth::ensure_api_key after moving that file away, or, if {} really is the same deployment, \
         set {}={}",
        files.key_file.display(),
        key.endpoint,
        endpoint.authority(),
        key.endpoint,
        endpoint.authority(),
        crate::env_vars::FLYTE_RUN_ALLOW_KEY_ENDPOINT,
        endpoint.authority(),
    ))
}

/// Client credentials from `files` for `endpoint`, and the header tokens go in; `None` when the
/// key file does not exist.
pub(crate) async fn token_source(
    client: &Client,
    endpoint: &Endpoint,
    files: CredentialFiles,
) -> Result<Option<(ClientCredentials, String)>, String> {
    let Some(key) = stored_key(&files, endpoint)? else {
        return Ok(None);
    };
    let config = flyte_auth::oauth::discover(client)
        .await
        .map_err(|e| e.to_string())?;
    let header = config.header_name.clone();
    let tokens = ClientCredentials::new(
        HttpClient::default(),
        config,
        key.client_id,
        key.client_secret,
        &endpoint.token_cache_key(),
        files.cache,
    );
    Ok(Some((tokens, header)))
}

/// A client for `endpoint`, authenticated with the best credential at hand (see
/// [`credential_files`]), else none.
pub(crate) async fn client_for(host: &AppContext, endpoint: &Endpoint) -> Result<Client, String> {
    let client = Client::new(endpoint).map_err(|e| e.to_string())?;
    match token_source(&client, endpoint, credential_files(host, endpoint)).await? {
        None => Ok(client),
        Some((tokens, header)) => client
            .with_tokens(Arc::new(tokens))
            .with_auth_header(&header)
            .map_err(|e| e.to_string()),
    }
}
