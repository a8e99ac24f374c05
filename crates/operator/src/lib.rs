//! The Kubernetes side of flyte-run (kube-rs). Today: the Knative app client, which deploys,
//! stops, reads, lists and deletes the KServices behind Flyte 2 apps exactly as Flyte's own app
//! client does, so the cluster and flyte-run agree on every object.
//!
//! The object and patch builders ([`app`]) are pure and table-tested; [`AppClient`] is the thin
//! async driver around `kube::Api` (tested against recorded request shapes with tower-test).
//! [`controller`] is the TaskAction controller: kube-runtime's `Controller` driving
//! flyte-reconciler-core's passes, with the pod plugin ([`pod`], pure) and the resource's types
//! and CRD ([`crd`]).

pub mod app;
mod client;
pub mod controller;
pub mod crd;
pub mod events;
pub mod lease;
pub mod metrics;
pub mod pod;

pub use app::{AppId, AppSpec, AppState, AppStatus, Replica};
pub use client::{AppClient, AppEvent, AppPage, DeployOutcome};

/// Everything that can go wrong talking to the cluster about apps.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("invalid app: {0}")]
    InvalidApp(#[from] flyte_kservice_naming::NamingError),
    #[error("the KService {name}: {reason}")]
    Corrupt { name: String, reason: String },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("watching apps: {0}")]
    Watch(String),
    #[error("cannot encode the app spec: {0}")]
    Encode(String),
    #[error("reconciling: {0}")]
    Reconcile(String),
    #[error("lost the lease {0} to another replica; stopped acting")]
    LostLease(String),
}

/// `Result` with this crate's error.
pub type Result<T, E = OperatorError> = std::result::Result<T, E>;
