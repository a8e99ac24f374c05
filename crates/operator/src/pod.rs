//! The pod plugin, pure: the task pod a TaskAction's attempt runs in, and what a pod's status
//! means as a plugin phase. No I/O and no clock: the controller passes `now` and does the calls.
//!
//! The pod follows Flyte's pod plugin: named `<action>-<attempt - 1>`, owned by the TaskAction
//! (controller reference), `restartPolicy: Never`, service links off, the container from the
//! task template's `container` (image, command, args, env), and Flyte's execution variables.

use std::collections::BTreeMap;
use std::time::Duration;

use buffa::Message as _;
use flyte_idl::flyteidl2::core::{TaskTemplate, task_template};
use flyte_reconciler_core::{ErrorKind, ExecutionError, LogLink, PhaseInfo, PluginPhase};
use k8s_openapi::api::core::v1::{
    Container, ContainerStatus, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, Pod, PodSpec, PodStatus, Probe, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::crd::{TaskAction, TemplateFacts};

/// Label every task pod carries (the controller watches pods with it).
pub const MANAGED_LABEL: &str = "flyte.org/managed";
/// The debug server's port inside the task (Flyte's SSH debug).
pub const DEBUG_PORT: i32 = 6060;
/// The variable that turns SSH debug on for a task (Flyte's).
pub const DEBUG_ENV: &str = "_F_E_SSH";
/// How long an image may fail to pull before the attempt fails.
pub const IMAGE_PULL_GRACE: Duration = Duration::from_mins(3);
/// The plugin state's encoding version.
pub const STATE_VERSION: u32 = 1;

/// Why a task pod cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadTemplate(pub String);

/// The container a task template runs, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskContainer {
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// A git checkout the task starts with, named in the template's `config` map.
    pub git: Option<GitRequest>,
}

/// Template `config` keys (the free-form map Flyte's `TaskTemplate` has for plugins) that ask
/// for a git checkout: the connection's name, and optionally the repository, revision and
/// flags (space-separated) of the initializer.
pub const GIT_CONNECTION_KEY: &str = "git_connection";
const GIT_URL_KEY: &str = "git_url";
const GIT_REVISION_KEY: &str = "git_revision";
const GIT_FLAGS_KEY: &str = "git_flags";
/// Where the checkout is, in the init container and the task's.
pub const GIT_WORKDIR: &str = "/flyte/git";

/// A checkout a task template asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitRequest {
    pub connection: String,
    pub init: flyte_connections::GitInit,
}

/// A git checkout as an init container: its connection (whose secret holds the key and
/// known_hosts) and the image that has git, ssh and a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    pub connection: flyte_connections::Connection,
    pub init: flyte_connections::GitInit,
    pub image: String,
}

/// What the controller needs from a serialized flyteidl2 `TaskTemplate`: the reconciler's facts
/// and the container.
pub fn decode_template(bytes: &[u8]) -> Result<(TemplateFacts, TaskContainer), BadTemplate> {
    let template = TaskTemplate::decode_from_slice(bytes).map_err(|e| {
        BadTemplate(format!(
            "the task template is not a flyteidl2 TaskTemplate: {e}"
        ))
    })?;
    let facts = template
        .metadata
        .as_option()
        .map(|m| TemplateFacts {
            retries: m.retries.as_option().map_or(0, |r| r.retries),
            cache_serializable: m.cache_serializable,
        })
        .unwrap_or_default();
    let git = template
        .config
        .get(GIT_CONNECTION_KEY)
        .map(|connection| GitRequest {
            connection: connection.clone(),
            init: flyte_connections::GitInit {
                url: template.config.get(GIT_URL_KEY).cloned(),
                revision: template.config.get(GIT_REVISION_KEY).cloned(),
                flags: template
                    .config
                    .get(GIT_FLAGS_KEY)
                    .map(|f| f.split_whitespace().map(str::to_owned).collect())
                    .unwrap_or_default(),
            },
        });
    let container = match &template.target {
        Some(task_template::Target::Container(c)) => TaskContainer {
            image: c.image.clone(),
            command: c.command.clone(),
            args: c.args.clone(),
            env: c
                .env
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect(),
            git,
        },
        _ => {
            return Err(BadTemplate(
                "the task template has no container; this plugin runs container tasks".to_owned(),
            ));
        }
    };
    if container.image.is_empty() {
        return Err(BadTemplate(
            "the task template's container has no image".to_owned(),
        ));
    }
    Ok((facts, container))
}

