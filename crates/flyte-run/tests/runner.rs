//! `runner::` and playbooks/runner.rhai through the real chain: the system ssh client, a real
//! sshd as the management host, bash, curl and python3; `incus` and `kubectl` are the testkit's
//! stand-in scripts.
#![allow(clippy::disallowed_methods)] // Tests write fixtures and start processes directly.
#![allow(clippy::unwrap_used)]

use std::process::Output;

use flyte_testkit::{RunnerLab, TempHome, reserve_port};

const BIN: &str = env!("CARGO_BIN_EXE_flyte-run");

/// A HOME whose flyte-run.json points `runner::` at the lab.
fn home_for(lab: &RunnerLab) -> TempHome {
    let home = TempHome::new();
    let sshd = lab.sshd();
    let config = serde_json::json!({
        "runner": {
            "ssh_host": sshd.alias(),
            "ssh_key": sshd.client_key(),
            "vm": lab.vm(),
            "ssh_config": sshd.client_config(),
        }
    });
    std::fs::create_dir_all(home.path().join(".flyte")).unwrap();
    std::fs::write(
        home.path().join(".flyte/flyte-run.json"),
        config.to_string(),
    )
    .unwrap();
    home
}

fn run(home: &TempHome, args: &[&str]) -> Output {
    home.command(BIN)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env_remove("DAP_RUNNER_SSH_HOST")
        .env_remove("DAP_RUNNER_SSH_KEY")
        .env_remove("DAP_RUNNER_VM")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_runner_playbook_lists_pods_and_checks_one_through_a_forward() {
    let lab = RunnerLab::new();
    let home = home_for(&lab);
    let port = reserve_port();
    let local = format!("local_port={}", port.port());
    let out = run(
        &home,
        &[
            "playbooks/runner.rhai",
            "--set",
            "namespace=web",
            "--set",
            &local,
            "--set",
            "port=80",
            "--set",
            "path=/hello.txt",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pods in web:\n  pod/web-0\npod/web-0 /hello.txt: HTTP 200\nhello from the pod\n"
    );
    let calls = lab.kubectl_calls();
    assert_eq!(calls[0], ["get", "pods", "-n", "web", "-o", "name"]);
    assert_eq!(calls[1][..4], ["-n", "web", "port-forward", "pod/web-0"]);
}

#[test]
fn runner_module_reports_codes_checks_and_stops_forwards_on_errors() {
    let lab = RunnerLab::new();
    let home = home_for(&lab);
    let port = reserve_port();
    let script = format!(
        r#"
        let r = runner::run("echo out; echo err >&2; exit 4");
        let said = r.stdout;
        said.trim();
        print(`${{r.code}} ${{said}}`);
        let k = runner::kubectl(["get", "pods", "-n", "a b"], #{{ input: "ignored" }});
        print(k.stdout);
        try {{
            runner::port_forward("ns", "pod/web-0", {p}, 80, |port| {{ throw "inside the block" }});
        }} catch (e) {{
            print(`caught: ${{e}}`);
        }}
        let after = runner::curl("http://127.0.0.1:{p}/hello.txt", #{{ timeout: 5 }});
        "#,
        p = port.port()
    );
    let out = run(&home, &["-e", &script]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.starts_with("4 out\npod/web-0\n\ncaught: inside the block\n"),
        "{stdout}{stderr}"
    );
    // The forward was stopped when the block threw: nothing answers on its port any more.
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("runner::curl http://127.0.0.1:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("curl in the runner failed (exit 7)"),
        "{stderr}"
    );

    for (script, want) in [
        (
            r#"runner::kubectl(["fail"], #{ check: true })"#,
            "runner::kubectl: exited with 1 in the runner: error: the server doesn't have a resource type",
        ),
        (
            r#"runner::kubectl(["get", 1])"#,
            "arguments must be strings, not i64",
        ),
        (
            r#"runner::port_forward("ns", "pod", 0, 80, |p| p)"#,
            "local port 0 is not a port (1 to 65535)",
        ),
        (
            r#"runner::curl("http://x/", #{ headers: #{ "Bad Name": "v" } })"#,
            "is not a header name",
        ),
        (
            r#"runner::run("true", #{ timout: 1 })"#,
            "unknown option `timout`",
        ),
    ] {
        let out = run(&home, &["-e", script]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{script}: {stderr}");
        assert!(stderr.contains(want), "{script}: {stderr}");
    }

    // The VM agent is not up yet: the fix is named.
    std::fs::write(lab.agent_down_flag(), "").unwrap();
    let out = run(&home, &["-e", r#"runner::run("true")"#]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("incus wait dap-runner agent --timeout=60"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(lab.agent_down_flag()).unwrap();

    // A dry run prints each remote command and runs none.
    let out = run(
        &home,
        &[
            "--dry-run",
            "-e",
            r#"runner::kubectl(["get", "pods", "-n", "a b"]); runner::port_forward("ns", "pod/x", 9000, 80, |p| runner::curl(`http://127.0.0.1:${p}/`)).status"#,
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "dry-run: in the runner: kubectl get pods -n 'a b'\n\
         dry-run: in the runner: kubectl -n ns port-forward pod/x 9000:80 (stopped after the block)\n\
         dry-run: in the runner: curl GET http://127.0.0.1:9000/\n\
         0\n"
    );
    assert_eq!(lab.kubectl_calls().len(), 3, "the dry run ran no kubectl");
}

/// `flyte-run doctor` reaches a configured runner through the whole chain, and names the cause
/// when the VM agent is down.
#[test]
fn doctor_checks_the_runner() {
    let lab = RunnerLab::new();
    let home = home_for(&lab);
    let out = run(&home, &["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok    runner      flyte-test-sshd -> dap-runner; answered in")),
        "{text}"
    );
    std::fs::write(lab.agent_down_flag(), "").unwrap();
    let out = run(&home, &["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL  runner") && text.contains("incus wait dap-runner agent"),
        "{text}"
    );
}

/// Issue 18: the calls of one playbook share one SSH connection to the management host, and
/// nothing of it is left when the playbook ends (no control socket, no master).
#[test]
fn a_playbooks_runner_calls_share_one_connection_that_ends_with_it() {
    let lab = RunnerLab::new();
    let home = home_for(&lab);
    let tmp = tempfile::tempdir().unwrap();
    let logins = || {
        lab.sshd()
            .log_text()
            .lines()
            .filter(|l| l.contains("Accepted publickey"))
            .count()
    };
    let before = logins();
    let out = home
        .command(BIN)
        .env("TMPDIR", tmp.path())
        .env_remove("DAP_RUNNER_SSH_HOST")
        .env_remove("DAP_RUNNER_SSH_KEY")
        .env_remove("DAP_RUNNER_VM")
        .args([
            "-e",
            r#"for i in 0..30 { runner::kubectl(["get", "pods"], #{ check: true }); } "done""#,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lab.kubectl_calls().len(), 30);
    assert_eq!(logins() - before, 1, "30 calls, one SSH login");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind in TMPDIR: {left:?}");
}
