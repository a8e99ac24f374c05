//! A real Kubernetes control plane on loopback, as controller-runtime's envtest starts one:
//! etcd, kube-apiserver and kube-scheduler built from their Go modules, and kwok playing the
//! kubelet of one node, so pods move through their phases without containers.
//!
//! What a pod does is chosen by its image (kwok's stages, written here):
//! - [`IMAGE_SUCCEEDS`]: runs, then exits 0 (phase `Succeeded`);
//! - [`IMAGE_FAILS`]: runs, then exits 1 (phase `Failed`);
//! - [`IMAGE_NEVER_STARTS`]: stays `Pending`, its container waiting;
//! - any other image: runs until deleted.
//!
//! Deleted pods are removed at once (there is no kubelet to wait for). Every process is
//! stopped by its pid when the cluster is dropped, also when the test panics.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::go_tools::{ETCD, KUBE_APISERVER, KUBE_SCHEDULER, KWOK};
use crate::ports::{PortReservation, reserve_port};

/// A pod with this image runs, then exits 0.
pub const IMAGE_SUCCEEDS: &str = "flyte-run.test/succeed";
/// A pod with this image runs, then exits 1.
pub const IMAGE_FAILS: &str = "flyte-run.test/fail";
/// A pod with this image never starts.
pub const IMAGE_NEVER_STARTS: &str = "flyte-run.test/never-starts";

/// The bearer token of the cluster's administrator (`system:masters`).
const ADMIN_TOKEN: &str = "flyte-run-test-admin";
/// A user the API server knows but RBAC grants nothing: for "forbidden" cases.
const NOBODY_TOKEN: &str = "flyte-run-test-nobody";
/// How long a component may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_mins(1);

/// The running control plane. Stopped (every process, by pid) when dropped.
#[derive(Debug)]
pub struct KubeCluster {
    dir: tempfile::TempDir,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    scheduler: Option<Child>,
    kwok: Option<Child>,
    api_port: PortReservation,
    etcd_ports: (PortReservation, PortReservation),
}

