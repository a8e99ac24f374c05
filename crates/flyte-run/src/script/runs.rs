//! `runs::` — launch, wait for, inspect and abort runs (flyte-api's `RunService`).

use std::sync::Arc;
use std::time::Duration;

use buffa::{EnumValue, Enumeration};
use flyte_api::ActionPhaseExt;
use flyte_api::idl::flyteidl2::common::RunIdentifier;
use flyte_api::idl::flyteidl2::core::task_template;
use flyte_api::idl::flyteidl2::workflow::{
    ActionDetails, CreateRunRequest, action_details, create_run_request,
};
use flyte_debug_client::runs::{self, existing_action};
use flyte_debug_client::{ControlPlane, DEFAULT_ACTION, RunScope};
use rhai::{Dynamic, Map, Module, NativeCallContext};
use serde::{Deserialize, Serialize};

use super::Host;
use super::opts::{
    ScriptResult, Text, documented, options, script_err, seconds, to_map, with_options,
};
use crate::control_plane::WhenNone;
use crate::progress::Spinner;

const DEFAULT_TIMEOUT: Duration = Duration::from_mins(5);
const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// The control plane (`runs::` starts the sandbox when nothing is configured).
pub(super) fn connect(host: &Host) -> Result<ControlPlane, String> {
    // A dry run reads from a control plane that is there, but never starts one.
    let when_none = if host.dry_run {
        WhenNone::Fail
    } else {
        WhenNone::StartSandbox
    };
    crate::control_plane::connect(host, when_none)
}

/// `project`/`domain`, or where Flyte's configuration sends runs (`task.project`,
/// `task.domain`), else Flyte's defaults; the org is always the configuration's (`task.org`).
pub(super) fn run_scope(host: &Host, project: Option<&str>, domain: Option<&str>) -> RunScope {
    let defaults = host.run_defaults();
    RunScope {
        project: project.map_or(defaults.project, str::to_owned),
        domain: domain.map_or(defaults.domain, str::to_owned),
        ..defaults
    }
}

/// The run `name` in [`run_scope`].
pub(super) fn run_id(
    host: &Host,
    name: &str,
    project: Option<&str>,
    domain: Option<&str>,
) -> RunIdentifier {
    run_scope(host, project, domain).run_id(name)
}

/// `runs::launch`'s spec.
#[derive(Deserialize)]
struct LaunchSpec {
    name: Option<String>,
    command: Option<Vec<String>>,
    env: Option<std::collections::BTreeMap<String, Text>>,
    project: Option<String>,
    domain: Option<String>,
}

/// What `runs::launch` returns.
#[derive(Serialize)]
pub(super) struct Launched {
    name: String,
    action: String,
    /// Where the run is shown; `()` under `--dry-run`.
    url: Option<String>,
}

/// What `runs::wait` takes.
#[derive(Deserialize)]
struct WaitOptions {
    phase: Option<String>,
    action: Option<String>,
    timeout: Option<rhai::INT>,
    poll_interval: Option<rhai::INT>,
    project: Option<String>,
    domain: Option<String>,
}

/// What `runs::details` and `runs::find` return.
#[derive(Serialize)]
struct Details {
    phase: String,
    terminal: bool,
    attempts: i64,
    error: Option<ErrorInfo>,
    abort_reason: Option<String>,
    log_links: Vec<LogLink>,
}

#[derive(Serialize)]
struct ErrorInfo {
    message: String,
    code: String,
    kind: String,
}

#[derive(Serialize)]
struct LogLink {
    uri: String,
    name: String,
    #[serde(rename = "type")]
    link_type: String,
    ready: bool,
}

/// A task's environment, name and value.
pub(super) type Env = Vec<(String, String)>;

/// The command and environment of a launch spec (`runs::launch`, `debug::launch_or_reuse`); an
/// env value may be any scalar (`#{ PORT: 8080 }`).
pub(super) fn command_and_env(
    ctx: &NativeCallContext<'_>,
    func: &str,
    command: Option<Vec<String>>,
    env: Option<std::collections::BTreeMap<String, Text>>,
) -> ScriptResult<(Vec<String>, Env)> {
    let command = command.ok_or_else(|| {
        script_err(
            ctx,
            format!(
                "{func}: the spec needs `command`, an array such as [\"python\", \"train.py\"]"
            ),
        )
    })?;
    let env = env
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| (key, value.0))
        .collect();
    Ok((command, env))
}

