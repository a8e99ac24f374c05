use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    PodCondition,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;
use crate::crd::{Bytes, TaskActionSpec};

const CREATED: i64 = 1_700_000_000;

fn action(env: &[(&str, &str)]) -> TaskAction {
    let mut action = TaskAction::new(
        "train-a0",
        TaskActionSpec {
            run_name: "train".to_owned(),
            project: "p".to_owned(),
            domain: "d".to_owned(),
            action_name: "a0".to_owned(),
            run_output_base: "s3://b/out".to_owned(),
            env_vars: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            task_template: Some(Bytes(Vec::new())),
            ..TaskActionSpec::default()
        },
    );
    action.metadata.namespace = Some("flyte".to_owned());
    action.metadata.uid = Some("uid-1".to_owned());
    action
}

fn pod(phase: &str, container: Option<ContainerState>, extra: &[PodCondition]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("train-a0-0".to_owned()),
            namespace: Some("flyte".to_owned()),
            creation_timestamp: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(CREATED).unwrap(),
            )),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some(phase.to_owned()),
            conditions: Some(extra.to_vec()),
            container_statuses: container.map(|state| {
                vec![ContainerStatus {
                    name: "task".to_owned(),
                    ready: true,
                    state: Some(state),
                    ..ContainerStatus::default()
                }]
            }),
            ..PodStatus::default()
        }),
    }
}

fn waiting(reason: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            message: None,
        }),
        ..ContainerState::default()
    }
}

fn exited(code: i32, reason: &str) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            reason: Some(reason.to_owned()),
            ..ContainerStateTerminated::default()
        }),
        ..ContainerState::default()
    }
}