impl KubeCluster {
    /// etcd, the API server, the scheduler and kwok with one node, all answering.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("flyte-kube-")
            .tempdir()
            .expect("a temporary directory for the cluster");
        let mut cluster = Self {
            dir,
            etcd: None,
            apiserver: None,
            scheduler: None,
            kwok: None,
            api_port: reserve_port(),
            etcd_ports: (reserve_port(), reserve_port()),
        };
        std::fs::write(
            cluster.path("tokens.csv"),
            format!(
                "{ADMIN_TOKEN},admin,admin-uid,\"system:masters\"\n{NOBODY_TOKEN},nobody,nobody-uid\n"
            ),
        )
        .expect("the token file");
        run_quiet(
            Command::new("openssl")
                .args(["genrsa", "-out"])
                .arg(cluster.path("sa.key"))
                .arg("2048"),
        );
        std::fs::write(cluster.kubeconfig(), cluster.kubeconfig_text(ADMIN_TOKEN))
            .expect("the kubeconfig");
        std::fs::write(
            cluster.path("nobody.kubeconfig"),
            cluster.kubeconfig_text(NOBODY_TOKEN),
        )
        .expect("the kubeconfig");
        std::fs::write(cluster.path("stages.yaml"), STAGES).expect("kwok's stages");
        cluster.start_etcd();
        cluster.start_apiserver();
        cluster.scheduler = Some(
            cluster.spawn(
                "kube-scheduler",
                Command::new(KUBE_SCHEDULER.require())
                    .arg(format!("--kubeconfig={}", cluster.kubeconfig().display()))
                    .args(["--leader-elect=false", "--secure-port=0"]),
            ),
        );
        cluster.kwok = Some(
            cluster.spawn(
                "kwok",
                Command::new(KWOK.require())
                    .arg(format!("--kubeconfig={}", cluster.kubeconfig().display()))
                    .arg("--manage-all-nodes=true")
                    .arg("--config")
                    .arg(cluster.path("stages.yaml"))
                    .arg("--server-address=127.0.0.1:0"),
            ),
        );
        cluster.request(
            "POST",
            "/api/v1/nodes",
            Some(r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"kwok-node-0"}}"#),
        );
        cluster
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A kubeconfig for the administrator.
    pub fn kubeconfig(&self) -> PathBuf {
        self.path("kubeconfig")
    }

    /// A kubeconfig for a user RBAC grants nothing.
    pub fn nobody_kubeconfig(&self) -> PathBuf {
        self.path("nobody.kubeconfig")
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port.port())
    }

    fn kubeconfig_text(&self, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority: {}\ncontexts:\n- name: test\n  context: {{cluster: test, user: user}}\ncurrent-context: test\nusers:\n- name: user\n  user: {{token: {token}}}\n",
            self.server(),
            self.path("certs/apiserver.crt").display()
        )
    }

    fn spawn(&self, name: &str, command: &mut Command) -> Child {
        let log = std::fs::File::create(self.path(&format!("{name}.log"))).expect("a log file");
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file, twice"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} cannot start: {e}"))
    }

    /// The log of a component (`etcd`, `kube-apiserver`, `kube-scheduler`, `kwok`).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{name}.log"))).unwrap_or_default()
    }

    fn start_etcd(&mut self) {
        let (client, peer) = (self.etcd_ports.0.port(), self.etcd_ports.1.port());
        let etcd = self.spawn(
            "etcd",
            Command::new(ETCD.require())
                .arg("--data-dir")
                .arg(self.path("etcd-data"))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
                ))
                .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}")),
        );
        self.etcd = Some(etcd);
        wait_for_port(client, "etcd", || self.log("etcd"));
    }

    fn start_apiserver(&mut self) {
        let child = self.spawn(
            "kube-apiserver",
            Command::new(KUBE_APISERVER.require())
                .arg(format!(
                    "--etcd-servers=http://127.0.0.1:{}",
                    self.etcd_ports.0.port()
                ))
                .arg(format!("--secure-port={}", self.api_port.port()))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--cert-dir={}", self.path("certs").display()))
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                .arg(format!(
                    "--service-account-key-file={}",
                    self.path("sa.key").display()
                ))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    self.path("sa.key").display()
                ))
                .arg(format!(
                    "--token-auth-file={}",
                    self.path("tokens.csv").display()
                ))
                .arg("--authorization-mode=RBAC")
                .arg("--service-cluster-ip-range=10.0.0.0/24")
                // No controller-manager here: nothing would mint service-account tokens or
                // lift the not-ready taint a new node gets.
                .arg("--disable-admission-plugins=ServiceAccount,TaintNodesByCondition"),
        );
        self.apiserver = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self
                .try_request("GET", "/readyz", None)
                .is_some_and(|b| b.trim() == "ok")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver did not become ready in {START_TIMEOUT:?}: {}",
                self.log("kube-apiserver")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stop the API server and start it again on the same port and storage (clients see their
    /// watches end and must recover).
    pub fn restart_apiserver(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.start_apiserver();
    }

    /// One request as the administrator (curl, trusting the server's certificate); the body of
    /// a 2xx answer, else a panic with the answer.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> String {
        self.try_request(method, path, body)
            .unwrap_or_else(|| panic!("{method} {path} failed"))
    }

    fn try_request(&self, method: &str, path: &str, body: Option<&str>) -> Option<String> {
        let mut curl = Command::new("curl");
        curl.args(["-s", "-f", "-k", "-X", method])
            .arg("-H")
            // The token goes in a header file argument-free: curl reads `@-` from stdin.
            .arg("@-")
            .arg("-H")
            .arg("Content-Type: application/json");
        if let Some(body) = body {
            curl.arg("--data-binary").arg(body);
        }
        curl.arg(format!("{}{path}", self.server()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = curl.spawn().expect("curl is installed");
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write as _;
            let _ = writeln!(stdin, "Authorization: Bearer {ADMIN_TOKEN}");
        }
        let out = child.wait_with_output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        for child in [
            self.kwok.take(),
            self.scheduler.take(),
            self.apiserver.take(),
            self.etcd.take(),
        ]
        .into_iter()
        .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run_quiet(command: &mut Command) {
    let out = command.output().expect("the command can start");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_for_port(port: u16, what: &str, log: impl Fn() -> String) {
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port} in {START_TIMEOUT:?}: {}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// kwok's stages: the node becomes ready; pods start (unless their image never starts), exit
/// as their image says, and are removed once deleted.
const STAGES: &str = r#"apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: flyte-run-node-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'NotIn'
      values: ['True']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $now | Quote }}, message: "kwok", reason: KubeletReady, status: "True", type: Ready}
      addresses:
      - {address: {{ NodeIP | Quote }}, type: InternalIP}
      allocatable: {cpu: 1k, memory: 1Ti, pods: 1M}
      capacity: {cpu: 1k, memory: 1Ti, pods: 1M}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: flyte-run-pod-start
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.podIP'
      operator: 'DoesNotExist'
    - key: '.spec.containers.[0].image'
      operator: 'NotIn'
      values: ['flyte-run.test/never-starts']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {lastTransitionTime: {{ $now | Quote }}, status: "True", type: Initialized}
      - {lastTransitionTime: {{ $now | Quote }}, status: "True", type: Ready}
      - {lastTransitionTime: {{ $now | Quote }}, status: "True", type: ContainersReady}
      - {lastTransitionTime: {{ $now | Quote }}, status: "True", type: PodScheduled}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: true
        restartCount: 0
        started: true
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      hostIP: {{ NodeIPWith .spec.nodeName | Quote }}
      podIP: {{ PodIPWith .spec.nodeName false .metadata.uid .metadata.name .metadata.namespace | Quote }}
      phase: Running
      startTime: {{ $now | Quote }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: flyte-run-pod-never-starts
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.spec.nodeName'
      operator: 'Exists'
    - key: '.status.containerStatuses'
      operator: 'DoesNotExist'
    - key: '.spec.containers.[0].image'
      operator: 'In'
      values: ['flyte-run.test/never-starts']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {lastTransitionTime: {{ $now | Quote }}, status: "True", type: PodScheduled}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state:
          waiting:
            reason: ContainerCreating
      {{ end }}
      phase: Pending
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: flyte-run-pod-exit
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Running']
    - key: '.spec.containers.[0].image'
      operator: 'In'
      values: ['flyte-run.test/succeed', 'flyte-run.test/fail']
  next:
    statusTemplate: |
      {{ $now := Now }}
      {{ $code := 0 }}{{ if eq (index .spec.containers 0).image "flyte-run.test/fail" }}{{ $code = 1 }}{{ end }}
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        restartCount: 0
        started: false
        state:
          terminated:
            exitCode: {{ $code }}
            finishedAt: {{ $now | Quote }}
            reason: {{ if eq $code 0 }}Completed{{ else }}Error{{ end }}
            startedAt: {{ $now | Quote }}
      {{ end }}
      phase: {{ if eq $code 0 }}Succeeded{{ else }}Failed{{ end }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: flyte-run-pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'Exists'
  next:
    finalizers:
      empty: true
    delete: true
"#;
