//! `flyte-run operator`: the TaskAction controller (flyte-operator) against the cluster the
//! usual Kubernetes client resolution finds (`KUBECONFIG`, `~/.kube/config`, or the pod's own
//! service account in a cluster).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use std::sync::Arc;

use flyte_api::idl::flyteidl2::workflow::EventsProxyServiceClient;
use flyte_operator::controller::{self, ControllerOptions};
use flyte_operator::events::{ConnectSink, EventSink};

use crate::context::AppContext;
use crate::control_plane::WhenNone;

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
    /// Act only while holding a Lease, so that of several replicas one reconciles (the others
    /// wait and take over when it stops). Not with --dry-run, which would hold the Lease while
    /// writing nothing and so keep the real operator waiting.
    #[arg(long, conflicts_with = "dry_run")]
    leader_elect: bool,
    /// The namespace of the Lease (default: --namespace, else `default`).
    #[arg(long, value_name = "NAMESPACE", requires = "leader_elect")]
    lease_namespace: Option<String>,
    /// Serve Prometheus-style metrics at `http://ADDR/metrics` (e.g. 127.0.0.1:10254, the port
    /// Flyte's executor uses).
    #[arg(long, value_name = "ADDR")]
    metrics_bind_address: Option<std::net::SocketAddr>,
    /// A YAML (or JSON) list of SSH git connections, Polyaxon-shaped (`name`, `kind: ssh`,
    /// `schema.url`, `secret.name`, `secret.mountPath`), that task templates may name in
    /// `config["git_connection"]`: their pod then starts from a checkout.
    #[arg(long, value_name = "FILE")]
    git_connections: Option<std::path::PathBuf>,
    /// The image of the git init container (needs git, ssh and sh).
    #[arg(long, value_name = "IMAGE", default_value = controller::DEFAULT_GIT_IMAGE)]
    git_image: String,
    /// Send action events to the control plane at URL (`EventsProxyService/Record`, Flyte's
    /// `eventsServiceURL`), such as the local sandbox, authenticated with the credential
    /// flyte-run uses for that endpoint. Default: one log line per event.
    #[arg(long, value_name = "URL")]
    events_url: Option<String>,
    /// The Lease's name.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "flyte-run-operator",
        requires = "leader_elect"
    )]
    lease_name: String,
}

/// The log level the operator runs at unless `FLYTE_RUN_LOG` says otherwise: a service's log
/// is its record.
pub(crate) const DEFAULT_LOG: &str = "info";

/// The connections in `file`, each checked (kind, absolute mount path, a key mode ssh accepts).
fn git_connections(
    file: Option<&std::path::Path>,
) -> anyhow::Result<Vec<flyte_connections::Connection>> {
    let Some(file) = file else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the git connections {}", file.display()))?;
    let connections: Vec<flyte_connections::Connection> = serde_saphyr::from_str(&text)
        .map_err(|e| {
            anyhow::anyhow!(
                "{} is not a list of git connections ({}); each needs name, kind: ssh, schema.url and secret (name, mountPath)",
                file.display(),
                e.to_string().lines().next().unwrap_or_default()
            )
        })?;
    for connection in &connections {
        connection
            .validate()
            .with_context(|| format!("in {}", file.display()))?;
    }
    Ok(connections)
}

/// Where kube looks for the cluster, for messages: `KUBECONFIG=...` or `~/.kube/config`.
pub(crate) fn kubeconfig_source() -> String {
    crate::env_vars::get(crate::env_vars::KUBECONFIG).map_or_else(
        || "~/.kube/config".to_owned(),
        |k| format!("KUBECONFIG={k}"),
    )
}

/// The innermost cause of `error`, first line only (kube's errors repeat their causes).
pub(crate) fn root_cause(error: &dyn std::error::Error) -> String {
    let mut cause = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// This replica's name in the Lease: the pod's, else host and process.
fn identity() -> String {
    crate::env_vars::get(crate::env_vars::POD_NAME).unwrap_or_else(|| {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".to_owned());
        format!("{host}-{}", std::process::id())
    })
}

pub(crate) fn run(args: &OperatorArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Local settings are checked before any cluster is asked anything.
    let git_connections = git_connections(args.git_connections.as_deref())?;
    // The events' receiver is opened on its own context (kept for the operator's life), whose
    // runtime its client was made on.
    let events_host = args
        .events_url
        .as_ref()
        .map(|url| -> anyhow::Result<_> {
            let host = AppContext::new(crate::paths::home_dir()?, Some(url.clone()));
            let plane = crate::control_plane::connect(&host, WhenNone::Fail)
                .map_err(|e| anyhow::anyhow!("cannot use --events-url {url}: {e}"))?;
            let client = plane
                .client()
                .connect(EventsProxyServiceClient::new)
                .with_context(|| format!("cannot use --events-url {url}"))?;
            let sink = ConnectSink::new(client, plane.client().base_url());
            host.block_on(sink.probe())
                .map_err(|e| anyhow::anyhow!("cannot use --events-url: {e}"))?;
            let sink: Arc<dyn EventSink> = Arc::new(sink);
            Ok((host, sink))
        })
        .transpose()?;
    runtime.block_on(async {
        let source = kubeconfig_source();
        let config = kube::Config::infer().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot find a Kubernetes cluster ({source}): {}; set KUBECONFIG to a working kubeconfig, or run in a pod with a service account",
                root_cause(&e)
            )
        })?;
        let server = config.cluster_url.to_string();
        let client = kube::Client::try_from(config)
            .with_context(|| format!("cannot make a client for {server}"))?;
        // Fail at once, naming the problem, when the cluster cannot be reached or the CRD is not
        // installed, instead of retrying forever in the background.
        let actions: kube::Api<flyte_operator::crd::TaskAction> = match &args.namespace {
            Some(ns) => kube::Api::namespaced(client.clone(), ns),
            None => kube::Api::all(client.clone()),
        };
        actions
            .list(&kube::api::ListParams::default().limit(1))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot list TaskActions at {server} ({source}): {}; is the cluster reachable and the CRD installed (crates/operator/crd/taskactions.flyte.org.yaml)?",
                    match &e {
                        kube::Error::Api(_) => controller::describe(&e),
                        other => root_cause(other),
                    }
                )
            })?;
        let mut options = ControllerOptions {
            namespace: args.namespace.clone(),
            concurrency: args.concurrency,
            dry_run: args.dry_run,
            git_connections,
            git_image: args.git_image.clone(),
            ..ControllerOptions::default()
        };
        if let Some((_, sink)) = &events_host {
            options.events = Arc::clone(sink);
        }
        options.reconciler.requeue_interval = Duration::from_secs(args.requeue_interval.max(1));
        if args.leader_elect {
            options.leader_election = Some(controller::LeaderElection {
                namespace: args
                    .lease_namespace
                    .clone()
                    .or_else(|| args.namespace.clone())
                    .unwrap_or_else(|| "default".to_owned()),
                name: args.lease_name.clone(),
                identity: identity(),
                duration: Duration::from_secs(15),
            });
        }
        if let Some(addr) = args.metrics_bind_address {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
            tokio::spawn(flyte_operator::metrics::serve(
                listener,
                std::sync::Arc::clone(&options.metrics),
            ));
        }
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
