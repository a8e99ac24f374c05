//! Runs executed as local processes through the reconciler, driven over the real API.
#![allow(clippy::disallowed_methods)]
// Tests write fixtures and start processes directly.

// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use buffa::MessageField;
use flyte_api::idl::flyteidl2::common::{
    ActionIdentifier, ActionPhase, ProjectIdentifier, RunIdentifier,
};
use flyte_api::idl::flyteidl2::core;
use flyte_api::idl::flyteidl2::workflow::{
    self, AbortRunRequest, ActionDetails, CreateRunRequest, CreateRunResponse, ErrorInfo,
    GetActionDetailsRequest, ListRunsRequest, RunServiceClient, action_details, create_run_request,
    error_info::Kind as ErrorKind,
};
use flyte_api::{ActionPhaseExt, Answer, ApiError, Client, Code, Endpoint, HttpClient};

/// The Connect path of a `RunService` method.
fn run_service_path(method: &str) -> String {
    format!("{}/{method}", workflow::RUN_SERVICE_SERVICE_NAME)
}
use flyte_auth::{ApiKey, ClientCredentials, oauth};
use flyte_sandbox::Sandbox;
use flyte_testkit::TempHome;

struct Running {
    client: Client,
    runtime: tokio::runtime::Runtime,
    home: TempHome,
}

fn start() -> Running {
    start_with(|sandbox| sandbox)
}

fn start_with(configure: impl FnOnce(Sandbox) -> Sandbox) -> Running {
    start_in(TempHome::new(), configure)
}

/// A sandbox whose state lives in `home` (a new one, or one an earlier sandbox left).
fn start_in(home: TempHome, configure: impl FnOnce(Sandbox) -> Sandbox) -> Running {
    let state = home.path().join("sandbox");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    runtime.spawn(configure(Sandbox::open(&state, &base).unwrap()).serve(listener));
    let endpoint = Endpoint::parse(&base, false).unwrap();
    let client = runtime.block_on(admin(&endpoint, &state, &home.path().join("bearer.json")));
    Running {
        client,
        runtime,
        home,
    }
}

async fn admin(endpoint: &Endpoint, state: &Path, cache: &Path) -> Client {
    let key =
        ApiKey::decode(&std::fs::read_to_string(Sandbox::credential_path(state)).unwrap()).unwrap();
    let client = Client::new(endpoint).unwrap();
    let config = oauth::discover(&client).await.unwrap();
    let tokens = ClientCredentials::new(
        HttpClient::default(),
        config.clone(),
        key.client_id,
        key.client_secret,
        endpoint.authority(),
        cache.to_owned(),
    );
    client
        .with_tokens(Arc::new(tokens))
        .with_auth_header(&config.header_name)
        .unwrap()
}

fn run_id(name: &str) -> RunIdentifier {
    RunIdentifier {
        project: "flytesnacks".into(),
        domain: "development".into(),
        name: name.into(),
        ..Default::default()
    }
}

fn action_id(run: &str, action: &str) -> ActionIdentifier {
    ActionIdentifier {
        run: MessageField::some(run_id(run)),
        name: action.into(),
        ..Default::default()
    }
}

fn request(name: &str, argv: &[&str], env: &[(&str, &str)]) -> CreateRunRequest {
    let owned = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
    flyte_api::request::create_run(
        run_id(name),
        flyte_api::request::container_task(owned(argv), []),
        env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    )
}

/// The run a request names.
fn id_mut(request: &mut CreateRunRequest) -> &mut RunIdentifier {
    match request.id.as_mut() {
        Some(create_run_request::Id::RunId(id)) => id,
        other => panic!("no run id: {other:?}"),
    }
}

/// `request` with its task's metadata given as proto3 JSON (`{"retries": {"retries": 2}}`).
fn with_metadata(mut request: CreateRunRequest, metadata: serde_json::Value) -> CreateRunRequest {
    let metadata: core::TaskMetadata = serde_json::from_value(metadata).unwrap();
    match request.task.as_mut() {
        Some(create_run_request::Task::TaskSpec(spec)) => {
            spec.task_template.get_or_insert_default().metadata = MessageField::some(metadata);
        }
        other => panic!("no task spec: {other:?}"),
    }
    request
}

