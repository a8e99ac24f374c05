//! The `TaskAction` resource (`flyte.org/v1`) as Flyte's backend declares it: the same group,
//! names, JSON field names, types, limits and printer columns, so an object Flyte's executor
//! writes is read here and the other way round. Its CRD is generated from these types
//! (`cargo xtask codegen` writes `crates/operator/crd/taskactions.flyte.org.yaml`).
//!
//! Conversions to and from flyte-reconciler-core's model are here too: the reconciler never
//! sees JSON, and this module never decides anything.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64ct::{Base64, Encoding as _};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition as KubeCondition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use flyte_reconciler_core as core;

/// Bytes as Kubernetes carries them in JSON: a base64 string (`format: byte`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&Base64::encode_string(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    /// As leniently as the API server's Go decoder: line breaks and spaces are skipped, missing
    /// padding is tolerated. What still does not decode becomes no bytes (the reconciler then
    /// refuses the object as an invalid spec) rather than an error: one object that cannot be
    /// read must not fail the whole list, and with it every other action's reconciling.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Bytes(decode_lenient(&text).unwrap_or_else(|| {
            tracing::warn!("a bytes field is not base64; read as empty");
            Vec::new()
        })))
    }
}

/// Base64 without whitespace, padded or not.
fn decode_lenient(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    Base64::decode_vec(&compact)
        .ok()
        .or_else(|| base64ct::Base64Unpadded::decode_vec(compact.trim_end_matches('=')).ok())
}

impl JsonSchema for Bytes {
    fn schema_name() -> Cow<'static, str> {
        "Bytes".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "byte" })
    }
}

/// Task or condition (Flyte's `actionType`; absent means task).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ActionType {
    Task,
    Condition,
}

/// What to run.
#[allow(
    clippy::duplicated_attributes,
    reason = "each printcolumn(...) repeats the same keys for another column"
)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flyte.org",
    version = "v1",
    kind = "TaskAction",
    namespaced,
    status = "TaskActionStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "TaskAction is the Schema for the taskactions API",
    printcolumn(name = "Run", type_ = "string", json_path = ".spec.runName"),
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.actionName"),
    printcolumn(name = "TaskType", type_ = "string", json_path = ".spec.taskType"),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Progressing')].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Progressing",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Progressing')].status",
        priority = "1"
    ),
    printcolumn(
        name = "Succeeded",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Succeeded')].status",
        priority = "1"
    ),
    printcolumn(
        name = "Failed",
        type_ = "string",
        json_path = ".status.conditions[?(@.type=='Failed')].status",
        priority = "1"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TaskActionSpec {
    #[schemars(length(min = 1, max = 30))]
    pub run_name: String,
    #[schemars(length(min = 1, max = 63))]
    pub project: String,
    #[schemars(length(min = 1, max = 63))]
    pub domain: String,
    #[schemars(length(min = 1, max = 30))]
    pub action_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 30))]
    pub parent_action_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_type: Option<ActionType>,
    /// flyteidl2 `workflow.ConditionAction`, serialized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_spec: Option<Bytes>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub input_uri: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub run_output_base: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 256))]
    pub cache_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 63))]
    pub task_type: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 63))]
    pub short_name: String,
    /// flyteidl2 `core.TaskTemplate`, serialized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_template: Option<Bytes>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_vars: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interruptible: Option<bool>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 256))]
    pub group: String,
}

/// What the controller recorded. Fields Flyte's executor writes and ours does not use
/// (`stateJson`, the signal fields) are kept as they are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskActionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_json: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_state: Option<Bytes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i64>")]
    pub plugin_state_version: Option<u8>,
    /// Flyte's plugin phase names: `PhaseQueued`, `PhaseRunning`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i32>")]
    pub plugin_phase_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i32>")]
    pub attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i32>")]
    pub system_failures: Option<u32>,
    /// flyteidl `CatalogCacheStatus` as its number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_status: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<KubeCondition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phase_history: Vec<PhaseTransition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_state: Option<ErrorState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_value: Option<Bytes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signalled_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signalled_at: Option<Time>,
}