/// What `runs::launch` prints and returns under `--dry-run`.
pub(super) fn dry_run_launch(id: &RunIdentifier, request: &CreateRunRequest) -> Launched {
    // Names only: environment values may be secrets.
    let env_names: Vec<&str> = request
        .run_spec
        .as_option()
        .and_then(|s| s.envs.as_option())
        .iter()
        .flat_map(|e| &e.values)
        .map(|kv| kv.key.as_str())
        .collect();
    println!(
        "dry-run: CreateRun {}/{}/{} command {:?} env {:?}",
        id.project,
        id.domain,
        id.name,
        launched_command(request),
        env_names
    );
    Launched {
        name: id.name.clone(),
        action: DEFAULT_ACTION.to_owned(),
        url: None,
    }
}

/// `runs::launch(spec) -> #{ name, action, url }`
fn launch(ctx: &NativeCallContext<'_>, host: &Host, spec: &Map) -> ScriptResult<Map> {
    let spec: LaunchSpec = options(ctx, "runs::launch", spec)?;
    let name = spec
        .name
        .ok_or_else(|| script_err(ctx, "runs::launch: the spec needs `name`"))?;
    let (command, env) = command_and_env(ctx, "runs::launch", spec.command, spec.env)?;
    let (project, domain) = (spec.project, spec.domain);
    let id = run_id(host, &name, project.as_deref(), domain.as_deref());
    let request = flyte_api::request::create_run(
        id.clone(),
        flyte_api::request::container_task(command, []),
        env,
    );
    if host.dry_run {
        return to_map(ctx, &dry_run_launch(&id, &request));
    }
    let plane = connect(host).map_err(|e| script_err(ctx, e))?;
    let action_id = host
        .block_on(runs::launch(&plane, request))
        .map_err(|e| script_err(ctx, format!("runs::launch: {e}")))?;
    let endpoint = plane.endpoint();
    let launched = Launched {
        name: action_id.run.name.clone(),
        action: action_id.name.clone(),
        url: Some(format!(
            "{}/runs/{}/{}/{}",
            endpoint.base_url(),
            id.project,
            id.domain,
            id.name
        )),
    };
    to_map(ctx, &launched)
}

/// An enum value as scripts see it: its proto name, or its number when this version does not
/// know it.
fn enum_name<E: Enumeration>(value: EnumValue<E>) -> String {
    value
        .as_known()
        .map_or_else(|| value.to_i32().to_string(), |v| v.proto_name().to_owned())
}

/// The command a launch request runs (for the dry-run line).
fn launched_command(request: &CreateRunRequest) -> Vec<String> {
    let template = match &request.task {
        Some(create_run_request::Task::TaskSpec(spec)) => spec.task_template.as_option(),
        _ => None,
    };
    match template.and_then(|t| t.target.as_ref()) {
        Some(task_template::Target::Container(c)) => c.command.clone(),
        _ => Vec::new(),
    }
}

/// `runs::wait(run, opts) -> phase name`; opts: `phase` (default `RUNNING`), `action`, `timeout`,
/// `poll_interval` (seconds). Ends early when the run is over.
fn wait(ctx: &NativeCallContext<'_>, host: &Host, run: &str, opts: &Map) -> ScriptResult<String> {
    const FUNC: &str = "runs::wait";
    let opts: WaitOptions = options(ctx, FUNC, opts)?;
    let target = runs::phase_named(opts.phase.as_deref().unwrap_or("RUNNING"))
        .map_err(|e| script_err(ctx, format!("{FUNC}: {e}")))?;
    let (timeout, poll) = (
        host.bound(seconds(ctx, FUNC, "timeout", opts.timeout)?.unwrap_or(DEFAULT_TIMEOUT)),
        seconds(ctx, FUNC, "poll_interval", opts.poll_interval)?
            .unwrap_or(DEFAULT_POLL)
            .max(Duration::from_millis(50)),
    );
    let action = opts.action.unwrap_or_else(|| DEFAULT_ACTION.to_owned());
    let (project, domain) = (opts.project, opts.domain);
    let id = run_id(host, run, project.as_deref(), domain.as_deref());
    if host.dry_run {
        let target_name = target.short_name();
        println!("dry-run: wait for run {run} to be {target_name}");
        return Ok(target_name);
    }
    let plane = connect(host).map_err(|e| script_err(ctx, e))?;
    let spinner = Spinner::default();
    host.block_on_waiting(
        &spinner,
        runs::wait(&plane, &id, &action, target, timeout, poll, &spinner),
    )
    .map_err(|e| script_err(ctx, format!("runs::wait: {e}")))
}

/// `runs::details(run, action) -> #{ phase, terminal, attempts, error, abort_reason, log_links }`
fn details(ctx: &NativeCallContext<'_>, host: &Host, run: &str, action: &str) -> ScriptResult<Map> {
    let plane = connect(host).map_err(|e| script_err(ctx, e))?;
    let d = host
        .block_on(existing_action(
            &plane,
            &run_id(host, run, None, None),
            action,
        ))
        .map_err(|e| script_err(ctx, e))?;
    to_map(ctx, &details_of(&d))
}

