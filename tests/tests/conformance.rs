//! The generated flyteidl2 types' JSON against the official message classes (`PyPI` package `flyteidl2==2.0.53`, in the
//! venv `cargo xtask ci` creates at `target/idl-venv`; `FLYTEIDL2_PYTHON` points elsewhere):
//! the requests flyte-run builds parse strictly, and what the classes write, our types read
//! (zero values omitted, the debug link found).
// Tests, examples and tools start processes and read their settings from the environment directly.
#![allow(clippy::disallowed_methods)]
// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use buffa::MessageField;
use flyte_api::ActionDetailsExt;
use flyte_api::idl::flyteidl2::auth::{GetOAuth2MetadataResponse, GetPublicClientConfigResponse};
use flyte_api::idl::flyteidl2::common::{
    ActionIdentifier, ActionPhase, ListRequest, ProjectIdentifier, RunIdentifier,
};
use flyte_api::idl::flyteidl2::core::task_log::LinkType;
use flyte_api::idl::flyteidl2::core::{Container, KeyValuePair, TaskTemplate};
use flyte_api::idl::flyteidl2::task::{Envs, RunSpec, TaskSpec};
use flyte_api::idl::flyteidl2::workflow::{
    AbortRunRequest, CreateRunRequest, CreateRunResponse, GetActionDetailsRequest,
    GetActionDetailsResponse, GetRunDetailsRequest, GetRunDetailsResponse, ListRunsRequest,
    ListRunsResponse, WatchActionDetailsRequest, action_details, error_info::Kind as ErrorKind,
};
use serde_json::Value;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/flyteidl2_conformance.py"
);

fn run_id() -> RunIdentifier {
    RunIdentifier {
        org: "o".into(),
        project: "flytesnacks".into(),
        domain: "development".into(),
        name: "r1".into(),
        ..Default::default()
    }
}

fn project() -> ProjectIdentifier {
    ProjectIdentifier {
        organization: "o".into(),
        domain: "development".into(),
        name: "flytesnacks".into(),
        ..Default::default()
    }
}

/// A debug run's `CreateRunRequest`: a container task with env vars, the debug env on the run.
fn create_run_request() -> CreateRunRequest {
    let kv = |k: &str, v: &str| KeyValuePair {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    };
    let container = Container {
        image: "python:3.12".into(),
        command: vec!["python".into(), "-m".into(), "train".into()],
        args: vec!["--epochs".into(), "1".into()],
        env: vec![kv("LOG_LEVEL", "debug")],
        ..Default::default()
    };
    CreateRunRequest {
        id: Some(run_id().into()),
        task: Some(
            TaskSpec {
                task_template: MessageField::some(TaskTemplate {
                    r#type: "container".into(),
                    target: Some(container.into()),
                    ..TaskTemplate::default()
                }),
                short_name: "train".into(),
                ..Default::default()
            }
            .into(),
        ),
        run_spec: MessageField::some(RunSpec {
            envs: MessageField::some(Envs {
                values: vec![
                    kv("_F_E_SSH", "1"),
                    kv("_F_SSH_PK", "ssh-ed25519 AAAA x"),
                    kv("_F_E_VS", "True"),
                ],
                ..Default::default()
            }),
            ..RunSpec::default()
        }),
        ..CreateRunRequest::default()
    }
}

/// Every request shape the client sends, as (message name, JSON).
fn requests_we_send() -> Vec<(&'static str, Value)> {
    let create = create_run_request();
    let by_project = CreateRunRequest {
        id: Some(project().into()),
        ..create.clone()
    };
    let action = MessageField::some(ActionIdentifier {
        run: MessageField::some(run_id()),
        name: "a0".into(),
        ..Default::default()
    });
    let documents: Vec<(&'static str, Value)> = vec![
        (
            "flyteidl2.workflow.CreateRunRequest",
            serde_json::to_value(&create).unwrap(),
        ),
        (
            "flyteidl2.workflow.CreateRunRequest",
            serde_json::to_value(by_project).unwrap(),
        ),
        (
            "flyteidl2.workflow.GetActionDetailsRequest",
            serde_json::to_value(GetActionDetailsRequest {
                action_id: action.clone(),
                ..Default::default()
            })
            .unwrap(),
        ),
        (
            "flyteidl2.workflow.WatchActionDetailsRequest",
            serde_json::to_value(WatchActionDetailsRequest {
                action_id: action,
                ..Default::default()
            })
            .unwrap(),
        ),
        (
            "flyteidl2.workflow.GetRunDetailsRequest",
            serde_json::to_value(GetRunDetailsRequest {
                run_id: MessageField::some(run_id()),
                ..Default::default()
            })
            .unwrap(),
        ),
        (
            "flyteidl2.workflow.AbortRunRequest",
            serde_json::to_value(AbortRunRequest {
                run_id: MessageField::some(run_id()),
                reason: Some("done debugging".into()),
                ..Default::default()
            })
            .unwrap(),
        ),
        (
            "flyteidl2.workflow.ListRunsRequest",
            serde_json::to_value(ListRunsRequest {
                request: MessageField::some(ListRequest {
                    limit: 50,
                    token: "page-2".into(),
                    ..Default::default()
                }),
                scope_by: Some(project().into()),
                ..Default::default()
            })
            .unwrap(),
        ),
        (
            "flyteidl2.auth.GetOAuth2MetadataRequest",
            serde_json::json!({}),
        ),
        (
            "flyteidl2.auth.GetPublicClientConfigRequest",
            serde_json::json!({}),
        ),
    ];
    documents
}

