//! `flyte-run tunnel` as ssh's ProxyCommand, through our bridge, to real SSH servers.
// Tests, examples and tools start processes and read their settings from the environment directly.
#![allow(clippy::disallowed_methods)]
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

/// Run `flyte-run tunnel` with empty stdin: (exit code, stdout, stderr).
fn tunnel(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .arg("tunnel")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn failures_exit_with_their_documented_codes_and_one_line() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead_target = Bridge::start(BridgeConfig::new(Target::Tcp(closed)));
    let mut guarded = BridgeConfig::new(Target::Tcp(closed));
    guarded.bearer_token = Some("the-token".to_owned());
    let guarded = Bridge::start(guarded);
    let home = flyte_testkit::TempHome::new();
    let missing = home.path().join("no-such.headers");
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (vec![dead_target.url()], 69, "HTTP 502"),
        (vec![format!("ws://{closed}/")], 69, "not serving"),
        (
            vec![guarded.url()],
            77,
            "refused our credentials (HTTP 401)",
        ),
        (
            vec![
                guarded.url(),
                "--http-headers-file".into(),
                missing.display().to_string(),
            ],
            78,
            "no-such.headers",
        ),
        (vec!["ftp://example.com/".into()], 78, "scheme"),
        (
            vec![
                format!("wss://{closed}/"),
                "--cacert".into(),
                missing.display().to_string(),
            ],
            78,
            "the CA file",
        ),
    ];
    for (args, code, message) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (got, stdout, stderr) = tunnel(&args);
        assert_eq!(got, Some(code), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?} wrote to stdout: {stdout:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("flyte-run tunnel: ") && stderr.contains(message),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn the_headers_file_carries_the_token_to_a_guarded_bridge() {
    let sshd = Sshd::start();
    let mut config = BridgeConfig::new(Target::Tcp(([127, 0, 0, 1], sshd.port()).into()));
    config.bearer_token = Some("s3cret".to_owned());
    let bridge = Bridge::start(config);
    let home = flyte_testkit::TempHome::new();
    let headers = home.path().join("flyte-debug.headers");
    std::fs::write(&headers, "Authorization: Bearer s3cret\n").unwrap();
    let out = ssh_via(
        &sshd,
        &format!(
            "{BIN} tunnel {} --http-headers-file {}",
            bridge.url(),
            headers.display()
        ),
        &["echo", "authorized"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "authorized\n");
    // A refreshed token is read on the next start; the ssh config does not change.
    std::fs::write(&headers, "Authorization: Bearer stale\n").unwrap();
    let out = ssh_via(
        &sshd,
        &format!(
            "{BIN} tunnel {} --http-headers-file {}",
            bridge.url(),
            headers.display()
        ),
        &["true"],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused our credentials"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_interrupted_tunnel_exits_130() {
    let sshd = Sshd::start();
    let bridge = Bridge::start(BridgeConfig::new(Target::Tcp(
        ([127, 0, 0, 1], sshd.port()).into(),
    )));
    let mut child = Command::new(BIN)
        .args(["tunnel", &bridge.url()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The server's banner on stdout proves the tunnel is up (and its signal handlers are set).
    let mut banner = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut banner,
    )
    .unwrap();
    assert!(banner.starts_with("SSH-2.0-"), "{banner:?}");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "flyte-run tunnel: interrupted\n"
    );
}

#[test]
fn a_client_that_closes_first_gets_a_clean_close() {
    // sshd speaks first (its banner), so the bridge has data in flight when the client's close
    // arrives; the close handshake must still complete, and the tunnel exit 0.
    let sshd = Sshd::start();
    let bridge = Bridge::start(BridgeConfig::new(Target::Tcp(
        ([127, 0, 0, 1], sshd.port()).into(),
    )));
    for _ in 0..10 {
        let (code, _, stderr) = tunnel(&[&bridge.url()]);
        assert_eq!(code, Some(0), "{stderr}");
    }
}

/// Issue 16: the tunnel reaches a route the way the API client reaches the control plane: a
/// TLS ingress signed by a private CA (Flyte's `caCertFilePath`) is refused without it and
/// accepted with `--cacert`, or with `--insecure-skip-verify`; and `--proxy` (Flyte's
/// `httpProxyURL`) carries the connection through a real HTTP proxy with CONNECT.
#[test]
fn the_tunnel_honours_the_ca_skip_verify_and_the_proxy() {
    let sshd = Sshd::start();
    let bridge = Bridge::start(BridgeConfig::new(Target::Tcp(
        ([127, 0, 0, 1], sshd.port()).into(),
    )));
    let home = flyte_testkit::TempHome::new();
    let front = flyte_testkit::TlsFront::start(bridge.addr, home.path());
    let proxy = flyte_testkit::HttpProxy::start(home.path());
    let url = format!("wss://localhost:{}/any/path", front.addr().port());
    let ca = front.ca_file().display().to_string();
    let via = |flags: &str| {
        ssh_via(
            &sshd,
            &format!("{BIN} tunnel {url} {flags}"),
            &["echo", "ok"],
        )
    };

    let refused = via("");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("TLS") && stderr.contains("certificate"),
        "{stderr}"
    );

    for flags in [
        format!("--cacert {ca}"),
        "--insecure-skip-verify".to_owned(),
        format!("--cacert {ca} --proxy {}", proxy.url()),
    ] {
        let out = via(&flags);
        assert!(
            out.status.success(),
            "{flags}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n", "{flags}");
    }
    let log = proxy.stop();
    assert!(
        log.contains(&format!("CONNECT localhost:{} ", front.addr().port())),
        "{log}"
    );

    // A proxy that is not there, one with credentials (never shown), one of another scheme.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for (proxy, code, message) in [
        (
            format!("http://{closed}"),
            78,
            "cannot reach it: Connection refused",
        ),
        (
            "http://user:hunter2@127.0.0.1:1".to_owned(),
            78,
            "a proxy with credentials",
        ),
        (
            "socks5://127.0.0.1:1".to_owned(),
            78,
            "only http:// proxies",
        ),
    ] {
        let (got, stdout, stderr) = tunnel(&[&url, "--proxy", &proxy]);
        assert_eq!(got, Some(code), "{proxy}: {stderr}");
        assert!(stdout.is_empty());
        assert!(stderr.contains(message), "{proxy}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

/// The tunnel uses ssh's pipes non-blocking (fewer wake-ups), and leaves them as it found them:
/// the flag belongs to the open pipe, which whoever shares it uses after the tunnel exits.
#[test]
fn stdin_and_stdout_pipes_are_left_blocking_after_the_tunnel_exits() {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    // Refused at once: the pipes were set up before the connection was tried.
    let url = "ws://127.0.0.1:9/";
    let (stdin_read, stdin_write) = nix::unistd::pipe().unwrap();
    let (stdout_read, stdout_write) = nix::unistd::pipe().unwrap();
    // The child gets duplicates: the same open pipes, whose flags this test then reads.
    let status = Command::new(BIN)
        .args(["tunnel", url])
        .stdin(Stdio::from(stdin_read.try_clone().unwrap()))
        .stdout(Stdio::from(stdout_write.try_clone().unwrap()))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the connection is refused");
    for (name, end) in [("stdin", &stdin_read), ("stdout", &stdout_write)] {
        let flags = OFlag::from_bits_truncate(fcntl(end, FcntlArg::F_GETFL).unwrap());
        assert!(
            !flags.contains(OFlag::O_NONBLOCK),
            "{name} was left non-blocking"
        );
    }
    drop((stdin_write, stdout_read));
}
