//! The TaskAction controller: a kube-runtime `Controller` over TaskActions and the pods they
//! own, whose reconcile runs one pass of flyte-reconciler-core and carries out each effect it
//! asks for against the API server (the same state machine the sandbox drives locally).
//!
//! Writes are guarded by the observed `resourceVersion` (a conflict is the reconciler's to
//! retry); the pod plugin lives in [`crate::pod`]; action events go to an [`EventSink`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource as _, ResourceExt as _};
use serde_json::json;
use tracing::{Instrument as _, info, info_span, warn};

use flyte_reconciler_core as core;
use flyte_reconciler_core::{
    CacheLookup, CachePutResult, CallResult, Effect, EffectResult, Outcome, PluginCall,
    PluginError, PluginResult, PluginState, PluginTransition, Reservation, Step, WriteResult,
};

use crate::crd::{TaskAction, TemplateFacts};
use crate::metrics::Metrics;
use crate::pod::{self, TaskContainer};
use crate::{OperatorError, Result};

pub use crate::events::{EventSink, LogSink};

/// Outputs by cache key, in this process: what makes a second action with the same key a hit.
/// A deployment's cache service would replace it; this one forgets on restart.
#[derive(Debug, Default)]
pub struct MemoryCache {
    outputs: Mutex<HashMap<String, Option<String>>>,
    reservations: Mutex<HashMap<String, String>>,
}

impl MemoryCache {
    fn get(&self, key: &str) -> CacheLookup {
        match self.lock_outputs().get(key) {
            Some(outputs_uri) => CacheLookup::Hit {
                outputs_uri: outputs_uri.clone(),
            },
            None => CacheLookup::NotFound,
        }
    }

    fn put(&self, key: &str, outputs_uri: Option<String>) -> CachePutResult {
        let mut outputs = self.lock_outputs();
        if outputs.contains_key(key) {
            return CachePutResult::AlreadyExists;
        }
        outputs.insert(key.to_owned(), outputs_uri);
        CachePutResult::Stored
    }

    fn reserve(&self, key: &str, owner: &str) -> Reservation {
        let mut reservations = self
            .reservations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let holder = reservations
            .entry(key.to_owned())
            .or_insert_with(|| owner.to_owned());
        if holder == owner {
            Reservation::Owned
        } else {
            Reservation::HeldBy(holder.clone())
        }
    }

    fn release(&self, key: &str, owner: &str) {
        let mut reservations = self
            .reservations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if reservations.get(key).is_some_and(|h| h == owner) {
            reservations.remove(key);
        }
    }

    fn lock_outputs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<String>>> {
        self.outputs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How the controller runs.
pub struct ControllerOptions {
    /// Watch one namespace, or all.
    pub namespace: Option<String>,
    /// TaskActions reconciled at once.
    pub concurrency: u16,
    /// Log the writes instead of making them.
    pub dry_run: bool,
    /// The reconciler's settings (task types with a plugin, retries, requeue interval, TTL).
    pub reconciler: core::Config,
    /// Where action events go.
    pub events: Arc<dyn EventSink>,
    /// Who writes the Kubernetes events (`kubectl describe` shows it).
    pub reporter: String,
    /// Act only while holding this Lease (several replicas, one leader).
    pub leader_election: Option<LeaderElection>,
    /// What the controller counts ([`crate::metrics::serve`] exposes it).
    pub metrics: Arc<Metrics>,
    /// Git connections a task template may name (`config["git_connection"]`): its pod then
    /// starts with an init container that checks the repository out.
    pub git_connections: Vec<flyte_connections::Connection>,
    /// The image of that init container (git, ssh and a shell).
    pub git_image: String,
}

/// The git init container's image unless told otherwise.
pub const DEFAULT_GIT_IMAGE: &str = "alpine/git:v2.47.2";

/// The Lease replicas compete for.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    pub namespace: String,
    pub name: String,
    /// This replica's name in the Lease (unique per replica: the pod name in a cluster).
    pub identity: String,
    /// How long the Lease holds without renewal (renewed every third of it).
    pub duration: Duration,
}

impl std::fmt::Debug for ControllerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerOptions")
            .field("namespace", &self.namespace)
            .field("concurrency", &self.concurrency)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

impl Default for ControllerOptions {
    fn default() -> Self {
        Self {
            namespace: None,
            concurrency: 16,
            dry_run: false,
            reconciler: core::Config::with_task_types(POD_TASK_TYPES),
            events: Arc::new(LogSink),
            reporter: "flyte-run-operator".to_owned(),
            leader_election: None,
            metrics: Arc::default(),
            git_connections: Vec::new(),
            git_image: DEFAULT_GIT_IMAGE.to_owned(),
        }
    }
}

/// The task types the pod plugin runs (Flyte's pod plugin registers these).
pub const POD_TASK_TYPES: [&str; 5] = [
    "container",
    "python",
    "python-task",
    "raw-container",
    "sidecar",
];

struct Context {
    client: Client,
    options: ControllerOptions,
    cache: MemoryCache,
    recorder: Recorder,
    /// Consecutive failed passes per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// The delay before retrying `key` after one more failure: the reconciler's backoff,
    /// doubled per consecutive failure, at most [`MAX_BACKOFF`].
    fn backoff(&self, key: &str) -> Duration {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        let factor = 2u32.saturating_pow(count.saturating_sub(1).min(16));
        self.options
            .reconciler
            .retry_backoff
            .saturating_mul(factor)
            .min(MAX_BACKOFF)
    }

    fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}

fn object_key(action: &TaskAction) -> String {
    format!(
        "{}/{}",
        action.namespace().unwrap_or_default(),
        action.name_any()
    )
}

/// Run the controller until `shutdown` resolves. With leader election, wait for the Lease
/// first, and stop with [`OperatorError::LostLease`] when it is lost (a supervisor restarts
/// the process, which then waits for the Lease again, as controller-runtime's managers do).
pub async fn run(
    client: Client,
    options: ControllerOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    use futures_util::FutureExt as _;
    let Some(election) = options.leader_election.clone() else {
        options.metrics.set_leader(true);
        return run_controller(client, options, shutdown).await;
    };
    let metrics = Arc::clone(&options.metrics);
    let elector = crate::lease::Elector::new(
        client.clone(),
        &election.namespace,
        &election.name,
        &election.identity,
        election.duration,
    );
    let shutdown = shutdown.shared();
    tokio::select! {
        () = shutdown.clone() => return Ok(()),
        acquired = elector.acquire() => acquired?,
    }
    info!(lease = %election.name, identity = %election.identity, "leading");
    metrics.set_leader(true);
    let mut holding = {
        let elector = elector.clone();
        tokio::spawn(async move { elector.hold().await })
    };
    tokio::select! {
        result = run_controller(client, options, shutdown) => {
            holding.abort();
            metrics.set_leader(false);
            result?;
            if let Err(e) = elector.release().await {
                warn!(error = %e, "cannot give the lease up; it expires by itself");
            }
            Ok(())
        }
        // The Lease is lost: the controller's future is dropped here, which cancels the
        // reconciles in flight instead of letting them finish (another replica may act now).
        _ = &mut holding => {
            metrics.set_leader(false);
            Err(OperatorError::LostLease(election.name))
        }
    }
}

async fn run_controller(
    client: Client,
    options: ControllerOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    let (actions, pods): (Api<TaskAction>, Api<Pod>) = match &options.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let concurrency = options.concurrency.max(1);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: options.reporter.clone(),
            instance: None,
        },
    );
    let context = Arc::new(Context {
        client,
        options,
        cache: MemoryCache::default(),
        recorder,
        failures: Mutex::default(),
    });
    Controller::new(actions, watcher::Config::default())
        .owns(
            pods,
            watcher::Config::default().labels(&format!("{}=true", pod::MANAGED_LABEL)),
        )
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "reconcile failed");
            }
        })
        .await;
    Ok(())
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature kube-runtime's Controller::run calls"
)]
fn error_policy(action: Arc<TaskAction>, error: &OperatorError, context: Arc<Context>) -> Action {
    let after = context.backoff(&object_key(&action));
    warn!(action = %object_key(&action), %error, ?after, "retrying");
    Action::requeue(after)
}

fn now() -> core::Timestamp {
    core::Timestamp::from_millis(k8s_openapi::jiff::Timestamp::now().as_millisecond())
}

async fn reconcile(action: Arc<TaskAction>, context: Arc<Context>) -> Result<Action> {
    let span = info_span!(
        "reconcile",
        namespace = action.namespace().unwrap_or_default(),
        name = action.name_any()
    );
    reconcile_one(&action, &context).instrument(span).await
}