type Case = (Pod, i64, PluginPhase, Option<(ErrorKind, &'static str)>);

#[test]
fn pod_statuses_map_to_plugin_phases() {
    let running = Some(ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..ContainerState::default()
    });
    let unscheduled = PodCondition {
        type_: "PodScheduled".to_owned(),
        status: "False".to_owned(),
        ..PodCondition::default()
    };
    let grace = i64::try_from(IMAGE_PULL_GRACE.as_secs()).unwrap();
    // (pod, seconds since creation, phase, error kind and code)
    let cases: Vec<Case> = vec![
        (
            pod("Pending", None, &[unscheduled]),
            0,
            PluginPhase::Queued,
            None,
        ),
        (
            pod("Pending", None, &[]),
            0,
            PluginPhase::Initializing,
            None,
        ),
        (
            pod("Pending", Some(waiting("ContainerCreating")), &[]),
            0,
            PluginPhase::Initializing,
            None,
        ),
        (
            pod("Pending", Some(waiting("ImagePullBackOff")), &[]),
            grace - 1,
            PluginPhase::Initializing,
            None,
        ),
        (
            pod("Pending", Some(waiting("ImagePullBackOff")), &[]),
            grace,
            PluginPhase::RetryableFailure,
            Some((ErrorKind::User, "ImagePullBackOff")),
        ),
        (
            pod("Pending", Some(waiting("InvalidImageName")), &[]),
            0,
            PluginPhase::PermanentFailure,
            Some((ErrorKind::User, "InvalidImageName")),
        ),
        (pod("Running", running, &[]), 0, PluginPhase::Running, None),
        (
            pod("Running", Some(exited(0, "Completed")), &[]),
            0,
            PluginPhase::Success,
            None,
        ),
        (
            pod("Running", Some(exited(2, "Error")), &[]),
            0,
            PluginPhase::RetryableFailure,
            Some((ErrorKind::User, "ContainerFailed")),
        ),
        (
            pod("Succeeded", Some(exited(0, "Completed")), &[]),
            0,
            PluginPhase::Success,
            None,
        ),
        (
            pod("Succeeded", Some(exited(137, "OOMKilled")), &[]),
            0,
            PluginPhase::RetryableFailure,
            Some((ErrorKind::User, "OOMKilled")),
        ),
        (
            pod("Failed", Some(exited(1, "Error")), &[]),
            0,
            PluginPhase::RetryableFailure,
            Some((ErrorKind::User, "ContainerFailed")),
        ),
    ];
    for (i, (pod, age, phase, error)) in cases.into_iter().enumerate() {
        let info = phase_of(&pod, CREATED + age, false);
        assert_eq!(info.phase, phase, "case {i}: {info:?}");
        let got = info.error.as_ref().map(|e| (e.kind, e.code.as_str()));
        assert_eq!(got, error, "case {i}: {info:?}");
    }
    let mut evicted = pod("Failed", None, &[]);
    if let Some(status) = evicted.status.as_mut() {
        status.reason = Some("Evicted".to_owned());
    }
    let info = phase_of(&evicted, CREATED, false);
    assert_eq!(
        info.error.map(|e| (e.kind, e.code)),
        Some((ErrorKind::System, "Interrupted".to_owned()))
    );
}

#[test]
fn the_pod_is_owned_named_per_attempt_and_keeps_flytes_variables() {
    let action = action(&[
        ("RUN_NAME", "spoofed"),
        ("EXTRA", "1"),
        ("_F_E_SSH", "true"),
    ]);
    let container = TaskContainer {
        image: "python:3.12".to_owned(),
        command: vec!["python".to_owned(), "-c".to_owned(), "print(1)".to_owned()],
        args: Vec::new(),
        env: vec![("EXTRA".to_owned(), "0".to_owned())],
        git: None,
    };
    let pod = build_pod(&action, &container, 2);
    let json = serde_json::to_value(&pod).unwrap();
    assert_eq!(json["metadata"]["name"], "train-a0-1");
    assert_eq!(json["metadata"]["labels"]["attempt"], "2");
    assert_eq!(json["metadata"]["labels"][MANAGED_LABEL], "true");
    assert_eq!(
        json["metadata"]["ownerReferences"][0],
        json!({"apiVersion": "flyte.org/v1", "kind": "TaskAction", "name": "train-a0",
               "uid": "uid-1", "controller": true, "blockOwnerDeletion": true})
    );
    assert_eq!(json["spec"]["restartPolicy"], "Never");
    let env = &json["spec"]["containers"][0]["env"];
    let value = |name: &str| {
        env.as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .map(|v| v["value"].clone())
    };
    assert_eq!(value("RUN_NAME"), Some(json!("train")), "not replaceable");
    assert_eq!(
        value("EXTRA"),
        Some(json!("1")),
        "the spec's env wins over the template's"
    );
    assert_eq!(value("FLYTE_ATTEMPT_NUMBER"), Some(json!("1")));
    assert_eq!(
        json["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"],
        DEBUG_PORT
    );
}

#[test]
fn templates_are_decoded_or_refused_with_the_reason() {
    use flyte_idl::flyteidl2::core::{Container as IdlContainer, RetryStrategy, TaskMetadata};
    let template = TaskTemplate {
        r#type: "container".to_owned(),
        metadata: buffa::MessageField::some(TaskMetadata {
            retries: buffa::MessageField::some(RetryStrategy {
                retries: 2,
                ..Default::default()
            }),
            cache_serializable: true,
            ..Default::default()
        }),
        target: Some(
            IdlContainer {
                image: "busybox".to_owned(),
                command: vec!["true".to_owned()],
                ..Default::default()
            }
            .into(),
        ),
        ..Default::default()
    };
    let (facts, container) = decode_template(&template.encode_to_vec()).unwrap();
    assert_eq!(facts.retries, 2);
    assert!(facts.cache_serializable);
    assert_eq!(container.image, "busybox");
    assert!(
        decode_template(b"\xff\xff")
            .unwrap_err()
            .0
            .contains("not a flyteidl2")
    );
    let no_container = TaskTemplate::default().encode_to_vec();
    assert!(
        decode_template(&no_container)
            .unwrap_err()
            .0
            .contains("no container")
    );
}

fn connection() -> flyte_connections::Connection {
    serde_json::from_value(json!({
        "name": "repo", "kind": "ssh",
        "schema": {"url": "https://git.example.com/org/repo"},
        "secret": {"name": "git-key", "mountPath": "/etc/.ssh"}
    }))
    .unwrap()
}

#[test]
fn a_git_connection_becomes_an_init_container_that_checks_out_with_a_pinned_host_key() {
    let action = action(&[]);
    let container = TaskContainer {
        image: "python:3.12".to_owned(),
        ..TaskContainer::default()
    };
    let source = GitSource {
        connection: connection(),
        init: flyte_connections::GitInit {
            revision: Some("v1.2".to_owned()),
            flags: vec!["--depth 1".to_owned()],
            ..Default::default()
        },
        image: "alpine/git:v2.47.2".to_owned(),
    };
    let pod = build_pod_with(&action, &container, 1, Some(&source)).unwrap();
    let json = serde_json::to_value(&pod).unwrap();
    let init = &json["spec"]["initContainers"][0];
    assert_eq!(init["image"], "alpine/git:v2.47.2");
    let script = init["command"][2].as_str().unwrap();
    assert!(
        script.contains("git@git.example.com:org/repo.git") && script.contains(GIT_WORKDIR),
        "{script}"
    );
    assert!(script.contains("v1.2"), "{script}");
    let ssh = init["env"][0]["value"].as_str().unwrap();
    assert!(
        ssh.contains("StrictHostKeyChecking=yes") && ssh.contains("/etc/.ssh/known_hosts"),
        "{ssh}"
    );
    assert_eq!(
        json["spec"]["volumes"][1]["secret"]["secretName"],
        "git-key"
    );
    assert_eq!(json["spec"]["volumes"][1]["secret"]["defaultMode"], 0o600);
    assert_eq!(json["spec"]["containers"][0]["workingDir"], GIT_WORKDIR);
    // A revision that is an option, a flag that runs commands: refused with the reason.
    for init in [
        flyte_connections::GitInit {
            revision: Some("--upload-pack=touch /tmp/x".to_owned()),
            ..Default::default()
        },
        flyte_connections::GitInit {
            flags: vec!["-c core.sshCommand=evil".to_owned()],
            ..Default::default()
        },
    ] {
        let refused = build_pod_with(
            &action,
            &container,
            1,
            Some(&GitSource {
                init,
                ..source.clone()
            }),
        )
        .unwrap_err();
        assert!(!refused.0.is_empty());
    }
}

#[test]
fn init_containers_failing_or_stuck_are_the_attempts_failure() {
    let init = |state: ContainerState| {
        let mut pod = pod("Pending", Some(waiting("PodInitializing")), &[]);
        if let Some(status) = pod.status.as_mut() {
            status.init_container_statuses = Some(vec![ContainerStatus {
                name: "git-init".to_owned(),
                state: Some(state),
                ..ContainerStatus::default()
            }]);
        }
        pod
    };
    let grace = i64::try_from(IMAGE_PULL_GRACE.as_secs()).unwrap();
    let stuck = phase_of(&init(waiting("ImagePullBackOff")), CREATED + grace, false);
    assert_eq!(stuck.phase, PluginPhase::RetryableFailure, "{stuck:?}");
    assert!(
        stuck.reason.contains("the init container git-init"),
        "{stuck:?}"
    );
    let early = phase_of(&init(waiting("ImagePullBackOff")), CREATED, false);
    assert_eq!(early.phase, PluginPhase::Initializing);
    let mut failed = init(exited(128, "Error"));
    if let Some(status) = failed.status.as_mut() {
        status.phase = Some("Failed".to_owned());
    }
    let info = phase_of(&failed, CREATED, false);
    assert_eq!(
        info.error.as_ref().map(|e| e.code.as_str()),
        Some("InitContainerFailed"),
        "{info:?}"
    );
    assert!(info.reason.contains("exited with code 128"), "{info:?}");
}
