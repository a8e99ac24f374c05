//! Runs executed as local processes through the reconciler, driven over the real API.

// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use flyte_api::types::{
    AbortRunRequest, ActionDetails, ActionIdentifier, ActionPhase, Container, CreateRunRequest,
    CreateRunResponse, Envs, ErrorKind, GetActionDetailsRequest, GetActionDetailsResponse,
    KeyValuePair, ListRunsRequest, ListRunsResponse, ProjectIdentifier, RunIdentifier, RunSpec,
    TaskSpec, TaskTemplate, services::RUN_SERVICE,
};
use flyte_api::{ApiError, Client, Code, Endpoint, HttpClient};
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
        org: String::new(),
        project: "flytesnacks".into(),
        domain: "development".into(),
        name: name.into(),
    }
}

fn request(name: &str, argv: &[&str], env: &[(&str, &str)]) -> CreateRunRequest {
    CreateRunRequest {
        run_id: Some(run_id(name)),
        task_spec: Some(TaskSpec {
            task_template: TaskTemplate {
                task_type: "container".into(),
                container: Some(Container {
                    command: argv.iter().map(|s| (*s).to_owned()).collect(),
                    ..Container::default()
                }),
                ..TaskTemplate::default()
            },
            short_name: String::new(),
        }),
        run_spec: Some(RunSpec {
            envs: Some(Envs {
                values: env
                    .iter()
                    .map(|(k, v)| KeyValuePair {
                        key: (*k).into(),
                        value: (*v).into(),
                    })
                    .collect(),
            }),
            ..RunSpec::default()
        }),
        ..CreateRunRequest::default()
    }
}

impl Running {
    fn create(&self, request: &CreateRunRequest) -> Result<CreateRunResponse, ApiError> {
        self.runtime
            .block_on(self.client.unary(RUN_SERVICE, "CreateRun", request))
    }

    fn details(&self, name: &str) -> Result<ActionDetails, ApiError> {
        let request = GetActionDetailsRequest {
            action_id: ActionIdentifier {
                run: run_id(name),
                name: "a0".into(),
            },
        };
        self.runtime
            .block_on(self.client.unary::<_, GetActionDetailsResponse>(
                RUN_SERVICE,
                "GetActionDetails",
                &request,
            ))
            .map(|r| r.details)
    }