/// Passes over one object. The object the controller hands over comes from its watch cache,
/// which may not show our own last write yet; a write refused for that (a conflict) is retried
/// at once on the object read fresh from the API server, a few times, instead of waiting.
async fn reconcile_one(action: &TaskAction, context: &Context) -> Result<Action> {
    const FRESH_READS: usize = 3;
    let mut fresh: Option<TaskAction> = None;
    for _ in 0..FRESH_READS {
        let current = fresh.as_ref().unwrap_or(action);
        let (key, outcome, observed, started_at) = run_pass(current, context).await?;
        if matches!(
            outcome,
            Outcome::Retry {
                error: core::Error::Conflict { .. },
                ..
            }
        ) {
            context.options.metrics.reconciled(true);
            let api: Api<TaskAction> = Api::namespaced(
                context.client.clone(),
                current.metadata.namespace.as_deref().unwrap_or("default"),
            );
            match api.get_opt(&current.name_any()).await? {
                Some(latest) => {
                    fresh = Some(latest);
                    continue;
                }
                None => return Ok(Action::await_change()),
            }
        }
        return Ok(settle(&key, outcome, &observed, started_at, context));
    }
    let after = context.backoff(&object_key(action));
    warn!(
        ?after,
        "the object kept changing under the pass; trying again later"
    );
    Ok(Action::requeue(after))
}

/// One reconciler-core pass over `action` with its effects carried out: the object's key, the
/// outcome, what the pass observed and when it started.
async fn run_pass(
    action: &TaskAction,
    context: &Context,
) -> Result<(String, Outcome, core::TaskAction, core::Timestamp)> {
    let decoded = action
        .spec
        .task_template
        .as_ref()
        .map(|t| pod::decode_template(&t.0));
    let facts = match &decoded {
        Some(Ok((facts, _))) => facts.clone(),
        _ => TemplateFacts::default(),
    };
    let observed = action.to_core(&facts);
    let config = &context.options.reconciler;
    let started_at = now();
    let (mut pass, mut step) = core::reconcile(Some(&observed), started_at, config);
    let effects = Effects {
        action,
        context,
        container: decoded.as_ref().and_then(|d| d.as_ref().ok()).map(|d| &d.1),
        template_error: decoded
            .as_ref()
            .and_then(|d| d.as_ref().err())
            .map(|e| e.0.clone()),
    };
    let outcome = loop {
        match step {
            Step::Run(effect) => {
                let result = effects.execute(effect).await;
                step = pass
                    .resume(result)
                    .map_err(|e| OperatorError::Reconcile(e.to_string()))?;
            }
            Step::Done(outcome) => break outcome,
        }
    };
    Ok((object_key(action), outcome, observed, started_at))
}

/// What the controller does after a pass that did not conflict.
fn settle(
    key: &str,
    outcome: Outcome,
    observed: &core::TaskAction,
    started_at: core::Timestamp,
    context: &Context,
) -> Action {
    let config = &context.options.reconciler;
    context
        .options
        .metrics
        .reconciled(matches!(outcome, Outcome::Retry { .. }));
    match outcome {
        // A terminal action is looked at again when its time to live runs out (at the latest
        // at the next sweep), so it is collected although nothing about it changes.
        Outcome::Idle
            if observed.status.is_terminal() && observed.metadata.deletion_timestamp.is_none() =>
        {
            context.succeeded(key);
            let completed = observed.status.completed_at().unwrap_or(started_at);
            let due = completed.saturating_add(config.completed_ttl);
            let wait = due.saturating_duration_since(started_at);
            Action::requeue(
                wait.min(config.gc_sweep_interval)
                    .max(Duration::from_millis(100)),
            )
        }
        Outcome::Idle => {
            context.succeeded(key);
            Action::await_change()
        }
        Outcome::RequeueAfter(after) => {
            context.succeeded(key);
            Action::requeue(after)
        }
        Outcome::Retry { after, error } => {
            let after = after.max(context.backoff(key));
            warn!(%error, ?after, "the pass stopped; trying again");
            Action::requeue(after)
        }
    }
}

/// One pass's effects against the API server.
struct Effects<'a> {
    action: &'a TaskAction,
    context: &'a Context,
    container: Option<&'a TaskContainer>,
    template_error: Option<String>,
}

