//! `flyte-run operator`: the TaskAction controller (flyte-operator) against the cluster the
//! usual Kubernetes client resolution finds (`KUBECONFIG`, `~/.kube/config`, or the pod's own
//! service account in a cluster).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use flyte_operator::controller::{self, ControllerOptions};

#[derive(Debug, clap::Args)]
pub(crate) struct OperatorArgs {
    /// Watch only this namespace (default: every namespace).
    #[arg(long)]
    namespace: Option<String>,
    /// TaskActions reconciled at the same time.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Log every write the controller would make (finalizers, pods, statuses, labels) and
    /// make none.
    #[arg(long)]
    dry_run: bool,
    /// Seconds between looks at an action that is not over (Flyte's default: 10).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    requeue_interval: u64,
}

/// The log level the operator runs at unless `FLYTE_RUN_LOG` says otherwise: a service's log
/// is its record.
pub(crate) const DEFAULT_LOG: &str = "info";

pub(crate) fn run(args: &OperatorArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await.context(
            "cannot find a Kubernetes cluster: set KUBECONFIG (or ~/.kube/config), or run in a pod with a service account",
        )?;
        // Fail at once, naming the problem, when the cluster cannot be reached or the CRD is not
        // installed, instead of retrying forever in the background.
        let actions: kube::Api<flyte_operator::crd::TaskAction> = match &args.namespace {
            Some(ns) => kube::Api::namespaced(client.clone(), ns),
            None => kube::Api::all(client.clone()),
        };
        actions
            .list(&kube::api::ListParams::default().limit(1))
            .await
            .map_err(|e| anyhow::anyhow!(controller::describe(&e)))
            .context(
                "cannot list TaskActions: is the cluster reachable and the CRD installed (crates/operator/crd/taskactions.flyte.org.yaml)?",
            )?;
        let mut options = ControllerOptions {
            namespace: args.namespace.clone(),
            concurrency: args.concurrency,
            dry_run: args.dry_run,
            ..ControllerOptions::default()
        };
        options.reconciler.requeue_interval = Duration::from_secs(args.requeue_interval.max(1));
        tracing::info!(
            namespace = args.namespace.as_deref().unwrap_or("(all)"),
            concurrency = args.concurrency,
            dry_run = args.dry_run,
            "the TaskAction controller is running"
        );
        controller::run(client, options, async {
            crate::tunnel::interrupted().await;
        })
        .await?;
        Ok(ExitCode::SUCCESS)
    })
}
