//! `flyte-run operator` as a user runs it, against a real Kubernetes API server (flyte-testkit's
//! `KubeCluster`): it reconciles, `--dry-run` writes nothing, and a cluster it cannot use is
//! named with the fix.
// Tests, examples and tools start processes and read their settings from the environment directly.
#![allow(clippy::disallowed_methods)]
// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use buffa::Message as _;
use flyte_idl::flyteidl2::core::{Container, TaskTemplate};
use flyte_operator::crd::{Bytes, TaskAction, TaskActionSpec};
use flyte_testkit::{IMAGE_SUCCEEDS, KubeCluster};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::runtime::wait::{await_condition, conditions};

const BIN: &str = env!("CARGO_BIN_EXE_flyte-run");
const SETTLE: Duration = Duration::from_mins(1);

/// The operator process, stopped by its pid however the test ends.
struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn operator(kubeconfig: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .env("KUBECONFIG", kubeconfig)
        .env_remove("FLYTE_RUN_LOG")
        .args([
            "operator",
            "--namespace",
            "default",
            "--requeue-interval",
            "1",
        ])
        .args(extra)
        .stdin(Stdio::null());
    command
}

async fn client(kubeconfig: &Path) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

async fn install_crd(client: &kube::Client) {
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

fn action(name: &str) -> TaskAction {
    let template = TaskTemplate {
        r#type: "container".to_owned(),
        target: Some(
            Container {
                image: IMAGE_SUCCEEDS.to_owned(),
                ..Default::default()
            }
            .into(),
        ),
        ..Default::default()
    };
    let mut action = TaskAction::new(
        name,
        TaskActionSpec {
            run_name: name.to_owned(),
            project: "flytesnacks".to_owned(),
            domain: "development".to_owned(),
            action_name: "a0".to_owned(),
            task_type: "container".to_owned(),
            input_uri: "s3://b/in".to_owned(),
            run_output_base: "s3://b/out".to_owned(),
            task_template: Some(Bytes(template.encode_to_vec())),
            ..TaskActionSpec::default()
        },
    );
    action.metadata.namespace = Some("default".to_owned());
    action
}

/// Read the operator's log until a line contains `needle`; every line read so far.
fn read_until(child: &mut Child, needle: &str) -> String {
    let stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    for line in std::io::BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
    {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(needle) {
            return seen;
        }
    }
    panic!("the operator ended before logging {needle:?}:\n{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_command_reconciles_and_dry_run_writes_nothing() {
    let cluster = KubeCluster::start();
    let client = client(&cluster.kubeconfig()).await;
    install_crd(&client).await;
    let api: Api<TaskAction> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &action("train"))
        .await
        .unwrap();

    // --dry-run: says what it would write, writes nothing.
    let mut dry = Operator(
        operator(&cluster.kubeconfig(), &["--dry-run"])
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let log = read_until(&mut dry.0, "dry-run: would add the finalizer");
    drop(dry);
    assert!(
        log.contains("the TaskAction controller is running"),
        "{log}"
    );
    let untouched = api.get("train").await.unwrap();
    assert!(untouched.metadata.finalizers.is_none(), "{untouched:?}");
    assert!(untouched.status.is_none(), "{untouched:?}");
    assert!(pods.get_opt("train-0").await.unwrap().is_none());

    // For real: the action succeeds, and the metrics say so.
    let metrics_port = flyte_testkit::reserve_port();
    let metrics_addr = format!("127.0.0.1:{}", metrics_port.port());
    let _real = Operator(
        operator(
            &cluster.kubeconfig(),
            &["--leader-elect", "--metrics-bind-address", &metrics_addr],
        )
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let done = tokio::time::timeout(
        SETTLE,
        await_condition(api.clone(), "train", |obj: Option<&TaskAction>| {
            obj.and_then(|o| o.status.as_ref())
                .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "Completed"))
        }),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert!(pods.get_opt("train-0").await.unwrap().is_some(), "{done:?}");
    let out = Command::new("curl")
        .args(["-s", "-f", &format!("http://{metrics_addr}/metrics")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l == "flyte_run_operator_leader 1"),
        "{text}"
    );
    // Action events are delivered at least once (a pass whose status write conflicted sends
    // its event again), so the count is at least one.
    for counter in [
        "flyte_run_operator_action_events_total{phase=\"SUCCEEDED\"} ",
        "flyte_run_operator_effects_total{kind=\"PluginHandle\"} ",
    ] {
        let count: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(counter))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(count >= 1, "{counter:?} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_the_operator_cannot_use_is_named_with_the_fix() {
    let cluster = KubeCluster::start();
    let home = flyte_testkit::TempHome::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let nowhere = home.path().join("nowhere.kubeconfig");
    std::fs::write(
        &nowhere,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'https://{closed}', insecure-skip-tls-verify: true}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{token: t}}\n"
        ),
    )
    .unwrap();
    let not_yaml = home.path().join("broken.kubeconfig");
    std::fs::write(&not_yaml, "{ not: [ yaml").unwrap();

    // Before the CRD is installed, then without RBAC, then nowhere at all.
    let (admin, nobody) = (cluster.kubeconfig(), cluster.nobody_kubeconfig());
    let cases: Vec<(&Path, &[&str])> = vec![
        (&admin, &["CRD installed", "404"]),
        (
            &nobody,
            &[
                "forbidden (HTTP 403)",
                "\"nobody\" cannot list resource \"taskactions\"",
            ],
        ),
        (
            &nowhere,
            &[
                "cannot list TaskActions at https://127.0.0.1:",
                "Connection refused",
            ],
        ),
        (
            &not_yaml,
            &[
                "cannot find a Kubernetes cluster (KUBECONFIG=",
                "unclosed bracket",
            ],
        ),
    ];
    // A git connections file that is not one, or whose key ssh would refuse.
    let loose = home.path().join("loose.yaml");
    std::fs::write(
        &loose,
        "- name: repo\n  kind: ssh\n  secret: {name: k, mountPath: /etc/.ssh, defaultMode: 420}\n",
    )
    .unwrap();
    let closed_url = format!("http://{closed}");
    for (flag, value, want) in [
        (
            "--git-connections",
            not_yaml.display().to_string(),
            "is not a list of git connections",
        ),
        (
            "--git-connections",
            loose.display().to_string(),
            "defaultMode 644 lets others read the key",
        ),
        (
            "--events-url",
            closed_url.clone(),
            "does not take action events: unavailable",
        ),
        (
            "--events-url",
            "ftp://x".to_owned(),
            "invalid endpoint \"ftp://x\"",
        ),
    ] {
        let out = operator(&admin, &[flag, &value])
            .env("HOME", home.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(want),
            "{want:?} in {stderr}"
        );
    }
    for (kubeconfig, wants) in cases {
        let out = operator(kubeconfig, &[]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{kubeconfig:?}: {stderr}");
        for want in wants {
            assert!(
                stderr.contains(want),
                "{kubeconfig:?}: {want:?} in {stderr}"
            );
        }
    }
}

/// Stops the sandbox of a test's home however the test ends.
struct StopSandbox<'a>(&'a dyn Fn(&[&str]) -> std::process::Output);