impl Effects<'_> {
    fn actions(&self) -> Api<TaskAction> {
        Api::namespaced(
            self.context.client.clone(),
            self.action
                .metadata
                .namespace
                .as_deref()
                .unwrap_or("default"),
        )
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(
            self.context.client.clone(),
            self.action
                .metadata
                .namespace
                .as_deref()
                .unwrap_or("default"),
        )
    }

    fn name(&self) -> String {
        self.action.name_any()
    }

    fn owner(&self) -> String {
        format!(
            "{}/{}",
            self.action.namespace().unwrap_or_default(),
            self.name()
        )
    }

    fn dry_run(&self, what: &str) -> bool {
        if self.context.options.dry_run {
            info!(action = %self.owner(), "dry-run: would {what}");
        }
        self.context.options.dry_run
    }

    async fn execute(&self, effect: Effect) -> EffectResult {
        self.context.options.metrics.effect(&effect);
        if let Effect::RecordEvent(event) = &effect {
            self.context.options.metrics.action_event(event.phase);
        }
        match effect {
            Effect::AddFinalizer => self.set_finalizer(true).await.into(),
            Effect::RemoveFinalizer => self.set_finalizer(false).await.into(),
            Effect::PluginHandle(call) => self.handle(&call).await.into(),
            Effect::PluginAbort(call) => self.abort(&call).await.into(),
            Effect::PluginFinalize(_) => CallResult::Ok.into(),
            Effect::CacheGet { key } => self.context.cache.get(&key).into(),
            Effect::CacheReserve { key, owner, .. } => {
                self.context.cache.reserve(&key, &owner).into()
            }
            Effect::CachePut { key, outputs_uri } => {
                self.context.cache.put(&key, outputs_uri).into()
            }
            Effect::CacheRelease { key, owner } => {
                self.context.cache.release(&key, &owner);
                CallResult::Ok.into()
            }
            Effect::RecordEvent(event) => {
                CallResult::from(self.context.options.events.record(&event).await).into()
            }
            Effect::ObjectEvent(event) => self.object_event(event).await.into(),
            Effect::WriteStatus {
                status,
                resource_version,
            } => self.write_status(&status, resource_version).await.into(),
            Effect::ApplyLabels(labels) => self.apply_labels(labels).await.into(),
            Effect::Delete => self.delete().await.into(),
        }
    }

    async fn set_finalizer(&self, present: bool) -> WriteResult {
        let mut finalizers = self.action.finalizers().to_vec();
        finalizers.retain(|f| f != core::FINALIZER);
        if present {
            finalizers.push(core::FINALIZER.to_owned());
        }
        if self.dry_run(if present {
            "add the finalizer"
        } else {
            "remove the finalizer"
        }) {
            return WriteResult::Ok;
        }
        let patch = json!({
            "metadata": {
                "finalizers": finalizers,
                "resourceVersion": self.action.resource_version(),
            }
        });
        write_result(
            self.actions()
                .patch(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ()),
        )
    }

    async fn write_status(&self, status: &core::TaskActionStatus, version: u64) -> WriteResult {
        let current = self.action.status.clone().unwrap_or_default();
        let mut object = self.action.clone();
        object.status = Some(current.with_core(status));
        object.metadata.resource_version = Some(version.to_string());
        object.metadata.managed_fields = None;
        if self.dry_run(&format!(
            "write the status: {}",
            serde_json::to_string(&object.status).unwrap_or_default()
        )) {
            return WriteResult::Ok;
        }
        write_result(
            self.actions()
                .replace_status(&self.name(), &PostParams::default(), &object)
                .await
                .map(|_| ()),
        )
    }

    async fn apply_labels(&self, labels: Vec<(String, String)>) -> WriteResult {
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        if self.dry_run(&format!(
            "label it {}",
            serde_json::Value::Object(labels.clone())
        )) {
            return WriteResult::Ok;
        }
        let patch = json!({ "metadata": { "labels": labels } });
        write_result(
            self.actions()
                .patch(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ()),
        )
    }

    async fn delete(&self) -> WriteResult {
        if self.dry_run("delete it (its time to live ran out)") {
            return WriteResult::Ok;
        }
        match self
            .actions()
            .delete(&self.name(), &DeleteParams::default())
            .await
        {
            Ok(_) => WriteResult::Ok,
            Err(kube::Error::Api(e)) if e.code == 404 => WriteResult::Ok,
            Err(e) => WriteResult::Failed(describe(&e)),
        }
    }

    async fn object_event(&self, event: core::ObjectEvent) -> CallResult {
        let kube_event = KubeEvent {
            type_: match event.severity {
                core::Severity::Normal => EventType::Normal,
                core::Severity::Warning => EventType::Warning,
            },
            reason: event.reason.to_owned(),
            note: Some(event.message),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        // Best effort: an event that cannot be written (no RBAC for events) is only logged.
        if let Err(e) = self
            .context
            .recorder
            .publish(&kube_event, &self.action.object_ref(&()))
            .await
        {
            warn!(error = %describe(&e), "cannot record an event");
        }
        CallResult::Ok
    }

    async fn handle(&self, call: &PluginCall) -> PluginResult {
        let Some(container) = self.container else {
            return PluginResult::Error(PluginError {
                code: "BadTaskSpecification".to_owned(),
                message: self
                    .template_error
                    .clone()
                    .unwrap_or_else(|| "the action has no task template".to_owned()),
            });
        };
        let attempt = call.attempt.max(1);
        let name = pod::pod_name(self.action, attempt);
        let debug = pod::debug_enabled(self.action, container);
        match self.pods().get_opt(&name).await {
            Ok(Some(existing)) if !self.owns(&existing) => {
                if existing.metadata.deletion_timestamp.is_some() {
                    // An earlier action's pod of the same name, on its way out.
                    return waiting(format!("waiting for the old pod {name} to go"));
                }
                PluginResult::Error(PluginError {
                    code: "PodNameTaken".to_owned(),
                    message: format!(
                        "a pod named {name} exists that this action does not own; delete it or give the action another name"
                    ),
                })
            }
            Ok(Some(existing)) if existing.metadata.deletion_timestamp.is_some() => {
                // Ours, being deleted (a relaunch after a system failure): its status is no
                // longer this attempt's.
                waiting(format!("waiting for the previous pod {name} to go"))
            }
            Ok(Some(existing)) => {
                let info = pod::phase_of(
                    &existing,
                    k8s_openapi::jiff::Timestamp::now().as_second(),
                    debug,
                );
                // Record the launch even when the pass that created the pod could not (its
                // status write conflicted), so a pod deleted later counts as a failure.
                let state = call.state.bytes.is_empty().then(|| PluginState {
                    bytes: name.as_bytes().to_vec(),
                    version: pod::STATE_VERSION,
                });
                PluginResult::Transition(PluginTransition { info, state })
            }
            Ok(None) if !call.state.bytes.is_empty() => {
                // The plugin created this attempt's pod earlier; someone else removed it.
                PluginResult::Transition(PluginTransition {
                    info: core::PhaseInfo::failure(
                        core::PluginPhase::RetryableFailure,
                        core::ExecutionError::new(
                            core::ErrorKind::System,
                            "ResourceDeletedExternally",
                            format!("the pod {name} was deleted by someone else"),
                        ),
                    ),
                    state: Some(PluginState::default()),
                })
            }
            Ok(None) => self.create_pod(container, attempt, &name).await,
            Err(e) => PluginResult::Error(PluginError {
                code: "KubeError".to_owned(),
                message: format!("cannot read the pod {name}: {}", describe(&e)),
            }),
        }
    }

    /// The checkout `container` asks for, with the connection it names.
    fn git_source(
        &self,
        container: &TaskContainer,
    ) -> std::result::Result<Option<pod::GitSource>, String> {
        let Some(request) = &container.git else {
            return Ok(None);
        };
        let options = &self.context.options;
        let connection = options
            .git_connections
            .iter()
            .find(|c| c.name == request.connection)
            .ok_or_else(|| {
                let known: Vec<&str> = options
                    .git_connections
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                format!(
                    "the task template names git connection {:?}, which this operator does not have (it has: {})",
                    request.connection,
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                )
            })?;
        Ok(Some(pod::GitSource {
            connection: connection.clone(),
            init: request.init.clone(),
            image: options.git_image.clone(),
        }))
    }

    async fn create_pod(
        &self,
        container: &TaskContainer,
        attempt: u32,
        name: &str,
    ) -> PluginResult {
        let bad_spec = |message: String| {
            PluginResult::Error(PluginError {
                code: "BadTaskSpecification".to_owned(),
                message,
            })
        };
        let git = match self.git_source(container) {
            Ok(git) => git,
            Err(message) => return bad_spec(message),
        };
        let created = PluginResult::Transition(PluginTransition {
            info: core::PhaseInfo::new(
                core::PluginPhase::Queued,
                format!("created the pod {name}"),
            ),
            state: Some(PluginState {
                bytes: name.as_bytes().to_vec(),
                version: pod::STATE_VERSION,
            }),
        });
        let pod = match pod::build_pod_with(self.action, container, attempt, git.as_ref()) {
            Ok(pod) => pod,
            Err(e) => return bad_spec(e.0),
        };
        if self.dry_run(&format!(
            "create the pod {}",
            serde_json::to_string(&pod).unwrap_or_default()
        )) {
            return created;
        }
        match self.pods().create(&PostParams::default(), &pod).await {
            Ok(_) => created,
            // Created by an earlier pass whose status write was lost: it is ours.
            // A pod of that name exists: whether it is ours is decided on the next look.
            Err(kube::Error::Api(e)) if e.code == 409 => waiting(format!(
                "a pod named {name} already exists; looking at it again"
            )),
            // A ResourceQuota full for now: the task waits for room, as Flyte's plugins do.
            Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("exceeded quota") => {
                PluginResult::Transition(PluginTransition {
                    info: core::PhaseInfo::new(
                        core::PluginPhase::WaitingForResources,
                        format!("waiting for quota: {}", e.message),
                    ),
                    state: None,
                })
            }
            Err(kube::Error::Api(e)) if matches!(e.code, 400 | 413 | 422) => {
                PluginResult::Error(PluginError {
                    code: "BadTaskSpecification".to_owned(),
                    message: format!("the API server refused the pod {name}: {}", e.message),
                })
            }
            Err(e) => PluginResult::Error(PluginError {
                code: "KubeError".to_owned(),
                message: format!("cannot create the pod {name}: {}", describe(&e)),
            }),
        }
    }

    /// Whether `pod` is this action's (its controller reference names the action's uid).
    fn owns(&self, pod: &Pod) -> bool {
        let uid = self.action.metadata.uid.as_deref();
        uid.is_some()
            && pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| Some(o.uid.as_str()) == uid)
    }

    /// Delete the attempt's pod if it is this action's (a pod of the same name owned by
    /// something else is never touched); the delete is conditional on the uid seen.
    async fn abort(&self, call: &PluginCall) -> CallResult {
        let name = pod::pod_name(self.action, call.attempt.max(1));
        let existing = match self.pods().get_opt(&name).await {
            Ok(Some(pod)) if self.owns(&pod) => pod,
            Ok(_) => return CallResult::Ok,
            Err(e) => {
                return CallResult::Failed(format!("cannot read the pod {name}: {}", describe(&e)));
            }
        };
        if self.dry_run(&format!("delete the pod {name}")) {
            return CallResult::Ok;
        }
        let params = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: existing.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.pods().delete(&name, &params).await {
            Ok(_) => CallResult::Ok,
            Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409) => CallResult::Ok,
            Err(e) => CallResult::Failed(format!("cannot delete the pod {name}: {}", describe(&e))),
        }
    }
}

/// The plugin is waiting (Queued) for the reason given, its state unchanged.
fn waiting(reason: String) -> PluginResult {
    PluginResult::Transition(PluginTransition {
        info: core::PhaseInfo::new(core::PluginPhase::Queued, reason),
        state: None,
    })
}

/// A write's outcome as the reconciler reads it.
fn write_result(result: std::result::Result<(), kube::Error>) -> WriteResult {
    match result {
        Ok(()) => WriteResult::Ok,
        Err(kube::Error::Api(e)) if e.code == 409 => WriteResult::Conflict,
        Err(e) => WriteResult::Failed(describe(&e)),
    }
}

/// An API error in words; a 403 names the verb and resource RBAC refused.
pub fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(e) if e.code == 403 => format!(
            "forbidden (HTTP 403): {}; grant the operator's service account that verb on that resource",
            e.message
        ),
        kube::Error::Api(e) => format!("HTTP {} {}: {}", e.code, e.reason, e.message),
        other => other.to_string(),
    }
}

/// How long after a failed pass the controller tries again, at most.
pub const MAX_BACKOFF: Duration = Duration::from_mins(5);
