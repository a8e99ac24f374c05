//! Pure builders for app KServices: the object for a spec, the merge for an update, the stop
//! patch, and reading an app's spec and state back from an object. No I/O.

use std::collections::BTreeMap;

use base64ct::{Base64, Encoding as _};
use flyte_kservice_naming as naming;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{OperatorError, Result};

/// Knative Serving's `Service` resource.
pub const KSERVICE_GROUP: &str = "serving.knative.dev";
pub const KSERVICE_VERSION: &str = "v1";
pub const KSERVICE_KIND: &str = "Service";
pub const KSERVICE_PLURAL: &str = "services";
pub const ANNOTATION_MIN_SCALE: &str = "autoscaling.knative.dev/min-scale";
pub const ANNOTATION_INITIAL_SCALE: &str = "autoscaling.knative.dev/initial-scale";
pub const ANNOTATION_MAX_SCALE: &str = "autoscaling.knative.dev/max-scale";

/// Which app: its org, project, domain and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppId {
    pub org: String,
    pub project: String,
    pub domain: String,
    pub name: String,
}

impl AppId {
    pub fn new(project: &str, domain: &str, name: &str) -> Self {
        Self {
            org: String::new(),
            project: project.to_owned(),
            domain: domain.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The KService's name (Flyte's algorithm; invalid names are errors).
    pub fn kservice_name(&self) -> Result<String> {
        Ok(naming::kservice_name(
            &self.project,
            &self.domain,
            &self.name,
        )?)
    }
}

/// What an app runs. Its canonical JSON is what the spec-sha annotation hashes and the spec
/// annotation carries (base64), so the spec can be rebuilt from the cluster object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AppSpec {
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replicas: Option<u32>,
}

/// An app's live state, read off its KService.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppState {
    /// Scaled to zero and hidden by a stop.
    Stopped,
    /// Knative's `Ready` condition is `True`.
    Ready,
    /// `Ready` is `False`: the latest revision failed.
    Failed,
    /// No `Ready` condition yet, or `Unknown`.
    Deploying,
}

/// An app as the cluster has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppStatus {
    pub kservice_name: String,
    pub spec: AppSpec,
    pub state: AppState,
    /// Knative's `status.url`, once routed.
    pub url: Option<String>,
    /// The `Ready` condition's message, when there is one (why a revision failed).
    pub message: Option<String>,
}

/// The `metadata` and `spec` of the KService for `spec`.
pub fn kservice_object(app: &AppId, spec: &AppSpec) -> Result<Value> {
    let name = app.kservice_name()?;
    let canonical =
        naming::canonical_json(spec).map_err(|e| OperatorError::Encode(e.to_string()))?;
    let sha = naming::spec_sha(spec).map_err(|e| OperatorError::Encode(e.to_string()))?;
    let labels: serde_json::Map<String, Value> =
        naming::app_labels(&app.project, &app.domain, &app.name)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v)))
            .collect();
    let annotations = json!({
        naming::ANNOTATION_SPEC_SHA: sha,
        naming::ANNOTATION_APP_ID: naming::app_id(&app.project, &app.domain, &app.name),
        naming::ANNOTATION_APP_ORG: app.org,
        naming::ANNOTATION_SPEC: Base64::encode_string(canonical.as_bytes()),
    });
    Ok(json!({
        "apiVersion": format!("{KSERVICE_GROUP}/{KSERVICE_VERSION}"),
        "kind": KSERVICE_KIND,
        "metadata": {
            "name": name,
            "namespace": naming::APP_NAMESPACE,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": template(spec),
    }))
}