impl Drop for StopSandbox<'_> {
    fn drop(&mut self) {
        let _ = (self.0)(&["sandbox", "stop"]);
    }
}

/// With `--events-url`, the operator reports every phase to a control plane as Flyte's executor
/// does (`EventsProxyService/Record`): here the local sandbox, whose `GetActionDetails` then
/// answers for the action as flyte-run's `runs::` module reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_events_reach_the_control_plane_given_by_events_url() {
    let cluster = KubeCluster::start();
    let client = client(&cluster.kubeconfig()).await;
    install_crd(&client).await;
    let home = flyte_testkit::TempHome::new();
    let flyte_run = |args: &[&str]| {
        home.command(BIN)
            .env_remove("FLYTE_ENDPOINT")
            .args(args)
            .output()
            .unwrap()
    };
    let _stop = StopSandbox(&flyte_run);
    let started = flyte_run(&["sandbox", "start"]);
    let said = String::from_utf8_lossy(&started.stdout).into_owned();
    assert!(started.status.success(), "{said}");
    let endpoint = said
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap()
        .to_owned();

    let api: Api<TaskAction> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &action("reported"))
        .await
        .unwrap();
    let _operator = Operator(
        operator(&cluster.kubeconfig(), &["--events-url", &endpoint])
            .env("HOME", home.path())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    tokio::time::timeout(
        SETTLE,
        await_condition(api.clone(), "reported", |obj: Option<&TaskAction>| {
            obj.and_then(|o| o.status.as_ref())
                .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "Completed"))
        }),
    )
    .await
    .unwrap()
    .unwrap();
    // The success event is recorded before the status that says so is written.
    let out = flyte_run(&[
        "-e",
        r#"let d = runs::details("reported", "a0"); `${d.phase} ${d.attempts}`"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SUCCEEDED 1\n");
}

/// `playbooks/deploy-app.rhai` (the `apps::` module) on a real API server with Knative's own
/// Service CRD: deploy, redeploy unchanged, list, stop; a typo in an option is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_playbook_deploys_lists_and_stops_an_app() {
    use k8s_openapi::api::core::v1::Namespace;
    let cluster = KubeCluster::start();
    let client = client(&cluster.kubeconfig()).await;
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&flyte_testkit::KNATIVE_SERVICE_CRD.require()).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    tokio::time::timeout(
        SETTLE,
        await_condition(
            crds,
            "services.serving.knative.dev",
            conditions::is_crd_established(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let mut flyte = Namespace::default();
    flyte.metadata.name = Some("flyte".to_owned());
    Api::<Namespace>::all(client)
        .create(&PostParams::default(), &flyte)
        .await
        .unwrap();
    let playbook = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../playbooks/deploy-app.rhai"
    );
    let home = flyte_testkit::TempHome::new();
    let run = |args: &[&str]| {
        let out = home
            .command(BIN)
            .env("KUBECONFIG", cluster.kubeconfig())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let deploy = [
        playbook,
        "--set",
        "name=dashboard",
        "--set",
        "image=nginx:1",
    ];
    let (ok, text) = run(&deploy);
    assert!(ok, "{text}");
    assert!(text.contains("dashboard: Created"), "{text}");
    assert!(text.contains("apps in flytesnacks/development:"), "{text}");
    let (ok, text) = run(&deploy);
    assert!(ok && text.contains("dashboard: Unchanged"), "{text}");
    let (ok, text) = run(&[playbook, "--set", "name=dashboard", "--set", "stop=true"]);
    assert!(ok && text.contains("stopped dashboard"), "{text}");
    let (ok, text) = run(&[
        "-e",
        r#"apps::get("flytesnacks", "development", "dashboard").state"#,
    ]);
    assert!(ok && text.trim() == "Stopped", "{text}");
    let (ok, text) = run(&["-e", r#"apps::list(#{ projcet: "x" })"#]);
    assert!(!ok && text.contains("unknown option `projcet`"), "{text}");
}
