//! The TaskAction controller against a real Kubernetes API server (built from its Go module by
//! `cargo xtask ci`), with kwok as the kubelet: pods run, exit 0 or 1, or never start, as their
//! image says (flyte-testkit's stages).
// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use buffa::Message as _;
use flyte_idl::flyteidl2::core::{Container, RetryStrategy, TaskMetadata, TaskTemplate};
use flyte_operator::controller::{self, ControllerOptions, EventSink, LeaderElection};
use flyte_operator::crd::{Bytes, TaskAction, TaskActionSpec};
use flyte_reconciler_core::{ActionEvent, ActionPhase};
use flyte_testkit::{IMAGE_FAILS, IMAGE_NEVER_STARTS, IMAGE_SUCCEEDS, KubeCluster};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::{Condition, await_condition, conditions};
use kube::{Client, ResourceExt as _};

/// How long any one action may take to get where a case expects it.
const SETTLE: Duration = Duration::from_mins(1);
const NS: &str = "default";

/// Action events, in the order the controller sent them.
#[derive(Default)]
struct Recorded(Mutex<Vec<(String, ActionPhase, u32)>>);

impl EventSink for Recorded {
    fn record<'a>(&'a self, event: &'a ActionEvent) -> flyte_operator::events::Delivery<'a> {
        self.0
            .lock()
            .unwrap()
            .push((event.id.run.name.clone(), event.phase, event.attempt));
        Box::pin(std::future::ready(Ok(())))
    }
}

impl Recorded {
    fn phases_of(&self, run: &str) -> Vec<(ActionPhase, u32)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _, _)| r == run)
            .map(|(_, p, a)| (*p, *a))
            .collect()
    }
}

async fn client(kubeconfig: &std::path::Path) -> Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    Client::try_from(config).unwrap()
}