fn phase_of(details: &ActionDetails) -> ActionPhase {
    details.status.phase.as_known().unwrap()
}

fn error_of(details: &ActionDetails) -> Option<ErrorInfo> {
    match &details.result {
        Some(action_details::Result::ErrorInfo(e)) => Some((**e).clone()),
        _ => None,
    }
}

fn abort_reason_of(details: &ActionDetails) -> Option<String> {
    match &details.result {
        Some(action_details::Result::AbortInfo(a)) => Some(a.reason.clone()),
        _ => None,
    }
}

impl Running {
    fn runs(&self) -> RunServiceClient<flyte_api::Transport> {
        self.client.connect(RunServiceClient::new).unwrap()
    }

    fn create(&self, request: &CreateRunRequest) -> Result<CreateRunResponse, ApiError> {
        self.runtime
            .block_on(self.runs().create_run(request.clone()))
            .owned()
    }

    fn details_of(&self, run: &str, action: &str) -> Result<ActionDetails, ApiError> {
        let request = GetActionDetailsRequest {
            action_id: MessageField::some(action_id(run, action)),
            ..Default::default()
        };
        self.runtime
            .block_on(self.runs().get_action_details(request))
            .owned()
            .map(|r| r.details.into_option().unwrap_or_default())
    }

    fn details(&self, name: &str) -> Result<ActionDetails, ApiError> {
        self.details_of(name, "a0")
    }