/// Parse each document strictly with the official classes: one "ok" or "error: ..." per item.
fn check(documents: &[(&str, Value)]) -> Vec<String> {
    let mut child = Command::new(flyte_testkit::idl_python())
        .arg(SCRIPT)
        .arg("check")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(documents).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn requests_we_send_parse_strictly_with_the_official_classes() {
    let documents = requests_we_send();
    let results = check(&documents);
    assert_eq!(results.len(), documents.len(), "{results:?}");
    for (line, (name, document)) in results.iter().zip(&documents) {
        assert_eq!(line, "ok", "{name} {document}");
    }
    // The checker is strict: a misspelled field is refused (so "ok" above means something).
    let typo = [(
        "flyteidl2.workflow.GetRunDetailsRequest",
        serde_json::json!({"run_id_typo": {}}),
    )];
    assert!(check(&typo)[0].starts_with("error:"));
}

#[test]
fn responses_the_official_classes_write_are_read_by_our_types() {
    let out = Command::new(flyte_testkit::idl_python())
        .arg(SCRIPT)
        .arg("responses")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: serde_json::Map<String, Value> = serde_json::from_slice(&out.stdout).unwrap();
    let get = |name: &str| docs[name].clone();

    let details: GetActionDetailsResponse =
        serde_json::from_value(get("flyteidl2.workflow.GetActionDetailsResponse")).unwrap();
    let d = &details.details;
    assert_eq!(
        (d.id.name.as_str(), d.id.run.project.as_str()),
        ("a0", "flytesnacks")
    );
    assert_eq!(
        (
            d.status.phase.as_known(),
            d.status.attempts,
            d.status.duration_ms
        ),
        (Some(ActionPhase::Failed), 2, Some(12345))
    );
    let Some(action_details::Result::ErrorInfo(error)) = &d.result else {
        panic!("no error info: {d:?}");
    };
    assert_eq!(
        (error.kind.as_known(), error.code.as_str()),
        (Some(ErrorKind::User), "MaxRetriesExceeded")
    );
    let ide = d.ide_link().unwrap();
    assert_eq!(
        (ide.uri.as_str(), ide.link_type.as_known(), ide.ready),
        ("/v1/ssh/r1/a0?target_port=6060", Some(LinkType::Ide), true)
    );
    // The EXTERNAL link's linkType was omitted by the official writer (zero value).
    assert_eq!(d.attempts[0].log_info[0].link_type, LinkType::External);

    let created: CreateRunResponse =
        serde_json::from_value(get("flyteidl2.workflow.CreateRunResponse")).unwrap();
    assert_eq!(
        (
            created.run.action.status.phase.as_known(),
            created.run.labels["team"].as_str()
        ),
        (Some(ActionPhase::Queued), "ml")
    );
    let listed: ListRunsResponse =
        serde_json::from_value(get("flyteidl2.workflow.ListRunsResponse")).unwrap();
    assert_eq!((listed.runs.len(), listed.token.as_str()), (1, "next-page"));
    let run: GetRunDetailsResponse =
        serde_json::from_value(get("flyteidl2.workflow.GetRunDetailsResponse")).unwrap();
    assert_eq!(run.details.run_spec.envs.values[0].key, "_F_E_SSH");
    let meta: GetOAuth2MetadataResponse =
        serde_json::from_value(get("flyteidl2.auth.GetOAuth2MetadataResponse")).unwrap();
    assert_eq!(
        meta.token_endpoint,
        "https://flyte.example.com/oauth2/token"
    );
    let public: GetPublicClientConfigResponse =
        serde_json::from_value(get("flyteidl2.auth.GetPublicClientConfigResponse")).unwrap();
    assert_eq!(public.authorization_metadata_key, "flyte-authorization");
}