/// One entry of the phase history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseTransition {
    pub phase: String,
    pub occurred_at: Time,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Why an action failed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorState {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub code: String,
    /// `USER` or `SYSTEM`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Flyte's name of a plugin phase in `status.pluginPhase`.
pub const fn plugin_phase_name(phase: core::PluginPhase) -> &'static str {
    use core::PluginPhase as P;
    match phase {
        P::NotReady => "PhaseNotReady",
        P::Queued => "PhaseQueued",
        P::WaitingForResources => "PhaseWaitingForResources",
        P::WaitingForCache => "PhaseWaitingForCache",
        P::Initializing => "PhaseInitializing",
        P::Running => "PhaseRunning",
        P::Success => "PhaseSuccess",
        P::RetryableFailure => "PhaseRetryableFailure",
        P::PermanentFailure => "PhasePermanentFailure",
        P::Aborted => "PhaseAborted",
    }
}

const PLUGIN_PHASES: [core::PluginPhase; 10] = [
    core::PluginPhase::NotReady,
    core::PluginPhase::Queued,
    core::PluginPhase::WaitingForResources,
    core::PluginPhase::WaitingForCache,
    core::PluginPhase::Initializing,
    core::PluginPhase::Running,
    core::PluginPhase::Success,
    core::PluginPhase::RetryableFailure,
    core::PluginPhase::PermanentFailure,
    core::PluginPhase::Aborted,
];

fn plugin_phase_named(name: &str) -> Option<core::PluginPhase> {
    PLUGIN_PHASES
        .into_iter()
        .find(|p| plugin_phase_name(*p) == name)
}

const ACTION_PHASES: [core::ActionPhase; 8] = [
    core::ActionPhase::Queued,
    core::ActionPhase::WaitingForResources,
    core::ActionPhase::Initializing,
    core::ActionPhase::Running,
    core::ActionPhase::Succeeded,
    core::ActionPhase::Failed,
    core::ActionPhase::Aborted,
    core::ActionPhase::TimedOut,
];

const CACHE_STATUSES: [(core::CacheStatus, i32); 6] = [
    (core::CacheStatus::Disabled, 0),
    (core::CacheStatus::Miss, 1),
    (core::CacheStatus::Hit, 2),
    (core::CacheStatus::Populated, 3),
    (core::CacheStatus::LookupFailure, 4),
    (core::CacheStatus::PutFailure, 5),
];

/// `status` as flyteidl's `CatalogCacheStatus` number.
pub(crate) fn cache_status_number(status: core::CacheStatus) -> i32 {
    CACHE_STATUSES
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(0, |(_, n)| *n)
}

const CONDITION_TYPES: [(core::ConditionType, &str); 3] = [
    (core::ConditionType::Progressing, "Progressing"),
    (core::ConditionType::Succeeded, "Succeeded"),
    (core::ConditionType::Failed, "Failed"),
];

const REASONS: [core::Reason; 12] = [
    core::Reason::Queued,
    core::Reason::Initializing,
    core::Reason::Executing,
    core::Reason::Completed,
    core::Reason::RetryableFailure,
    core::Reason::PermanentFailure,
    core::Reason::Aborted,
    core::Reason::PluginNotFound,
    core::Reason::InvalidSpec,
    core::Reason::Paused,
    core::Reason::Signaled,
    core::Reason::TimedOut,
];

fn time_of(timestamp: core::Timestamp) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::from_millisecond(timestamp.as_millis())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

fn timestamp_of(time: &Time) -> core::Timestamp {
    core::Timestamp::from_millis(time.0.as_millisecond())
}

/// What the task template says that the reconciler needs (the driver decodes it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TemplateFacts {
    pub retries: u32,
    pub cache_serializable: bool,
}

