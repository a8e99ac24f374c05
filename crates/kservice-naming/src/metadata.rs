//! Names of the labels and annotations Flyte puts on KServices. Label values are plain strings;
//! the constants are the contract with the cluster.

/// Every app's KService lives in this namespace.
pub const APP_NAMESPACE: &str = "flyte";

/// `true` on every KService Flyte manages.
pub const LABEL_APP_MANAGED: &str = "flyte.org/app-managed";
pub const LABEL_PROJECT: &str = "flyte.org/project";
pub const LABEL_DOMAIN: &str = "flyte.org/domain";
pub const LABEL_APP_NAME: &str = "flyte.org/app-name";
/// `true` while the app is stopped (scaled to zero, cluster-local).
pub const LABEL_APP_STOPPED: &str = "flyte.org/app-stopped";
/// Knative's visibility label; `cluster-local` hides a service from the public gateway.
pub const LABEL_KNATIVE_VISIBILITY: &str = "networking.knative.dev/visibility";

/// 16 hex characters identifying the spec; see [`crate::spec_sha`].
pub const ANNOTATION_SPEC_SHA: &str = "flyte.org/spec-sha";
/// `project/domain/name`.
pub const ANNOTATION_APP_ID: &str = "flyte.org/app-id";
pub const ANNOTATION_APP_ORG: &str = "flyte.org/app-org";
/// The spec itself, base64-encoded, so it can be rebuilt from the cluster object.
pub const ANNOTATION_SPEC: &str = "flyte.org/spec";

/// The value of [`ANNOTATION_APP_ID`].
pub fn app_id(project: &str, domain: &str, name: &str) -> String {
    format!("{project}/{domain}/{name}")
}

/// The labels every app's KService carries, in a stable order.
pub fn app_labels(project: &str, domain: &str, name: &str) -> [(&'static str, String); 4] {
    [
        (LABEL_APP_MANAGED, "true".to_owned()),
        (LABEL_PROJECT, project.to_owned()),
        (LABEL_DOMAIN, domain.to_owned()),
        (LABEL_APP_NAME, name.to_owned()),
    ]
}
