//! `debug::` — turn SSH debug on for a run and connect to it (the flow is flyte-debug-client's).

use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, Map, Module, NativeCallContext};
use serde::{Deserialize, Serialize};

use super::Host;
use super::opts::{
    ScriptResult, Text, documented, expand_home, options, script_err, seconds, to_map, with_options,
};
use crate::progress::Spinner;
use flyte_debug_client::{self as debug, ConnectOptions, Connection};

/// What `debug::connect` takes.
#[derive(Deserialize)]
struct ConnectOpts {
    action: Option<String>,
    user: Option<String>,
    identity_file: Option<String>,
    host_alias: Option<String>,
    use_api_key: Option<bool>,
    refresh_token: Option<bool>,
    headers_file: Option<String>,
    timeout: Option<rhai::INT>,
    poll_interval: Option<rhai::INT>,
    wait_for_route: Option<bool>,
    project: Option<String>,
    domain: Option<String>,
}

/// The `SSHDebug` map `debug::connect` returns: Flyte's fields, plus what `ssh::install` needs to
/// rebuild the block. A dry run leaves out what only the route can tell.
#[derive(Serialize)]
struct SshDebug {
    run_name: String,
    action_name: String,
    wss_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ssh_config: Option<String>,
    host_alias: String,
    headers_file: String,
    host_key_fingerprint: Option<String>,
    host_key: Option<String>,
    user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    identity_file: Option<String>,
    host_key_alias: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    known_hosts_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy_program: Option<String>,
    /// How the tunnel reaches the route (`--cacert`, `--proxy`, ...), when it needs telling.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tunnel_args: Vec<String>,
}

/// What `debug::launch_or_reuse` takes: a `runs::launch` spec without its name.
#[derive(Deserialize)]
struct DebugSpec {
    command: Option<Vec<String>>,
    env: Option<std::collections::BTreeMap<String, Text>>,
    project: Option<String>,
    domain: Option<String>,
}

/// What `debug::launch_or_reuse` returns.
#[derive(Serialize)]
struct Chosen {
    name: String,
    launched: bool,
    /// The reused run's phase; `()` when launched now.
    phase: Option<String>,
    ended: Vec<Ended>,
}

#[derive(Serialize)]
struct Ended {
    name: String,
    phase: String,
}

/// `debug::launch_or_reuse(name, spec)`: the one reuse policy (`runs::debug_run`) for a run of
/// `spec.command` in debug mode.
fn launch_or_reuse(
    ctx: &NativeCallContext<'_>,
    host: &Host,
    name: &str,
    spec: &Map,
) -> ScriptResult<Map> {
    const FUNC: &str = "debug::launch_or_reuse";
    let spec: DebugSpec = options(ctx, FUNC, spec)?;
    let (command, extra) = super::runs::command_and_env(ctx, FUNC, spec.command, spec.env)?;
    let scope = super::runs::run_scope(host, spec.project.as_deref(), spec.domain.as_deref());
    let pair =
        flyte_keys::ensure_keypair(host.layout().debug().path()).map_err(|e| script_err(ctx, e))?;
    let request_for = |id| {
        flyte_api::request::create_run(
            id,
            flyte_api::request::container_task(command.clone(), []),
            debug::launch_env(&pair.public_key, extra.clone()),
        )
    };
    let ended = |ended: Vec<(String, String)>| {
        ended
            .into_iter()
            .map(|(name, phase)| Ended { name, phase })
            .collect()
    };
    let failed = |e: &dyn std::fmt::Display| script_err(ctx, format!("{FUNC} {name:?}: {e}"));
    if host.dry_run {
        let choice = if super::runs::nowhere_to_look(host, name) {
            debug::runs::NameChoice {
                name: name.to_owned(),
                live_phase: None,
                ended: Vec::new(),
            }
        } else {
            let plane = super::runs::connect(host).map_err(|e| failed(&e))?;
            host.block_on(debug::runs::choose_debug_run(&plane, &scope, name))
                .map_err(|e| failed(&e))?
        };
        if choice.live_phase.is_none() {
            let id = scope.run_id(&choice.name);
            super::runs::dry_run_launch(&id, &request_for(id.clone()));
        }
        let chosen = Chosen {
            launched: choice.live_phase.is_none(),
            name: choice.name,
            phase: choice.live_phase,
            ended: ended(choice.ended),
        };
        return to_map(ctx, &chosen);
    }
    let plane = super::runs::connect(host).map_err(|e| failed(&e))?;
    let run = host
        .block_on(debug::runs::debug_run(&plane, &scope, name, |id| {
            std::future::ready(Ok(request_for(id)))
        }))
        .map_err(|e| failed(&e))?;
    let chosen = Chosen {
        name: run.name,
        launched: run.launched,
        phase: run.phase,
        ended: ended(run.ended),
    };
    to_map(ctx, &chosen)
}