    /// Poll until the action's phase satisfies `done` (bounded: the sandbox has no push yet).
    fn wait_for(&self, name: &str, done: impl Fn(&ActionPhase) -> bool) -> ActionDetails {
        for _ in 0..400 {
            let details = self.details(name).unwrap();
            if done(&phase_of(&details)) {
                return details;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!(
            "run {name} never reached the expected phase: {:?}",
            self.details(name)
        );
    }
}

#[test]
fn commands_run_to_success_or_failure_with_their_environment() {
    let sandbox = start();
    let created = sandbox
        .create(&request(
            "ok-run",
            &["sh", "-c", "test \"$GREETING\" = hello"],
            &[("GREETING", "hello")],
        ))
        .unwrap();
    assert_eq!(created.run.action.id.run.name, "ok-run");
    let done = sandbox.wait_for("ok-run", ActionPhase::is_terminal);
    assert_eq!(done.status.phase, ActionPhase::Succeeded, "{done:?}");

    sandbox
        .create(&request("bad-exit", &["sh", "-c", "exit 3"], &[]))
        .unwrap();
    let failed = sandbox.wait_for("bad-exit", ActionPhase::is_terminal);
    assert_eq!(failed.status.phase, ActionPhase::Failed);
    let error = error_of(&failed).unwrap();
    assert_eq!(error.kind, ErrorKind::User);
    assert!(error.message.contains("attempt"), "{error:?}");

    sandbox
        .create(&request("no-such-cmd", &["/no/such/command"], &[]))
        .unwrap();
    let failed = sandbox.wait_for("no-such-cmd", ActionPhase::is_terminal);
    assert_eq!(failed.status.phase, ActionPhase::Failed);
    assert!(
        error_of(&failed)
            .unwrap()
            .message
            .contains("cannot start \"/no/such/command\"")
    );

    let project = ProjectIdentifier {
        domain: "development".into(),
        name: "flytesnacks".into(),
        ..Default::default()
    };
    let listed = sandbox
        .runtime
        .block_on(sandbox.runs().list_runs(ListRunsRequest {
            scope_by: Some(project.into()),
            ..ListRunsRequest::default()
        }))
        .owned()
        .unwrap();
    let names: Vec<_> = listed
        .runs
        .iter()
        .map(|r| r.action.id.run.name.as_str())
        .collect();
    assert_eq!(names, ["bad-exit", "no-such-cmd", "ok-run"]);
}

#[test]
fn bad_requests_get_the_right_codes() {
    let sandbox = start();
    sandbox.create(&request("taken", &["true"], &[])).unwrap();
    let cases = [
        (request("taken", &["true"], &[]), Code::AlreadyExists),
        (request("Has_Caps", &["true"], &[]), Code::InvalidArgument),
        (
            request("this-name-is-far-too-long-for-a-run", &["true"], &[]),
            Code::InvalidArgument,
        ),
        (request("no-command", &[], &[]), Code::InvalidArgument),
        (
            CreateRunRequest {
                id: None,
                ..request("x", &["true"], &[])
            },
            Code::InvalidArgument,
        ),
    ];
    for (request, code) in cases {
        assert_eq!(
            sandbox.create(&request).unwrap_err().code,
            code,
            "{request:?}"
        );
    }
    assert_eq!(
        sandbox.details("never-created").unwrap_err().code,
        Code::NotFound
    );
    // Without a token: unauthenticated.
    let anonymous =
        Client::new(&Endpoint::parse(sandbox.client.base_url(), false).unwrap()).unwrap();
    let err = sandbox
        .runtime
        .block_on(
            anonymous
                .connect(RunServiceClient::new)
                .unwrap()
                .create_run(request("anon", &["true"], &[])),
        )
        .owned()
        .unwrap_err();
    assert_eq!(err.code, Code::Unauthenticated);
}

/// Issue 13, defect 6: a project like `/tmp/x/abs` wrote its log outside the sandbox, `a-b/c`
/// and `a/b-c` shared one log file, and NUL bytes ended as system failures. Every identifier is
/// checked at the API boundary now, and files are laid out one directory per name.
#[test]
fn identifiers_are_validated_and_paths_cannot_escape_or_collide() {
    let home = TempHome::new();
    let outside = home.path().join("outside");
    let sandbox = start_in(home, |s| s);
    let with_project = |project: &str, domain: &str, argv: &[&str], env: &[(&str, &str)]| {
        let mut request = request("r", argv, env);
        let id = id_mut(&mut request);
        id.project = project.to_owned();
        id.domain = domain.to_owned();
        request
    };
    let escape = format!("{}/abs", outside.display());
    let cases = [
        with_project(&escape, "d", &["true"], &[]),
        with_project("..", "d", &["true"], &[]),
        with_project("a-b/c", "d", &["true"], &[]),
        with_project("p", "x/../..", &["true"], &[]),
        with_project("p", "", &["true"], &[]),
        with_project("Caps", "d", &["true"], &[]),
        with_project("p", "d", &["echo", "nul\0byte"], &[]),
        with_project("p", "d", &["true"], &[("A=B", "v")]),
        with_project("p", "d", &["true"], &[("", "v")]),
        with_project("p", "d", &["true"], &[("A", "nul\0")]),
    ];
    for request in cases {
        let err = sandbox.create(&request).unwrap_err();
        assert_eq!(err.code, Code::InvalidArgument, "{request:?}: {err:?}");
    }
    assert!(!outside.exists(), "a file was written outside the sandbox");

    // Names that the old flat layout mapped to one file get one each.
    for (project, domain) in [("a-b", "c"), ("a", "b-c")] {
        let mut request = with_project(
            project,
            domain,
            &["sh", "-c", &format!("echo {project}/{domain}")],
            &[],
        );
        id_mut(&mut request).name = "col".to_owned();
        sandbox.create(&request).unwrap();
    }
    let logs = sandbox.home.path().join("sandbox/logs");
    for (project, domain) in [("a-b", "c"), ("a", "b-c")] {
        let log = logs.join(project).join(domain).join("col.log");
        let mut text = String::new();
        for _ in 0..400 {
            text = std::fs::read_to_string(&log).unwrap_or_default();
            if !text.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        assert_eq!(text, format!("{project}/{domain}\n"));
    }
}

#[test]
fn abort_kills_the_process_group_and_the_action_ends_aborted() {
    let sandbox = start();
    let pid_file = sandbox.home.path().join("task.pid");
    let script = format!("echo $$ > '{}'; sleep 30 & wait", pid_file.display());
    sandbox
        .create(&request("long-run", &["sh", "-c", &script], &[]))
        .unwrap();
    sandbox.wait_for("long-run", |p| *p == ActionPhase::Running);
    // The shell writes its pid as its first act; wait for that too (bounded).
    let mut pid = String::new();
    for _ in 0..400 {
        pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
        if !pid.trim().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let proc_dir = format!("/proc/{}", pid.trim());
    assert!(Path::new(&proc_dir).exists());
    sandbox
        .runtime
        .block_on(sandbox.runs().abort_run(AbortRunRequest {
            run_id: MessageField::some(run_id("long-run")),
            reason: Some("done debugging".into()),
            ..Default::default()
        }))
        .owned()
        .unwrap();
    let aborted = sandbox.wait_for("long-run", ActionPhase::is_terminal);
    assert_eq!(aborted.status.phase, ActionPhase::Aborted, "{aborted:?}");
    assert_eq!(abort_reason_of(&aborted).unwrap(), "done debugging");
    for _ in 0..400 {
        if !Path::new(&proc_dir).exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("the task's process {pid} survived the abort");
}

#[test]
fn fifty_concurrent_launches_all_run() {
    let sandbox = start();
    let names: Vec<String> = (0..50).map(|i| format!("many-{i}")).collect();
    sandbox.runtime.block_on(async {
        let launches = names.iter().map(|name| {
            let runs = sandbox.runs();
            let request = request(name, &["true"], &[]);
            async move { runs.create_run(request).await.owned() }
        });
        for result in futures_util::future::join_all(launches).await {
            result.unwrap();
        }
    });
    for name in &names {
        assert_eq!(
            sandbox
                .wait_for(name, ActionPhase::is_terminal)
                .status
                .phase,
            ActionPhase::Succeeded,
            "{name}"
        );
    }
}

#[test]
fn oversized_and_malformed_bodies_are_invalid_argument() {
    let sandbox = start();
    let http = HttpClient::default();
    let url = format!(
        "{}/{}",
        sandbox.client.base_url(),
        run_service_path("CreateRun")
    );
    let credential = Sandbox::credential_path(&sandbox.home.path().join("sandbox"));
    let key = ApiKey::decode(&std::fs::read_to_string(credential).unwrap()).unwrap();
    sandbox.runtime.block_on(async {
        // Authenticated, so the body is what is judged.
        let minted: serde_json::Value = http
            .post(format!("{}/oauth2/token", sandbox.client.base_url()))
            .basic_auth(&key.client_id, Some(key.client_secret.expose()))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let bearer = format!("Bearer {}", minted["access_token"].as_str().unwrap());
        // Malformed JSON.
        let response = http
            .post(&url)
            .header("content-type", "application/json")
            .header("authorization", &bearer)
            .body(b"{\"runId\": ".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("\"code\":\"invalid_argument\"")
        );
        // Oversized by one byte: the server reads up to its 4 MiB limit and refuses the rest
        // (bounded memory); the whole body is sent by then, so the answer is read back.
        let response = http
            .post(&url)
            .header("content-type", "application/json")
            .header("authorization", &bearer)
            .body(vec![b' '; 4 * 1024 * 1024 + 1])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("\"code\":\"invalid_argument\"")
        );
    });
}

#[test]
fn a_body_that_never_arrives_is_answered_and_the_connection_freed() {
    use std::io::{Read, Write};
    let sandbox =
        start_with(|sandbox| sandbox.with_body_read_timeout(std::time::Duration::from_millis(200)));
    let address = sandbox
        .client
        .base_url()
        .trim_start_matches("http://")
        .to_owned();
    let mut stream = std::net::TcpStream::connect(&address).unwrap();
    // A bound on the test, not a synchronisation: the answer comes after the 200 ms limit.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    // Announces 100 bytes, sends 10, then waits: before the limit existed this hung for ever.
    write!(
        stream,
        "POST /{} HTTP/1.1\r\nhost: {address}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"runId\":",
        run_service_path("CreateRun")
    )
    .unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0_u8; 1024];
    while !String::from_utf8_lossy(&answer).contains("deadline_exceeded") {
        let read = stream.read(&mut buffer).unwrap();
        assert_ne!(
            read,
            0,
            "closed without an answer: {}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buffer[..read]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    assert!(answer.contains("did not arrive within 0.2 s"), "{answer}");
}

#[test]
fn history_and_cache_survive_a_restart_and_an_interrupted_attempt_ends_failed() {
    let sandbox = start();
    let pid_file = sandbox.home.path().join("victim.pid");
    // "done" is cacheable: after the restart an equal run is still served from the cache.
    let marker = sandbox.home.path().join("ran");
    let script = format!("echo x >> '{}'", marker.display());
    let cacheable = |name: &str| {
        with_metadata(
            request(name, &["sh", "-c", &script], &[]),
            serde_json::json!({"discoverable": true, "discoveryVersion": "1"}),
        )
    };
    sandbox.create(&cacheable("done")).unwrap();
    sandbox.wait_for("done", ActionPhase::is_terminal);
    let script = format!("echo $$ > '{}'; exec sleep 60", pid_file.display());
    sandbox
        .create(&request("victim", &["sh", "-c", &script], &[]))
        .unwrap();
    sandbox.wait_for("victim", |phase| *phase == ActionPhase::Running);
    let before = sandbox.details("done").unwrap();
    // The shell writes its pid once it runs; wait for it (bounded, like wait_for).
    let mut victim = String::new();
    for _ in 0..400 {
        victim = std::fs::read_to_string(&pid_file).unwrap_or_default();
        if victim.ends_with('\n') {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }

    // The sandbox goes away mid-run (its runtime dropped, as a killed process would leave it);
    // the task's process group outlives it and is stopped by its pid, as we started it.
    let Running {
        client,
        runtime,
        home,
    } = sandbox;
    drop(client);
    drop(runtime);
    let victim: i32 = victim.trim().parse().unwrap();
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(victim),
        nix::sys::signal::Signal::SIGKILL,
    );

    let again = start_in(home, |sandbox| sandbox);
    assert_eq!(again.details("done").unwrap().attempts, before.attempts);
    again.create(&cacheable("done-again")).unwrap();
    let hit = again.wait_for("done-again", ActionPhase::is_terminal);
    assert_eq!(hit.status.phase, ActionPhase::Succeeded);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "x\n");
    let interrupted = again.details("victim").unwrap();
    let history: Vec<_> = interrupted
        .attempts
        .iter()
        .map(|a| {
            (
                a.attempt,
                a.phase.as_known().unwrap(),
                a.error_info.as_option().map(|e| e.code.clone()),
                a.start_time.is_set() && a.end_time.is_set(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [(
            1,
            ActionPhase::Failed,
            Some("SandboxRestarted".to_owned()),
            true
        )]
    );
}

#[test]
fn a_machine_failure_is_retried_as_a_system_error_then_fails_the_action() {
    let sandbox = start();
    // The run's log path is taken by a directory: no attempt can start, through no fault of
    // the task. The reconciler restarts it after each system failure, then gives up.
    let logs = sandbox.home.path().join("sandbox/logs");
    std::fs::create_dir_all(logs.join("flytesnacks/development/unloggable.log")).unwrap();
    sandbox
        .create(&request("unloggable", &["true"], &[]))
        .unwrap();
    let done = sandbox.wait_for("unloggable", ActionPhase::is_terminal);
    assert_eq!(done.status.phase, ActionPhase::Failed);
    let error = error_of(&done).unwrap();
    assert_eq!(
        (error.kind.as_known().unwrap(), error.code.as_str()),
        (ErrorKind::System, "MaxSystemFailuresExceeded"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("4 consecutive system failures")
            && error.message.contains("cannot open the log"),
        "{}",
        error.message
    );
    // Its user retries were not spent on the machine's failures.
    assert_eq!(done.status.attempts, 1);
}

#[test]
fn a_discoverable_task_runs_once_per_version_and_later_runs_hit_the_cache() {
    let sandbox = start();
    let marker = sandbox.home.path().join("ran");
    let script = format!("echo x >> '{}'", marker.display());
    let cached = |name: &str, metadata: serde_json::Value| {
        with_metadata(request(name, &["sh", "-c", &script], &[]), metadata)
    };
    let v1 = serde_json::json!({"discoverable": true, "discoveryVersion": "1"});
    let v2 = serde_json::json!({"discoverable": true, "discoveryVersion": "2"});
    let runs_so_far = || std::fs::read_to_string(&marker).unwrap().lines().count();
    for (name, metadata, ran) in [
        ("first", v1.clone(), 1),
        // Same command, environment and version: served from the cache, not run.
        ("again", v1, 1),
        // A new version is new work.
        ("bumped", v2, 2),
        // Not discoverable: always runs.
        ("plain", serde_json::json!({}), 3),
    ] {
        sandbox.create(&cached(name, metadata)).unwrap();
        let done = sandbox.wait_for(name, ActionPhase::is_terminal);
        assert_eq!(done.status.phase, ActionPhase::Succeeded, "{name}");
        assert_eq!(runs_so_far(), ran, "{name}");
    }
    let no_version = cached("unversioned", serde_json::json!({"discoverable": true}));
    let refused = sandbox.create(&no_version).unwrap_err();
    assert_eq!(refused.code, Code::InvalidArgument);
    assert!(
        refused.message.contains("discoveryVersion"),
        "{}",
        refused.message
    );
}

#[test]
fn watch_streams_each_change_and_ends_after_the_terminal_phase() {
    let sandbox = start();
    sandbox
        .create(&request("watched", &["sh", "-c", "sleep 0.3"], &[]))
        .unwrap();
    let watching = sandbox
        .client
        .connect_streaming(RunServiceClient::new)
        .unwrap();
    let phases = sandbox.runtime.block_on(async {
        let request = workflow::WatchActionDetailsRequest {
            action_id: MessageField::some(action_id("watched", "a0")),
            ..Default::default()
        };
        let mut stream = watching.watch_action_details(request).await.unwrap();
        let mut phases = Vec::new();
        while let Some(item) = stream.message().await.unwrap() {
            phases.push(phase_of(&item.to_owned_message().details));
        }
        phases
    });
    assert_eq!(phases.last(), Some(&ActionPhase::Succeeded), "{phases:?}");
    assert!(phases.contains(&ActionPhase::Running), "{phases:?}");
    // Changes only, not a heartbeat: a 0.3 s task yields a handful of messages, however often
    // the server looks.
    assert!(phases.len() <= 6, "{phases:?}");

    let err = sandbox.runtime.block_on(async {
        let request = workflow::WatchActionDetailsRequest {
            action_id: MessageField::some(action_id("nope", "a0")),
            ..Default::default()
        };
        // Connect sends a stream's error in its end-of-stream message.
        let mut stream = watching.watch_action_details(request).await.unwrap();
        ApiError::from(stream.message().await.map(|_| ()).unwrap_err())
    });
    assert_eq!(err.code, Code::NotFound);
}

#[test]
fn user_retries_run_new_attempts_until_they_are_used_up() {
    let sandbox = start();
    let marker = sandbox.home.path().join("attempts");
    // Fails twice, then succeeds: with 2 retries the third attempt wins.
    let script = format!(
        "echo x >> '{0}'; test $(wc -l < '{0}') -ge 3",
        marker.display()
    );
    let retried = with_metadata(
        request("flaky", &["sh", "-c", &script], &[]),
        serde_json::json!({"retries": {"retries": 2}}),
    );
    sandbox.create(&retried).unwrap();
    let done = sandbox.wait_for("flaky", ActionPhase::is_terminal);
    assert_eq!(
        (phase_of(&done), done.status.attempts),
        (ActionPhase::Succeeded, 3),
        "{:?}",
        error_of(&done)
    );
    // Each attempt is listed with its own outcome and times: the first two failed with the
    // command's exit status, the last succeeded.
    let summary: Vec<_> = done
        .attempts
        .iter()
        .map(|a| {
            (
                a.attempt,
                a.phase.as_known().unwrap(),
                a.error_info.as_option().map(|e| e.message.clone()),
                a.start_time.is_set() && a.end_time.is_set(),
            )
        })
        .collect();
    let failed_with_1 = Some("the command exited with status 1".to_owned());
    assert_eq!(
        summary,
        [
            (1, ActionPhase::Failed, failed_with_1.clone(), true),
            (2, ActionPhase::Failed, failed_with_1, true),
            (3, ActionPhase::Succeeded, None, true),
        ]
    );

    // One retry is not enough for a command that always fails: FAILED after 2 attempts.
    let hopeless = with_metadata(
        request("hopeless", &["false"], &[]),
        serde_json::json!({"retries": {"retries": 1}}),
    );
    sandbox.create(&hopeless).unwrap();
    let failed = sandbox.wait_for("hopeless", ActionPhase::is_terminal);
    assert_eq!(
        (phase_of(&failed), failed.status.attempts),
        (ActionPhase::Failed, 2)
    );
    assert!(error_of(&failed).unwrap().message.contains("2 attempt"));

    let greedy = with_metadata(
        request("greedy", &["true"], &[]),
        serde_json::json!({"retries": {"retries": 1000}}),
    );
    assert_eq!(
        sandbox.create(&greedy).unwrap_err().code,
        Code::InvalidArgument
    );
    // An action name other than a0 is not found.
    let err = sandbox.details_of("flaky", "a1").unwrap_err();
    assert_eq!(err.code, Code::NotFound);
}

/// `WatchRuns`: the project's runs first, then each run whose summary changed (not the others
/// again), for as long as the caller listens; a target the sandbox does not scope by is refused.
#[test]
fn watch_runs_sends_the_project_then_each_change() {
    let sandbox = start();
    sandbox.create(&request("before", &["true"], &[])).unwrap();
    sandbox.wait_for("before", ActionPhase::is_terminal);
    let watching = sandbox
        .client
        .connect_streaming(RunServiceClient::new)
        .unwrap();
    let project = ProjectIdentifier {
        domain: "development".into(),
        name: "flytesnacks".into(),
        ..Default::default()
    };
    let phases = sandbox.runtime.block_on(async {
        let mut stream = watching
            .watch_runs(workflow::WatchRunsRequest {
                target: Some(project.into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let first = stream.message().await.unwrap().unwrap().to_owned_message();
        let names: Vec<_> = first
            .runs
            .iter()
            .map(|r| r.action.id.run.name.clone())
            .collect();
        assert_eq!(names, ["before"]);
        sandbox
            .runs()
            .create_run(request("after", &["sh", "-c", "sleep 0.2"], &[]))
            .await
            .owned()
            .unwrap();
        let mut phases = Vec::new();
        // Bounded: the run ends in about 0.2 s, a handful of changes.
        for _ in 0..50 {
            let message = stream.message().await.unwrap().unwrap().to_owned_message();
            for run in &message.runs {
                assert_eq!(run.action.id.run.name, "after", "{message:?}");
                phases.push(run.action.status.phase.as_known().unwrap());
            }
            if phases.last().is_some_and(ActionPhase::is_terminal) {
                break;
            }
        }
        phases
    });
    assert_eq!(phases.last(), Some(&ActionPhase::Succeeded), "{phases:?}");

    let refused = sandbox.runtime.block_on(async {
        let request = workflow::WatchRunsRequest {
            target: Some(workflow::watch_runs_request::Target::Org("o".into())),
            ..Default::default()
        };
        match watching.watch_runs(request).await {
            Err(e) => e,
            Ok(mut stream) => stream.message().await.map(|_| ()).unwrap_err(),
        }
    });
    let refused = ApiError::from(refused);
    assert_eq!(refused.code, Code::InvalidArgument, "{refused}");
    assert!(refused.message.contains("projectId"), "{refused}");
}
