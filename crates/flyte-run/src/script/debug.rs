//! `debug::` — turn SSH debug on for a run and connect to it (the flow is flyte-debug-client's).

use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, Map, Module, NativeCallContext};

use super::Host;
use super::opts::{Opts, ScriptResult, documented, script_err};
use crate::progress::Spinner;
use flyte_debug_client::{self as debug, ConnectOptions, Connection};

const CONNECT_OPTIONS: &[&str] = &[
    "action",
    "user",
    "identity_file",
    "host_alias",
    "use_api_key",
    "refresh_token",
    "headers_file",
    "timeout",
    "poll_interval",
    "wait_for_route",
    "project",
    "domain",
];

fn connect_options(
    ctx: &NativeCallContext<'_>,
    host: &Host,
    opts: &Map,
) -> ScriptResult<ConnectOptions> {
    let o = Opts::new(ctx, "debug::connect", opts, CONNECT_OPTIONS)?;
    let (project, domain) = host.run_defaults();
    let mut options = ConnectOptions {
        proxy_program: crate::paths::proxy_program().map_err(|e| script_err(ctx, e.to_string()))?,
        project,
        domain,
        ..ConnectOptions::default()
    };
    if let Some(v) = o.string("action")? {
        options.action = v;
    }
    if let Some(v) = o.string("user")? {
        options.user = v;
    }
    if let Some(v) = o.string("host_alias")? {
        options.host_alias = v;
    }
    if let Some(v) = o.string("project")? {
        options.project = v;
    }
    if let Some(v) = o.string("domain")? {
        options.domain = v;
    }
    options.identity_file = o.path("identity_file", &host.home)?;
    options.headers_file = o.path("headers_file", &host.home)?;
    options.use_api_key = o.bool("use_api_key")?.unwrap_or(false);
    options.refresh_token = o.bool("refresh_token")?.unwrap_or(false);
    options.wait_for_route = o.bool("wait_for_route")?.unwrap_or(true);
    if let Some(v) = o.seconds("timeout")? {
        options.timeout = v;
    }
    // A bad alias is refused before the control plane is asked anything.
    flyte_ssh_config::validate_alias(&options.host_alias).map_err(|e| script_err(ctx, e))?;
    if let Some(v) = o.seconds("poll_interval")? {
        // Zero means "as fast as is reasonable", not a busy loop.
        options.poll_interval = v.max(Duration::from_millis(50));
    }
    Ok(options)
}

/// `debug::host_key(uri)`: the key the route publishes, asked with a token for that route only
/// where the control plane mints one (our sandbox), else with the stored API key's token; either
/// goes only to the control plane's own host (see `debug::token_may_go_to`).
fn route_host_key(host: &Host, uri: &str) -> Result<Dynamic, String> {
    if host.dry_run {
        println!("dry-run: fetch the host key of the debug route {uri}");
        return Ok(Dynamic::UNIT);
    }
    let plane = crate::control_plane::connect(host, crate::control_plane::WhenNone::Fail)?;
    host.block_on(debug::fetch_route_host_key(&plane, uri))
        .map(|key| key.map_or(Dynamic::UNIT, Dynamic::from))
        .map_err(|e| e.to_string())
}

/// The `SSHDebug` map: Flyte's fields, plus what `ssh::install` needs to rebuild the block.
fn connection_map(connection: &Connection) -> Result<Map, String> {
    let block = &connection.block;
    let path = |p: &std::path::Path| Dynamic::from(p.display().to_string());
    let optional = |v: &Option<String>| v.clone().map_or(Dynamic::UNIT, Dynamic::from);
    let mut map = Map::new();
    map.insert("run_name".into(), connection.run_name.clone().into());
    map.insert("action_name".into(), connection.action_name.clone().into());
    map.insert("wss_url".into(), connection.wss_url.clone().into());
    map.insert(
        "ssh_config".into(),
        connection.ssh_config().map_err(|e| e.to_string())?.into(),
    );
    map.insert("host_alias".into(), block.alias.clone().into());
    map.insert("headers_file".into(), path(&connection.headers_file));
    map.insert(
        "host_key_fingerprint".into(),
        optional(&connection.host_key_fingerprint),
    );
    map.insert("host_key".into(), optional(&connection.host_key));
    map.insert("user".into(), block.user.clone().into());
    map.insert("identity_file".into(), path(&block.identity_file));
    map.insert("host_key_alias".into(), block.host_key_alias.clone().into());
    map.insert("known_hosts_file".into(), path(&block.known_hosts_file));
    map.insert("proxy_program".into(), path(&block.proxy_program));
    Ok(map)
}

