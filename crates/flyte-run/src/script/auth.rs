//! `auth::` — API keys and bearer tokens (flyte-auth). Values print without their secrets.

use std::path::PathBuf;
use std::sync::Arc;

use flyte_auth::ConnectApiKeyService;
use rhai::{Dynamic, Engine, Map, Module, NativeCallContext};

use super::Host;
use super::opts::{ScriptResult, documented, options, script_err, with_options};
use crate::control_plane::WhenNone;

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

fn debug_dir(host: &Host) -> PathBuf {
    host.layout().debug().path().to_owned()
}

fn ensure_api_key(host: &Host, name: &str) -> Result<ScriptApiKey, String> {
    if host.dry_run {
        println!("dry-run: ensure the API key {name:?} (create it if the control plane lacks it)");
        return Ok(ScriptApiKey {
            client_id: "<dry-run>".to_owned(),
            endpoint: String::new(),
            org: String::new(),
        });
    }
    let plane = crate::control_plane::connect(host, WhenNone::Fail)?;
    let endpoint = plane.endpoint();
    let key = host.block_on(async {
        let service = ConnectApiKeyService::new(plane.client().clone());
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

pub(super) fn bearer_token(
    host: &Host,
    use_api_key: bool,
    refresh: bool,
) -> Result<ScriptToken, String> {
    if host.dry_run {
        println!("dry-run: get a bearer token (use_api_key: {use_api_key}, refresh: {refresh})");
        return Ok(ScriptToken {
            token: flyte_auth::Token::new(flyte_api::Secret::new("dry-run")),
        });
    }
    if !use_api_key {
        return Err(
            "interactive login is not supported; use an API key (call auth::ensure_api_key first)"
                .to_owned(),
        );
    }
    let plane = crate::control_plane::connect(host, WhenNone::Fail)?;
    let token = host.block_on(async {
        let tokens = plane.route_tokens(true).await?;
        tokens
            .get(refresh)
            .await
            .map_err(flyte_debug_client::DebugClientError::from)
    });
    match token.map_err(|e| e.to_string())? {
        Some((token, _)) => Ok(ScriptToken { token }),
        None => Err(format!(
            "no token for {}: call auth::ensure_api_key(name) first",
            plane.endpoint().base_url()
        )),
    }
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

/// What `auth::bearer_token` takes.
#[derive(serde::Deserialize)]
struct BearerOptions {
    use_api_key: Option<bool>,
    refresh: Option<bool>,
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut module = Module::new();
    let h = Arc::clone(host);
    // auth::ensure_api_key(name) -> ApiKey
    documented("ensure_api_key", &["name: String", "ApiKey"], "The stored API key named `name`, created on the control plane the first time (kept 0600 in\n~/.flyte/ssh-debug/api-key). Prints without its secret.")
        .set_into_module(&mut module, move |ctx: NativeCallContext<'_>, name: &str| -> ScriptResult<ScriptApiKey> {
            ensure_api_key(&h, name).map_err(|e| script_err(&ctx, e))
        },
    );
    let h = Arc::clone(host);
    // auth::bearer_token(opts) -> Token; opts: use_api_key (default true), refresh
    with_options!(
        &mut module,
        "auth",
        "bearer_token",
        () -> "Token",
        "A bearer token minted from the stored API key (cached in Flyte's bearer.json); prints\nredacted, `token.authorization()` gives the header value.\nopts: use_api_key (default true), refresh (mint a new one even if the cached one is valid).",
        move |ctx: &NativeCallContext<'_>, opts: &Map| -> ScriptResult<ScriptToken> {
            let opts: BearerOptions = options(ctx, "auth::bearer_token", opts)?;
            bearer_token(&h, opts.use_api_key.unwrap_or(true), opts.refresh.unwrap_or(false))
                .map_err(|e| script_err(ctx, e))
        },
    );
    module
}
