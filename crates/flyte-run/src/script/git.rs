//! `git::` — clone with an SSH git connection (flyte-connections).

use std::sync::Arc;

use flyte_connections::{Connection, GitInit, HostKeyPolicy};
use rhai::{Dynamic, Map, Module, NativeCallContext};
use serde::{Deserialize, Serialize};

use super::Host;
use super::opts::{ScriptResult, Words, expand_home, options, script_err, to_map, with_options};

/// What `git::clone` takes.
#[derive(Deserialize)]
struct CloneOptions {
    revision: Option<String>,
    url: Option<String>,
    flags: Option<Words>,
    learn_host_key: Option<bool>,
    known_hosts: Option<String>,
}

/// What `git::clone` returns.
#[derive(Serialize)]
struct Cloned {
    /// Empty under `--dry-run`.
    commit: String,
    path: String,
}

/// `git::clone(connection, dest, opts) -> #{ commit, path }`; opts: revision, url, flags,
/// `learn_host_key` (trust the first key seen and keep it in `known_hosts`, by default
/// `~/.flyte/git_known_hosts`), `known_hosts` (another file to pin from).
fn clone(
    ctx: &NativeCallContext<'_>,
    host: &Host,
    connection: &Dynamic,
    dest: &str,
    opts: &Map,
) -> ScriptResult<Map> {
    let connection: Connection = rhai::serde::from_dynamic(connection).map_err(|e| {
        script_err(
            ctx,
            format!(
                "git::clone: the connection map: {e} (give name, kind, schema.url, secret.name, secret.mountPath)"
            ),
        )
    })?;
    let o: CloneOptions = options(ctx, "git::clone", opts)?;
    let init = GitInit {
        url: o.url,
        revision: o.revision,
        flags: o.flags.unwrap_or_default().0,
    };
    let given = o.known_hosts.map(|p| expand_home(&p, &host.home));
    let policy = if o.learn_host_key.unwrap_or(false) {
        // Not the secret's own known_hosts: a mounted secret is read-only, and a key ssh cannot
        // record is a key it never checks.
        let known_hosts = if let Some(path) = given {
            path
        } else {
            let layout = host.layout();
            let dir = layout.flyte_dir();
            flyte_fs::create_private_dir(&dir)
                .map_err(|e| script_err(ctx, format!("git::clone: {}: {e}", dir.display())))?;
            layout.git_known_hosts()
        };
        HostKeyPolicy::LearnFirst { known_hosts }
    } else {
        HostKeyPolicy::Pinned {
            known_hosts: given.unwrap_or_else(|| connection.known_hosts_path()),
        }
    };
    let dest = expand_home(dest, &host.home);
    if host.dry_run {
        let url = init
            .url
            .as_deref()
            .or_else(|| connection.url())
            .unwrap_or("<no url>");
        let steps = flyte_connections::plan(url, &dest, &init).map_err(|e| script_err(ctx, e))?;
        for step in steps {
            println!("dry-run: {step}");
        }
        let cloned = Cloned {
            commit: String::new(),
            path: dest.display().to_string(),
        };
        return to_map(ctx, &cloned);
    }
    let cloned = flyte_connections::clone(&connection, &dest, &init, &policy)
        .map_err(|e| script_err(ctx, format!("git::clone: {e}")))?;
    let cloned = Cloned {
        commit: cloned.commit,
        path: cloned.path.display().to_string(),
    };
    to_map(ctx, &cloned)
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut module = Module::new();
    let h = Arc::clone(host);
    with_options!(
        &mut module,
        "git",
        "clone",
        (connection: Dynamic => "connection: ?", dest: &str => "dest: String") -> "Map",
        "Clone with an SSH git connection (a map in Polyaxon's shape, or its JSON) into the empty\ndirectory `dest`; returns #{ commit, path }.\nopts: revision, url, flags (array), learn_host_key, known_hosts.",
        move |ctx: &NativeCallContext<'_>, connection: Dynamic, dest: &str, opts: &Map| {
            clone(ctx, &h, &connection, dest, opts)
        },
    );
    module
}
