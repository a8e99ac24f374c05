//! `flyte-run tunnel` as ssh's ProxyCommand, through our bridge, to real SSH servers.

// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use flyte_testkit::Sshd;
use flyte_tunnel::bridge::{BridgeConfig, Target};

const BIN: &str = env!("CARGO_BIN_EXE_flyte-run");

/// A bridge on 127.0.0.1 running on its own runtime; stopped when dropped.
struct Bridge {
    addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl Bridge {
    fn start(config: BridgeConfig) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(flyte_tunnel::bridge::serve(listener, Arc::new(config)));
        Self {
            addr,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/any/path?target_port=6060", self.addr)
    }
}

fn ssh_via(sshd: &Sshd, proxy: &str, remote: &[&str]) -> Output {
    Command::new("ssh")
        .arg("-F")
        .arg(sshd.client_config())
        .args(["-o", &format!("ProxyCommand={proxy}"), sshd.alias()])
        .args(remote)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn ssh_through_our_tunnel_and_bridge_to_openssh() {
    let sshd = Sshd::start();
    let bridge = Bridge::start(BridgeConfig::new(Target::Tcp(
        ([127, 0, 0, 1], sshd.port()).into(),
    )));
    let out = ssh_via(
        &sshd,
        &format!("{BIN} tunnel {}", bridge.url()),
        &["echo", "tunnelled"],
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log_text()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "tunnelled\n");
}

#[test]
fn the_bridge_answers_plain_requests_with_200_ok() {
    let sshd = Sshd::start();
    let bridge = Bridge::start(BridgeConfig::new(Target::Tcp(
        ([127, 0, 0, 1], sshd.port()).into(),
    )));
    let out = Command::new("curl")
        .args(["-s", "-i", &format!("http://{}/healthz", bridge.addr)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.ends_with("\r\n\r\nok"), "{text}");
}