impl TaskAction {
    /// What a condition action waits for: `conditionSpec` (a serialized flyteidl2
    /// `workflow.ConditionAction`: its name, and its timeout counted from the object's creation),
    /// and the signal once Flyte's control plane wrote `status.signalValue`. `None` when there is
    /// no spec or it does not decode (the reconciler then fails the action as `InvalidSpec`).
    fn condition(&self) -> Option<core::ConditionSpec> {
        use buffa::Message as _;
        let bytes = self.spec.condition_spec.as_ref()?;
        let action =
            flyte_idl::flyteidl2::workflow::ConditionAction::decode_from_slice(&bytes.0).ok()?;
        let created = self.metadata.creation_timestamp.as_ref().map(timestamp_of);
        let deadline = action.timeout.as_option().and_then(|timeout| {
            let seconds = u64::try_from(timeout.seconds).unwrap_or(0);
            created.map(|c| c.saturating_add(std::time::Duration::from_secs(seconds)))
        });
        let status = self.status.as_ref();
        let signal = status.and_then(|s| s.signal_value.as_ref()).map(|value| {
            let by = status
                .and_then(|s| s.signalled_by.clone())
                .unwrap_or_else(|| "the control plane".to_owned());
            format!("{} byte(s) from {by}", value.0.len())
        });
        Some(core::ConditionSpec {
            name: action.name,
            deadline,
            signal,
        })
    }

    /// The reconciler's view of this object. `facts` come from the decoded task template.
    pub fn to_core(&self, facts: &TemplateFacts) -> core::TaskAction {
        let meta = &self.metadata;
        let spec = &self.spec;
        let status = self.status.clone().unwrap_or_default();
        core::TaskAction {
            metadata: core::ObjectMeta {
                namespace: meta.namespace.clone().unwrap_or_default(),
                name: meta.name.clone().unwrap_or_default(),
                resource_version: meta
                    .resource_version
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_default(),
                labels: meta.labels.clone().unwrap_or_default(),
                finalizers: meta.finalizers.clone().unwrap_or_default(),
                deletion_timestamp: meta.deletion_timestamp.as_ref().map(timestamp_of),
            },
            spec: core::TaskActionSpec {
                run_name: spec.run_name.clone(),
                project: spec.project.clone(),
                domain: spec.domain.clone(),
                action_name: spec.action_name.clone(),
                parent_action_name: spec.parent_action_name.clone(),
                action_type: match spec.action_type {
                    Some(ActionType::Condition) => core::ActionType::Condition,
                    _ => core::ActionType::Task,
                },
                condition: self.condition(),
                input_uri: spec.input_uri.clone(),
                run_output_base: spec.run_output_base.clone(),
                cache_key: spec.cache_key.clone(),
                cache_serializable: facts.cache_serializable,
                task_type: spec.task_type.clone(),
                short_name: spec.short_name.clone(),
                task_template: spec
                    .task_template
                    .as_ref()
                    .map(|b| b.0.clone())
                    .unwrap_or_default(),
                env_vars: spec.env_vars.clone(),
                interruptible: spec.interruptible.unwrap_or(false),
                group: spec.group.clone(),
                retries: facts.retries,
            },
            status: status.to_core(),
        }
    }
}