    /// Poll until the action's phase satisfies `done` (bounded: the sandbox has no push yet).
    fn wait_for(&self, name: &str, done: impl Fn(&ActionPhase) -> bool) -> ActionDetails {
        for _ in 0..400 {
            let details = self.details(name).unwrap();
            if done(&details.status.phase) {
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
    let error = failed.error_info.unwrap();
    assert_eq!(error.kind, ErrorKind::User);
    assert!(error.message.contains("attempt"), "{error:?}");

    sandbox
        .create(&request("no-such-cmd", &["/no/such/command"], &[]))
        .unwrap();
    let failed = sandbox.wait_for("no-such-cmd", ActionPhase::is_terminal);
    assert_eq!(failed.status.phase, ActionPhase::Failed);
    assert!(
        failed
            .error_info
            .unwrap()
            .message
            .contains("cannot start \"/no/such/command\"")
    );

    let listed: ListRunsResponse = sandbox
        .runtime
        .block_on(sandbox.client.unary(
            RUN_SERVICE,
            "ListRuns",
            &ListRunsRequest {
                project_id: Some(ProjectIdentifier {
                    organization: String::new(),
                    domain: "development".into(),
                    name: "flytesnacks".into(),
                }),
                ..ListRunsRequest::default()
            },
        ))
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
                run_id: None,
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
        .block_on(anonymous.unary::<_, CreateRunResponse>(
            RUN_SERVICE,
            "CreateRun",
            &request("anon", &["true"], &[]),
        ))
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
        let id = request.run_id.as_mut().unwrap();
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
        request.run_id.as_mut().unwrap().name = "col".to_owned();
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
    let _: flyte_api::types::AbortRunResponse = sandbox
        .runtime
        .block_on(sandbox.client.unary(
            RUN_SERVICE,
            "AbortRun",
            &AbortRunRequest {
                run_id: run_id("long-run"),
                reason: Some("done debugging".into()),
            },
        ))
        .unwrap();
    let aborted = sandbox.wait_for("long-run", ActionPhase::is_terminal);
    assert_eq!(aborted.status.phase, ActionPhase::Aborted, "{aborted:?}");
    assert_eq!(aborted.abort_info.unwrap().reason, "done debugging");
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
            let client = sandbox.client.clone();
            let request = request(name, &["true"], &[]);
            async move {
                client
                    .unary::<_, CreateRunResponse>(RUN_SERVICE, "CreateRun", &request)
                    .await
            }
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
    let url = format!("{}/{RUN_SERVICE}/CreateRun", sandbox.client.base_url());
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
        "POST /{RUN_SERVICE}/CreateRun HTTP/1.1\r\nhost: {address}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"runId\":"
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
        let mut request = request(name, &["sh", "-c", &script], &[]);
        request.task_spec.as_mut().unwrap().task_template.metadata =
            Some(serde_json::json!({"discoverable": true, "discoveryVersion": "1"}));
        request
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
                a.phase.clone(),
                a.error_info.as_ref().map(|e| e.code.clone()),
                a.start_time.is_some() && a.end_time.is_some(),
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
    let error = done.error_info.unwrap();
    assert_eq!(
        (error.kind, error.code.as_str()),
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
        let mut request = request(name, &["sh", "-c", &script], &[]);
        request.task_spec.as_mut().unwrap().task_template.metadata = Some(metadata);
        request
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
    let phases = sandbox.runtime.block_on(async {
        let request = GetActionDetailsRequest {
            action_id: ActionIdentifier {
                run: run_id("watched"),
                name: "a0".into(),
            },
        };
        let mut stream = sandbox
            .client
            .server_stream::<_, GetActionDetailsResponse>(
                RUN_SERVICE,
                "WatchActionDetails",
                &request,
            )
            .await
            .unwrap();
        let mut phases = Vec::new();
        while let Some(item) = stream.next().await {
            phases.push(item.unwrap().details.status.phase);
        }
        phases
    });
    assert_eq!(phases.last(), Some(&ActionPhase::Succeeded), "{phases:?}");
    assert!(phases.contains(&ActionPhase::Running), "{phases:?}");
    // Changes only, not a heartbeat: a 0.3 s task yields a handful of messages, however often
    // the server looks.
    assert!(phases.len() <= 6, "{phases:?}");

    let err = sandbox.runtime.block_on(async {
        let request = GetActionDetailsRequest {
            action_id: ActionIdentifier {
                run: run_id("nope"),
                name: "a0".into(),
            },
        };
        // Connect sends a stream's error in its end-of-stream message.
        let mut stream = sandbox
            .client
            .server_stream::<_, GetActionDetailsResponse>(
                RUN_SERVICE,
                "WatchActionDetails",
                &request,
            )
            .await
            .unwrap();
        stream.next().await.unwrap().map(|_| ()).unwrap_err()
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
    let mut retried = request("flaky", &["sh", "-c", &script], &[]);
    retried.task_spec.as_mut().unwrap().task_template.metadata =
        Some(serde_json::json!({"retries": {"retries": 2}}));
    sandbox.create(&retried).unwrap();
    let done = sandbox.wait_for("flaky", ActionPhase::is_terminal);
    assert_eq!(
        (done.status.phase, done.status.attempts),
        (ActionPhase::Succeeded, 3),
        "{:?}",
        done.error_info
    );
    // Each attempt is listed with its own outcome and times: the first two failed with the
    // command's exit status, the last succeeded.
    let summary: Vec<_> = done
        .attempts
        .iter()
        .map(|a| {
            (
                a.attempt,
                a.phase.clone(),
                a.error_info.as_ref().map(|e| e.message.clone()),
                a.start_time.is_some() && a.end_time.is_some(),
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
    let mut hopeless = request("hopeless", &["false"], &[]);
    hopeless.task_spec.as_mut().unwrap().task_template.metadata =
        Some(serde_json::json!({"retries": {"retries": 1}}));
    sandbox.create(&hopeless).unwrap();
    let failed = sandbox.wait_for("hopeless", ActionPhase::is_terminal);
    assert_eq!(
        (failed.status.phase, failed.status.attempts),
        (ActionPhase::Failed, 2)
    );
    assert!(failed.error_info.unwrap().message.contains("2 attempt"));

    let mut greedy = request("greedy", &["true"], &[]);
    greedy.task_spec.as_mut().unwrap().task_template.metadata =
        Some(serde_json::json!({"retries": {"retries": 1000}}));
    assert_eq!(
        sandbox.create(&greedy).unwrap_err().code,
        Code::InvalidArgument
    );
    // An action name other than a0 is not found.
    let request = GetActionDetailsRequest {
        action_id: ActionIdentifier {
            run: run_id("flaky"),
            name: "a1".into(),
        },
    };
    let err = sandbox
        .runtime
        .block_on(sandbox.client.unary::<_, GetActionDetailsResponse>(
            RUN_SERVICE,
            "GetActionDetails",
            &request,
        ))
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);
}
