//! `keys::` — the client key pair (flyte-keys).

use std::sync::Arc;

use rhai::{Dynamic, Map, Module, NativeCallContext};

use super::Host;
use super::opts::{ScriptResult, documented, script_err};

fn keypair_map(pair: flyte_keys::KeyPair) -> Map {
    let mut map = Map::new();
    map.insert(
        "private_key_path".into(),
        Dynamic::from(pair.private_key_path.display().to_string()),
    );
    map.insert("public_key".into(), Dynamic::from(pair.public_key));
    map.insert("fingerprint".into(), Dynamic::from(pair.fingerprint));
    map
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut module = Module::new();
    let debug_dir = host.layout().debug();
    // keys::ensure_keypair() -> #{ private_key_path, public_key, fingerprint }
    documented("ensure_keypair", &["Map"], "The ed25519 debug key pair in ~/.flyte/ssh-debug, created on first use:\n#{ private_key_path, public_key, fingerprint }.")
        .set_into_module(&mut module, move |ctx: NativeCallContext<'_>| -> ScriptResult<Map> {
            flyte_keys::ensure_keypair(debug_dir.path())
                .map(keypair_map)
                .map_err(|e| script_err(&ctx, e))
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
            flyte_keys::ensure_keypair(std::path::Path::new(dir))
                .map(keypair_map)
                .map_err(|e| script_err(&ctx, e))
        },
    );
    module
}
