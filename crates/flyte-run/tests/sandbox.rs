//! `flyte-run sandbox start|stop|status` as a user runs them, and scripts that need no
//! configuration because the sandbox is running.
// Tests, examples and tools start processes and read their settings from the environment directly.
#![allow(clippy::disallowed_methods)]
// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;
use std::process::Output;

use flyte_testkit::TempHome;

const BIN: &str = env!("CARGO_BIN_EXE_flyte-run");

/// A home whose background sandbox is stopped (by its pid) when the test ends, also on panic.
struct Home(TempHome);

impl Home {
    /// A new home with its sandbox started.
    fn with_sandbox() -> Self {
        let home = Self(TempHome::new());
        let started = home.run(&["sandbox", "start"]);
        assert!(started.status.success(), "{}", stdout(&started));
        home
    }

    fn run(&self, args: &[&str]) -> Output {
        self.0
            .command(BIN)
            .env_remove("FLYTE_ENDPOINT")
            // A runner configured on the developer's machine would make `doctor` reach for it.
            .env_remove("DAP_RUNNER_SSH_HOST")
            .args(args)
            .output()
            .unwrap()
    }

    fn sandbox_dir(&self) -> std::path::PathBuf {
        self.0.path().join(".flyte/sandbox")
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = self.run(&["sandbox", "stop"]);
        // If stop could not do it, kill the sandbox by its pid.
        let pid = std::fs::read_to_string(self.sandbox_dir().join("sandbox.pid"));
        if let Some(pid) = pid.ok().and_then(|p| p.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A process a test started, stopped by its pid however the test ends.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a command printed, stdout then stderr.
fn text(out: &Output) -> String {
    format!("{}{}", stdout(out), String::from_utf8_lossy(&out.stderr))
}

/// A token signed by the sandbox's own key that expired an hour ago.
fn expired_token(home: &Home) -> String {
    let signer = flyte_sandbox::tokens::Signer::load_or_create(
        &home.sandbox_dir().join("signing.key"),
        flyte_sandbox::ISSUER,
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    signer
        .mint("sbx-test", i64::try_from(now).unwrap() - 7200, 600)
        .unwrap()
}

/// Whether `pid` runs: a zombie (dead, not yet reaped by whoever adopted it) does not count.
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses and may contain spaces.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

#[test]
fn start_status_stop_and_zero_configuration_scripts() {
    let home = Home(TempHome::new());
    let status = home.run(&["sandbox", "status"]);
    assert_eq!(status.status.code(), Some(3), "{}", stdout(&status));
    assert!(stdout(&status).contains("not running"));

    let started = home.run(&["sandbox", "start"]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let endpoint = std::fs::read_to_string(home.sandbox_dir().join("endpoint")).unwrap();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    assert!(stdout(&started).contains(&endpoint), "{}", stdout(&started));
    let pid = std::fs::read_to_string(home.sandbox_dir().join("sandbox.pid")).unwrap();
    assert!(alive(&pid));
    assert_eq!(
        std::fs::metadata(home.sandbox_dir().join("credential"))
            .unwrap()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(home.sandbox_dir()).unwrap().mode() & 0o777,
        0o700
    );

    // Idempotent: a second start finds it running.
    let again = home.run(&["sandbox", "start"]);
    assert!(
        stdout(&again).contains("already runs"),
        "{}",
        stdout(&again)
    );
    assert_eq!(
        std::fs::read_to_string(home.sandbox_dir().join("sandbox.pid")).unwrap(),
        pid
    );
    let status = home.run(&["sandbox", "status"]);
    assert_eq!(status.status.code(), Some(0));
    assert!(stdout(&status).contains(&endpoint));

    // No --endpoint, no FLYTE_ENDPOINT: scripts use the sandbox and its bootstrap credential.
    let script = r#"let key = auth::ensure_api_key("flyte-ssh-debug"); let t = auth::bearer_token(); `${key.client_id} ${t.expires_at > 0}`"#;
    let out = home.run(&["-e", script]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).starts_with("sbx-") && stdout(&out).ends_with(" true\n"),
        "{}",
        stdout(&out)
    );

    let stopped = home.run(&["sandbox", "stop"]);
    assert!(stopped.status.success());
    assert!(!alive(&pid), "the sandbox outlived stop");
    assert!(
        !home.sandbox_dir().join("endpoint").exists()
            && !home.sandbox_dir().join("sandbox.pid").exists()
    );
    let stopped = home.run(&["sandbox", "stop"]);
    assert!(stopped.status.success() && stdout(&stopped).contains("not running"));
    // And without a sandbox, scripts say what to do.
    let out = home.run(&["-e", r#"auth::ensure_api_key("x")"#]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("flyte-run sandbox start"));
}

#[test]
fn stop_ends_the_running_actions_with_the_sandbox() {
    let home = Home(TempHome::new());
    let pid_file = home.0.path().join("task.pid");
    // The task ignores SIGTERM, so stop has to follow up with SIGKILL.
    let script = format!(
        r#"runs::launch(#{{ name: "long", command: ["sh", "-c", "trap '' TERM; echo $$ > '{}'; while :; do sleep 1; done"] }});
           runs::wait("long", #{{ phase: "RUNNING", timeout: 60, poll_interval: 0 }})"#,
        pid_file.display()
    );
    let out = home.run(&["-e", &script]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut task = String::new();
    for _ in 0..400 {
        task = std::fs::read_to_string(&pid_file).unwrap_or_default();
        if task.ends_with('\n') {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(alive(&task), "the task should be running");
    let stopped = home.run(&["sandbox", "stop"]);
    assert!(stopped.status.success());
    assert!(
        String::from_utf8_lossy(&stopped.stderr).is_empty(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert!(!alive(&task), "the task outlived the sandbox");
    assert!(
        std::fs::read_to_string(home.sandbox_dir().join("sandbox.log"))
            .unwrap()
            .contains("stopped 1 running action(s)")
    );
}

#[test]
fn a_stale_pid_file_does_not_block_a_start() {
    let home = Home(TempHome::new());
    std::fs::create_dir_all(home.sandbox_dir()).unwrap();
    // A pid that is certainly not running: the largest pid the kernel could hand out, plus one.
    let max: i64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::fs::write(
        home.sandbox_dir().join("sandbox.pid"),
        (max + 1).to_string(),
    )
    .unwrap();
    std::fs::write(home.sandbox_dir().join("endpoint"), "http://127.0.0.1:9").unwrap();
    assert_eq!(home.run(&["sandbox", "status"]).status.code(), Some(3));
    let started = home.run(&["sandbox", "start"]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let endpoint = std::fs::read_to_string(home.sandbox_dir().join("endpoint")).unwrap();
    assert_ne!(endpoint, "http://127.0.0.1:9");
}

#[test]
fn runs_module_launches_waits_inspects_and_aborts_on_an_auto_started_sandbox() {
    let home = Home(TempHome::new());
    let script = r#"
        let run = runs::launch(#{ name: "hello", command: ["sh", "-c", "test \"$WHO\" = world"], env: #{ WHO: "world" } });
        let done = runs::wait(run.name, #{ phase: "SUCCEEDED", timeout: 60, poll_interval: 0 });
        let failing = runs::launch(#{ name: "failing", command: ["sh", "-c", "exit 7"] });
        let failed = runs::wait("failing", #{ phase: "SUCCEEDED", timeout: 60, poll_interval: 0 });
        let why = runs::details("failing").error;
        runs::launch(#{ name: "sleeper", command: ["sleep", "60"] });
        let running = runs::wait("sleeper", #{ timeout: 60, poll_interval: 0 });
        runs::abort("sleeper");
        let aborted = runs::wait("sleeper", #{ phase: "ABORTED", timeout: 60, poll_interval: 0 });
        let found = runs::find("sleeper");
        `${run.action} ${done} ${failed} ${why.kind} ${running} ${aborted} ${runs::details("sleeper", "a0").abort_reason} ${found.terminal} ${runs::find("nope") == ()}`
    "#;
    let out = home.run(&["-e", script]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stdout(&out),
        "a0 SUCCEEDED FAILED KIND_USER RUNNING ABORTED aborted by a flyte-run playbook true true\n"
    );
    assert!(
        stderr.contains("started the local sandbox at http://127.0.0.1:"),
        "{stderr}"
    );

    // Bad input names the problem.
    for (script, want) in [
        (
            r#"runs::launch(#{ command: ["true"] })"#,
            "the spec needs `name`",
        ),
        (
            r#"runs::launch(#{ name: "x" })"#,
            "the spec needs `command`",
        ),
        (
            r#"runs::launch(#{ name: "Bad_Name", command: ["true"] })"#,
            "invalid run name",
        ),
        (
            r#"runs::launch(#{ name: "hello", command: ["true"] })"#,
            "already exists",
        ),
        (
            r#"runs::wait("hello", #{ phase: "DONE" })"#,
            "unknown phase \"DONE\"",
        ),
        (
            r#"runs::details("nope")"#,
            "no action \"a0\" in run \"nope\" (flytesnacks/development)",
        ),
    ] {
        let out = home.run(&["-e", script]);
        assert_eq!(out.status.code(), Some(1), "{script}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(want),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The whole debug flow by hand, through the real pieces: the sandbox, an API key, a debug run,
/// its IDE link, the system ssh client through `flyte-run tunnel` with a headers file and the
/// published host key pinned; then abort and see it terminal.
#[test]
fn a_debug_run_on_the_sandbox_is_reachable_with_the_system_ssh_client() {
    let home = Home(TempHome::new());
    let script = r#"
        let key = keys::ensure_keypair();
        // runs:: starts the sandbox when nothing is configured; auth:: then finds it running.
        runs::launch(#{ name: "dbg", command: ["sleep", "120"],
                        env: #{ _F_E_SSH: "1", _F_SSH_PK: key.public_key, _F_E_VS: "True" } });
        auth::ensure_api_key("flyte-ssh-debug");
        runs::wait("dbg", #{ timeout: 60, poll_interval: 0 });
        let link = runs::details("dbg").log_links.filter(|l| l.type == "IDE")[0];
        print(link.uri);
        print(debug::host_key(link.uri));
        print(link.ready);
        print(auth::bearer_token().authorization());
    "#;
    let out = home.run(&["-e", script]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let (uri, host_key, ready, authorization) = (lines[0], lines[1], lines[2], lines[3]);
    assert!(
        uri.starts_with("http://127.0.0.1:")
            && uri.ends_with("/v1/debug/flytesnacks/development/dbg/a0"),
        "{uri}"
    );
    assert!(host_key.starts_with("ssh-ed25519 "), "{host_key}");
    assert_eq!(ready, "true");

    let headers = home.0.path().join("dbg.headers");
    std::fs::write(&headers, format!("Authorization: {authorization}\n")).unwrap();
    let known_hosts = home.0.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("dbg.flyte-debug {host_key}\n")).unwrap();
    let ssh = |headers_file: &std::path::Path| {
        std::process::Command::new("ssh")
            .args(["-F", "none", "-i"])
            .arg(home.0.ssh_debug_dir().join("id_ed25519"))
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "HostKeyAlias=dbg.flyte-debug",
            ])
            .args(["-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .arg("-o")
            .arg(format!(
                "ProxyCommand={BIN} tunnel {uri} --http-headers-file {}",
                headers_file.display()
            ))
            .args(["root@dbg", "echo inside-the-debug-run"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = ssh(&headers);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), "inside-the-debug-run\n");

    // The ingress checks the token: missing, expired and forged ones are refused before any SSH
    // happens. The expired one is signed by this sandbox's own key, so only its age is wrong.
    let expired = expired_token(&home);
    for (case, header_lines) in [
        ("missing", String::new()),
        ("expired", format!("Authorization: Bearer {expired}\n")),
        ("forged", "Authorization: Bearer not-a-token\n".to_owned()),
    ] {
        let file = home.0.path().join(format!("{case}.headers"));
        std::fs::write(&file, header_lines).unwrap();
        let out = ssh(&file);
        assert!(!out.status.success(), "{case}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("refused our credentials"),
            "{case}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let out = home.run(&["-e", r#"runs::abort("dbg"); runs::wait("dbg", #{ phase: "ABORTED", timeout: 60, poll_interval: 0 })"#]);
    assert_eq!(
        stdout(&out),
        "ABORTED\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The route is withdrawn with the run.
    let out = ssh(&headers);
    assert!(!out.status.success());
}

#[test]
fn several_debug_runs_at_once_each_reach_their_own_server() {
    const RUNS: [&str; 4] = ["dbg-a", "dbg-b", "dbg-c", "dbg-d"];
    let home = Home(TempHome::new());
    // All launched before any is waited for, so their servers are up at the same time.
    let script = r#"
        let key = keys::ensure_keypair();
        let names = ["dbg-a", "dbg-b", "dbg-c", "dbg-d"];
        for name in names {
            runs::launch(#{ name: name, command: ["sleep", "120"],
                            env: #{ _F_E_SSH: "1", _F_SSH_PK: key.public_key } });
        }
        auth::ensure_api_key("flyte-ssh-debug");
        for name in names {
            runs::wait(name, #{ timeout: 60, poll_interval: 0 });
            let link = runs::details(name).log_links.filter(|l| l.type == "IDE")[0];
            print(link.uri + " " + debug::host_key(link.uri));
        }
        print(auth::bearer_token().authorization());
    "#;
    let out = home.run(&["-e", script]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let headers = home.0.path().join("all.headers");
    std::fs::write(&headers, format!("Authorization: {}\n", lines[RUNS.len()])).unwrap();
    let routes: Vec<(&str, &str)> = lines[..RUNS.len()]
        .iter()
        .map(|line| line.split_once(' ').unwrap())
        .collect();
    let distinct: std::collections::HashSet<_> = routes.iter().map(|(_, key)| *key).collect();
    assert_eq!(
        distinct.len(),
        RUNS.len(),
        "each server has its own host key"
    );

    // ssh to `uri` pinning `host_key`, asking the server which state directory it keeps.
    let ssh = |index: usize, uri: &str, host_key: &str| {
        let known_hosts = home.0.path().join(format!("known_hosts.{index}"));
        std::fs::write(&known_hosts, format!("pinned.flyte-debug {host_key}\n")).unwrap();
        std::process::Command::new("ssh")
            .args(["-F", "none", "-i"])
            .arg(home.0.ssh_debug_dir().join("id_ed25519"))
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
            .args(["-o", "HostKeyAlias=pinned.flyte-debug"])
            .args(["-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .arg("-o")
            .arg(format!(
                "ProxyCommand={BIN} tunnel {uri} --http-headers-file {}",
                headers.display()
            ))
            .args(["root@debug", "echo connected"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    // Every run at once, each through its own route with its own key pinned.
    let outputs: Vec<Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = routes
            .iter()
            .enumerate()
            .map(|(index, (uri, key))| scope.spawn(move || ssh(index, uri, key)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((name, (uri, _)), out) in RUNS.iter().zip(&routes).zip(&outputs) {
        assert!(uri.ends_with(&format!("/{name}/a0")), "{uri}");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout(out), "connected\n", "{name}");
    }
    // A route leads to its own run's server only: pinning another run's key fails.
    let out = ssh(RUNS.len(), routes[0].0, routes[1].1);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Host key verification failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn runs_survive_a_sigkilled_sandbox_and_interrupted_actions_fail_as_system_errors() {
    let home = Home(TempHome::new());
    let pid_file = home.0.path().join("victim.pid");
    let script = format!(
        r#"runs::launch(#{{ name: "done", command: ["true"] }});
           runs::wait("done", #{{ phase: "SUCCEEDED", timeout: 60, poll_interval: 0 }});
           runs::launch(#{{ name: "victim", command: ["sh", "-c", "echo $$ > '{}'; exec sleep 60"] }});
           runs::wait("victim", #{{ timeout: 60, poll_interval: 0 }})"#,
        pid_file.display()
    );
    let out = home.run(&["-e", &script]);
    assert_eq!(
        stdout(&out),
        "RUNNING\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sandbox_pid: i32 = std::fs::read_to_string(home.sandbox_dir().join("sandbox.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sandbox_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Defect 4 of issue 13: the task's process group used to outlive the killed sandbox. The
    // sandbox's watchdog ends it now (SIGTERM at once): a bounded wait for it to go.
    let mut victim = String::new();
    for _ in 0..400 {
        victim = std::fs::read_to_string(&pid_file).unwrap_or_default();
        if !victim.trim().is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let victim: u32 = victim.trim().parse().unwrap();
    let mut ended = false;
    for _ in 0..400 {
        if !flyte_reaper::group_is_alive(victim) {
            ended = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    if !ended {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(i32::try_from(victim).unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        );
        panic!("the task outlived the SIGKILLed sandbox");
    }
    // Wait for the killed sandbox to be dead (a zombie is: the next start must see a stale pid
    // file even before whoever adopted it reaps it).
    for _ in 0..400 {
        if !alive(&sandbox_pid.to_string()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }

    let out = home.run(&["-e", r#"let d = runs::details("done"); let v = runs::details("victim"); `${d.phase} ${v.phase} ${v.error.kind} ${v.error.code}`"#]);
    assert_eq!(
        stdout(&out),
        "SUCCEEDED FAILED KIND_SYSTEM SandboxRestarted\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The README's main command in a fresh HOME: it starts the sandbox, launches a debug run,
/// installs the ssh block and proves it. Then the system ssh client, reading that config with
/// `StrictHostKeyChecking yes` in effect, gets in; a wrong pinned key keeps it out; running the
/// playbook again reuses the live run.
#[test]
fn the_debug_playbook_leaves_a_working_pinned_ssh_alias() {
    let home = Home(TempHome::new());
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let playbook = |home: &Home| {
        home.0
            .command(BIN)
            .current_dir(root)
            .env_remove("FLYTE_ENDPOINT")
            .arg("playbooks/debug.rhai")
            .output()
            .unwrap()
    };
    let out = playbook(&home);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("launched:    run flyte-run-debug in debug mode"),
        "{text}"
    );
    assert!(text.contains("checked:     connected as "), "{text}");
    assert!(
        text.trim_end().ends_with("next:        ssh flyte-debug"),
        "{text}"
    );

    let config = home.0.path().join(".ssh/config");
    let ssh = |args: &[&str]| {
        std::process::Command::new("ssh")
            .arg("-F")
            .arg(&config)
            .args(["-o", "BatchMode=yes"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let resolved = stdout(&ssh(&["-G", "flyte-debug"]));
    for want in [
        "stricthostkeychecking true",
        "hostkeyalias flyte-run-debug.a0.development.flytesnacks.flyte-debug",
    ] {
        assert!(resolved.lines().any(|l| l == want), "{want}: {resolved}");
    }
    let out = ssh(&["flyte-debug", "true"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Replace the pinned key with another one: the same command is refused.
    let known_hosts = home.0.ssh_debug_dir().join("known_hosts");
    let pinned = std::fs::read_to_string(&known_hosts).unwrap();
    let other = flyte_keys::HostKey::load_or_generate(&home.0.path().join("other"))
        .unwrap()
        .public_key_line()
        .unwrap();
    std::fs::write(
        &known_hosts,
        flyte_keys::known_hosts_line(
            "flyte-run-debug.a0.development.flytesnacks.flyte-debug",
            &other,
        )
        .unwrap()
            + "\n",
    )
    .unwrap();
    let out = ssh(&["flyte-debug", "true"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Host key verification failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&known_hosts, pinned).unwrap();

    let again = playbook(&home);
    let text = stdout(&again);
    assert!(again.status.success(), "{text}");
    assert!(
        text.contains("reusing:     run flyte-run-debug (RUNNING)"),
        "{text}"
    );
    assert!(text.contains("(Host flyte-debug, unchanged)"), "{text}");

    // The run ended: its name stays taken, so the next one is passed over to `-2` (the same
    // policy as `flyte-run debug`), and ssh reaches the new run through the same alias.
    let out = home.run(&["-e", r#"runs::abort("flyte-run-debug"); runs::wait("flyte-run-debug", #{ phase: "ABORTED", timeout: 60, poll_interval: 0 })"#]);
    assert_eq!(stdout(&out), "ABORTED\n");
    let third = playbook(&home);
    let text = stdout(&third);
    assert!(third.status.success(), "{text}");
    for want in [
        "ended:       run flyte-run-debug (ABORTED), passed over",
        "launched:    run flyte-run-debug-2 in debug mode",
        "checked:     connected as ",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
}

/// Issue 15's done-when: another Rust program gets a pinned, working ssh alias for a debug run
/// by depending on flyte-debug-client alone (`examples/examples/debug_session.rs`, built with
/// the workspace's tests; flyte-run serves only as the sandbox and the ProxyCommand).
#[test]
fn the_debug_client_example_connects_with_that_crate_alone() {
    let example = std::path::Path::new(BIN)
        .parent()
        .unwrap()
        .join("examples/debug_session");
    assert!(
        example.exists(),
        "{} is missing: the workspace's tests build it (cargo test --workspace), or build it with \
         cargo build -p flyte-examples --example debug_session",
        example.display()
    );
    let home = Home::with_sandbox();
    let config = home.0.path().join("example.ssh_config");
    let out = home
        .0
        .command(&example)
        .arg(BIN)
        .arg(&config)
        .arg("from-example")
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("run from-example is RUNNING"), "{text}");
    assert!(text.contains("connected as "), "{text}");
    // The route published its key, and the block the example wrote pins it.
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(written.contains("StrictHostKeyChecking yes"), "{written}");
    assert!(
        !text.contains("learned on first use"),
        "the sandbox publishes its host key: {text}"
    );
}

/// `flyte-run debug RUN` relaunches a plain run's task under the derived name with SSH debug on
/// (its environment kept), installs the block, and reconnects the second time; bad names fail.
#[test]
fn flyte_run_debug_relaunches_a_run_and_reconnects() {
    let home = Home(TempHome::new());
    let out = home.run(&[
        "-e",
        r#"runs::launch(#{ name: "utrain", command: ["sleep", "120"], env: #{ WHO: "world" } }); runs::wait("utrain", #{ timeout: 60, poll_interval: 0 })"#,
    ]);
    assert_eq!(
        stdout(&out),
        "RUNNING\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = home.run(&["debug", "utrain", "--write-config", "--poll-interval", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout(&out), "ssh flyte-debug\n");
    assert!(
        stderr.contains("launched train-dbg: run utrain again with SSH debug on"),
        "{stderr}"
    );
    assert!(stderr.contains("(pinned)"), "{stderr}");

    let config = home.0.path().join(".ssh/config");
    let out = std::process::Command::new("ssh")
        .arg("-F")
        .arg(&config)
        .args([
            "-o",
            "BatchMode=yes",
            "flyte-debug",
            "echo $WHO ${_F_SSH_PK:-unset}",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out),
        "world unset\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Again: the debug run exists, so it reconnects; without --write-config the block is printed.
    let out = home.run(&["debug", "utrain", "--poll-interval", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("reconnecting to the debug run train-dbg (RUNNING)"),
        "{stderr}"
    );
    assert!(stdout(&out).contains("HostKeyAlias train-dbg.a0.development.flytesnacks.flyte-debug"));

    // A dry run says what it would do and does nothing.
    let out = home.run(&["debug", "utrain", "--dry-run"]);
    assert_eq!(
        stdout(&out),
        "dry-run: would reconnect to the debug run train-dbg (RUNNING)\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = home.run(&["debug", "utrain", "--name", "other-dbg", "--dry-run"]);
    assert_eq!(
        stdout(&out),
        "dry-run: would relaunch the task of utrain/a0 as other-dbg with SSH debug on, then connect\n"
    );

    for (args, want) in [
        (vec!["debug", "nope"], "no action \"a0\" in run \"nope\""),
        (vec!["debug", "___"], "cannot derive a debug run name"),
        (
            vec![
                "debug",
                "utrain",
                "--name",
                "fresh",
                "--host-alias",
                "bad alias",
            ],
            "invalid Host alias \"bad alias\": it contains whitespace",
        ),
        (
            vec!["debug", "utrain", "--timeout", "0"],
            "0 is not in 1..=604800",
        ),
    ] {
        let out = home.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    // The bad alias was refused before anything was launched or written.
    let out = home.run(&["-e", r#"runs::find("fresh") == ()"#]);
    assert_eq!(stdout(&out), "true\n");
    assert!(!home.0.ssh_debug_dir().join("bad_alias.headers").exists());

    ended_debug_runs_keep_their_names(&home);
    the_shell_opens_in_the_task(&home);
}

/// An ended debug run keeps its name: `flyte-run debug` passes it over to the next free one
/// (the playbooks' policy too), and says so; a dry run tells which it would take.
fn ended_debug_runs_keep_their_names(home: &Home) {
    let out = home.run(&["-e", r#"runs::abort("train-dbg"); runs::wait("train-dbg", #{ phase: "ABORTED", timeout: 60, poll_interval: 0 })"#]);
    assert_eq!(stdout(&out), "ABORTED\n");
    let out = home.run(&["debug", "utrain", "--dry-run"]);
    assert_eq!(
        stdout(&out),
        "dry-run: would relaunch the task of utrain/a0 as train-dbg-2 with SSH debug on, then connect\n"
    );
    let out = home.run(&["debug", "utrain", "--poll-interval", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for want in [
        "the debug run train-dbg has ended (ABORTED); run names stay taken",
        "launched train-dbg-2: run utrain again with SSH debug on",
    ] {
        assert!(stderr.contains(want), "{want}: {stderr}");
    }
    assert!(
        stdout(&out).contains("HostKeyAlias train-dbg-2.a0.development.flytesnacks.flyte-debug")
    );
    // Named explicitly, the live run is reused.
    let out = home.run(&["debug", "utrain", "--name", "train-dbg-2", "--dry-run"]);
    assert_eq!(
        stdout(&out),
        "dry-run: would reconnect to the debug run train-dbg-2 (RUNNING)\n"
    );
}

/// Issue 16: a machine whose only configuration is a Flyte `config.yaml` (the one the sandbox
/// writes for Flyte's own CLI: `dns:///` over TLS with the sandbox's CA, `ClientSecret`):
/// `doctor` shows that endpoint and auth type, and flyte-run launches, connects and runs a
/// command through ssh with it. A secret file others can read is refused.
#[test]
fn flyte_run_works_with_only_flytes_config_file() {
    let home = Home::with_sandbox();
    let flyte_dir = home.0.path().join(".flyte");
    std::fs::copy(
        home.sandbox_dir().join("flyte-config.yaml"),
        flyte_dir.join("config.yaml"),
    )
    .unwrap();
    let text = |out: &Output| format!("{}{}", stdout(out), String::from_utf8_lossy(&out.stderr));

    let doctor = home.run(&["doctor"]);
    let shown = text(&doctor).replace(&home.0.path().display().to_string(), "$HOME");
    assert!(doctor.status.success(), "{shown}");
    for want in [
        "ok    endpoint    dns:///127.0.0.1:",
        "(from $HOME/.flyte/config.yaml: admin.endpoint)",
        "note  auth        ClientSecret (from $HOME/.flyte/config.yaml: admin.authType); used",
        "ok    token       from the client credentials of sbx-",
    ] {
        assert!(shown.contains(want), "{want:?} in {shown}");
    }

    let ssh_config = home.0.path().join("cfg.ssh_config");
    let script = format!(
        r#"runs::launch(#{{ name: "from-flyte-config", command: ["sleep", "60"], env: debug::launch_env() }});
           runs::wait("from-flyte-config", #{{ poll_interval: 0 }});
           let info = debug::connect("from-flyte-config", #{{ timeout: 60, poll_interval: 0 }});
           ssh::install(info, #{{ config_path: "{path}" }});
           ssh::exec("flyte-debug", "echo connected", #{{ config_path: "{path}", check: true }}).stdout"#,
        path = ssh_config.display()
    );
    let out = home.run(&["-e", &script]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stdout(&out).trim(), "connected");

    // The client secret readable by others: refused, naming the file and the fix.
    let secret = home.sandbox_dir().join("client-secret");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = home.run(&["-e", r#"runs::find("from-flyte-config").phase"#]);
    assert!(!out.status.success());
    let message = text(&out);
    assert!(
        message.contains("readable by other users (mode 644)") && message.contains("chmod 600"),
        "{message}"
    );
}

/// Issue 16: Flyte's `ExternalCommand` login: the command `admin.command` names prints the
/// token flyte-run sends; a failing command is an error naming it.
#[test]
fn an_external_command_configured_in_flytes_file_supplies_the_token() {
    let home = Home::with_sandbox();
    let token = home.run(&[
        "-e",
        r#"auth::ensure_api_key("cmd"); auth::bearer_token().authorization()"#,
    ]);
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = stdout(&token);
    let token = token.trim().trim_start_matches("Bearer ");
    let dir = home.0.path();
    std::fs::write(dir.join("token"), token).unwrap();
    let script = dir.join("print-token");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho called >> {0}/calls\ncat {0}/token\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let endpoint = std::fs::read_to_string(home.sandbox_dir().join("endpoint")).unwrap();
    let config = format!(
        "admin:\n  endpoint: {}\n  authType: ExternalCommand\n  command: [\"{}\"]\n",
        endpoint.trim(),
        script.display()
    );
    std::fs::write(dir.join(".flyte/config.yaml"), config).unwrap();
    // The sandbox's own credential would work too: remove it, so only the command can.
    std::fs::remove_file(home.sandbox_dir().join("credential")).unwrap();
    std::fs::remove_file(home.sandbox_dir().join("bearer.json")).ok();
    std::fs::remove_file(dir.join(".flyte/ssh-debug/bearer.json")).ok();

    let doctor = home.run(&["doctor"]);
    let text = format!(
        "{}{}",
        stdout(&doctor),
        String::from_utf8_lossy(&doctor.stderr)
    );
    assert!(doctor.status.success(), "{text}");
    assert!(text.contains("note  auth        ExternalCommand"), "{text}");
    assert!(
        text.contains(&format!(
            "ok    token       from the command {}",
            script.display()
        )),
        "{text}"
    );
    let out = home.run(&[
        "-e",
        r#"runs::launch(#{ name: "by-command", command: ["true"] }); runs::wait("by-command", #{ phase: "SUCCEEDED", poll_interval: 0 })"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out).trim(), "SUCCEEDED");
    assert!(
        std::fs::read_to_string(dir.join("calls"))
            .unwrap()
            .lines()
            .count()
            >= 1
    );

    // A command that fails: named, with its last line of stderr.
    std::fs::write(&script, "#!/bin/sh\necho 'not logged in' >&2\nexit 4\n").unwrap();
    let out = home.run(&["-e", r#"runs::find("by-command").phase"#]);
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        message.contains(&format!("the token command {}", script.display()))
            && message.contains("not logged in"),
        "{message}"
    );
}

/// Issue 16: Flyte's `task.project` and `task.domain` are where runs go when a playbook names
/// none; an explicit project still wins.
#[test]
fn runs_go_to_the_project_and_domain_of_flytes_config() {
    let home = Home(TempHome::new());
    let flyte_dir = home.0.path().join(".flyte");
    std::fs::create_dir_all(&flyte_dir).unwrap();
    std::fs::write(
        flyte_dir.join("config.yaml"),
        "task:\n  project: ml\n  domain: staging\n",
    )
    .unwrap();
    let run = |script: &str| home.run(&["-e", script]);
    let out = run(
        r#"runs::launch(#{ name: "in-ml", command: ["true"] }); runs::wait("in-ml", #{ phase: "SUCCEEDED", poll_interval: 0 })"#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out).trim(), "SUCCEEDED");
    let out =
        run(r#"runs::wait("in-ml", #{ project: "ml", domain: "staging", phase: "SUCCEEDED" })"#);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(r#"runs::wait("in-ml", #{ project: "flytesnacks", timeout: 1 })"#);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("(flytesnacks/staging)"), "{stderr}");
    // `task.org` (here through Flyte's env pattern) goes into the run's identifier, and so into
    // the name its host key is pinned under; without it, the org is derived from the endpoint
    // as Flyte's SDK derives it (none for a bare `localhost`).
    let alias_with = |org: Option<&str>, endpoint: &str| {
        let mut command = home.0.command(BIN);
        command.env("FLYTE_ENDPOINT", endpoint);
        if let Some(org) = org {
            command.env("FLYTE_TASK_ORG", org);
        }
        let out = command
            .args([
                "--dry-run",
                "-e",
                r#"debug::connect("r1", #{}).host_key_alias"#,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout(&out).lines().last().unwrap_or_default().to_owned()
    };
    assert_eq!(
        alias_with(Some("acme"), "dns:///localhost:1"),
        "r1.a0.staging.ml.acme.flyte-debug"
    );
    assert_eq!(
        alias_with(None, "dns:///tenant.flyte.example:1"),
        "r1.a0.staging.ml.tenant.flyte-debug"
    );
    assert_eq!(
        alias_with(None, "dns:///localhost:1"),
        "r1.a0.staging.ml.flyte-debug"
    );
}

/// `config init` and `doctor` as a user meets them: a fresh machine is fine (notes only); a
/// config is never overwritten without --force; an unreachable endpoint, a broken config file
/// and a key others can read are failures that name the fix; a running sandbox checks out.
#[test]
fn doctor_and_config_init_name_problems_with_their_fixes() {
    let home = Home(TempHome::new());
    let config = home.0.path().join(".flyte/flyte-run.json");
    let check = |args: &[&str], code: i32, wants: &[&str]| {
        let out = home.run(args);
        let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(code), "{args:?}: {text}");
        for want in wants {
            assert!(text.contains(want), "{args:?}: {want:?} in {text}");
        }
    };
    check(
        &["doctor"],
        0,
        &[
            "ok    ssh client  OpenSSH_",
            "note  key pair",
            "note  endpoint    the local sandbox (not running; started on first use)",
        ],
    );

    check(
        &["config", "init", "--endpoint", "http://10.0.0.1"],
        1,
        &["pass --insecure"],
    );
    assert!(!config.exists());
    check(&["config", "init"], 0, &["the local sandbox is used"]);
    let first = std::fs::read(&config).unwrap();
    check(
        &["config", "init", "--endpoint", "https://other.example"],
        1,
        &["already exists; it was left as it is (pass --force"],
    );
    assert_eq!(std::fs::read(&config).unwrap(), first);

    check(
        &[
            "config",
            "init",
            "--force",
            "--endpoint",
            "http://127.0.0.1:1",
        ],
        0,
        &["endpoint http://127.0.0.1:1"],
    );
    check(
        &["doctor"],
        1,
        &[
            "FAIL  endpoint    http://127.0.0.1:1 (from ~/.flyte/flyte-run.json: endpoint); it does not answer",
        ],
    );
    check(
        &["config", "show"],
        0,
        &["endpoint:    http://127.0.0.1:1 (from ~/.flyte/flyte-run.json: endpoint)"],
    );
    std::fs::write(&config, "{\"endpont\": \"x\"}").unwrap();
    for args in [&["doctor"][..], &["-e", "runs::find(\"x\")"]] {
        check(args, 1, &["unknown field `endpont`", "config init --force"]);
    }
    std::fs::remove_file(&config).unwrap();

    let out = home.run(&["sandbox", "start"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = home.run(&["-e", "keys::ensure_keypair(); ()"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check(
        &["doctor"],
        0,
        &[
            "ok    key pair",
            "(the local sandbox, running); answered in",
            "ok    token       from ",
        ],
    );
    let key = home.0.ssh_debug_dir().join("id_ed25519");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    check(&["doctor"], 1, &["FAIL  key pair", "chmod 600"]);
}

/// `debug::connect` against a debug run: the `SSHDebug` map it returns, a cached token the
/// control plane refuses being replaced once (minting the route token would otherwise fail),
/// `use_api_key` without a key, and bad options. No token appears in what the script prints.
#[test]
fn debug_connect_returns_the_connection_and_replaces_a_refused_cached_token() {
    let home = Home(TempHome::new());
    let out = home.run(&[
        "-e",
        r#"runs::launch(#{ name: "dbg2", command: ["sleep", "120"], env: debug::launch_env() }); runs::wait("dbg2", #{ timeout: 60, poll_interval: 0 })"#,
    ]);
    assert_eq!(
        stdout(&out),
        "RUNNING\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A well-formed token, valid for years by its own claim, that the sandbox never signed.
    let endpoint = std::fs::read_to_string(home.sandbox_dir().join("endpoint")).unwrap();
    let authority = endpoint.trim().trim_start_matches("http://").to_owned();
    let forged = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjQxMDI0NDQ4MDB9.Zm9yZ2Vk";
    std::fs::write(
        home.0.ssh_debug_dir().join("bearer.json"),
        format!(r#"{{"endpoint": "{authority}", "token": "{forged}", "exp": 4102444800}}"#),
    )
    .unwrap();

    let script = r#"
        let info = debug::connect("dbg2", #{ timeout: 30, poll_interval: 0, host_alias: "dbg-two" });
        print(info.run_name + " " + info.action_name + " " + info.host_alias);
        print(info.wss_url);
        print(info.host_key_fingerprint);
        print(info.headers_file);
        print(info.ssh_config);
    "#;
    let out = home.run(&["-e", script]);
    let (text, stderr) = (
        stdout(&out),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "dbg2 a0 dbg-two");
    assert!(
        lines[1].starts_with("ws://127.0.0.1:") && lines[1].ends_with("/dbg2/a0"),
        "{text}"
    );
    assert!(lines[2].starts_with("SHA256:"), "{text}");
    let headers = std::path::Path::new(lines[3]);
    assert_eq!(headers, home.0.ssh_debug_dir().join("dbg-two.headers"));
    assert_eq!(std::fs::metadata(headers).unwrap().mode() & 0o777, 0o600);
    let written = std::fs::read_to_string(headers).unwrap();
    assert!(written.starts_with("Authorization: Bearer ey") && !written.contains(forged));
    assert!(
        text.contains("HostKeyAlias dbg2.a0.development.flytesnacks.flyte-debug"),
        "{text}"
    );
    assert!(text.contains("StrictHostKeyChecking yes"), "{text}");
    let token = written.trim().trim_start_matches("Authorization: Bearer ");
    assert!(!text.contains(token) && !stderr.contains(token));

    // Minting the route token refused the cached (forged) token, so a fresh access token
    // replaced it in the cache (the headers file holds a route token, not that one); the next
    // connect uses the cached one as it is (no new mint while it is valid).
    let cache_file = home.0.ssh_debug_dir().join("bearer.json");
    let cache = std::fs::read_to_string(&cache_file).unwrap();
    let fresh = cache.contains("\"token\": \"ey") && !cache.contains(forged);
    assert!(fresh && !cache.contains(token), "{cache}");
    let out = home.run(&[
        "-e",
        r#"debug::connect("dbg2", #{ timeout: 30, poll_interval: 0, host_alias: "dbg-two" }); ()"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&cache_file).unwrap(), cache);
    let rewritten = std::fs::read_to_string(headers).unwrap();
    assert!(
        rewritten.starts_with("Authorization: Bearer ey"),
        "{rewritten}"
    );

    for (script, want) in [
        (
            r#"debug::connect("dbg2", #{ use_api_key: true, timeout: 5 })"#,
            "auth::ensure_api_key(\"flyte-ssh-debug\")",
        ),
        (
            r#"debug::connect("dbg2", #{ host_alias: "two words", timeout: 5 })"#,
            "invalid Host alias \"two words\": it contains whitespace",
        ),
        (
            r#"debug::connect("dbg2", #{ timeout: 100000000 })"#,
            "option `timeout` = 100000000 s is more than a week",
        ),
        (
            r#"debug::connect("dbg2", #{ timout: 5 })"#,
            "unknown option `timout`",
        ),
        (
            r#"debug::connect("dbg2", #{ timeout: -1 })"#,
            "is not a number of seconds",
        ),
    ] {
        let out = home.run(&["-e", script]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{script}: {stderr}");
        assert!(stderr.contains(want), "{script}: {stderr}");
    }
    assert!(!home.0.ssh_debug_dir().join("two_words.headers").exists());
}

/// A long wait shows a spinner redrawn in place on a terminal (a real pty from `script`), and
/// plain lines when stderr is a pipe. The wait here ends by its deadline: the run is not a debug
/// run, so no route comes.
#[test]
fn waits_show_a_spinner_on_a_terminal_and_plain_lines_otherwise() {
    let home = Home(TempHome::new());
    let out = home.run(&[
        "-e",
        r#"runs::launch(#{ name: "plain", command: ["sleep", "120"] }); runs::wait("plain", #{ timeout: 60, poll_interval: 0 })"#,
    ]);
    assert_eq!(
        stdout(&out),
        "RUNNING\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let playbook = home.0.path().join("wait.rhai");
    std::fs::write(
        &playbook,
        r#"debug::connect("plain", #{ timeout: 1, poll_interval: 0 })"#,
    )
    .unwrap();

    let piped = home.run(&[playbook.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert_eq!(piped.status.code(), Some(1));
    assert!(
        stderr.starts_with("waiting for the debug route of run plain/a0 (RUNNING, 0 s)\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("published no debug route within 1 s"),
        "{stderr}"
    );
    assert!(!stderr.contains('\r'));

    // `script` gives the command a pseudo-terminal and copies what it shows to our stdout.
    let tty = home
        .0
        .command("script")
        .env_remove("FLYTE_ENDPOINT")
        .args([
            "-qefc",
            &format!("{BIN} {}", playbook.display()),
            "/dev/null",
        ])
        .output()
        .expect("`script` (util-linux) runs the command on a pty");
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert_eq!(tty.status.code(), Some(1), "{shown}");
    let frames = shown.matches("\r\u{1b}[2K").count();
    // At least one drawing and the clearing at the end, both in place.
    assert!(frames >= 2, "a spinner redraws in place: {shown:?}");
    assert!(
        shown.contains("waiting for the debug route of run plain/a0 (RUNNING, 0 s)"),
        "{shown:?}"
    );
    assert!(
        shown.contains("published no debug route within 1 s"),
        "{shown:?}"
    );
}

/// `flyte-run debug --shell` ends in the system ssh, connected: commands on its stdin run in
/// the task (with the task's environment), and ~/.ssh is not needed or touched.
fn the_shell_opens_in_the_task(home: &Home) {
    use std::io::Write as _;
    let config_before = std::fs::read(home.0.path().join(".ssh/config")).ok();
    let mut child = home
        .0
        .command(BIN)
        .env_remove("FLYTE_ENDPOINT")
        .args([
            "debug",
            "utrain",
            "--name",
            "train-dbg-2",
            "--shell",
            "--host-alias",
            "shell-test",
            "--poll-interval",
            "0",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"echo in-the-task $WHO\nexit 0\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout(&out).contains("in-the-task world"),
        "{}{stderr}",
        stdout(&out)
    );
    assert!(stderr.contains("connecting: ssh -F "), "{stderr}");
    let block = home.0.ssh_debug_dir().join("shell-test.ssh_config");
    assert_eq!(std::fs::metadata(&block).unwrap().mode() & 0o777, 0o600);
    assert!(
        std::fs::read_to_string(&block)
            .unwrap()
            .contains("StrictHostKeyChecking yes")
    );
    assert_eq!(
        std::fs::read(home.0.path().join(".ssh/config")).ok(),
        config_before
    );
}

/// Flyte's config.yaml naming the running sandbox and the login flow `auth_type`.
fn login_config(home: &Home, auth_type: &str) {
    let endpoint = std::fs::read_to_string(home.sandbox_dir().join("endpoint")).unwrap();
    std::fs::write(
        home.0.path().join(".flyte/config.yaml"),
        format!(
            "admin:\n  endpoint: {}\n  authType: {auth_type}\n",
            endpoint.trim()
        ),
    )
    .unwrap();
}

/// Mark the newest token in a token cache expired; the cache as it was.
fn expire_cached_token(cache: &std::path::Path) -> serde_json::Value {
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cache).unwrap()).unwrap();
    let before = doc.clone();
    doc["exp"] = serde_json::json!(1);
    std::fs::write(cache, doc.to_string()).unwrap();
    before
}

/// Issue 16: Flyte's `DeviceFlow`, end to end against the sandbox: flyte-run shows a code, the
/// sandbox's owner approves it (`flyte-run sandbox approve`), the command goes on; the next one
/// reuses the token, an expired one is renewed with the refresh token (no new login), a refresh
/// token the sandbox no longer knows (it restarted) falls back to a new login, and a denied
/// login or a mistyped code is an error that says so.
#[test]
fn the_device_flow_logs_in_through_the_owners_approval() {
    use std::io::BufRead as _;
    let home = Home::with_sandbox();
    login_config(&home, "DeviceFlow");
    // Start a command that needs a token; read the code it shows; approve or deny it.
    let login = |decision: &[&str]| -> Output {
        let mut child = home
            .0
            .command(BIN)
            .env_remove("FLYTE_ENDPOINT")
            .args(["-e", r#"runs::find("nothing-here")"#])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut shown = Vec::new();
        let code = stderr.by_ref().find_map(|line| {
            let line = line.unwrap();
            let code = line
                .split_once("approve the code ")
                .map(|(_, c)| c.trim().to_owned());
            shown.push(line);
            code
        });
        let code = code.unwrap_or_else(|| panic!("no code shown: {shown:?}"));
        let mut args = vec!["sandbox", "approve"];
        args.extend_from_slice(decision);
        args.push(&code);
        let decided = home.run(&args);
        assert!(decided.status.success(), "{}", text(&decided));
        // The rest of what it says, until it exits.
        shown.extend(stderr.map(Result::unwrap));
        let mut out = child.wait_with_output().unwrap();
        out.stderr = shown.join("\n").into_bytes();
        out
    };
    let shows_a_code = |out: &Output| text(out).contains("approve the code");

    let first = login(&[]);
    assert!(first.status.success(), "{}", text(&first));
    let doctor = home.run(&["doctor"]);
    assert!(
        text(&doctor).contains("ok    token       from a DeviceFlow login; valid for"),
        "{}",
        text(&doctor)
    );

    // Cached: no new login.
    let again = home.run(&["-e", r#"runs::find("nothing-here")"#]);
    assert!(
        again.status.success() && !shows_a_code(&again),
        "{}",
        text(&again)
    );

    // The access token expired: the refresh token renews it, still without a login.
    let cache = home.0.ssh_debug_dir().join("flyte-run-tokens.json");
    let doc = expire_cached_token(&cache);
    let refreshed = home.run(&["-e", r#"runs::find("nothing-here")"#]);
    assert!(
        refreshed.status.success() && !shows_a_code(&refreshed),
        "{}",
        text(&refreshed)
    );
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cache).unwrap()).unwrap();
    assert_ne!(after["refresh_token"], doc["refresh_token"], "rotated");
    assert!(after["exp"].as_i64().unwrap() > 1);

    // A restarted sandbox forgot its refresh tokens: a new login, not an error.
    assert!(home.run(&["sandbox", "stop"]).status.success());
    assert!(home.run(&["sandbox", "start"]).status.success());
    login_config(&home, "DeviceFlow");
    expire_cached_token(&cache);
    let relogin = login(&[]);
    assert!(relogin.status.success(), "{}", text(&relogin));

    // Denied: the command fails and says so.
    std::fs::remove_file(&cache).unwrap();
    let denied = login(&["--deny"]);
    assert!(!denied.status.success());
    assert!(
        text(&denied).contains("the login was denied"),
        "{}",
        text(&denied)
    );

    // A code nobody waits with.
    let wrong = home.run(&["sandbox", "approve", "BBBB-CCCC"]);
    assert!(!wrong.status.success());
    assert!(
        text(&wrong).contains("no device login waits with that code"),
        "{}",
        text(&wrong)
    );
}

/// Issue 16: Flyte's `Pkce` login, end to end against the sandbox: flyte-run listens on the
/// redirect URI the sandbox names, opens `$BROWSER` (testkit's headless browser, which approves
/// the page's user code as the sandbox's owner and follows the redirect), and exchanges the code
/// with its verifier; the next command reuses the token. A denied login and a redirect port
/// another program holds are errors that say so.
#[test]
fn pkce_logs_in_through_the_browser_and_the_owners_approval() {
    let home = Home::with_sandbox();
    login_config(&home, "Pkce");
    let browser = flyte_testkit::headless_browser(home.0.path());
    let run = |decision: &str| {
        home.0
            .command(BIN)
            .env_remove("FLYTE_ENDPOINT")
            .env("BROWSER", &browser)
            .env("FLYTE_RUN_BIN", BIN)
            .env("HEADLESS_DECISION", decision)
            .args(["-e", r#"runs::find("nothing-here")"#])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let first = run("approve");
    assert!(first.status.success(), "{}", text(&first));
    let shown = text(&first);
    assert!(
        shown.contains("To log in, open http://127.0.0.1:"),
        "{shown}"
    );
    let doctor = home.run(&["doctor"]);
    assert!(
        text(&doctor).contains("ok    token       from a Pkce login; valid for"),
        "{}",
        text(&doctor)
    );
    let again = run("approve");
    assert!(
        again.status.success() && !text(&again).contains("To log in"),
        "{}",
        text(&again)
    );

    let cache = home.0.ssh_debug_dir().join("flyte-run-tokens.json");
    std::fs::remove_file(&cache).unwrap();
    let denied = run("deny");
    assert!(!denied.status.success());
    assert!(
        text(&denied).contains("the login was refused: access_denied"),
        "{}",
        text(&denied)
    );

    // The redirect URI's port, taken by another program.
    let port: u16 = shown
        .split("redirect_uri=http%3A%2F%2F127.0.0.1%3A")
        .nth(1)
        .and_then(|rest| rest.split('%').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no redirect port in {shown}"));
    let _holder = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let taken = run("approve");
    assert!(!taken.status.success());
    assert!(
        text(&taken).contains(&format!("another login or program holds port {port}")),
        "{}",
        text(&taken)
    );
}

/// Issue 16: Flyte's `Passthrough` sends only what the program puts in its context; flyte-run
/// has none, so it sends no credential at all (not the sandbox's, not a stored key): the
/// sandbox refuses the call for want of a token, and `doctor` says what Passthrough means here.
#[test]
fn passthrough_sends_no_credential_of_flyte_runs_own() {
    let home = Home::with_sandbox();
    login_config(&home, "Passthrough");
    let out = home.run(&["-e", r#"runs::find("nothing-here")"#]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("a bearer token is required"),
        "{}",
        text(&out)
    );
    let doctor = text(&home.run(&["doctor"]));
    assert!(
        doctor.contains("Passthrough (from ")
            && doctor.contains("flyte-run sends no credential of its own"),
        "{doctor}"
    );
}

/// Issue 16: Flyte's `admin.insecureSkipVerify`. The sandbox's TLS certificate comes from its
/// own CA; without `caCertFilePath` the connection is refused (the certificate named), with
/// `insecureSkipVerify: true` it goes through, and flyte-run warns that nothing is checked.
#[test]
fn insecure_skip_verify_accepts_a_certificate_no_ca_vouches_for() {
    let home = Home::with_sandbox();
    let written = std::fs::read_to_string(home.sandbox_dir().join("flyte-config.yaml")).unwrap();
    let without_ca: String = written
        .lines()
        .filter(|l| !l.contains("caCertFilePath"))
        .fold(String::new(), |text, line| text + line + "\n");
    let config = home.0.path().join(".flyte/config.yaml");
    std::fs::write(&config, &without_ca).unwrap();
    let refused = home.run(&["-e", r#"runs::find("nothing-here")"#]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).to_lowercase().contains("certificate"),
        "{}",
        text(&refused)
    );
    std::fs::write(
        &config,
        without_ca.replace("admin:\n", "admin:\n  insecureSkipVerify: true\n"),
    )
    .unwrap();
    let accepted = home.run(&["-e", r#"runs::find("nothing-here")"#]);
    assert!(accepted.status.success(), "{}", text(&accepted));
    assert!(
        text(&accepted)
            .contains("warning: admin.insecureSkipVerify: the certificate of 127.0.0.1:"),
        "{}",
        text(&accepted)
    );
}

/// Issue 16: Flyte's `admin.httpProxyURL`: every request to the control plane goes through that
/// proxy (a real one, Debian's tinyproxy, which logs each request it forwards), and so does the
/// tunnel to the debug route: the Host block's `ProxyCommand` passes the proxy on.
#[test]
fn http_proxy_url_sends_the_requests_and_the_tunnel_through_the_proxy() {
    let home = Home::with_sandbox();
    let proxy = flyte_testkit::HttpProxy::start(home.0.path());
    let written = std::fs::read_to_string(home.sandbox_dir().join("flyte-config.yaml")).unwrap();
    std::fs::write(
        home.0.path().join(".flyte/config.yaml"),
        written.replace(
            "admin:\n",
            &format!("admin:\n  httpProxyURL: \"{}\"\n", proxy.url()),
        ),
    )
    .unwrap();
    let ssh_config = home.0.path().join("cfg.ssh_config");
    let script = format!(
        r#"runs::launch(#{{ name: "via-proxy", command: ["sleep", "60"], env: debug::launch_env() }});
           runs::wait("via-proxy", #{{ poll_interval: 0 }});
           let info = debug::connect("via-proxy", #{{ timeout: 60, poll_interval: 0 }});
           ssh::install(info, #{{ config_path: "{path}" }});
           ssh::exec("flyte-debug", "echo through-the-proxy", #{{ config_path: "{path}", check: true }}).stdout"#,
        path = ssh_config.display()
    );
    let out = home.run(&["-e", &script]);
    let proxy_url = proxy.url();
    let log = proxy.stop();
    assert!(out.status.success(), "{}\n{log}", text(&out));
    assert_eq!(stdout(&out).trim(), "through-the-proxy");
    let endpoint = std::fs::read_to_string(home.sandbox_dir().join("endpoint")).unwrap();
    let authority = endpoint.trim().trim_start_matches("http://");
    assert!(
        log.contains(&format!("CONNECT {authority} ")),
        "the proxy forwarded nothing to the API at {authority}: {log}"
    );
    let block = std::fs::read_to_string(&ssh_config).unwrap();
    let route = block
        .split("ws://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no route in {block}"));
    assert_ne!(route, authority, "the route has its own port");
    assert!(block.contains(&format!("--proxy {proxy_url}")), "{block}");
    assert!(
        log.contains(&format!("CONNECT {route} ")),
        "the tunnel did not go through the proxy to {route}: {log}"
    );
}

/// Issue 16: Flyte's `admin.proxyCommand`: its output goes, as `Bearer <output>`, in a
/// `proxy-authorization` header on the requests to the control plane (for an authenticating
/// proxy in front of it). The control plane here is Python's `http.server`, which records the
/// headers it gets; the token appears nowhere in flyte-run's own output.
#[test]
fn the_proxy_commands_output_goes_in_proxy_authorization() {
    use std::io::BufRead as _;
    use std::os::unix::fs::PermissionsExt as _;
    let home = Home(TempHome::new());
    let recorder = "import http.server, sys\n\
        class H(http.server.BaseHTTPRequestHandler):\n\
        \x20   def do_POST(self):\n\
        \x20       print('header proxy-authorization:', self.headers.get('proxy-authorization'), flush=True)\n\
        \x20       self.send_error(404)\n\
        \x20   do_GET = do_POST\n\
        \x20   def log_message(self, *a): pass\n\
        s = http.server.HTTPServer(('127.0.0.1', 0), H)\n\
        print('port', s.server_port, flush=True)\n\
        s.serve_forever()\n";
    let mut server = Stopped(
        std::process::Command::new("python3")
            .args(["-c", recorder])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(server.0.stdout.take().unwrap()).lines();
    let port = lines
        .next()
        .unwrap()
        .unwrap()
        .trim_start_matches("port ")
        .to_owned();
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let script = home.0.path().join("proxy-token");
    std::fs::write(&script, "#!/bin/sh\necho proxy-tok-123\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(home.0.path().join(".flyte")).unwrap();
    std::fs::write(
        home.0.path().join(".flyte/config.yaml"),
        format!(
            "admin:\n  endpoint: http://127.0.0.1:{port}\n  proxyCommand: [\"{}\"]\n",
            script.display()
        ),
    )
    .unwrap();
    let out = home.run(&["-e", r#"runs::find("nothing-here")"#]);
    // Its log is complete once it is stopped.
    drop(server);
    let seen = rest.join().unwrap();
    assert!(
        seen.iter()
            .any(|l| l == "header proxy-authorization: Bearer proxy-tok-123"),
        "{seen:?}"
    );
    assert!(!text(&out).contains("proxy-tok-123"), "{}", text(&out));
}
