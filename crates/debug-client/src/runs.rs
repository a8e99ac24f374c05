//! Runs on the control plane: launch one in debug mode, relaunch an existing run's task under
//! its debug name, look at an action, wait for a phase, abort.

use std::time::Duration;

use buffa::{EnumValue, MessageField};
use flyte_api::idl::flyteidl2::common::{ActionIdentifier, ActionPhase, RunIdentifier};
use flyte_api::idl::flyteidl2::core::KeyValuePair;
use flyte_api::idl::flyteidl2::task::{Envs, RunSpec};
use flyte_api::idl::flyteidl2::workflow::{
    self, AbortRunRequest, ActionDetails, CreateRunRequest, GetRunDetailsRequest, action_details,
};
use flyte_api::request::RunScope;
use flyte_api::{ActionPhaseExt, Answer, Code};
use tokio::time::Instant;

use crate::progress::{Progress, Waiting};
use crate::{ControlPlane, DebugClientError, Result};

/// The run service of `plane`.
fn run_service(plane: &ControlPlane) -> Result<workflow::RunServiceClient<flyte_api::Transport>> {
    Ok(plane.client().connect(workflow::RunServiceClient::new)?)
}

/// One look at an action. `Ok(None)`: no such run or action.
pub async fn action_details(
    plane: &ControlPlane,
    run: &RunIdentifier,
    action: &str,
) -> Result<Option<ActionDetails>> {
    let request = workflow::GetActionDetailsRequest {
        action_id: MessageField::some(ActionIdentifier {
            run: MessageField::some(run.clone()),
            name: action.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    };
    match run_service(plane)?
        .get_action_details(request)
        .await
        .owned()
    {
        Ok(response) => Ok(Some(response.details.into_option().unwrap_or_default())),
        Err(e) if e.code == Code::NotFound => Ok(None),
        Err(source) => Err(DebugClientError::Run {
            run: run.name.clone(),
            source,
        }),
    }
}

/// One look at an action that must exist.
pub async fn existing_action(
    plane: &ControlPlane,
    run: &RunIdentifier,
    action: &str,
) -> Result<ActionDetails> {
    action_details(plane, run, action)
        .await?
        .ok_or_else(|| DebugClientError::NoSuchAction {
            run: run.name.clone(),
            action: action.to_owned(),
            project: run.project.clone(),
            domain: run.domain.clone(),
        })
}

/// Create the run `request` describes; the created run's root action.
pub async fn launch(plane: &ControlPlane, request: CreateRunRequest) -> Result<ActionIdentifier> {
    let name = request
        .id
        .as_ref()
        .map(|id| match id {
            workflow::create_run_request::Id::RunId(id) => id.name.clone(),
            other @ workflow::create_run_request::Id::ProjectId(_) => format!("{other:?}"),
        })
        .unwrap_or_default();
    let created = run_service(plane)?
        .create_run(request)
        .await
        .owned()
        .map_err(|source| DebugClientError::Launch { name, source })?;
    Ok((*created.run.action.id).clone())
}

/// Launch `command` (a container task of the control plane's default image) as the run `id`
/// in debug mode: the debug key pair (created on first use in the debug directory) is the one
/// the task's SSH server accepts, and `extra_env` goes on top of [`crate::launch_env`]'s.
pub async fn launch_debug(
    plane: &ControlPlane,
    id: RunIdentifier,
    command: Vec<String>,
    extra_env: Vec<(String, String)>,
) -> Result<ActionIdentifier> {
    let pair = flyte_keys::ensure_keypair(plane.home().debug().path())?;
    let request = flyte_api::request::create_run(
        id,
        flyte_api::request::container_task(command, []),
        crate::launch_env(&pair.public_key, extra_env),
    );
    launch(plane, request).await
}

/// The request that launches the task of `original`'s action `action` again with SSH debug on,
/// as `id`, with the original run's settings (environment, labels) and the debug variables on
/// top ([`crate::launch_env`] for `public_key`).
pub async fn relaunch_request(
    plane: &ControlPlane,
    original: &RunIdentifier,
    action: &str,
    public_key: &str,
    id: RunIdentifier,
) -> Result<CreateRunRequest> {
    let details = existing_action(plane, original, action).await?;
    let task = match details.spec {
        Some(action_details::Spec::Task(task)) => *task,
        _ => {
            return Err(DebugClientError::NotRelaunchable {
                run: original.name.clone(),
            });
        }
    };
    let original_spec = run_service(plane)?
        .get_run_details(GetRunDetailsRequest {
            run_id: MessageField::some(original.clone()),
            ..Default::default()
        })
        .await
        .owned()
        .map_err(|source| DebugClientError::Run {
            run: original.name.clone(),
            source,
        })?
        .details
        .into_option()
        .and_then(|d| d.run_spec.into_option())
        .unwrap_or_default();
    let mut env: Vec<(String, String)> = original_spec
        .envs
        .as_option()
        .into_iter()
        .flat_map(|e| &e.values)
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    // launch_env puts its three variables first and lets `extra` override; here the debug
    // variables must win, so they are applied last.
    for (key, value) in crate::launch_env(public_key, []) {
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
    }
    Ok(CreateRunRequest {
        id: Some(id.into()),
        task: Some(task.into()),
        run_spec: MessageField::some(RunSpec {
            envs: MessageField::some(Envs {
                values: env
                    .into_iter()
                    .map(|(key, value)| KeyValuePair {
                        key,
                        value,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..original_spec
        }),
        ..CreateRunRequest::default()
    })
}

/// Where the reuse policy stands for a base name: the run to reuse or the name to launch, and
/// the names passed over because their runs had ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameChoice {
    pub name: String,
    /// The phase of a live run of that name (reuse it); `None`: the name is free.
    pub live_phase: Option<String>,
    /// Names passed over, with the phase their run ended in.
    pub ended: Vec<(String, String)>,
}

/// A debug run the reuse policy settled on ([`debug_run`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugRun {
    pub name: String,
    /// Launched now; `false`: a live run of that name is reused.
    pub launched: bool,
    /// The reused run's phase when it was looked at (`None` when launched now).
    pub phase: Option<String>,
    /// Names passed over, with the phase their run ended in.
    pub ended: Vec<(String, String)>,
}

/// The reuse policy's look, without launching anything (what a dry run reports): of
/// [`crate::run_name_candidates`]`(name)` in `scope`, the first live run or free name;
/// runs that ended are passed over, since run names stay taken.
pub async fn choose_debug_run(
    plane: &ControlPlane,
    scope: &RunScope,
    name: &str,
) -> Result<NameChoice> {
    let mut ended = Vec::new();
    for candidate in crate::run_name_candidates(name) {
        let id = scope.run_id(&candidate);
        match action_details(plane, &id, crate::DEFAULT_ACTION).await? {
            Some(details) if details.status.phase.is_terminal() => {
                ended.push((candidate, details.status.phase.short_name()));
            }
            Some(details) => {
                return Ok(NameChoice {
                    name: candidate,
                    live_phase: Some(details.status.phase.short_name()),
                    ended,
                });
            }
            None => {
                return Ok(NameChoice {
                    name: candidate,
                    live_phase: None,
                    ended,
                });
            }
        }
    }
    Err(DebugClientError::DebugRunsEnded {
        first: name.to_owned(),
        last: ended.pop().map(|(n, _)| n).unwrap_or_default(),
    })
}

/// How often [`debug_run`] looks again after another process took the name it was launching.
const MAX_RACES: usize = 3;

/// The one reuse policy for debug runs, of `flyte-run debug` and of the playbooks: reuse the live
/// run [`choose_debug_run`] finds, else launch `request_for(id)` under the free name it finds. A
/// run of that name created meanwhile by another process is looked at again, not an error, so
/// concurrent callers end on one run.
pub async fn debug_run<F, Fut>(
    plane: &ControlPlane,
    scope: &RunScope,
    name: &str,
    request_for: F,
) -> Result<DebugRun>
where
    F: Fn(RunIdentifier) -> Fut,
    Fut: Future<Output = Result<CreateRunRequest>>,
{
    let mut races = 0;
    loop {
        let choice = choose_debug_run(plane, scope, name).await?;
        if choice.live_phase.is_some() {
            return Ok(DebugRun {
                name: choice.name,
                launched: false,
                phase: choice.live_phase,
                ended: choice.ended,
            });
        }
        let request = request_for(scope.run_id(&choice.name)).await?;
        match run_service(plane)?.create_run(request).await.owned() {
            Ok(_) => {
                return Ok(DebugRun {
                    name: choice.name,
                    launched: true,
                    phase: None,
                    ended: choice.ended,
                });
            }
            Err(e) if e.code == Code::AlreadyExists && races < MAX_RACES => races += 1,
            Err(source) => {
                return Err(DebugClientError::Launch {
                    name: choice.name,
                    source,
                });
            }
        }
    }
}

/// Phases in the order a run moves through them: reaching a later one passes an earlier target.
fn progress_rank(phase: EnumValue<ActionPhase>) -> u8 {
    match phase.as_known() {
        None | Some(ActionPhase::Queued | ActionPhase::Unspecified) => 0,
        Some(ActionPhase::WaitingForResources) => 1,
        Some(ActionPhase::Initializing) => 2,
        Some(ActionPhase::Running | ActionPhase::Paused) => 3,
        Some(_) => 4,
    }
}

/// The phase a short name (`RUNNING`, `succeeded`) stands for.
pub fn phase_named(name: &str) -> Result<EnumValue<ActionPhase>> {
    let upper = name.to_ascii_uppercase();
    <ActionPhase as buffa::Enumeration>::from_proto_name(&format!("ACTION_PHASE_{upper}"))
        .map(EnumValue::from)
        .ok_or(DebugClientError::UnknownPhase(upper))
}

/// Wait until the action reaches `target` or a later phase, or ends; its phase then (short
/// name). Looks every `poll`; gives up after `timeout`.
pub async fn wait(
    plane: &ControlPlane,
    run: &RunIdentifier,
    action: &str,
    target: EnumValue<ActionPhase>,
    timeout: Duration,
    poll: Duration,
    progress: &dyn Progress,
) -> Result<String> {
    let target_name = target.short_name();
    let deadline = crate::deadline_after(timeout);
    let waiting = Waiting::begin(
        progress,
        &format!("waiting for run {} to be {target_name}", run.name),
    );
    loop {
        let details = existing_action(plane, run, action).await?;
        let phase = details.status.phase;
        if phase == target
            || phase.is_terminal()
            || (!target.is_terminal() && progress_rank(phase) >= progress_rank(target))
        {
            return Ok(phase.short_name());
        }
        if Instant::now() >= deadline {
            return Err(DebugClientError::PhaseTimeout {
                run: run.name.clone(),
                target: target_name,
                phase: phase.short_name(),
                waited_secs: timeout.as_secs(),
            });
        }
        waiting.update(&phase.short_name());
        tokio::time::sleep_until(deadline.min(Instant::now() + crate::poll(poll))).await;
    }
}

/// Abort the run, saying why.
pub async fn abort(plane: &ControlPlane, run: &RunIdentifier, reason: &str) -> Result<()> {
    let request = AbortRunRequest {
        run_id: MessageField::some(run.clone()),
        reason: Some(reason.to_owned()),
        ..Default::default()
    };
    run_service(plane)?
        .abort_run(request)
        .await
        .owned()
        .map(|_| ())
        .map_err(|source| DebugClientError::Run {
            run: run.name.clone(),
            source,
        })
}