fn connect_options(
    ctx: &NativeCallContext<'_>,
    host: &Host,
    opts: &Map,
) -> ScriptResult<ConnectOptions> {
    const FUNC: &str = "debug::connect";
    let o: ConnectOpts = options(ctx, FUNC, opts)?;
    let defaults = ConnectOptions::default();
    let options = ConnectOptions {
        proxy_program: crate::paths::proxy_program().map_err(|e| script_err(ctx, e.to_string()))?,
        scope: super::runs::run_scope(host, o.project.as_deref(), o.domain.as_deref()),
        action: o.action.unwrap_or(defaults.action),
        user: o.user.unwrap_or(defaults.user),
        host_alias: o.host_alias.unwrap_or(defaults.host_alias),
        identity_file: o.identity_file.map(|p| expand_home(&p, &host.home)),
        headers_file: o.headers_file.map(|p| expand_home(&p, &host.home)),
        use_api_key: o.use_api_key.unwrap_or(false),
        refresh_token: o.refresh_token.unwrap_or(false),
        wait_for_route: o.wait_for_route.unwrap_or(true),
        timeout: seconds(ctx, FUNC, "timeout", o.timeout)?.unwrap_or(defaults.timeout),
        // Zero means "as fast as is reasonable", not a busy loop.
        poll_interval: seconds(ctx, FUNC, "poll_interval", o.poll_interval)?
            .map_or(defaults.poll_interval, |v| v.max(Duration::from_millis(50))),
    };
    // A bad alias is refused before the control plane is asked anything.
    flyte_ssh_config::validate_alias(&options.host_alias).map_err(|e| script_err(ctx, e))?;
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

fn shown(path: &std::path::Path) -> String {
    path.display().to_string()
}

fn connection_map(connection: &Connection) -> Result<SshDebug, String> {
    let block = &connection.block;
    Ok(SshDebug {
        run_name: connection.run_name.clone(),
        action_name: connection.action_name.clone(),
        wss_url: connection.wss_url.clone(),
        ssh_config: Some(connection.ssh_config().map_err(|e| e.to_string())?),
        host_alias: block.alias.clone(),
        headers_file: shown(&connection.headers_file),
        host_key_fingerprint: connection.host_key_fingerprint.clone(),
        host_key: connection.host_key.clone(),
        user: block.user.clone(),
        identity_file: Some(shown(&block.identity_file)),
        host_key_alias: block.host_key_alias.clone(),
        known_hosts_file: Some(shown(&block.known_hosts_file)),
        proxy_program: Some(shown(&block.proxy_program)),
        tunnel_args: block.tunnel_args.clone(),
    })
}

/// What a dry run returns: the shape of a connection, with the route still unknown.
fn dry_run_map(host: &Host, run: &str, options: &ConnectOptions) -> SshDebug {
    SshDebug {
        run_name: run.to_owned(),
        action_name: options.action.clone(),
        wss_url: format!(
            "wss://dry-run.invalid/v1/debug/{}/{}/{run}/{}",
            options.scope.project, options.scope.domain, options.action
        ),
        ssh_config: None,
        host_alias: options.host_alias.clone(),
        headers_file: shown(
            &options
                .headers_file
                .clone()
                .unwrap_or_else(|| host.layout().debug().headers(&options.host_alias)),
        ),
        host_key_fingerprint: None,
        host_key: None,
        user: options.user.clone(),
        identity_file: None,
        host_key_alias: debug::host_key_alias(&options.scope.run_id(run), &options.action),
        known_hosts_file: None,
        proxy_program: None,
        tunnel_args: Vec::new(),
    }
}

fn connect(ctx: &NativeCallContext<'_>, host: &Host, run: &str, opts: &Map) -> ScriptResult<Map> {
    let options = connect_options(ctx, host, opts)?;
    if host.dry_run {
        println!(
            "dry-run: would wait for the debug route of run {run}/{} ({}/{}), write a token to its headers file and probe the route",
            options.action, options.scope.project, options.scope.domain
        );
        return to_map(ctx, &dry_run_map(host, run, &options));
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
    let connection = connected
        .and_then(|c| connection_map(&c))
        .map_err(|e| script_err(ctx, format!("debug::connect {run:?}: {e}")))?;
    to_map(ctx, &connection)
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
    with_options!(
        &mut module,
        "debug",
        "connect",
        (run: &str => "run: String") -> "Map",
        "Wait for the debug route of `run`, write a token for that route only into its headers file,\nprobe it, and return the SSHDebug map: run_name, action_name, wss_url, ssh_config,\nhost_alias, headers_file, host_key, host_key_fingerprint, user, identity_file,\nhost_key_alias, known_hosts_file, proxy_program.\nopts: action, user, identity_file, host_alias, use_api_key, refresh_token, headers_file,\ntimeout, poll_interval (seconds), wait_for_route, project, domain.",
        move |ctx: &NativeCallContext<'_>, run: &str, opts: &Map| connect(ctx, &h, run, opts),
    );
    let h = Arc::clone(host);
    documented(
        "launch_or_reuse",
        &["name: String", "spec: Map", "Map"],
        "A run of `spec.command` in debug mode under `name`, by the one reuse policy of debug runs\n(the same as `flyte-run debug`): a live run of `name` (or of `name-2` ... `name-50`) is\nreused, ended ones are passed over (run names stay taken), else the first free name is\nlaunched; a run another process launched meanwhile is reused. Returns\n#{ name, launched, phase (of a reused run, else ()), ended: [#{ name, phase }] }.\nspec: command (array), env (map, on top of debug::launch_env), project, domain.",
    )
    .set_into_module(
        &mut module,
        move |ctx: NativeCallContext<'_>, name: &str, spec: Map| {
            launch_or_reuse(&ctx, &h, name, &spec)
        },
    );
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
