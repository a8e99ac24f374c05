//! `ssh::` — render, install and remove debug Host blocks (flyte-ssh-config).

use std::path::PathBuf;
use std::sync::Arc;

use flyte_ssh_config::{DebugHost, EditOptions, HostKeyCheck, Outcome};
use rhai::{Dynamic, Map, Module, NativeCallContext};

use super::Host;
use super::opts::{Opts, ScriptResult, script_err};

const INFO_KEYS: &[&str] = &[
    "host_alias",
    "user",
    "identity_file",
    "wss_url",
    "headers_file",
    "host_key",
    "host_key_alias",
    "known_hosts_file",
    "proxy_program",
    // Fields of the SSHDebug map that these functions read or pass over.
    "run_name",
    "action_name",
    "ssh_config",
    "host_key_fingerprint",
];

/// The block described by an SSHDebug-shaped map, with defaults for what it leaves out.
fn debug_host(
    ctx: &NativeCallContext<'_>,
    func: &'static str,
    host: &Host,
    info: &Map,
) -> ScriptResult<(DebugHost, Option<String>)> {
    let info = Opts::new(ctx, func, info, INFO_KEYS)?;
    let required = |key: &str| -> ScriptResult<String> {
        info.string(key)?
            .ok_or_else(|| script_err(ctx, format!("{func}: the info map needs `{key}`")))
    };
    let alias = info
        .string("host_alias")?
        .unwrap_or_else(|| "flyte-debug".to_owned());
    let debug_dir = flyte_keys::default_dir(&host.home);
    let host_key_alias = match (info.string("host_key_alias")?, info.string("run_name")?) {
        (Some(given), _) => given,
        // One name per run and action: a new debug pod has a new host key.
        (None, Some(run)) => format!(
            "{run}.{}.flyte-debug",
            info.string("action_name")?
                .unwrap_or_else(|| "a0".to_owned())
        ),
        (None, None) => format!("{alias}.flyte-debug"),
    };
    let proxy_program = match info.string("proxy_program")? {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .map_err(|e| script_err(ctx, format!("cannot find the flyte-run binary: {e}")))?,
    };
    let host_key = info.string("host_key")?;
    let block = DebugHost {
        user: info.string("user")?.unwrap_or_else(|| "root".to_owned()),
        identity_file: info
            .string("identity_file")?
            .map_or_else(|| debug_dir.join(flyte_keys::KEY_FILE_NAME), PathBuf::from),
        proxy_program,
        wss_url: required("wss_url")?,
        headers_file: info
            .string("headers_file")?
            .map_or_else(|| debug_dir.join(format!("{alias}.headers")), PathBuf::from),
        host_key_alias,
        known_hosts_file: info
            .string("known_hosts_file")?
            .map_or_else(|| debug_dir.join("known_hosts"), PathBuf::from),
        host_key_check: if host_key.is_some() {
            HostKeyCheck::Pinned
        } else {
            HostKeyCheck::LearnOnFirstUse
        },
        alias,
    };
    Ok((block, host_key))
}

fn edit_options(
    ctx: &NativeCallContext<'_>,
    host: &Host,
    func: &'static str,
    opts: &Map,
) -> ScriptResult<EditOptions> {
    let opts = Opts::new(ctx, func, opts, &["config_path", "dry_run"])?;
    Ok(EditOptions {
        config_path: opts
            .string("config_path")?
            .map_or_else(|| host.home.join(".ssh").join("config"), PathBuf::from),
        dry_run: host.dry_run || opts.bool("dry_run")?.unwrap_or(false),
    })
}

/// What scripts get back from install and remove; a dry run also prints its diff.
fn outcome_map(outcome: Outcome) -> Map {
    let mut map = Map::new();
    let (path, changed, diff) = match outcome {
        Outcome::Written { path } => (path, true, None),
        Outcome::Unchanged { path } | Outcome::NotPresent { path } => (path, false, None),
        Outcome::WouldChange { path, diff } => {
            print!("{diff}");
            (path, false, Some(diff))
        }
    };
    map.insert("path".into(), Dynamic::from(path.display().to_string()));
    map.insert("changed".into(), Dynamic::from(changed));
    map.insert("diff".into(), diff.map_or(Dynamic::UNIT, Dynamic::from));
    map
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut module = Module::new();

    let h = Arc::clone(host);
    // ssh::render(info) -> the Host block as text
    module.set_native_fn(
        "render",
        move |ctx: NativeCallContext<'_>, info: Map| -> ScriptResult<String> {
            let (block, _) = debug_host(&ctx, "ssh::render", &h, &info)?;
            block.render().map_err(|e| script_err(&ctx, e))
        },
    );

    let h = Arc::clone(host);
    // ssh::install(info, opts) -> #{ path, changed, diff }
    let install = move |ctx: NativeCallContext<'_>, info: Map, opts: Map| -> ScriptResult<Map> {
        let (block, host_key) = debug_host(&ctx, "ssh::install", &h, &info)?;
        let options = edit_options(&ctx, &h, "ssh::install", &opts)?;
        let lines = block.lines().map_err(|e| script_err(&ctx, e))?;
        let outcome = flyte_ssh_config::install(&options, &block.alias, &lines)
            .map_err(|e| script_err(&ctx, e))?;
        if !options.dry_run {
            // Pin the published key, or forget a stale one so accept-new can learn the new pod's.
            match host_key {
                Some(key) => flyte_ssh_config::pin_host_key(
                    &block.known_hosts_file,
                    &block.host_key_alias,
                    &key,
                ),
                None => flyte_ssh_config::forget_host_key(
                    &block.known_hosts_file,
                    &block.host_key_alias,
                ),
            }
            .map_err(|e| script_err(&ctx, e))?;
        }
        Ok(outcome_map(outcome))
    };
    let install_no_opts = install.clone();
    module.set_native_fn("install", install);
    module.set_native_fn("install", move |ctx: NativeCallContext<'_>, info: Map| {
        install_no_opts(ctx, info, Map::new())
    });

    let h = Arc::clone(host);
    // ssh::remove(alias, opts) -> #{ path, changed, diff }
    let remove = move |ctx: NativeCallContext<'_>, alias: &str, opts: Map| -> ScriptResult<Map> {
        let options = edit_options(&ctx, &h, "ssh::remove", &opts)?;
        flyte_ssh_config::remove(&options, alias)
            .map(outcome_map)
            .map_err(|e| script_err(&ctx, e))
    };
    let remove_no_opts = remove.clone();
    module.set_native_fn("remove", remove);
    module.set_native_fn("remove", move |ctx: NativeCallContext<'_>, alias: &str| {
        remove_no_opts(ctx, alias, Map::new())
    });
    module
}
