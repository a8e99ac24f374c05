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
use flyte_debug_client::{ControlPlane, DEFAULT_ACTION};
use rhai::{Array, Dynamic, Map, Module, NativeCallContext};

use super::Host;
use super::opts::{Opts, ScriptResult, documented, script_err, string_array};
use crate::control_plane::WhenNone;
use crate::progress::Spinner;

const DEFAULT_TIMEOUT: Duration = Duration::from_mins(5);
const DEFAULT_POLL: Duration = Duration::from_secs(1);

/// The control plane (`runs::` starts the sandbox when nothing is configured).
fn connect(host: &Host) -> Result<ControlPlane, String> {
    // A dry run reads from a control plane that is there, but never starts one.
    let when_none = if host.dry_run {
        WhenNone::Fail
    } else {
        WhenNone::StartSandbox
    };
    crate::control_plane::connect(host, when_none)
}

/// The run `name` in `project`/`domain`, or where Flyte's configuration sends runs
/// (`task.project`, `task.domain`), else Flyte's defaults.
fn run_id(host: &Host, name: &str, project: Option<&str>, domain: Option<&str>) -> RunIdentifier {
    let (default_project, default_domain) = host.run_defaults();
    flyte_api::request::run_id(
        project.unwrap_or(&default_project),
        domain.unwrap_or(&default_domain),
        name,
    )
}

/// What `runs::launch` prints and returns under `--dry-run`.
fn dry_run_launch(id: &RunIdentifier, request: &CreateRunRequest) -> Map {
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
    let mut run = Map::new();
    run.insert("name".into(), id.name.clone().into());
    run.insert("action".into(), DEFAULT_ACTION.into());
    run.insert("url".into(), Dynamic::UNIT);
    run
}

/// `runs::launch(spec) -> #{ name, action, url }`
fn launch(ctx: &NativeCallContext<'_>, host: &Host, spec: &Map) -> ScriptResult<Map> {
    let opts = Opts::new(
        ctx,
        "runs::launch",
        spec,
        &["name", "command", "env", "project", "domain"],
    )?;
    let name = opts
        .string("name")?
        .ok_or_else(|| script_err(ctx, "runs::launch: the spec needs `name`"))?;
    let command = match spec.get("command").filter(|v| !v.is_unit()) {
        Some(v) => string_array(
            ctx,
            "runs::launch",
            "the items of `command`",
            v.clone().into_array().map_err(|t| {
                script_err(
                    ctx,
                    format!("runs::launch: `command` must be an array, not {t}"),
                )
            })?,
        )?,
        None => {
            return Err(script_err(
                ctx,
                "runs::launch: the spec needs `command`, an array such as [\"python\", \"train.py\"]",
            ));
        }
    };
    let mut env = Vec::new();
    if let Some(v) = spec.get("env").filter(|v| !v.is_unit()) {
        let map = v
            .clone()
            .try_cast::<Map>()
            .ok_or_else(|| script_err(ctx, "runs::launch: `env` must be a map"))?;
        for (key, value) in map {
            env.push((key.to_string(), value.to_string()));
        }
    }
    let (project, domain) = (opts.string("project")?, opts.string("domain")?);
    let id = run_id(host, &name, project.as_deref(), domain.as_deref());
    let request = flyte_api::request::create_run(
        id.clone(),
        flyte_api::request::container_task(command, []),
        env,
    );
    if host.dry_run {
        return Ok(dry_run_launch(&id, &request));
    }
    let plane = connect(host).map_err(|e| script_err(ctx, e))?;
    let action_id = host
        .block_on(runs::launch(&plane, request))
        .map_err(|e| script_err(ctx, format!("runs::launch: {e}")))?;
    let endpoint = plane.endpoint();
    let mut run = Map::new();
    run.insert("name".into(), action_id.run.name.clone().into());
    run.insert("action".into(), action_id.name.clone().into());
    run.insert(
        "url".into(),
        format!(
            "{}/runs/{}/{}/{}",
            endpoint.base_url(),
            id.project,
            id.domain,
            id.name
        )
        .into(),
    );
    Ok(run)
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
    let opts = Opts::new(
        ctx,
        "runs::wait",
        opts,
        &[
            "phase",
            "action",
            "timeout",
            "poll_interval",
            "project",
            "domain",
        ],
    )?;
    let target = runs::phase_named(opts.string("phase")?.as_deref().unwrap_or("RUNNING"))
        .map_err(|e| script_err(ctx, format!("runs::wait: {e}")))?;
    let (timeout, poll) = (
        host.bound(opts.seconds("timeout")?.unwrap_or(DEFAULT_TIMEOUT)),
        opts.seconds("poll_interval")?
            .unwrap_or(DEFAULT_POLL)
            .max(Duration::from_millis(50)),
    );
    let action = opts
        .string("action")?
        .unwrap_or_else(|| DEFAULT_ACTION.to_owned());
    let (project, domain) = (opts.string("project")?, opts.string("domain")?);
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
    Ok(details_map(&d))
}