fn template(spec: &AppSpec) -> Value {
    let mut container = json!({ "image": spec.image });
    if !spec.args.is_empty() {
        container["args"] = json!(spec.args);
    }
    if !spec.env.is_empty() {
        container["env"] = spec
            .env
            .iter()
            .map(|(name, value)| json!({ "name": name, "value": value }))
            .collect();
    }
    if let Some(port) = spec.port {
        container["ports"] = json!([{ "containerPort": port }]);
    }
    let mut annotations = serde_json::Map::new();
    if let Some(min) = spec.min_replicas {
        annotations.insert(ANNOTATION_MIN_SCALE.to_owned(), json!(min.to_string()));
    }
    if let Some(max) = spec.max_replicas {
        annotations.insert(ANNOTATION_MAX_SCALE.to_owned(), json!(max.to_string()));
    }
    json!({
        "template": {
            "metadata": { "annotations": annotations },
            "spec": { "containers": [container] },
        }
    })
}

fn string_map<'a>(
    object: &'a Value,
    pointer: &str,
) -> impl Iterator<Item = (&'a String, &'a Value)> {
    object
        .pointer(pointer)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
}

/// Why an existing KService of the same name is not this app's to change (another app's, or
/// not Flyte's at all), if it is not.
pub fn ownership_conflict(existing: &Value, app: &AppId) -> Option<String> {
    let managed = existing
        .pointer("/metadata/labels")
        .and_then(|l| l.get(naming::LABEL_APP_MANAGED))
        .and_then(Value::as_str)
        == Some("true");
    if !managed {
        return Some(format!(
            "it exists without the {}=true label, so Flyte does not manage it; nothing was changed",
            naming::LABEL_APP_MANAGED
        ));
    }
    let want = naming::app_id(&app.project, &app.domain, &app.name);
    let id = existing
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(naming::ANNOTATION_APP_ID))
        .and_then(Value::as_str);
    (id != Some(want.as_str())).then(|| {
        format!("it belongs to app {id:?}, not {want:?} (their names collide); nothing was changed")
    })
}

/// A label value Kubernetes accepts (so it cannot change a selector's meaning).
pub fn check_label_value(what: &str, value: &str) -> Result<()> {
    let ok = value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(OperatorError::Encode(format!(
            "{what} {value:?} is not a label value (letters, digits, '-', '_', '.'; at most 63)"
        )))
    }
}

