//! Names and metadata of the Knative services that back Flyte 2 apps.
//!
//! Everything here is a pure function of its arguments: no I/O, no clock, no environment. The
//! cluster computes the same values in Go (`app/internal/k8s/app_client.go`); our results must
//! equal its results byte for byte, or the CLI and the cluster would disagree on which KService
//! belongs to which app. Where Flyte would produce a name Kubernetes rejects, we return an error
//! instead.
//!
//! ```
//! use flyte_kservice_naming::kservice_name;
//! assert_eq!(kservice_name("proj", "dev", "MyApp").unwrap(), "myapp-proj-dev");
//! ```

mod ingress;
mod metadata;
mod name;
mod spec_hash;

pub use ingress::{IngressConfig, public_ingress};
pub use metadata::{
    ANNOTATION_APP_ID, ANNOTATION_APP_ORG, ANNOTATION_SPEC, ANNOTATION_SPEC_SHA, APP_NAMESPACE,
    LABEL_APP_MANAGED, LABEL_APP_NAME, LABEL_APP_STOPPED, LABEL_DOMAIN, LABEL_KNATIVE_VISIBILITY,
    LABEL_PROJECT, app_id, app_labels,
};
pub use name::{MAX_NAME_LEN, Part, kservice_name};
pub use spec_hash::{canonical_json, spec_sha};

/// Everything that can go wrong computing a name or a hash.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NamingError {
    /// One of project, domain or name is empty.
    #[error("the app {0} is empty; give a non-empty {0}")]
    EmptyPart(Part),
    /// A character that cannot appear in a Kubernetes DNS-1123 label, even after lower-casing.
    #[error(
        "the app {part} {value:?} contains {ch:?}, which cannot appear in a Kubernetes name; \
         use only letters, digits and '-'"
    )]
    InvalidCharacter { part: Part, value: String, ch: char },
    /// The resulting label would start or end with `-`, which Kubernetes rejects.
    #[error(
        "the KService name {name:?} would {where_} with '-', which Kubernetes rejects; \
         remove the leading or trailing '-' from the app name, project or domain"
    )]
    HyphenAtEdge { name: String, where_: &'static str },
    /// An ingress setting that cannot form a URL.
    #[error("invalid ingress setting {setting}: {reason}")]
    InvalidIngress {
        setting: &'static str,
        reason: String,
    },
    /// The spec could not be turned into JSON (for example a map with non-string keys).
    #[error("the app spec cannot be serialized for hashing: {0}")]
    SpecNotSerializable(String),
}

/// `Result` with this crate's error.
pub type Result<T, E = NamingError> = std::result::Result<T, E>;
