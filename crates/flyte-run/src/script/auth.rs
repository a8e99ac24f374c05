//! `auth::` — API keys and bearer tokens (flyte-auth). Values print without their secrets.

use std::path::PathBuf;
use std::sync::Arc;

use flyte_api::{Client, Endpoint, HttpClient};
use flyte_auth::{ApiKey, ClientCredentials, ConnectApiKeyService};
use rhai::{Dynamic, Engine, Map, Module, NativeCallContext};

use super::Host;
use super::opts::{Opts, ScriptResult, script_err};

/// What `auth::ensure_api_key` returns: the key's public parts (the secret stays in its file).
#[derive(Debug, Clone)]
pub(crate) struct ScriptApiKey {
    client_id: String,
    endpoint: String,
    org: String,
}

/// What `auth::bearer_token` returns. Printing shows `<redacted>`; `authorization()` gives the
/// header value for scripts that must pass it on (curl through the runner).
#[derive(Clone)]
pub(crate) struct ScriptToken {
    token: flyte_auth::Token,
}

impl std::fmt::Debug for ScriptToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(<redacted>, expires at {:?})", self.token.exp)
    }
}

/// The control plane: `--endpoint`, else `FLYTE_ENDPOINT`, else the sandbox running on this
/// machine.
pub(crate) fn endpoint(host: &Host) -> Result<Endpoint, String> {
    let env = std::env::var(crate::env_vars::FLYTE_ENDPOINT).ok();
    let sandbox = crate::sandbox::running(&crate::sandbox::state_dir(&host.home))
        .map(|(_, endpoint)| endpoint);
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

/// A client for `endpoint`. When it is this machine's sandbox, calls carry tokens minted from
/// the sandbox's bootstrap credential (cached beside it, apart from the user's own tokens).
async fn client_for(host: &Host, endpoint: &Endpoint) -> Result<Client, String> {
    let client = Client::new(endpoint).map_err(|e| e.to_string())?;
    let dir = crate::sandbox::state_dir(&host.home);
    let is_sandbox = crate::sandbox::running(&dir)
        .is_some_and(|(_, e)| Endpoint::parse(&e, false).is_ok_and(|e| &e == endpoint));
    if !is_sandbox {
        return Ok(client);
    }
    let credential = dir.join(flyte_sandbox::CREDENTIAL_FILE);
    let text = std::fs::read_to_string(&credential)
        .map_err(|e| format!("{}: {e}", credential.display()))?;
    let key = ApiKey::decode(&text).map_err(|e| format!("{}: {e}", credential.display()))?;
    let config = flyte_auth::oauth::discover(&client)
        .await
        .map_err(|e| e.to_string())?;
    let tokens = ClientCredentials::new(
        HttpClient::default(),
        config.clone(),
        key.client_id,
        key.client_secret,
        endpoint.authority(),
        dir.join("bearer.json"),
    );
    client
        .with_tokens(Arc::new(tokens))
        .with_auth_header(&config.header_name)
        .map_err(|e| e.to_string())
}

fn debug_dir(host: &Host) -> PathBuf {
    flyte_keys::default_dir(&host.home)
}

fn ensure_api_key(host: &Host, name: &str) -> Result<ScriptApiKey, String> {
    let endpoint = endpoint(host)?;
    let key = host.block_on(async {
        let service = ConnectApiKeyService::new(client_for(host, &endpoint).await?);
        flyte_auth::ensure_api_key(&service, &debug_dir(host), &endpoint.base_url(), "", name)
            .await
            .map_err(|e| e.to_string())
    })?;
    Ok(ScriptApiKey {
        client_id: key.client_id,
        endpoint: key.endpoint,
        org: key.org,
    })
}

fn bearer_token(host: &Host, use_api_key: bool, refresh: bool) -> Result<ScriptToken, String> {
    if !use_api_key {
        return Err(
            "interactive login is not supported; use an API key (call auth::ensure_api_key first)"
                .to_owned(),
        );
    }
    let endpoint = endpoint(host)?;
    let key_file = debug_dir(host).join(flyte_auth::API_KEY_FILE);
    let text = std::fs::read_to_string(&key_file).map_err(|e| {
        format!(
            "no API key at {} ({e}); call auth::ensure_api_key(name) first",
            key_file.display()
        )
    })?;
    let key = ApiKey::decode(&text).map_err(|e| format!("{}: {e}", key_file.display()))?;
    let client = Client::new(&endpoint).map_err(|e| e.to_string())?;
    host.block_on(async {
        let config = flyte_auth::oauth::discover(&client)
            .await
            .map_err(|e| e.to_string())?;
        let source = ClientCredentials::new(
            HttpClient::default(),
            config,
            key.client_id.clone(),
            key.client_secret.clone(),
            endpoint.authority(),
            debug_dir(host).join("bearer.json"),
        );
        source
            .get(refresh)
            .await
            .map(|token| ScriptToken { token })
            .map_err(|e| e.to_string())
    })
}

pub(super) fn register_types(engine: &mut Engine) {
    engine
        .register_type_with_name::<ScriptApiKey>("ApiKey")
        .register_get("client_id", |k: &mut ScriptApiKey| k.client_id.clone())
        .register_get("endpoint", |k: &mut ScriptApiKey| k.endpoint.clone())
        .register_get("org", |k: &mut ScriptApiKey| k.org.clone())
        .register_fn("to_string", |k: &mut ScriptApiKey| {
            format!("ApiKey(client_id={}, secret=<redacted>)", k.client_id)
        })
        .register_fn("to_debug", |k: &mut ScriptApiKey| {
            format!("ApiKey(client_id={}, secret=<redacted>)", k.client_id)
        });
    engine
        .register_type_with_name::<ScriptToken>("Token")
        .register_get("expires_at", |t: &mut ScriptToken| {
            t.token.exp.map_or(Dynamic::UNIT, Dynamic::from)
        })
        .register_fn("authorization", |t: &mut ScriptToken| {
            format!("Bearer {}", t.token.value.expose())
        })
        .register_fn("to_string", |t: &mut ScriptToken| format!("{t:?}"))
        .register_fn("to_debug", |t: &mut ScriptToken| format!("{t:?}"));
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut module = Module::new();
    let h = Arc::clone(host);
    // auth::ensure_api_key(name) -> ApiKey
    module.set_native_fn(
        "ensure_api_key",
        move |ctx: NativeCallContext<'_>, name: &str| -> ScriptResult<ScriptApiKey> {
            ensure_api_key(&h, name).map_err(|e| script_err(&ctx, e))
        },
    );
    let h = Arc::clone(host);
    // auth::bearer_token(opts) -> Token; opts: use_api_key (default true), refresh
    let bearer = move |ctx: NativeCallContext<'_>, opts: Map| -> ScriptResult<ScriptToken> {
        let opts = Opts::new(
            &ctx,
            "auth::bearer_token",
            &opts,
            &["use_api_key", "refresh"],
        )?;
        let use_api_key = opts.bool("use_api_key")?.unwrap_or(true);
        let refresh = opts.bool("refresh")?.unwrap_or(false);
        bearer_token(&h, use_api_key, refresh).map_err(|e| script_err(&ctx, e))
    };
    let bearer_no_opts = bearer.clone();
    module.set_native_fn("bearer_token", bearer);
    module.set_native_fn("bearer_token", move |ctx: NativeCallContext<'_>| {
        bearer_no_opts(ctx, Map::new())
    });
    module
}