/// Whether an existing KService needs the new spec: it does unless it is running (not stopped)
/// with the same spec-sha.
pub fn needs_update(existing: &Value, desired: &Value) -> bool {
    let stopped = existing
        .pointer("/metadata/labels")
        .and_then(|l| l.get(naming::LABEL_APP_STOPPED))
        .and_then(Value::as_str)
        == Some("true");
    let sha = |v: &Value| {
        v.pointer("/metadata/annotations")
            .and_then(|a| a.get(naming::ANNOTATION_SPEC_SHA))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    stopped || sha(existing) != sha(desired)
}

/// The object to replace `existing` with: the desired spec; labels and annotations merged (the
/// existing ones kept, ours on top, since Knative's creator annotations are immutable); the
/// stop labels dropped; `metadata.resourceVersion` kept so a concurrent change is not
/// overwritten.
pub fn merge_for_update(existing: &Value, desired: &Value) -> Value {
    let mut merged = existing.clone();
    merged["spec"] = desired["spec"].clone();
    for part in ["labels", "annotations"] {
        let mut map: serde_json::Map<String, Value> =
            string_map(existing, &format!("/metadata/{part}"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        for (k, v) in string_map(desired, &format!("/metadata/{part}")) {
            map.insert(k.clone(), v.clone());
        }
        if part == "labels" {
            map.remove(naming::LABEL_APP_STOPPED);
            map.remove(naming::LABEL_KNATIVE_VISIBILITY);
        }
        merged["metadata"][part] = Value::Object(map);
    }
    // Status belongs to Knative; a replace must not carry a stale copy.
    if let Some(object) = merged.as_object_mut() {
        object.remove("status");
    }
    merged
}

/// The merge patch that stops an app: hidden from the public gateway and scaled to zero; the
/// object stays, so the app can start again.
pub fn stop_patch() -> Value {
    json!({
        "metadata": { "labels": {
            naming::LABEL_APP_STOPPED: "true",
            naming::LABEL_KNATIVE_VISIBILITY: "cluster-local",
        }},
        "spec": { "template": { "metadata": { "annotations": {
            ANNOTATION_MIN_SCALE: "0",
            ANNOTATION_INITIAL_SCALE: "0",
        }}}},
    })
}

/// Read an app back from its KService: the spec from its annotation, the state from the stop
/// label and Knative's `Ready` condition.
pub fn app_status(object: &Value) -> Result<AppStatus> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let corrupt = |reason: String| OperatorError::Corrupt {
        name: name.clone(),
        reason,
    };
    let encoded = object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(naming::ANNOTATION_SPEC))
        .and_then(Value::as_str)
        .ok_or_else(|| corrupt(format!("it has no {} annotation", naming::ANNOTATION_SPEC)))?;
    let bytes = Base64::decode_vec(encoded)
        .map_err(|e| corrupt(format!("its spec annotation is not base64: {e}")))?;
    let spec: AppSpec = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(format!("its spec annotation is not an app spec: {e}")))?;
    let stopped = object
        .pointer("/metadata/labels")
        .and_then(|l| l.get(naming::LABEL_APP_STOPPED))
        .and_then(Value::as_str)
        == Some("true");
    let ready = object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"));
    let state = match (
        stopped,
        ready.and_then(|c| c.get("status")).and_then(Value::as_str),
    ) {
        (true, _) => AppState::Stopped,
        (false, Some("True")) => AppState::Ready,
        (false, Some("False")) => AppState::Failed,
        _ => AppState::Deploying,
    };
    Ok(AppStatus {
        kservice_name: name.clone(),
        spec,
        state,
        url: object
            .pointer("/status/url")
            .and_then(Value::as_str)
            .map(str::to_owned),
        message: ready
            .and_then(|c| c.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// Knative's labels on the pods of a service and of a revision.
pub const LABEL_KNATIVE_SERVICE: &str = "serving.knative.dev/service";
pub const LABEL_KNATIVE_REVISION: &str = "serving.knative.dev/revision";

/// One pod backing an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub name: String,
    /// The pod's phase (`Pending`, `Running` ...).
    pub phase: String,
    /// Every container is ready.
    pub ready: bool,
    pub revision: Option<String>,
}

/// The pods of a KService: those of its latest ready revision when it has one (old revisions'
/// pods terminating during a rollout are left out), else all of the service's.
pub fn replica_selector(kservice_name: &str, latest_ready_revision: Option<&str>) -> String {
    match latest_ready_revision {
        Some(revision) => {
            format!("{LABEL_KNATIVE_SERVICE}={kservice_name},{LABEL_KNATIVE_REVISION}={revision}")
        }
        None => format!("{LABEL_KNATIVE_SERVICE}={kservice_name}"),
    }
}

/// `status.latestReadyRevisionName` of a KService.
pub fn latest_ready_revision(object: &Value) -> Option<&str> {
    object
        .pointer("/status/latestReadyRevisionName")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
}

/// A replica as a pod shows it (the pod as JSON).
pub fn replica(pod: &Value) -> Replica {
    let text = |pointer: &str| {
        pod.pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array);
    Replica {
        name: text("/metadata/name").unwrap_or_default(),
        phase: text("/status/phase").unwrap_or_else(|| "Unknown".to_owned()),
        ready: statuses.is_some_and(|s| {
            !s.is_empty() && s.iter().all(|c| c.get("ready") == Some(&Value::Bool(true)))
        }),
        revision: pod
            .pointer("/metadata/labels")
            .and_then(|l| l.get(LABEL_KNATIVE_REVISION))
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

/// The label selector for apps, optionally of one project and domain.
pub fn app_selector(project: Option<&str>, domain: Option<&str>) -> String {
    let mut terms = vec![format!("{}=true", naming::LABEL_APP_MANAGED)];
    if let Some(project) = project {
        terms.push(format!("{}={project}", naming::LABEL_PROJECT));
    }
    if let Some(domain) = domain {
        terms.push(format!("{}={domain}", naming::LABEL_DOMAIN));
    }
    terms.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(spec: &AppSpec) -> Value {
        kservice_object(&AppId::new("p", "d", "web"), spec).unwrap()
    }

    #[test]
    fn states_come_from_the_stop_label_and_the_ready_condition() {
        let spec = AppSpec {
            image: "img".to_owned(),
            ..AppSpec::default()
        };
        for (stopped, ready, want) in [
            (false, Some("True"), AppState::Ready),
            (false, Some("False"), AppState::Failed),
            (false, Some("Unknown"), AppState::Deploying),
            (false, None, AppState::Deploying),
            (true, Some("True"), AppState::Stopped),
        ] {
            let mut o = object(&spec);
            if stopped {
                o["metadata"]["labels"][naming::LABEL_APP_STOPPED] = json!("true");
            }
            if let Some(status) = ready {
                o["status"] = json!({ "conditions": [
                    { "type": "ConfigurationsReady", "status": "True" },
                    { "type": "Ready", "status": status, "message": "why" },
                ]});
            }
            let got = app_status(&o).unwrap();
            assert_eq!(got.state, want, "{stopped} {ready:?}");
            assert_eq!(got.spec, spec);
            assert_eq!(got.kservice_name, "web-p-d");
        }
    }

    #[test]
    fn updates_only_when_the_spec_changed_or_the_app_is_stopped() {
        let a = object(&AppSpec {
            image: "a".to_owned(),
            ..AppSpec::default()
        });
        let b = object(&AppSpec {
            image: "b".to_owned(),
            ..AppSpec::default()
        });
        assert!(!needs_update(&a, &a));
        assert!(needs_update(&a, &b));
        let mut stopped = a.clone();
        stopped["metadata"]["labels"][naming::LABEL_APP_STOPPED] = json!("true");
        assert!(needs_update(&stopped, &a));
    }

    #[test]
    fn corrupt_objects_are_named_errors() {
        let mut o = object(&AppSpec {
            image: "a".to_owned(),
            ..AppSpec::default()
        });
        o["metadata"]["annotations"][naming::ANNOTATION_SPEC] = json!("%%%");
        assert!(
            app_status(&o)
                .unwrap_err()
                .to_string()
                .contains("not base64")
        );
        o["metadata"]["annotations"][naming::ANNOTATION_SPEC] =
            json!(Base64::encode_string(b"{\"imag\": 1}"));
        assert!(
            app_status(&o)
                .unwrap_err()
                .to_string()
                .contains("not an app spec")
        );
        o["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(naming::ANNOTATION_SPEC);
        assert!(
            app_status(&o)
                .unwrap_err()
                .to_string()
                .contains("has no flyte.org/spec annotation")
        );
        assert!(kservice_object(&AppId::new("p", "d", "bad_name"), &AppSpec::default()).is_err());
    }

    #[test]
    fn only_this_apps_kservice_is_changed() {
        let app = AppId::new("p", "d", "web");
        let ours = object(&AppSpec::default());
        assert_eq!(ownership_conflict(&ours, &app), None);
        let mut foreign = ours.clone();
        foreign["metadata"]["labels"] = json!({});
        assert!(
            ownership_conflict(&foreign, &app)
                .unwrap()
                .contains("Flyte does not manage it")
        );
        let mut other = ours;
        other["metadata"]["annotations"][naming::ANNOTATION_APP_ID] = json!("q/d/web");
        assert!(
            ownership_conflict(&other, &app)
                .unwrap()
                .contains("belongs to app")
        );
        assert!(check_label_value("project", "p,x!=y").is_err());
        assert!(check_label_value("project", "flyte-snacks_1.0").is_ok());
    }

    #[test]
    fn selectors() {
        assert_eq!(app_selector(None, None), "flyte.org/app-managed=true");
        assert_eq!(
            app_selector(Some("p"), Some("d")),
            "flyte.org/app-managed=true,flyte.org/project=p,flyte.org/domain=d"
        );
    }
}
