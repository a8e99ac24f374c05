//! flyteidl2 messages as proto3 JSON, for the parts SSH debugging uses (flyteidl2 2.0.53).
//!
//! Rules of the encoding, kept throughout: field names are the `json_name` (lowerCamelCase);
//! default values may be absent, so every field defaults; unknown fields are ignored (newer
//! servers add some); enums are written as names and read from names or numbers, keeping names
//! this version does not know; 64-bit integers are JSON strings. Deep task-definition messages
//! we pass through without interpreting are `serde_json::Value`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A proto enum: written as its name, read from its name or number, unknown values kept.
macro_rules! proto_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $number:literal => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
        pub enum $name {
            #[default]
            $($variant,)+
            /// A value this client does not know (a newer server).
            Unknown(String),
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Unknown(text) => text,
                }
            }

            fn from_number(number: i64) -> Self {
                match number {
                    $($number => $name::$variant,)+
                    other => $name::Unknown(other.to_string()),
                }
            }

            fn from_name(text: &str) -> Self {
                match text {
                    $($text => $name::$variant,)+
                    other => $name::Unknown(other.to_owned()),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                match serde_json::Value::deserialize(deserializer)? {
                    serde_json::Value::String(text) => Ok($name::from_name(&text)),
                    serde_json::Value::Number(n) => n
                        .as_i64()
                        .map($name::from_number)
                        .ok_or_else(|| serde::de::Error::custom("an enum number must be an integer")),
                    serde_json::Value::Null => Ok($name::default()),
                    other => Err(serde::de::Error::custom(format!("an enum is a name or a number, not {other}"))),
                }
            }
        }
    };
}

proto_enum!(
    /// `flyteidl2.common.ActionPhase`.
    ActionPhase {
        Unspecified = 0 => "ACTION_PHASE_UNSPECIFIED",
        Queued = 1 => "ACTION_PHASE_QUEUED",
        WaitingForResources = 2 => "ACTION_PHASE_WAITING_FOR_RESOURCES",
        Initializing = 3 => "ACTION_PHASE_INITIALIZING",
        Running = 4 => "ACTION_PHASE_RUNNING",
        Succeeded = 5 => "ACTION_PHASE_SUCCEEDED",
        Failed = 6 => "ACTION_PHASE_FAILED",
        Aborted = 7 => "ACTION_PHASE_ABORTED",
        TimedOut = 8 => "ACTION_PHASE_TIMED_OUT",
        Paused = 9 => "ACTION_PHASE_PAUSED",
        Recovered = 10 => "ACTION_PHASE_RECOVERED",
    }
);

impl ActionPhase {
    /// Whether the action is over: its pod (and any debug server in it) is gone.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            ActionPhase::Succeeded
                | ActionPhase::Failed
                | ActionPhase::Aborted
                | ActionPhase::TimedOut
                | ActionPhase::Recovered
        )
    }

    /// The short name scripts use: `RUNNING`, `SUCCEEDED` ...
    pub fn short_name(&self) -> &str {
        self.as_str()
            .strip_prefix("ACTION_PHASE_")
            .unwrap_or(self.as_str())
    }
}

proto_enum!(
    /// `flyteidl2.core.TaskLog.LinkType`.
    LinkType {
        External = 0 => "EXTERNAL",
        Dashboard = 1 => "DASHBOARD",
        Ide = 2 => "IDE",
    }
);

proto_enum!(
    /// `flyteidl2.workflow.ErrorInfo.Kind`.
    ErrorKind {
        Unspecified = 0 => "KIND_UNSPECIFIED",
        User = 1 => "KIND_USER",
        System = 2 => "KIND_SYSTEM",
    }
);

/// A uint64 as proto3 JSON writes it (a string); reads a string or a number.
mod u64_string {
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)] // serde's `with` passes the field by reference
    pub(super) fn serialize<S: Serializer>(
        value: &Option<u64>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => serializer.serialize_str(&v.to_string()),
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u64>, D::Error> {
        match Option::<serde_json::Value>::deserialize(deserializer)? {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => {
                s.parse().map(Some).map_err(serde::de::Error::custom)
            }
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("not a uint64")),
            Some(other) => Err(serde::de::Error::custom(format!("not a uint64: {other}"))),
        }
    }
}

/// `flyteidl2.common.RunIdentifier`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RunIdentifier {
    pub org: String,
    pub project: String,
    pub domain: String,
    pub name: String,
}

