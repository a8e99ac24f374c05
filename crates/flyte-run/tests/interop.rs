//! Interoperability with Flyte's own Python implementation (`PyPI` package `flyte==2.12.1`) and with a
//! standard third-party WebSocket client (`websockets`). `cargo xtask ci` creates the venv at
//! `target/interop-venv`; `FLYTE_INTEROP_PYTHON` points elsewhere.
// Tests, examples and tools start processes and read their settings from the environment directly.
#![allow(clippy::disallowed_methods)]
// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use flyte_testkit::TempHome;

const BIN: &str = env!("CARGO_BIN_EXE_flyte-run");

/// A child killed by pid when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Read lines from a child's stdout until one starts with `prefix`; return the rest of it.
fn wait_for_line(child: &mut Child, prefix: &str) -> String {
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "the process ended before printing {prefix:?}"
        );
        if let Some(rest) = line.strip_prefix(prefix) {
            let rest = rest.trim().to_owned();
            // Keep draining its stdout so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in reader.lines() {});
            return rest;
        }
    }
}

#[test]
fn our_tunnel_reaches_flytes_own_pod_side_server() {
    let home = TempHome::new();
    let key = home.path().join("id_ed25519");
    flyte_testkit::ssh_keygen(&key, "client");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let scratch = home.path().join("flyte-ssh-debug");
    let mut child = Command::new(flyte_testkit::interop_python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/flyte_pod_side.py"
        ))
        .arg(&scratch)
        .env("_F_SSH_PK", public.trim())
        .env("HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let port = wait_for_line(&mut child, "READY ");
    let _server = Process(child);

    // Pin the host key Flyte's server generated, instead of its client's StrictHostKeyChecking no.
    let derived = Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(scratch.join("ssh_host_ed25519_key"))
        .output()
        .unwrap();
    assert!(
        derived.status.success(),
        "{}",
        String::from_utf8_lossy(&derived.stderr)
    );
    let known_hosts = home.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!("flyte-debug {}", String::from_utf8_lossy(&derived.stdout)),
    )
    .unwrap();

    let out = Command::new("ssh")
        .args(["-F", "none", "-i"])
        .arg(&key)
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "HostKeyAlias=flyte-debug",
        ])
        .args(["-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg("-o")
        .arg(format!(
            "ProxyCommand={BIN} tunnel ws://127.0.0.1:{port}/?target_port=6060"
        ))
        .arg(format!("{}@flyte-debug", flyte_testkit::current_user()))
        .arg("echo interop-$((6*7))")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh via Flyte's pod side failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "interop-42\n");
}

#[test]
fn a_standard_websocket_client_talks_to_our_bridge() {
    let home = TempHome::new();
    let key = home.path().join("id_ed25519");
    flyte_testkit::ssh_keygen(&key, "client");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let mut child = home
        .command(BIN)
        .args(["debug-server", "--port", "0"])
        .env("_F_SSH_PK", public.trim())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = wait_for_line(&mut child, "SSH debug server is ready on 127.0.0.1:");
    let _server = Process(child);
    let port = ready.split_whitespace().next().unwrap();
    // The SSH server speaks first: a third-party client's first binary message is its banner.
    let script = r#"
import sys
from websockets.sync.client import connect
with connect(sys.argv[1], open_timeout=10) as ws:
    banner = ws.recv(timeout=10)
    print(type(banner).__name__, bytes(banner).split(b"\r\n")[0].decode())
"#;
    let out = Command::new(flyte_testkit::interop_python())
        .args([
            "-c",
            script,
            &format!("ws://127.0.0.1:{port}/any/path?target_port=6060"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("bytes SSH-2.0-"), "{stdout}");
}
