//! `keys::` — the client key pair (flyte-keys).

use std::sync::Arc;

use rhai::{Map, Module, NativeCallContext};

use super::Host;
use super::opts::{ScriptResult, documented, script_err, to_map};

/// What `keys::ensure_keypair` returns.
#[derive(serde::Serialize)]
struct KeyPair {
    private_key_path: String,
    public_key: String,
    fingerprint: String,
}

fn keypair_map(ctx: &NativeCallContext<'_>, pair: flyte_keys::KeyPair) -> ScriptResult<Map> {
    let pair = KeyPair {
        private_key_path: pair.private_key_path.display().to_string(),
        public_key: pair.public_key,
        fingerprint: pair.fingerprint,
    };
    to_map(ctx, &pair)
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut module = Module::new();
    let debug_dir = host.layout().debug();
    // keys::ensure_keypair() -> #{ private_key_path, public_key, fingerprint }
    documented("ensure_keypair", &["Map"], "The ed25519 debug key pair in ~/.flyte/ssh-debug, created on first use:\n#{ private_key_path, public_key, fingerprint }.")
        .set_into_module(&mut module, move |ctx: NativeCallContext<'_>| -> ScriptResult<Map> {
            let pair = flyte_keys::ensure_keypair(debug_dir.path()).map_err(|e| script_err(&ctx, e))?;
            keypair_map(&ctx, pair)
        },
    );
    // keys::ensure_keypair(dir): the same, in another directory.
    documented(
        "ensure_keypair",
        &["dir: String", "Map"],
        "The same, in another directory.",
    )
    .set_into_module(
        &mut module,
        |ctx: NativeCallContext<'_>, dir: &str| -> ScriptResult<Map> {
            let pair = flyte_keys::ensure_keypair(std::path::Path::new(dir))
                .map_err(|e| script_err(&ctx, e))?;
            keypair_map(&ctx, pair)
        },
    );
    module
}