/// `flyteidl2.common.ActionIdentifier`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ActionIdentifier {
    pub run: RunIdentifier,
    pub name: String,
}

/// `flyteidl2.common.ProjectIdentifier` (note: `organization`, not `org`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProjectIdentifier {
    pub organization: String,
    pub domain: String,
    pub name: String,
}

/// `flyteidl2.core.KeyValuePair`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KeyValuePair {
    pub key: String,
    pub value: String,
}

/// `flyteidl2.core.Container`, the parts we set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<KeyValuePair>,
}

/// `flyteidl2.core.TaskTemplate`, the parts we set; the rest passes through.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskTemplate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<serde_json::Value>,
    #[serde(rename = "type")]
    pub task_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
}

/// `flyteidl2.task.TaskSpec`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskSpec {
    pub task_template: TaskTemplate,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub short_name: String,
}

/// `flyteidl2.task.Envs`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Envs {
    pub values: Vec<KeyValuePair>,
}

/// `flyteidl2.task.RunSpec`: run-level settings; environment variables go in `envs`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RunSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envs: Option<Envs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Value>,
}

/// `flyteidl2.workflow.CreateRunRequest`. `run_id` and `project_id` are a oneof (one is
/// required), as are `task_id` and `task_spec`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CreateRunRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<RunIdentifier>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<ProjectIdentifier>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_spec: Option<TaskSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_spec: Option<RunSpec>,
}

/// `flyteidl2.workflow.ActionStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ActionStatus {
    pub phase: ActionPhase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    pub attempts: u32,
    #[serde(with = "u64_string", skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// `flyteidl2.workflow.Action`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Action {
    pub id: ActionIdentifier,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    pub status: ActionStatus,
}

/// `flyteidl2.workflow.Run`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Run {
    pub action: Action,
    pub labels: BTreeMap<String, String>,
}

/// `flyteidl2.workflow.CreateRunResponse`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CreateRunResponse {
    pub run: Run,
}

/// `flyteidl2.core.TaskLog`: a link of an attempt. The debug route is the one with
/// `link_type == IDE`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskLog {
    pub uri: String,
    pub name: String,
    pub link_type: LinkType,
    pub ready: bool,
}

/// `flyteidl2.workflow.ErrorInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ErrorInfo {
    pub message: String,
    pub kind: ErrorKind,
    pub code: String,
}

/// `flyteidl2.workflow.AbortInfo`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AbortInfo {
    pub reason: String,
}

/// `flyteidl2.workflow.ActionAttempt`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ActionAttempt {
    pub phase: ActionPhase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_info: Option<ErrorInfo>,
    pub attempt: u32,
    pub log_info: Vec<TaskLog>,
    pub logs_available: bool,
}

/// `flyteidl2.workflow.ActionDetails`. `error_info` and `abort_info` are a oneof.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ActionDetails {
    pub id: ActionIdentifier,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    pub status: ActionStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_info: Option<ErrorInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort_info: Option<AbortInfo>,
    /// What the action runs (the `spec` oneof's `task`); `flyte-run debug` relaunches it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskSpec>,
    pub attempts: Vec<ActionAttempt>,
}

impl ActionDetails {
    /// The debug route: an IDE link with a uri from the latest attempt that has one (an older
    /// attempt's pod is gone), preferring a link marked ready but accepting one that is not
    /// (ready never turns true for raw SSH), as Flyte's client does within an attempt.
    pub fn ide_link(&self) -> Option<&TaskLog> {
        let ide = |l: &&TaskLog| l.link_type == LinkType::Ide && !l.uri.is_empty();
        let attempt = self
            .attempts
            .iter()
            .rev()
            .find(|a| a.log_info.iter().any(|l| ide(&l)))?;
        let mut links = attempt.log_info.iter().filter(ide);
        let first = links.clone().next();
        links.find(|l| l.ready).or(first)
    }
}

/// `flyteidl2.workflow.RunDetails`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RunDetails {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_spec: Option<RunSpec>,
    pub action: ActionDetails,
}

/// `flyteidl2.workflow.GetRunDetailsRequest` (also `WatchRunDetailsRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GetRunDetailsRequest {
    pub run_id: RunIdentifier,
}

/// `flyteidl2.workflow.GetRunDetailsResponse` (also `WatchRunDetailsResponse`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GetRunDetailsResponse {
    pub details: RunDetails,
}

/// `flyteidl2.workflow.GetActionDetailsRequest` (also `WatchActionDetailsRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GetActionDetailsRequest {
    pub action_id: ActionIdentifier,
}