/// Under `--dry-run` with nothing configured and no sandbox running there is nowhere to look
/// (a dry run never starts one): say so. Any other problem (a broken config file, a dead
/// endpoint) is still an error later.
pub(super) fn nowhere_to_look(host: &Host, run: &str) -> bool {
    let nowhere = host.dry_run
        && matches!(
            host.endpoint_source(),
            Ok(crate::config::EndpointSource::Sandbox(None))
        );
    if nowhere {
        println!("dry-run: no control plane is running; run {run} counts as not found");
    }
    nowhere
}

/// `runs::find(run) -> details map, or () when there is no such run`
fn find(ctx: &NativeCallContext<'_>, host: &Host, run: &str) -> ScriptResult<Dynamic> {
    if nowhere_to_look(host, run) {
        return Ok(Dynamic::UNIT);
    }
    let plane = connect(host).map_err(|e| script_err(ctx, e))?;
    let found = host
        .block_on(runs::action_details(
            &plane,
            &run_id(host, run, None, None),
            DEFAULT_ACTION,
        ))
        .map_err(|e| script_err(ctx, e))?;
    match found {
        Some(d) => Ok(to_map(ctx, &details_of(&d))?.into()),
        None => Ok(Dynamic::UNIT),
    }
}

fn details_of(d: &ActionDetails) -> Details {
    let (error, abort_reason) = match &d.result {
        Some(action_details::Result::ErrorInfo(e)) => (
            Some(ErrorInfo {
                message: e.message.clone(),
                code: e.code.clone(),
                kind: enum_name(e.kind),
            }),
            None,
        ),
        Some(action_details::Result::AbortInfo(a)) => (None, Some(a.reason.clone())),
        _ => (None, None),
    };
    Details {
        phase: d.status.phase.short_name(),
        terminal: d.status.phase.is_terminal(),
        attempts: i64::from(d.status.attempts),
        error,
        abort_reason,
        log_links: d
            .attempts
            .iter()
            .flat_map(|a| &a.log_info)
            .map(|l| LogLink {
                uri: l.uri.clone(),
                name: l.name.clone(),
                link_type: enum_name(l.link_type),
                ready: l.ready,
            })
            .collect(),
    }
}

fn abort(ctx: &NativeCallContext<'_>, host: &Host, run: &str) -> ScriptResult<()> {
    if host.dry_run {
        println!("dry-run: AbortRun {run}");
        return Ok(());
    }
    let plane = connect(host).map_err(|e| script_err(ctx, e))?;
    host.block_on(runs::abort(
        &plane,
        &run_id(host, run, None, None),
        "aborted by a flyte-run playbook",
    ))
    .map_err(|e| script_err(ctx, format!("runs::abort: {e}")))
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut module = Module::new();
    let h = Arc::clone(host);
    documented("launch", &["spec: Map", "Map"], "Launch a run of a command; returns #{ name, action, url }.\nspec: name, command (array), env (map), project, domain.")
        .set_into_module(&mut module, move |ctx: NativeCallContext<'_>, spec: Map| {
        launch(&ctx, &h, &spec)
    });
    let h = Arc::clone(host);
    with_options!(
        &mut module,
        "runs",
        "wait",
        (run: &str => "run: String") -> "String",
        "Wait until the run reaches a phase (or a later one, or ends); returns the phase.\nopts: phase (default RUNNING), action, timeout, poll_interval (seconds), project, domain.",
        move |ctx: &NativeCallContext<'_>, run: &str, opts: &Map| wait(ctx, &h, run, opts),
    );
    let h = Arc::clone(host);
    documented(
        "details",
        &["run: String", "action: String", "Map"],
        "One look at an action: #{ phase, terminal, attempts, error, abort_reason, log_links }.",
    )
    .set_into_module(
        &mut module,
        move |ctx: NativeCallContext<'_>, run: &str, action: &str| details(&ctx, &h, run, action),
    );
    let h = Arc::clone(host);
    documented(
        "details",
        &["run: String", "Map"],
        "`runs::details(run, \"a0\")`.",
    )
    .set_into_module(&mut module, move |ctx: NativeCallContext<'_>, run: &str| {
        details(&ctx, &h, run, DEFAULT_ACTION)
    });
    let h = Arc::clone(host);
    documented(
        "find",
        &["run: String", "?"],
        "The details of the run's root action, or () when there is no such run.",
    )
    .set_into_module(&mut module, move |ctx: NativeCallContext<'_>, run: &str| {
        find(&ctx, &h, run)
    });
    let h = Arc::clone(host);
    documented("abort", &["run: String", "()"], "Abort the run.")
        .set_into_module(&mut module, move |ctx: NativeCallContext<'_>, run: &str| {
            abort(&ctx, &h, run)
        });
    module
}