/// What a dry run returns: the shape of a connection, with the route still unknown.
fn dry_run_map(host: &Host, run: &str, options: &ConnectOptions) -> Map {
    let debug_dir = host.layout().debug();
    let mut map = Map::new();
    let mut put = |k: &str, v: String| {
        map.insert(k.into(), v.into());
    };
    put("run_name", run.to_owned());
    put("action_name", options.action.clone());
    put(
        "wss_url",
        format!(
            "wss://dry-run.invalid/v1/debug/{}/{}/{run}/{}",
            options.project, options.domain, options.action
        ),
    );
    put("host_alias", options.host_alias.clone());
    put(
        "host_key_alias",
        debug::host_key_alias(
            &flyte_api::request::run_id(&options.project, &options.domain, run),
            &options.action,
        ),
    );
    put("user", options.user.clone());
    put(
        "headers_file",
        options
            .headers_file
            .clone()
            .unwrap_or_else(|| debug_dir.headers(&options.host_alias))
            .display()
            .to_string(),
    );
    map.insert("host_key".into(), Dynamic::UNIT);
    map.insert("host_key_fingerprint".into(), Dynamic::UNIT);
    map
}

fn connect(ctx: &NativeCallContext<'_>, host: &Host, run: &str, opts: &Map) -> ScriptResult<Map> {
    let options = connect_options(ctx, host, opts)?;
    if host.dry_run {
        println!(
            "dry-run: would wait for the debug route of run {run}/{} ({}/{}), write a token to its headers file and probe the route",
            options.action, options.project, options.domain
        );
        return Ok(dry_run_map(host, run, &options));
    }
    let connected = crate::control_plane::connect(host, crate::control_plane::WhenNone::Fail)
        .and_then(|plane| {
            // Cut to what is left of --timeout now, after the control plane answered, so the
            // wait cannot outlive the playbook's limit.
            let options = ConnectOptions {
                timeout: host.bound(options.timeout),
                ..options
            };
            let spinner = Spinner::default();
            host.block_on_waiting(&spinner, debug::connect(&plane, run, &options, &spinner))
                .map_err(|e| e.to_string())
        });
    connected
        .and_then(|c| connection_map(&c))
        .map_err(|e| script_err(ctx, format!("debug::connect {run:?}: {e}")))
}

fn launch_env(ctx: &NativeCallContext<'_>, host: &Host, extra: Map) -> ScriptResult<Map> {
    let pair =
        flyte_keys::ensure_keypair(host.layout().debug().path()).map_err(|e| script_err(ctx, e))?;
    let extra = extra
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<Vec<_>>();
    Ok(debug::launch_env(&pair.public_key, extra)
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect())
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut module = Module::new();
    let h = Arc::clone(host);
    // debug::connect(run, opts) -> SSHDebug map
    documented("connect", &["run: String", "opts: Map", "Map"], "Wait for the debug route of `run`, write a token for that route only into its headers file,\nprobe it, and return the SSHDebug map: run_name, action_name, wss_url, ssh_config,\nhost_alias, headers_file, host_key, host_key_fingerprint, user, identity_file,\nhost_key_alias, known_hosts_file, proxy_program.\nopts: action, user, identity_file, host_alias, use_api_key, refresh_token, headers_file,\ntimeout, poll_interval (seconds), wait_for_route, project, domain.")
        .set_into_module(&mut module, move |ctx: NativeCallContext<'_>, run: &str, opts: Map| connect(&ctx, &h, run, &opts),
    );
    let h = Arc::clone(host);
    documented(
        "connect",
        &["run: String", "Map"],
        "`debug::connect(run, #{})`.",
    )
    .set_into_module(&mut module, move |ctx: NativeCallContext<'_>, run: &str| {
        connect(&ctx, &h, run, &Map::new())
    });
    let h = Arc::clone(host);
    // debug::launch_env(extra) -> map of env vars that turn SSH debug on
    documented("launch_env", &["extra: Map", "Map"], "The environment that turns SSH debug on for a run (`_F_E_SSH`, `_F_SSH_PK` with this\nmachine's debug public key, `_F_E_VS`), with `extra` on top: pass it as `env` to runs::launch.")
        .set_into_module(&mut module, move |ctx: NativeCallContext<'_>, extra: Map| launch_env(&ctx, &h, extra),
    );
    let h = Arc::clone(host);
    documented("launch_env", &["Map"], "`debug::launch_env(#{})`.")
        .set_into_module(&mut module, move |ctx: NativeCallContext<'_>| {
            launch_env(&ctx, &h, Map::new())
        });
    // debug::host_key(uri) -> the SSH host key the debug route publishes, or () when it publishes
    // none (Flyte's own pod side); fetched with the API key's bearer token.
    let h = Arc::clone(host);
    documented("host_key", &["uri: String", "?"], "The SSH host key the debug route at `uri` publishes (one OpenSSH line), or () when it\npublishes none (Flyte's own pod side). The token goes only to the control plane's own host.")
        .set_into_module(&mut module, move |ctx: NativeCallContext<'_>, uri: &str| -> ScriptResult<Dynamic> {
            route_host_key(&h, uri).map_err(|e| script_err(&ctx, e))
        },
    );
    // debug::run_name(run) -> the name `flyte-run debug RUN` relaunches RUN under
    documented(
        "run_name",
        &["run: String", "String"],
        "The name `flyte-run debug RUN` relaunches `run` under, derived as Flyte derives it.",
    )
    .set_into_module(
        &mut module,
        |ctx: NativeCallContext<'_>, run: &str| -> ScriptResult<String> {
            debug::debug_run_name(run).map_err(|e| script_err(&ctx, e.to_string()))
        },
    );
    module
}