impl TaskActionStatus {
    /// The reconciler's status; what it does not know (unknown phase names, reasons) is left out.
    pub fn to_core(&self) -> core::TaskActionStatus {
        core::TaskActionStatus {
            plugin_state: core::PluginState {
                bytes: self
                    .plugin_state
                    .as_ref()
                    .map(|b| b.0.clone())
                    .unwrap_or_default(),
                version: self.plugin_state_version.map_or(0, u32::from),
            },
            plugin_phase: self.plugin_phase.as_deref().and_then(plugin_phase_named),
            plugin_phase_version: self.plugin_phase_version.unwrap_or(0),
            attempts: self.attempts.unwrap_or(0),
            system_failures: self.system_failures.unwrap_or(0),
            cache_status: CACHE_STATUSES
                .iter()
                .find(|(_, n)| Some(*n) == self.cache_status)
                .map_or(core::CacheStatus::Disabled, |(s, _)| *s),
            conditions: self
                .conditions
                .iter()
                .filter_map(|c| {
                    let kind = CONDITION_TYPES.iter().find(|(_, n)| *n == c.type_)?.0;
                    let reason = REASONS.into_iter().find(|r| r.as_str() == c.reason)?;
                    Some(core::Condition {
                        kind,
                        status: c.status == "True",
                        reason,
                        message: c.message.clone(),
                        last_transition_time: timestamp_of(&c.last_transition_time),
                    })
                })
                .collect(),
            phase_history: self
                .phase_history
                .iter()
                .filter_map(|p| {
                    Some(core::PhaseTransition {
                        phase: ACTION_PHASES.into_iter().find(|a| a.as_str() == p.phase)?,
                        occurred_at: timestamp_of(&p.occurred_at),
                        message: p.message.clone(),
                    })
                })
                .collect(),
            error: self.error_state.as_ref().map(|e| core::ExecutionError {
                code: e.code.clone(),
                kind: if e.kind == "SYSTEM" {
                    core::ErrorKind::System
                } else {
                    core::ErrorKind::User
                },
                message: e.message.clone(),
            }),
        }
    }

    /// `status` as stored, keeping the fields only Flyte's executor writes from `self`.
    #[must_use]
    pub fn with_core(&self, status: &core::TaskActionStatus) -> Self {
        Self {
            state_json: self.state_json.clone(),
            plugin_state: (!status.plugin_state.bytes.is_empty())
                .then(|| Bytes(status.plugin_state.bytes.clone())),
            plugin_state_version: (status.plugin_state.version != 0)
                .then(|| u8::try_from(status.plugin_state.version).unwrap_or(u8::MAX)),
            plugin_phase: status.plugin_phase.map(|p| plugin_phase_name(p).to_owned()),
            plugin_phase_version: (status.plugin_phase_version != 0)
                .then_some(status.plugin_phase_version),
            attempts: (status.attempts != 0).then_some(status.attempts),
            system_failures: (status.system_failures != 0).then_some(status.system_failures),
            cache_status: CACHE_STATUSES
                .iter()
                .find(|(s, _)| *s == status.cache_status)
                .map(|(_, n)| *n)
                .filter(|n| *n != 0),
            conditions: status
                .conditions
                .iter()
                .map(|c| KubeCondition {
                    type_: CONDITION_TYPES
                        .iter()
                        .find(|(k, _)| *k == c.kind)
                        .map_or("Progressing", |(_, n)| n)
                        .to_owned(),
                    status: if c.status { "True" } else { "False" }.to_owned(),
                    reason: c.reason.as_str().to_owned(),
                    message: c.message.clone(),
                    last_transition_time: time_of(c.last_transition_time),
                    observed_generation: None,
                })
                .collect(),
            phase_history: status
                .phase_history
                .iter()
                .map(|p| PhaseTransition {
                    phase: p.phase.as_str().to_owned(),
                    occurred_at: time_of(p.occurred_at),
                    message: p.message.clone(),
                })
                .collect(),
            error_state: status.error.as_ref().map(|e| ErrorState {
                code: e.code.clone(),
                kind: e.kind.as_str().to_owned(),
                message: e.message.clone(),
            }),
            signal_value: self.signal_value.clone(),
            signalled_by: self.signalled_by.clone(),
            signalled_at: self.signalled_at.clone(),
        }
    }
}

