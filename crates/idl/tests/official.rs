//! The generated types against the official flyteidl2 classes (`PyPI` `flyteidl2==2.0.53`, in the
//! venv `cargo xtask ci` creates at `target/idl-venv`; `FLYTEIDL2_PYTHON` points elsewhere).
//! Each message we encode, in binary protobuf and in JSON, is parsed strictly by the official
//! class; what the class writes back, our types read to the same value.
// Tests, examples and tools start processes and read their settings from the environment directly.
#![allow(clippy::disallowed_methods)]
// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::fmt::Debug;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use base64ct::{Base64, Encoding};
use buffa::{EnumValue, Message, MessageField};
use buffa_types::google::protobuf::Timestamp;
use flyte_idl::flyteidl2::auth::{GetOAuth2MetadataResponse, GetPublicClientConfigResponse};
use flyte_idl::flyteidl2::common::{
    ActionIdentifier, ActionPhase, ProjectIdentifier, RunIdentifier,
};
use flyte_idl::flyteidl2::core::TaskLog;
use flyte_idl::flyteidl2::core::task_log::LinkType;
use flyte_idl::flyteidl2::project::{Domain, ListProjectsResponse, Project, Projects};
use flyte_idl::flyteidl2::workflow::{
    ActionAttempt, ActionDetails, ActionStatus, GetRunDetailsResponse, ListRunsRequest, RunDetails,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Checks the official re-encodings (binary, JSON) against the message we sent.
type Check = Box<dyn Fn(&[u8], &Value)>;

/// One message checked both ways: its flyteidl2 name and a check of what the class sent back.
struct Case {
    type_name: &'static str,
    proto: Vec<u8>,
    json: Value,
    check: Check,
}

fn case<M>(type_name: &'static str, message: M) -> Case
where
    M: Message + Serialize + DeserializeOwned + PartialEq + Debug + Clone + 'static,
{
    let proto = message.encode_to_vec();
    let json = serde_json::to_value(&message).unwrap();
    Case {
        type_name,
        proto,
        json,
        check: Box::new(move |proto, json| {
            assert_eq!(
                M::decode_from_slice(proto).unwrap(),
                message,
                "{type_name} from proto"
            );
            assert_eq!(
                serde_json::from_value::<M>(json.clone()).unwrap(),
                message,
                "{type_name} from JSON {json}"
            );
        }),
    }
}

fn run_id() -> RunIdentifier {
    RunIdentifier {
        org: "o".into(),
        project: "flytesnacks".into(),
        domain: "development".into(),
        name: "r1".into(),
        ..Default::default()
    }
}

fn at(seconds: i64) -> MessageField<Timestamp, buffa::Inline<Timestamp>> {
    MessageField::some(Timestamp {
        seconds,
        nanos: 5_000,
        ..Default::default()
    })
}

fn run_details() -> GetRunDetailsResponse {
    let action_id = ActionIdentifier {
        run: MessageField::some(run_id()),
        name: "a0".into(),
        ..Default::default()
    };
    let log = TaskLog {
        uri: "http://127.0.0.1:30080/debug/flytesnacks/development/r1/a0".into(),
        name: "VS Code Debugger".into(),
        link_type: EnumValue::from(LinkType::IDE),
        ready: true,
        ..Default::default()
    };
    GetRunDetailsResponse {
        details: MessageField::some(RunDetails {
            action: MessageField::some(ActionDetails {
                id: MessageField::some(action_id),
                status: MessageField::some(ActionStatus {
                    phase: EnumValue::from(ActionPhase::ACTION_PHASE_RUNNING),
                    start_time: at(1_700_000_000),
                    attempts: 1,
                    ..Default::default()
                }),
                attempts: vec![ActionAttempt {
                    phase: EnumValue::from(ActionPhase::ACTION_PHASE_RUNNING),
                    start_time: at(1_700_000_000),
                    attempt: 1,
                    log_info: vec![log],
                    logs_available: true,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn the_official_classes_read_what_we_write_and_we_read_what_they_write() {
    let cases = vec![
        case("flyteidl2.common.RunIdentifier", run_id()),
        case("flyteidl2.workflow.GetRunDetailsResponse", run_details()),
        case(
            "flyteidl2.workflow.ListRunsRequest",
            ListRunsRequest {
                scope_by: Some(
                    flyte_idl::flyteidl2::workflow::__buffa::oneof::list_runs_request::ScopeBy::ProjectId(
                        Box::new(ProjectIdentifier {
                            organization: "o".into(),
                            domain: "development".into(),
                            name: "flytesnacks".into(),
                            ..Default::default()
                        }),
                    ),
                ),
                ..Default::default()
            },
        ),
        case(
            "flyteidl2.auth.GetOAuth2MetadataResponse",
            GetOAuth2MetadataResponse {
                issuer: "flyte-run-sandbox".into(),
                token_endpoint: "https://127.0.0.1:30080/oauth2/token".into(),
                grant_types_supported: vec!["client_credentials".into()],
                ..Default::default()
            },
        ),
        case(
            "flyteidl2.auth.GetPublicClientConfigResponse",
            GetPublicClientConfigResponse {
                client_id: "flyte-run".into(),
                authorization_metadata_key: "authorization".into(),
                scopes: vec!["all".into()],
                ..Default::default()
            },
        ),
        case(
            "flyteidl2.project.ListProjectsResponse",
            ListProjectsResponse {
                projects: MessageField::some(Projects {
                    projects: vec![Project {
                        id: "flytesnacks".into(),
                        name: "flytesnacks".into(),
                        domains: vec![Domain {
                            id: "development".into(),
                            name: "development".into(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
    ];
    let mut child = Command::new(flyte_testkit::idl_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/official.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for case in &cases {
        let line = serde_json::json!({
            "type": case.type_name,
            "proto": Base64::encode_string(&case.proto),
            "json": case.json,
        });
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    let answers: Vec<Value> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert!(child.wait().unwrap().success());
    assert_eq!(answers.len(), cases.len());
    for (case, answer) in cases.iter().zip(&answers) {
        assert!(
            answer.get("error").is_none(),
            "{}: {answer}",
            case.type_name
        );
        let proto = Base64::decode_vec(answer["proto"].as_str().unwrap()).unwrap();
        (case.check)(&proto, &answer["json"]);
    }
}

/// Bytes that are not a message of the type are a decode error, never a panic or a default.
#[test]
fn corrupt_protobuf_is_an_error() {
    for bytes in [
        &[0xff_u8, 0xff][..],
        &[0x0a, 0x05, b'a'],
        &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
    ] {
        assert!(
            GetRunDetailsResponse::decode_from_slice(bytes).is_err(),
            "{bytes:?}"
        );
    }
}