/// `flyteidl2.workflow.GetActionDetailsResponse` (also `WatchActionDetailsResponse`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GetActionDetailsResponse {
    pub details: ActionDetails,
}

/// `flyteidl2.workflow.AbortRunRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AbortRunRequest {
    pub run_id: RunIdentifier,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `flyteidl2.workflow.AbortRunResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AbortRunResponse {}

/// `flyteidl2.common.ListRequest`, the paging part.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListRequest {
    pub limit: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token: String,
}

/// `flyteidl2.workflow.ListRunsRequest`. The scope is a required oneof: `org` or `project_id`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListRunsRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<ListRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<ProjectIdentifier>,
}

/// `flyteidl2.workflow.ListRunsResponse`; an empty `token` means the last page.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListRunsResponse {
    pub runs: Vec<Run>,
    pub token: String,
}

/// `flyteidl2.auth.GetOAuth2MetadataResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GetOAuth2MetadataResponse {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub grant_types_supported: Vec<String>,
    pub scopes_supported: Vec<String>,
}

/// `flyteidl2.auth.GetPublicClientConfigResponse`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GetPublicClientConfigResponse {
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub authorization_metadata_key: String,
    pub service_http_endpoint: String,
    pub audience: String,
}

/// Service and method names, as the Connect paths spell them.
pub mod services {
    pub const RUN_SERVICE: &str = "flyteidl2.workflow.RunService";
    pub const AUTH_METADATA_SERVICE: &str = "flyteidl2.auth.AuthMetadataService";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_read_names_and_numbers_and_keep_unknown_values() {
        let cases = [
            (r#""ACTION_PHASE_RUNNING""#, ActionPhase::Running),
            ("4", ActionPhase::Running),
            (
                r#""ACTION_PHASE_FROM_THE_FUTURE""#,
                ActionPhase::Unknown("ACTION_PHASE_FROM_THE_FUTURE".into()),
            ),
            ("42", ActionPhase::Unknown("42".into())),
        ];
        for (json, want) in cases {
            assert_eq!(
                serde_json::from_str::<ActionPhase>(json).unwrap(),
                want,
                "{json}"
            );
        }
        assert_eq!(
            serde_json::to_string(&ActionPhase::Succeeded).unwrap(),
            r#""ACTION_PHASE_SUCCEEDED""#
        );
        assert!(ActionPhase::Failed.is_terminal() && !ActionPhase::Running.is_terminal());
        assert_eq!(
            ActionPhase::WaitingForResources.short_name(),
            "WAITING_FOR_RESOURCES"
        );
        // An absent linkType is the zero value, EXTERNAL.
        let log: TaskLog = serde_json::from_str(r#"{"uri": "x", "extraField": 1}"#).unwrap();
        assert_eq!(log.link_type, LinkType::External);
    }

    #[test]
    fn uint64_fields_are_strings_both_ways() {
        let status: ActionStatus =
            serde_json::from_str(r#"{"durationMs": "18446744073709551615"}"#).unwrap();
        assert_eq!(status.duration_ms, Some(u64::MAX));
        let status: ActionStatus = serde_json::from_str(r#"{"durationMs": 12}"#).unwrap();
        assert_eq!(serde_json::to_value(&status).unwrap()["durationMs"], "12");
    }

    #[test]
    fn the_ide_link_prefers_ready_and_the_latest_attempt() {
        let link = |uri: &str, link_type: LinkType, ready: bool| TaskLog {
            uri: uri.into(),
            link_type,
            ready,
            ..TaskLog::default()
        };
        let details = ActionDetails {
            attempts: vec![
                ActionAttempt {
                    log_info: vec![link("old-ide", LinkType::Ide, true)],
                    ..Default::default()
                },
                ActionAttempt {
                    log_info: vec![
                        link("logs", LinkType::External, true),
                        link("", LinkType::Ide, true),
                        link("new-ide", LinkType::Ide, false),
                    ],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        // The latest attempt's link, though not ready: the old attempt's pod is gone.
        assert_eq!(details.ide_link().unwrap().uri, "new-ide");
        let mut both = details.clone();
        both.attempts[1]
            .log_info
            .push(link("ready-ide", LinkType::Ide, true));
        assert_eq!(
            both.ide_link().unwrap().uri,
            "ready-ide",
            "within an attempt a ready link wins"
        );
        assert!(ActionDetails::default().ide_link().is_none());
    }
}