async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &flyte_operator::crd::crd())
        .await
        .unwrap();
    tokio::time::timeout(
        SETTLE,
        await_condition(
            crds,
            "taskactions.flyte.org",
            conditions::is_crd_established(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
}

fn template(image: &str, retries: u32) -> Vec<u8> {
    TaskTemplate {
        r#type: "container".to_owned(),
        metadata: buffa::MessageField::some(TaskMetadata {
            retries: buffa::MessageField::some(RetryStrategy {
                retries,
                ..Default::default()
            }),
            ..Default::default()
        }),
        target: Some(
            Container {
                image: image.to_owned(),
                command: vec!["run".to_owned()],
                ..Default::default()
            }
            .into(),
        ),
        ..Default::default()
    }
    .encode_to_vec()
}

fn action(name: &str, task_type: &str, template: Option<Vec<u8>>) -> TaskAction {
    let mut action = TaskAction::new(
        name,
        TaskActionSpec {
            run_name: name.to_owned(),
            project: "flytesnacks".to_owned(),
            domain: "development".to_owned(),
            action_name: "a0".to_owned(),
            task_type: task_type.to_owned(),
            input_uri: "s3://bucket/in".to_owned(),
            run_output_base: "s3://bucket/out".to_owned(),
            task_template: template.map(Bytes),
            ..TaskActionSpec::default()
        },
    );
    action.metadata.namespace = Some(NS.to_owned());
    action
}

fn is_terminal() -> impl Condition<TaskAction> {
    |obj: Option<&TaskAction>| {
        obj.and_then(|o| o.status.as_ref())
            .is_some_and(|s| s.to_core().is_terminal())
    }
}

/// Terminal, and labelled so (the labels are written after the status).
fn is_terminal_and_labelled() -> impl Condition<TaskAction> {
    |obj: Option<&TaskAction>| {
        is_terminal().matches_object(obj)
            && obj.is_some_and(|o| {
                o.labels()
                    .get("flyte.org/termination-status")
                    .map(String::as_str)
                    == Some("terminated")
                    && o.labels().contains_key("flyte.org/completed-time")
            })
    }
}

fn has_reason(reason: &'static str) -> impl Condition<TaskAction> {
    move |obj: Option<&TaskAction>| {
        obj.and_then(|o| o.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c.reason == reason))
    }
}

async fn wait_for(
    api: &Api<TaskAction>,
    name: &str,
    cond: impl Condition<TaskAction>,
) -> TaskAction {
    tokio::time::timeout(SETTLE, await_condition(api.clone(), name, cond))
        .await
        .unwrap_or_else(|_| panic!("{name} did not get there in {SETTLE:?}"))
        .unwrap()
        .unwrap_or_else(|| panic!("{name} is gone"))
}

/// The terminal condition's reason and the error code, if any.
fn ending(action: &TaskAction) -> (String, String, Option<String>) {
    let status = action.status.clone().unwrap_or_default();
    let terminal = status
        .conditions
        .iter()
        .find(|c| c.type_ != "Progressing" && c.status == "True")
        .map(|c| (c.type_.clone(), c.reason.clone()))
        .unwrap_or_default();
    (terminal.0, terminal.1, status.error_state.map(|e| e.code))
}

struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(SETTLE, self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

fn start_controller(client: &Client, events: Arc<Recorded>) -> Running {
    start_with(client, events, |_| {})
}

fn start_replica(client: &Client, events: Arc<Recorded>, identity: &str) -> Running {
    start_with(client, events, |options| {
        options.leader_election = Some(LeaderElection {
            namespace: NS.to_owned(),
            name: "flyte-run-operator".to_owned(),
            identity: identity.to_owned(),
            // Generous for a loaded machine: a renewal may take a while; failover in the test
            // comes from the release on a clean stop, not from expiry.
            duration: Duration::from_secs(9),
        });
    })
}

/// A controller on this namespace with fast requeues, `configure`d further; stopped by
/// [`Running::stop`].
fn start_with(
    client: &Client,
    events: Arc<Recorded>,
    configure: impl FnOnce(&mut ControllerOptions),
) -> Running {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut options = ControllerOptions {
        namespace: Some(NS.to_owned()),
        events,
        ..ControllerOptions::default()
    };
    options.reconciler.requeue_interval = Duration::from_millis(500);
    options.reconciler.retry_backoff = Duration::from_millis(200);
    configure(&mut options);
    let client = client.clone();
    let task = tokio::spawn(async move {
        controller::run(client, options, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Running {
        stop: Some(stop),
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taskactions_reach_every_terminal_phase_on_a_real_api_server() {
    let cluster = KubeCluster::start();
    let client = client(&cluster.kubeconfig()).await;
    install_crd(&client).await;
    let events = Arc::new(Recorded::default());
    let running = start_controller(&client, Arc::clone(&events));
    let api: Api<TaskAction> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let create = |a: TaskAction| {
        let api = api.clone();
        async move { api.create(&PostParams::default(), &a).await.unwrap() }
    };
    create(action("ok", "container", Some(template(IMAGE_SUCCEEDS, 0)))).await;
    create(action("fails", "container", Some(template(IMAGE_FAILS, 1)))).await;
    create(action("no-template", "container", None)).await;
    create(action(
        "no-plugin",
        "spark",
        Some(template(IMAGE_SUCCEEDS, 0)),
    ))
    .await;
    create(action(
        "bad-template",
        "container",
        Some(b"\xff\xff".to_vec()),
    ))
    .await;
    create(action(
        "stuck",
        "container",
        Some(template(IMAGE_NEVER_STARTS, 0)),
    ))
    .await;

    // (name, terminal condition, reason, error code)
    let cases = [
        ("ok", "Succeeded", "Completed", None),
        (
            "fails",
            "Failed",
            "PermanentFailure",
            Some("MaxRetriesExceeded"),
        ),
        ("no-template", "Failed", "InvalidSpec", None),
        ("no-plugin", "Failed", "PluginNotFound", None),
        (
            "bad-template",
            "Failed",
            "PermanentFailure",
            Some("BadTaskSpecification"),
        ),
    ];
    for (name, condition, reason, code) in cases {
        let done = wait_for(&api, name, is_terminal_and_labelled()).await;
        let (got_condition, got_reason, got_code) = ending(&done);
        assert_eq!(
            (got_condition.as_str(), got_reason.as_str()),
            (condition, reason),
            "{name}: {:?}",
            done.status
        );
        if let Some(code) = code {
            assert_eq!(got_code.as_deref(), Some(code), "{name}: {:?}", done.status);
        }
    }

    // The succeeded action: its pod is the first attempt's, owned by the action.
    let ok = api.get("ok").await.unwrap();
    let pod = pods.get("ok-0").await.unwrap();
    assert_eq!(
        pod.owner_references()[0].uid,
        ok.uid().unwrap(),
        "the pod is owned by its action"
    );
    assert_eq!(
        events.phases_of("ok").last(),
        Some(&(ActionPhase::Succeeded, 1))
    );
    // The failing task ran twice (one retry), then stopped: no third pod.
    let fails = api.get("fails").await.unwrap();
    assert_eq!(fails.status.as_ref().unwrap().attempts, Some(2));
    assert!(pods.get_opt("fails-2").await.unwrap().is_none());
    // Actions refused before running never got a finalizer or a pod.
    for name in ["no-template", "no-plugin"] {
        assert!(
            api.get(name).await.unwrap().finalizers().is_empty(),
            "{name}"
        );
        assert!(pods.get_opt(&format!("{name}-0")).await.unwrap().is_none());
    }

    deleted_mid_run(&api, &pods, &events).await;
    running.stop().await;
}

/// A pod that never starts: the action waits (Initializing), then is deleted mid-run; the
/// finalizer holds it until the pod is gone and the abort is announced.
async fn deleted_mid_run(api: &Api<TaskAction>, pods: &Api<Pod>, events: &Recorded) {
    wait_for(api, "stuck", has_reason("Initializing")).await;
    let pod_uid = pods.get("stuck-0").await.unwrap().uid().unwrap();
    let uid = api.get("stuck").await.unwrap().uid().unwrap();
    api.delete("stuck", &DeleteParams::default()).await.unwrap();
    tokio::time::timeout(
        SETTLE,
        await_condition(api.clone(), "stuck", conditions::is_deleted(&uid)),
    )
    .await
    .unwrap()
    .unwrap();
    // The abort asked for the pod's deletion before the finalizer went; the (simulated)
    // kubelet then removes it.
    tokio::time::timeout(
        SETTLE,
        await_condition(pods.clone(), "stuck-0", conditions::is_deleted(&pod_uid)),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        events.phases_of("stuck").last().map(|(p, _)| *p),
        Some(ActionPhase::Aborted)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crd_schema_refuses_invalid_objects_on_the_server() {
    let cluster = KubeCluster::start();
    let client = client(&cluster.kubeconfig()).await;
    install_crd(&client).await;
    let api: Api<TaskAction> = Api::namespaced(client, NS);
    let mut long_run = action("long", "container", None);
    long_run.spec.run_name = "r".repeat(31);
    let mut long_project = action("long-project", "container", None);
    long_project.spec.project = "p".repeat(64);
    let mut empty_domain = action("empty-domain", "container", None);
    empty_domain.spec.domain = String::new();
    for (object, field) in [
        (long_run, "spec.runName"),
        (long_project, "spec.project"),
        (empty_domain, "spec.domain"),
    ] {
        let refused = api
            .create(&PostParams::default(), &object)
            .await
            .unwrap_err();
        let kube::Error::Api(status) = refused else {
            panic!("{field}: not an API error: {refused}");
        };
        assert_eq!(status.code, 422, "{field}: {status:?}");
        assert!(
            status.message.contains(field),
            "{field}: {}",
            status.message
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_recovers_when_the_api_server_restarts() {
    let mut cluster = KubeCluster::start();
    let client = client(&cluster.kubeconfig()).await;
    install_crd(&client).await;
    let events = Arc::new(Recorded::default());
    let running = start_controller(&client, Arc::clone(&events));
    let api: Api<TaskAction> = Api::namespaced(client.clone(), NS);
    api.create(
        &PostParams::default(),
        &action("before", "container", Some(template(IMAGE_SUCCEEDS, 0))),
    )
    .await
    .unwrap();
    wait_for(&api, "before", is_terminal()).await;
    cluster.restart_apiserver();
    api.create(
        &PostParams::default(),
        &action("after", "container", Some(template(IMAGE_SUCCEEDS, 0))),
    )
    .await
    .unwrap();
    let after = wait_for(&api, "after", is_terminal()).await;
    assert_eq!(ending(&after).1, "Completed", "{:?}", after.status);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_only_the_lease_holder_acts_and_the_other_takes_over() {
    use k8s_openapi::api::coordination::v1::Lease;
    let cluster = KubeCluster::start();
    let client = client(&cluster.kubeconfig()).await;
    install_crd(&client).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let held_by = |who: &'static str| {
        move |lease: Option<&Lease>| {
            lease
                .and_then(|l| l.spec.as_ref())
                .and_then(|s| s.holder_identity.as_deref())
                == Some(who)
        }
    };
    let (a_events, b_events) = (Arc::new(Recorded::default()), Arc::new(Recorded::default()));
    let a = start_replica(&client, Arc::clone(&a_events), "replica-a");
    tokio::time::timeout(
        SETTLE,
        await_condition(leases.clone(), "flyte-run-operator", held_by("replica-a")),
    )
    .await
    .unwrap()
    .unwrap();
    let b = start_replica(&client, Arc::clone(&b_events), "replica-b");
    let api: Api<TaskAction> = Api::namespaced(client.clone(), NS);
    api.create(
        &PostParams::default(),
        &action("first", "container", Some(template(IMAGE_SUCCEEDS, 0))),
    )
    .await
    .unwrap();
    wait_for(&api, "first", is_terminal_and_labelled()).await;
    assert!(!a_events.phases_of("first").is_empty());
    assert!(b_events.phases_of("first").is_empty(), "the follower acted");

    // The leader stops cleanly and gives the lease up; the other replica takes over.
    a.stop().await;
    tokio::time::timeout(
        SETTLE,
        await_condition(leases, "flyte-run-operator", held_by("replica-b")),
    )
    .await
    .unwrap()
    .unwrap();
    api.create(
        &PostParams::default(),
        &action("second", "container", Some(template(IMAGE_SUCCEEDS, 0))),
    )
    .await
    .unwrap();
    wait_for(&api, "second", is_terminal_and_labelled()).await;
    assert!(!b_events.phases_of("second").is_empty());
    assert!(a_events.phases_of("second").is_empty());
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_action_with_the_same_cache_key_is_a_cache_hit_without_a_pod() {
    let cluster = KubeCluster::start();
    let client = client(&cluster.kubeconfig()).await;
    install_crd(&client).await;
    let running = start_controller(&client, Arc::new(Recorded::default()));
    let api: Api<TaskAction> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    for name in ["cached-1", "cached-2"] {
        let mut cached = action(name, "container", Some(template(IMAGE_SUCCEEDS, 0)));
        cached.spec.cache_key = "train-v1-inputs-abc".to_owned();
        api.create(&PostParams::default(), &cached).await.unwrap();
        let done = wait_for(&api, name, is_terminal_and_labelled()).await;
        assert_eq!(ending(&done).1, "Completed", "{name}: {:?}", done.status);
    }
    let first = api.get("cached-1").await.unwrap().status.unwrap();
    let second = api.get("cached-2").await.unwrap().status.unwrap();
    // flyteidl's CatalogCacheStatus: 2 = CACHE_HIT, 3 = CACHE_POPULATED.
    assert_eq!(first.cache_status, Some(3));
    assert_eq!(second.cache_status, Some(2));
    assert!(pods.get_opt("cached-1-0").await.unwrap().is_some());
    assert!(
        pods.get_opt("cached-2-0").await.unwrap().is_none(),
        "a hit runs nothing"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_actions_are_collected_after_their_time_to_live() {
    let cluster = KubeCluster::start();
    let client = client(&cluster.kubeconfig()).await;
    install_crd(&client).await;
    let running = start_with(&client, Arc::new(Recorded::default()), |options| {
        options.reconciler.completed_ttl = Duration::from_secs(2);
    });
    let api: Api<TaskAction> = Api::namespaced(client.clone(), NS);
    let created = api
        .create(
            &PostParams::default(),
            &action(
                "short-lived",
                "container",
                Some(template(IMAGE_SUCCEEDS, 0)),
            ),
        )
        .await
        .unwrap();
    wait_for(&api, "short-lived", is_terminal_and_labelled()).await;
    // Nothing changes about it any more; it goes once its time to live has passed.
    tokio::time::timeout(
        SETTLE,
        await_condition(
            api.clone(),
            "short-lived",
            conditions::is_deleted(&created.uid().unwrap()),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_git_connection_becomes_the_pods_init_container() {
    let cluster = KubeCluster::start();
    let client = client(&cluster.kubeconfig()).await;
    install_crd(&client).await;
    let running = start_with(&client, Arc::new(Recorded::default()), |options| {
        options.git_connections = vec![
            serde_json::from_value(serde_json::json!({
                "name": "repo", "kind": "ssh",
                "schema": {"url": "https://git.example.com/org/repo"},
                "secret": {"name": "git-key", "mountPath": "/etc/.ssh"}
            }))
            .unwrap(),
        ];
    });
    let with_git = |name: &str, connection: &str| {
        let mut template = TaskTemplate::decode_from_slice(&template(IMAGE_SUCCEEDS, 0)).unwrap();
        template
            .config
            .insert("git_connection".to_owned(), connection.to_owned());
        action(name, "container", Some(template.encode_to_vec()))
    };
    let api: Api<TaskAction> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &with_git("cloned", "repo"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &with_git("unknown-repo", "nope"))
        .await
        .unwrap();
    wait_for(&api, "cloned", is_terminal_and_labelled()).await;
    let pod = pods.get("cloned-0").await.unwrap();
    let spec = pod.spec.unwrap();
    let init = &spec.init_containers.unwrap()[0];
    assert_eq!(init.name, "git-init");
    assert!(
        init.command.as_ref().unwrap()[2].contains("git@git.example.com:org/repo.git"),
        "{init:?}"
    );
    let refused = wait_for(&api, "unknown-repo", is_terminal_and_labelled()).await;
    let status = refused.status.unwrap();
    let error = status.error_state.unwrap();
    assert_eq!(error.code, "BadTaskSpecification");
    assert!(
        error.message.contains("git connection \"nope\"") && error.message.contains("repo"),
        "{}",
        error.message
    );
    running.stop().await;
}

fn condition(name: &str, timeout_seconds: i64) -> Vec<u8> {
    flyte_idl::flyteidl2::workflow::ConditionAction {
        name: name.to_owned(),
        timeout: buffa::MessageField::some(buffa_types::google::protobuf::Duration {
            seconds: timeout_seconds,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn condition_action(name: &str, spec: Vec<u8>) -> TaskAction {
    let mut action = action(name, "", None);
    action.spec.action_type = Some(flyte_operator::crd::ActionType::Condition);
    action.spec.condition_spec = Some(Bytes(spec));
    action
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condition_actions_wait_for_a_signal_or_time_out() {
    let cluster = KubeCluster::start();
    let client = client(&cluster.kubeconfig()).await;
    install_crd(&client).await;
    let running = start_controller(&client, Arc::new(Recorded::default()));
    let api: Api<TaskAction> = Api::namespaced(client.clone(), NS);
    for object in [
        condition_action("gate", condition("approve-deploy", 600)),
        condition_action("too-late", condition("approve-deploy", 1)),
        condition_action("garbled", b"\xff\xff".to_vec()),
    ] {
        api.create(&PostParams::default(), &object).await.unwrap();
    }
    // Waiting: Paused until Flyte's control plane delivers the signal into the status.
    wait_for(&api, "gate", has_reason("Paused")).await;
    let signal = serde_json::json!({
        "status": { "signalValue": "CgIIAQ==", "signalledBy": "alice" }
    });
    api.patch_status(
        "gate",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&signal),
    )
    .await
    .unwrap();
    for (name, condition, reason) in [
        ("gate", "Succeeded", "Signaled"),
        ("too-late", "Failed", "TimedOut"),
        ("garbled", "Failed", "InvalidSpec"),
    ] {
        let done = wait_for(&api, name, is_terminal_and_labelled()).await;
        let (got_condition, got_reason, _) = ending(&done);
        assert_eq!(
            (got_condition.as_str(), got_reason.as_str()),
            (condition, reason),
            "{name}: {:?}",
            done.status
        );
        assert!(
            done.finalizers().is_empty(),
            "{name}: conditions take no finalizer"
        );
    }
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_of_the_same_name_that_is_not_the_actions_is_never_adopted_or_deleted() {
    use k8s_openapi::api::core::v1::{Container as PodContainer, PodSpec};
    let cluster = KubeCluster::start();
    let client = client(&cluster.kubeconfig()).await;
    install_crd(&client).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut foreign = Pod {
        spec: Some(PodSpec {
            containers: vec![PodContainer {
                name: "web".to_owned(),
                image: Some("nginx:1".to_owned()),
                ..PodContainer::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    foreign.metadata.name = Some("taken-0".to_owned());
    let foreign = pods.create(&PostParams::default(), &foreign).await.unwrap();
    let running = start_controller(&client, Arc::new(Recorded::default()));
    let api: Api<TaskAction> = Api::namespaced(client.clone(), NS);
    api.create(
        &PostParams::default(),
        &action("taken", "container", Some(template(IMAGE_SUCCEEDS, 0))),
    )
    .await
    .unwrap();
    let done = wait_for(&api, "taken", is_terminal_and_labelled()).await;
    let status = done.status.unwrap();
    let error = status.error_state.unwrap();
    assert_eq!(error.kind, "SYSTEM", "{error:?}");
    assert!(error.message.contains("does not own"), "{error:?}");
    let still = pods.get("taken-0").await.unwrap();
    assert_eq!(
        still.metadata.uid, foreign.metadata.uid,
        "the other pod is untouched"
    );
    running.stop().await;
}

/// A client whose first status write to `target` is preceded by another writer's change to the
/// same object (an annotation, through `other`), so the write carries a stale resourceVersion
/// and the API server answers 409 Conflict. What the server answered to each status write is
/// kept.
struct Meddling {
    target: String,
    other: Api<TaskAction>,
    meddled: std::sync::atomic::AtomicBool,
    status_answers: Mutex<Vec<u16>>,
}

struct MeddlingService<S> {
    inner: S,
    meddling: Arc<Meddling>,
}

impl<S, B> tower::Service<http::Request<kube::client::Body>> for MeddlingService<S>
where
    S: tower::Service<http::Request<kube::client::Body>, Response = http::Response<B>>,
    S::Error: Send + 'static,
    B: Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let is_status_write = request.method() == http::Method::PUT
            && path.ends_with(&format!("/taskactions/{}/status", self.meddling.target));
        let meddling = Arc::clone(&self.meddling);
        // The inner future sends nothing until it is polled, so the change below lands first.
        let response = self.inner.call(request);
        Box::pin(async move {
            if is_status_write
                && !meddling
                    .meddled
                    .swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                let annotation = serde_json::json!({
                    "metadata": {"annotations": {"example.com/touched-by": "someone-else"}}
                });
                meddling
                    .other
                    .patch(
                        &meddling.target,
                        &kube::api::PatchParams::default(),
                        &kube::api::Patch::Merge(&annotation),
                    )
                    .await
                    .unwrap();
            }
            let response = response.await?;
            if is_status_write {
                meddling
                    .status_answers
                    .lock()
                    .unwrap()
                    .push(response.status().as_u16());
            }
            Ok(response)
        })
    }
}

/// A status write that conflicts with another writer's change is retried on a fresh read: the
/// action still ends Completed, and the other writer's change is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_status_write_is_retried_and_the_other_change_is_kept() {
    let cluster = KubeCluster::start();
    let client = client(&cluster.kubeconfig()).await;
    install_crd(&client).await;
    let meddling = Arc::new(Meddling {
        target: "contested".to_owned(),
        other: Api::namespaced(client.clone(), NS),
        meddled: std::sync::atomic::AtomicBool::new(false),
        status_answers: Mutex::default(),
    });
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(cluster.kubeconfig()).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let layer_meddling = Arc::clone(&meddling);
    let meddled_client = kube::client::ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(&tower::layer::layer_fn(move |inner| MeddlingService {
            inner,
            meddling: Arc::clone(&layer_meddling),
        }))
        .build();
    let events = Arc::new(Recorded::default());
    let running = start_controller(&meddled_client, Arc::clone(&events));
    let api: Api<TaskAction> = Api::namespaced(client.clone(), NS);
    api.create(
        &PostParams::default(),
        &action("contested", "container", Some(template(IMAGE_SUCCEEDS, 0))),
    )
    .await
    .unwrap();
    let done = wait_for(&api, "contested", is_terminal_and_labelled()).await;
    running.stop().await;

    assert_eq!(ending(&done).1, "Completed", "{:?}", done.status);
    let answers = meddling.status_answers.lock().unwrap().clone();
    assert_eq!(
        answers.first(),
        Some(&409),
        "the first status write conflicted: {answers:?}"
    );
    assert!(
        answers.iter().skip(1).all(|a| *a == 200),
        "every later write went through: {answers:?}"
    );
    assert_eq!(
        done.annotations()
            .get("example.com/touched-by")
            .map(String::as_str),
        Some("someone-else"),
        "the other writer's change is kept"
    );
    assert_eq!(
        done.status.as_ref().unwrap().attempts,
        Some(1),
        "one attempt, one pod"
    );
    assert_eq!(
        events.phases_of("contested").last().map(|(p, _)| *p),
        Some(ActionPhase::Succeeded)
    );
}
