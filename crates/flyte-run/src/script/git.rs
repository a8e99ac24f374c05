//! `git::` — clone with an SSH git connection (flyte-connections).

use std::sync::Arc;

use flyte_connections::{Connection, GitInit, HostKeyPolicy};
use rhai::{Dynamic, Map, Module, NativeCallContext};

use super::Host;
use super::opts::{Opts, ScriptResult, documented, script_err, string_array};

fn strings(ctx: &NativeCallContext<'_>, value: &Dynamic) -> ScriptResult<Vec<String>> {
    if value.is_string() {
        return Ok(vec![value.to_string()]);
    }
    let array = value.clone().into_array().map_err(|t| {
        script_err(
            ctx,
            format!("git::clone: `flags` must be an array of strings, not {t}"),
        )
    })?;
    string_array(ctx, "git::clone", "flags", array)
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
    let o = Opts::new(
        ctx,
        "git::clone",
        opts,
        &["revision", "url", "flags", "learn_host_key", "known_hosts"],
    )?;
    let init = GitInit {
        url: o.string("url")?,
        revision: o.string("revision")?,
        flags: match opts.get("flags").filter(|v| !v.is_unit()) {
            Some(v) => strings(ctx, v)?,
            None => Vec::new(),
        },
    };
    let given = o.path("known_hosts", &host.home)?;
    let policy = if o.bool("learn_host_key")?.unwrap_or(false) {
        // Not the secret's own known_hosts: a mounted secret is read-only, and a key ssh cannot
        // record is a key it never checks.
        let known_hosts = if let Some(path) = given {
            path
        } else {
            let layout = host.layout();
            let dir = layout.flyte_dir();
            std::fs::create_dir_all(&dir)
                .map_err(|e| script_err(ctx, format!("git::clone: {}: {e}", dir.display())))?;
            layout.git_known_hosts()
        };
        HostKeyPolicy::LearnFirst { known_hosts }
    } else {
        HostKeyPolicy::Pinned {
            known_hosts: given.unwrap_or_else(|| connection.known_hosts_path()),
        }
    };
    let dest = match dest.strip_prefix("~/") {
        Some(rest) => host.home.join(rest),
        None => std::path::PathBuf::from(dest),
    };
    let mut map = Map::new();
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
        map.insert("commit".into(), Dynamic::from(String::new()));
        map.insert("path".into(), dest.display().to_string().into());
        return Ok(map);
    }
    let cloned = flyte_connections::clone(&connection, &dest, &init, &policy)
        .map_err(|e| script_err(ctx, format!("git::clone: {e}")))?;
    map.insert("commit".into(), cloned.commit.into());
    map.insert("path".into(), cloned.path.display().to_string().into());
    Ok(map)
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut module = Module::new();
    let h = Arc::clone(host);
    documented("clone", &["connection: ?", "dest: String", "opts: Map", "Map"], "Clone with an SSH git connection (a map in Polyaxon's shape, or its JSON) into the empty\ndirectory `dest`; returns #{ commit, path }.\nopts: revision, url, flags (array), learn_host_key, known_hosts.")
        .set_into_module(&mut module, move |ctx: NativeCallContext<'_>, connection: Dynamic, dest: &str, opts: Map| {
            clone(&ctx, &h, &connection, dest, &opts)
        },
    );
    let h = Arc::clone(host);
    documented(
        "clone",
        &["connection: ?", "dest: String", "Map"],
        "`git::clone(connection, dest, #{})`.",
    )
    .set_into_module(
        &mut module,
        move |ctx: NativeCallContext<'_>, connection: Dynamic, dest: &str| {
            clone(&ctx, &h, &connection, dest, &Map::new())
        },
    );
    module
}