/// The CRD, shaped as Flyte's: the derived schema without schemars' `nullable` (Flyte's
/// optional fields are simply absent), and the validation `metav1.Condition` carries in every
/// Kubernetes API (status enum, reason pattern, lengths).
pub fn crd() -> CustomResourceDefinition {
    use kube::CustomResourceExt as _;
    let mut json = serde_json::to_value(TaskAction::crd()).unwrap_or_default();
    strip_nullable(&mut json);
    let versions = json["spec"]["versions"].as_array_mut();
    for version in versions.into_iter().flatten() {
        let status = &mut version["schema"]["openAPIV3Schema"]["properties"]["status"];
        status["properties"]["pluginStateVersion"]
            .as_object_mut()
            .map(|o| o.remove("format"));
        let condition = &mut status["properties"]["conditions"]["items"]["properties"];
        condition["status"]["enum"] = serde_json::json!(["True", "False", "Unknown"]);
        condition["message"]["maxLength"] = 32768.into();
        condition["reason"]["minLength"] = 1.into();
        condition["reason"]["maxLength"] = 1024.into();
        condition["reason"]["pattern"] = "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$".into();
        condition["type"]["maxLength"] = 316.into();
        condition["type"]["pattern"] = "^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$".into();
        condition["observedGeneration"]["minimum"] = 0.into();
    }
    // The shape is the derive's own plus the edits above, so it reads back.
    serde_json::from_value(json).unwrap_or_else(|_| TaskAction::crd())
}

fn strip_nullable(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("nullable");
            if let Some(serde_json::Value::Array(options)) = map.get_mut("enum") {
                options.retain(|o| !o.is_null());
            }
            map.values_mut().for_each(strip_nullable);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nullable),
        _ => {}
    }
}

/// The CRD as YAML, what `cargo xtask codegen` writes.
pub fn crd_yaml() -> String {
    let json = serde_json::to_value(crd()).unwrap_or_default();
    let mut text = String::from(
        "# Generated by `cargo xtask codegen` from crates/operator/src/crd.rs; do not edit.\n",
    );
    text.push_str(&serde_saphyr::to_string(&json).unwrap_or_default());
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_read_as_leniently_as_the_api_server_writes_them() {
        for (json, want) in [
            (r#""c3RhdGU=""#, b"state".to_vec()),
            (r#""c3Rh\ndGU=""#, b"state".to_vec()),
            (r#""c3RhdGU""#, b"state".to_vec()),
            (r#""!!not base64!!""#, Vec::new()),
        ] {
            let got: Bytes = serde_json::from_str(json).unwrap();
            assert_eq!(got.0, want, "{json}");
        }
    }

    #[test]
    fn every_plugin_phase_round_trips_through_its_flyte_name() {
        for phase in PLUGIN_PHASES {
            assert_eq!(plugin_phase_named(plugin_phase_name(phase)), Some(phase));
        }
    }

    #[test]
    fn a_status_round_trips_through_the_core_model() {
        let now = core::Timestamp::from_secs(1_700_000_000);
        let status = core::TaskActionStatus {
            plugin_state: core::PluginState {
                bytes: b"state".to_vec(),
                version: 2,
            },
            plugin_phase: Some(core::PluginPhase::Running),
            plugin_phase_version: 3,
            attempts: 2,
            system_failures: 1,
            cache_status: core::CacheStatus::Miss,
            conditions: vec![core::Condition {
                kind: core::ConditionType::Progressing,
                status: true,
                reason: core::Reason::Executing,
                message: "running".to_owned(),
                last_transition_time: now,
            }],
            phase_history: vec![core::PhaseTransition {
                phase: core::ActionPhase::Running,
                occurred_at: now,
                message: String::new(),
            }],
            error: Some(core::ExecutionError::new(
                core::ErrorKind::System,
                "X",
                "boom",
            )),
        };
        let stored = TaskActionStatus::default().with_core(&status);
        let json = serde_json::to_value(&stored).unwrap();
        assert_eq!(json["pluginPhase"], "PhaseRunning");
        assert_eq!(json["pluginState"], "c3RhdGU=");
        assert_eq!(json["conditions"][0]["status"], "True");
        assert_eq!(json["errorState"]["kind"], "SYSTEM");
        let back: TaskActionStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back.to_core(), status);
    }
}