/// The pod of `attempt` (1-based).
pub fn pod_name(action: &TaskAction, attempt: u32) -> String {
    format!(
        "{}-{}",
        action.metadata.name.as_deref().unwrap_or_default(),
        attempt.saturating_sub(1)
    )
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

/// Whether the action asks for SSH debug (Flyte's `_F_E_SSH` in its environment).
pub fn debug_enabled(action: &TaskAction, container: &TaskContainer) -> bool {
    let on = |v: &str| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false");
    action.spec.env_vars.get(DEBUG_ENV).is_some_and(|v| on(v))
        || container.env.iter().any(|(k, v)| k == DEBUG_ENV && on(v))
}

/// The init container that checks `source` out into [`GIT_WORKDIR`], and the volumes it and
/// the task share (the checkout; the connection's secret, mounted read-only in the init
/// container only). The commands are flyte-connections' plan, with the secret's known_hosts
/// pinning the git host's key.
pub fn git_init(source: &GitSource) -> Result<(Container, Vec<Volume>), BadTemplate> {
    let bad = |e: flyte_connections::ConnectionError| BadTemplate(e.to_string());
    source.connection.validate().map_err(bad)?;
    let url = source
        .init
        .url
        .as_deref()
        .or_else(|| source.connection.url())
        .ok_or_else(|| {
            BadTemplate(format!(
                "git connection {:?} names no repository and the template gives no git_url",
                source.connection.name
            ))
        })?;
    let steps = flyte_connections::plan(url, std::path::Path::new(GIT_WORKDIR), &source.init)
        .map_err(bad)?;
    let ssh = flyte_connections::git_ssh_command(
        &source.connection.key_path(|_| None),
        &flyte_connections::HostKeyPolicy::Pinned {
            known_hosts: source.connection.known_hosts_path(),
        },
    )
    .map_err(bad)?;
    let mut script = Vec::new();
    for step in &steps {
        let words: Vec<&str> = std::iter::once("git")
            .chain(step.args.iter().map(String::as_str))
            .collect();
        script.push(shlex::try_join(words).map_err(|e| BadTemplate(e.to_string()))?);
    }
    // The checkout belongs to root (the init container's user); a task running as another user
    // must still be able to write in it.
    script.push(format!("chmod -R a+rwX {GIT_WORKDIR}"));
    let secret_volume = "git-connection-secret";
    let init = Container {
        name: "git-init".to_owned(),
        image: Some(source.image.clone()),
        command: Some(vec!["sh".to_owned(), "-c".to_owned(), script.join(" && ")]),
        env: Some(vec![env("GIT_SSH_COMMAND", ssh)]),
        volume_mounts: Some(vec![
            VolumeMount {
                name: GIT_VOLUME.to_owned(),
                mount_path: GIT_WORKDIR.to_owned(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: secret_volume.to_owned(),
                mount_path: source.connection.mount_path().display().to_string(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let volumes = vec![
        Volume {
            name: GIT_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
        Volume {
            name: secret_volume.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(source.connection.secret.name.clone()),
                // ssh refuses a key others can read.
                default_mode: Some(
                    i32::try_from(source.connection.secret.default_mode.unwrap_or(0o600))
                        .unwrap_or(0o600),
                ),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
    ];
    Ok((init, volumes))
}

const GIT_VOLUME: &str = "git-checkout";

/// The task pod of `attempt`, starting from `git`'s checkout when there is one.
pub fn build_pod_with(
    action: &TaskAction,
    container: &TaskContainer,
    attempt: u32,
    git: Option<&GitSource>,
) -> Result<Pod, BadTemplate> {
    let mut pod = build_pod(action, container, attempt);
    if let Some(source) = git {
        let (init, volumes) = git_init(source)?;
        if let Some(spec) = pod.spec.as_mut() {
            spec.init_containers = Some(vec![init]);
            spec.volumes = Some(volumes);
            for task in &mut spec.containers {
                task.volume_mounts = Some(vec![VolumeMount {
                    name: GIT_VOLUME.to_owned(),
                    mount_path: GIT_WORKDIR.to_owned(),
                    ..VolumeMount::default()
                }]);
                task.working_dir = Some(GIT_WORKDIR.to_owned());
            }
        }
    }
    Ok(pod)
}

/// The task pod of `attempt`.
pub fn build_pod(action: &TaskAction, container: &TaskContainer, attempt: u32) -> Pod {
    let spec = &action.spec;
    let mut labels: BTreeMap<String, String> = action.metadata.labels.clone().unwrap_or_default();
    labels.insert(MANAGED_LABEL.to_owned(), "true".to_owned());
    labels.insert("run".to_owned(), spec.run_name.clone());
    labels.insert("action".to_owned(), spec.action_name.clone());
    labels.insert("attempt".to_owned(), attempt.to_string());
    // Flyte's own variables come first: the spec's and the template's cannot replace them.
    let mut vars = vec![
        env("ACTION_NAME", &spec.action_name),
        env("RUN_NAME", &spec.run_name),
        env("_U_RUN_BASE", &spec.run_output_base),
        env("FLYTE_INTERNAL_EXECUTION_PROJECT", &spec.project),
        env("FLYTE_INTERNAL_EXECUTION_DOMAIN", &spec.domain),
        env(
            "FLYTE_ATTEMPT_NUMBER",
            attempt.saturating_sub(1).to_string(),
        ),
        EnvVar {
            name: "_F_PN".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".to_owned(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
        },
    ];
    let reserved: Vec<String> = vars.iter().map(|v| v.name.clone()).collect();
    // The template's variables, then the spec's on top.
    let given = container
        .env
        .iter()
        .map(|(k, v)| (k, v))
        .chain(&spec.env_vars);
    for (name, value) in given {
        if reserved.contains(name) {
            continue;
        }
        if let Some(existing) = vars.iter_mut().find(|v| &v.name == name) {
            existing.value = Some(value.clone());
        } else {
            vars.push(env(name, value.clone()));
        }
    }
    let readiness_probe = debug_enabled(action, container).then(|| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/".to_owned()),
            port: IntOrString::Int(DEBUG_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(5),
        ..Probe::default()
    });
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(action, attempt)),
            namespace: action.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                "primary_container_name".to_owned(),
                "task".to_owned(),
            )])),
            owner_references: Some(vec![OwnerReference {
                api_version: "flyte.org/v1".to_owned(),
                kind: "TaskAction".to_owned(),
                name: action.metadata.name.clone().unwrap_or_default(),
                uid: action.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".to_owned()),
            enable_service_links: Some(false),
            containers: vec![Container {
                name: "task".to_owned(),
                image: Some(container.image.clone()),
                command: (!container.command.is_empty()).then(|| container.command.clone()),
                args: (!container.args.is_empty()).then(|| container.args.clone()),
                env: Some(vars),
                readiness_probe,
                termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    }
}

fn user_failure(phase: PluginPhase, code: &str, message: String) -> PhaseInfo {
    PhaseInfo::failure(phase, ExecutionError::new(ErrorKind::User, code, message))
}

fn system_failure(code: &str, message: String) -> PhaseInfo {
    PhaseInfo::failure(
        PluginPhase::RetryableFailure,
        ExecutionError::new(ErrorKind::System, code, message),
    )
}

/// Pod failure reasons that are the platform's doing, not the task's.
const SYSTEM_REASONS: &[&str] = &[
    "Shutdown",
    "Terminated",
    "NodeShutdown",
    "NodeAffinity",
    "Evicted",
];

/// What `pod`'s status means for the attempt, at `now_secs` (Unix seconds). `debug`: the task
/// serves SSH debug, so a running pod also publishes the IDE link once it is ready.
pub fn phase_of(pod: &Pod, now_secs: i64, debug: bool) -> PhaseInfo {
    let Some(status) = pod.status.as_ref() else {
        return PhaseInfo::new(PluginPhase::Queued, "the pod was created");
    };
    let primary = primary_status(status);
    match status.phase.as_deref() {
        Some("Succeeded") => {
            if terminated_reason(primary) == Some("OOMKilled") {
                return user_failure(
                    PluginPhase::RetryableFailure,
                    "OOMKilled",
                    "the task ran out of memory".to_owned(),
                );
            }
            PhaseInfo::new(PluginPhase::Success, "the pod succeeded")
        }
        Some("Failed") => {
            if let Some(failed) = init_failure(status) {
                return failed;
            }
            let reason = status.reason.clone().unwrap_or_default();
            let message = status.message.clone().unwrap_or_default();
            if SYSTEM_REASONS.contains(&reason.as_str()) {
                return system_failure("Interrupted", format!("{reason}: {message}"));
            }
            match primary.and_then(exit_code) {
                Some(code) => user_failure(
                    PluginPhase::RetryableFailure,
                    "ContainerFailed",
                    format!(
                        "the task's container exited with code {code}{}",
                        suffix(&message)
                    ),
                ),
                None => user_failure(
                    PluginPhase::RetryableFailure,
                    if reason.is_empty() {
                        "PodFailed"
                    } else {
                        &reason
                    },
                    format!("the pod failed{}", suffix(&message)),
                ),
            }
        }
        Some("Running") => match primary.and_then(|s| s.state.as_ref()) {
            Some(state) if state.terminated.is_some() => match primary.and_then(exit_code) {
                Some(0) => PhaseInfo::new(PluginPhase::Success, "the task's container exited 0"),
                Some(code) => user_failure(
                    PluginPhase::RetryableFailure,
                    "ContainerFailed",
                    format!("the task's container exited with code {code}"),
                ),
                None => PhaseInfo::new(PluginPhase::Running, "the pod is running"),
            },
            _ => {
                let mut info = PhaseInfo::new(PluginPhase::Running, "the pod is running");
                if debug && primary.is_some_and(|s| s.ready) {
                    info.logs.push(LogLink {
                        name: "SSH debug".to_owned(),
                        uri: format!(
                            "pod://{}/{}:{DEBUG_PORT}",
                            pod.metadata.namespace.as_deref().unwrap_or_default(),
                            pod.metadata.name.as_deref().unwrap_or_default()
                        ),
                    });
                }
                info
            }
        },
        // Pending (or a phase this version does not know).
        _ => pending_phase(pod, status, primary, now_secs),
    }
}

fn pending_phase(
    pod: &Pod,
    status: &PodStatus,
    primary: Option<&ContainerStatus>,
    now_secs: i64,
) -> PhaseInfo {
    let unscheduled = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "PodScheduled" && c.status == "False");
    if unscheduled {
        return PhaseInfo::new(PluginPhase::Queued, "waiting to be scheduled");
    }
    let age = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| now_secs.saturating_sub(t.0.as_second()));
    // Init containers (the git checkout) run first: their troubles are the pod's.
    if let Some(failed) = init_failure(status) {
        return failed;
    }
    for init in status.init_container_statuses.iter().flatten() {
        if let Some(waiting) = init.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let info = waiting_phase(waiting, age, &format!("the init container {}", init.name));
            if info.phase != PluginPhase::Initializing {
                return info;
            }
        }
    }
    let waiting = primary
        .and_then(|s| s.state.as_ref())
        .and_then(|s| s.waiting.as_ref());
    let Some(waiting) = waiting else {
        return PhaseInfo::new(PluginPhase::Initializing, "the pod is starting");
    };
    waiting_phase(waiting, age, "the task's container")
}

/// What a waiting container (`whose`, for messages) means for the attempt, `age` seconds after
/// the pod was created.
fn waiting_phase(
    waiting: &k8s_openapi::api::core::v1::ContainerStateWaiting,
    age: i64,
    whose: &str,
) -> PhaseInfo {
    let reason = waiting.reason.clone().unwrap_or_default();
    let message = waiting.message.clone().unwrap_or_default();
    match reason.as_str() {
        "CreateContainerConfigError" | "InvalidImageName" => user_failure(
            PluginPhase::PermanentFailure,
            &reason,
            format!("{whose} cannot be created{}", suffix(&message)),
        ),
        "ImagePullBackOff" | "ErrImagePull"
            if age >= i64::try_from(IMAGE_PULL_GRACE.as_secs()).unwrap_or(i64::MAX) =>
        {
            user_failure(
                PluginPhase::RetryableFailure,
                &reason,
                format!(
                    "the image of {whose} could not be pulled for {} minutes{}",
                    IMAGE_PULL_GRACE.as_secs() / 60,
                    suffix(&message)
                ),
            )
        }
        _ => PhaseInfo::new(
            PluginPhase::Initializing,
            format!("the pod is starting: {reason}"),
        ),
    }
}

/// An init container that exited non-zero: the attempt failed there (the checkout, say), with
/// its exit code and message.
fn init_failure(status: &PodStatus) -> Option<PhaseInfo> {
    status
        .init_container_statuses
        .iter()
        .flatten()
        .find_map(|init| {
            let terminated = init.state.as_ref()?.terminated.as_ref()?;
            (terminated.exit_code != 0).then(|| {
                user_failure(
                    PluginPhase::RetryableFailure,
                    "InitContainerFailed",
                    format!(
                        "the init container {} exited with code {}{}",
                        init.name,
                        terminated.exit_code,
                        suffix(terminated.message.as_deref().unwrap_or_default())
                    ),
                )
            })
        })
}

fn suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

fn primary_status(status: &PodStatus) -> Option<&ContainerStatus> {
    status
        .container_statuses
        .iter()
        .flatten()
        .find(|s| s.name == "task")
        .or_else(|| status.container_statuses.iter().flatten().next())
}

fn exit_code(status: &ContainerStatus) -> Option<i32> {
    status
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code)
}

fn terminated_reason(status: Option<&ContainerStatus>) -> Option<&str> {
    status?
        .state
        .as_ref()?
        .terminated
        .as_ref()?
        .reason
        .as_deref()
}

#[cfg(test)]
mod tests;