/// `runs::find(run) -> details map, or () when there is no such run`
fn find(ctx: &NativeCallContext<'_>, host: &Host, run: &str) -> ScriptResult<Dynamic> {
    // A dry run with nothing configured and no sandbox running has nowhere to look (it never
    // starts one); any other problem (a broken config file, a dead endpoint) is still an error.
    if host.dry_run
        && matches!(
            host.endpoint_source(),
            Ok(crate::config::EndpointSource::Sandbox(None))
        )
    {
        println!("dry-run: no control plane is running; run {run} counts as not found");
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
    Ok(found.map_or(Dynamic::UNIT, |d| details_map(&d).into()))
}

fn details_map(d: &ActionDetails) -> Map {
    let mut map = Map::new();
    map.insert("phase".into(), d.status.phase.short_name().into());
    map.insert("terminal".into(), d.status.phase.is_terminal().into());
    map.insert(
        "attempts".into(),
        Dynamic::from(i64::from(d.status.attempts)),
    );
    let (error, abort_reason) = match &d.result {
        Some(action_details::Result::ErrorInfo(e)) => {
            let mut error = Map::new();
            error.insert("message".into(), e.message.clone().into());
            error.insert("code".into(), e.code.clone().into());
            error.insert("kind".into(), enum_name(e.kind).into());
            (error.into(), Dynamic::UNIT)
        }
        Some(action_details::Result::AbortInfo(a)) => (Dynamic::UNIT, a.reason.clone().into()),
        _ => (Dynamic::UNIT, Dynamic::UNIT),
    };
    map.insert("error".into(), error);
    map.insert("abort_reason".into(), abort_reason);
    let links: Array = d
        .attempts
        .iter()
        .flat_map(|a| &a.log_info)
        .map(|l| {
            let mut link = Map::new();
            link.insert("uri".into(), l.uri.clone().into());
            link.insert("name".into(), l.name.clone().into());
            link.insert("type".into(), enum_name(l.link_type).into());
            link.insert("ready".into(), l.ready.into());
            Dynamic::from(link)
        })
        .collect();
    map.insert("log_links".into(), links.into());
    map
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
    documented("wait", &["run: String", "opts: Map", "String"], "Wait until the run reaches a phase (or a later one, or ends); returns the phase.\nopts: phase (default RUNNING), action, timeout, poll_interval (seconds), project, domain.")
        .set_into_module(&mut module, move |ctx: NativeCallContext<'_>, run: &str, opts: Map| wait(&ctx, &h, run, &opts),
    );
    let h = Arc::clone(host);
    documented(
        "wait",
        &["run: String", "String"],
        "`runs::wait(run, #{})`.",
    )
    .set_into_module(&mut module, move |ctx: NativeCallContext<'_>, run: &str| {
        wait(&ctx, &h, run, &Map::new())
    });
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
