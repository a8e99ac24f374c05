//! Sessions that survive: stock OpenSSH (ssh, scp, a real sshd) through `flyte-run tunnel`, a
//! TCP proxy of the test's own (flyte-testkit's `CutProxy`) and our bridge; the proxy cuts and
//! freezes the network under transfers and interactive sessions.
// Tests, examples and tools start processes and read their settings from the environment directly.
#![allow(clippy::disallowed_methods)]
// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use flyte_testkit::{CutProxy, Sshd};
use flyte_tunnel::bridge::{BridgeConfig, Target};
use flyte_tunnel::sessions::{ResumeSettings, Sessions};

const BIN: &str = env!("CARGO_BIN_EXE_flyte-run");
const MIB: u64 = 1024 * 1024;
/// Bound on any one wait in these tests.
const SETTLE: Duration = Duration::from_mins(3);

/// sshd, our bridge in front of it, and the cuttable proxy in front of the bridge.
struct Path3 {
    sshd: Sshd,
    sessions: Arc<Sessions>,
    proxy: CutProxy,
    _runtime: tokio::runtime::Runtime,
}

impl Path3 {
    fn start(settings: ResumeSettings) -> Self {
        let sshd = Sshd::start();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let bridge: SocketAddr = listener.local_addr().unwrap();
        let sessions = Sessions::new(settings);
        let mut config = BridgeConfig::new(Target::Tcp(([127, 0, 0, 1], sshd.port()).into()));
        config.sessions = Some(Arc::clone(&sessions));
        runtime.spawn(flyte_tunnel::bridge::serve(listener, Arc::new(config)));
        Self {
            sshd,
            sessions,
            proxy: CutProxy::start(bridge),
            _runtime: runtime,
        }
    }

    fn proxy_command(&self) -> String {
        format!("ProxyCommand={BIN} tunnel ws://{}/route", self.proxy.addr())
    }

    /// `ssh` (or `program`, e.g. scp) to the server through the proxy.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .arg("-F")
            .arg(self.sshd.client_config())
            .args(["-o", &self.proxy_command()]);
        command
    }
}

/// `size` bytes of a fixed pseudo-random sequence (xorshift), written to `path`.
fn write_noise(path: &Path, size: u64) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..size / (1 << 20) {
        for word in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// Wait for `child` at most `limit`; kill it (and fail) past that.
fn finish(mut child: Child, what: &str, limit: Duration) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut err) = child.stderr.take() {
                let _ = err.read_to_string(&mut stderr);
            }
            return (status, stderr);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Cut the proxy each time another `every` bytes went through it, `times` times.
fn cut_repeatedly(proxy: &CutProxy, every: u64, times: usize) {
    let mut mark = proxy.forwarded();
    for i in 0..times {
        mark += every;
        proxy.wait_until(&format!("{mark} bytes (cut {i})"), SETTLE, |_, bytes| {
            bytes >= mark
        });
        proxy.cut();
    }
}

/// Freeze the proxy until the tunnel has given up on the frozen connection and tried a new one
/// (which the frozen proxy also holds silent), and for at least `at_least` in all; then thaw it.
/// `meanwhile` runs once the network is frozen.
fn freeze_until_a_reconnection(proxy: &CutProxy, at_least: Duration, meanwhile: impl FnOnce()) {
    let frozen_at = Instant::now();
    let before = proxy.accepted();
    proxy.freeze();
    meanwhile();
    proxy.wait_until("a reconnection during the freeze", SETTLE, |accepted, _| {
        accepted > before
    });
    // The scenario itself: the network stays silent this long.
    std::thread::sleep(at_least.saturating_sub(frozen_at.elapsed()));
    proxy.thaw();
}

#[test]
fn a_256_mib_transfer_each_way_survives_cuts_and_a_freeze_of_over_a_minute_byte_exact() {
    let path = Path3::start(ResumeSettings::default());
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.bin");
    write_noise(&source, 256 * MIB);
    let want = sha256(&source);

    // Up, with scp (the SFTP protocol), through three cuts.
    let uploaded = dir.path().join("uploaded.bin");
    let scp = path
        .command("scp")
        .args(["-q"])
        .arg(&source)
        .arg(format!("{}:{}", path.sshd.alias(), uploaded.display()))
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cut_repeatedly(&path.proxy, 64 * MIB, 3);
    let (status, stderr) = finish(scp, "scp", SETTLE);
    assert!(status.success(), "scp: {stderr}");
    assert_eq!(sha256(&uploaded), want, "the upload is byte-exact");

    // Down, with ssh cat, through a cut and a freeze of over a minute: the bridge's replay
    // buffer fills (it then stops reading: backpressure, not loss).
    let downloaded = dir.path().join("downloaded.bin");
    let ssh = path
        .command("ssh")
        .arg(path.sshd.alias())
        .arg(format!("cat {}", source.display()))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&downloaded).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cut_repeatedly(&path.proxy, 64 * MIB, 1);
    let mark = path.proxy.forwarded() + 32 * MIB;
    path.proxy
        .wait_until("32 MiB more", SETTLE, |_, bytes| bytes >= mark);
    freeze_until_a_reconnection(&path.proxy, Duration::from_secs(61), || {});
    cut_repeatedly(&path.proxy, 48 * MIB, 1);
    let (status, stderr) = finish(ssh, "ssh cat", SETTLE);
    assert!(status.success(), "ssh: {stderr}");
    assert_eq!(sha256(&downloaded), want, "the download is byte-exact");
    assert!(
        path.proxy.accepted() >= 7,
        "every cut was followed by a resumption ({} connections)",
        path.proxy.accepted()
    );
    // Finished sessions are not kept for the grace period.
    let deadline = Instant::now() + SETTLE;
    while !path.sessions.is_empty() {
        assert!(
            Instant::now() < deadline,
            "a finished session outlived its end"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What an interactive session printed so far, collected on a thread.
struct Screen {
    text: Arc<(Mutex<String>, Condvar)>,
}

impl Screen {
    fn watch(mut output: impl Read + Send + 'static) -> Self {
        let text: Arc<(Mutex<String>, Condvar)> = Arc::default();
        let writer = Arc::clone(&text);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = output.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                writer
                    .0
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
                writer.1.notify_all();
            }
        });
        Self { text }
    }

    fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + SETTLE;
        let mut text = self.text.0.lock().unwrap();
        while !text.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{needle:?} never appeared in:\n{text}");
            text = self.text.1.wait_timeout(text, left).unwrap().0;
        }
    }
}

/// `ssh -tt` with a shell: typing works after a cut and after a freeze of more than a minute.
#[test]
fn an_interactive_session_survives_a_cut_and_a_freeze_of_over_a_minute() {
    let path = Path3::start(ResumeSettings::default());
    let mut ssh = path
        .command("ssh")
        .args(["-tt", path.sshd.alias(), "sh"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut keyboard = ssh.stdin.take().unwrap();
    let screen = Screen::watch(ssh.stdout.take().unwrap());
    // The shell computes the answers, so an echo of what was typed does not count.
    keyboard.write_all(b"echo first-$((20+1))\n").unwrap();
    screen.wait_for("first-21");

    path.proxy.cut();
    keyboard.write_all(b"echo second-$((20+2))\n").unwrap();
    screen.wait_for("second-22");

    freeze_until_a_reconnection(&path.proxy, Duration::from_secs(61), || {
        keyboard.write_all(b"echo third-$((20+3))\n").unwrap();
    });
    screen.wait_for("third-23");
    keyboard.write_all(b"exit\n").unwrap();
    let (status, stderr) = finish(ssh, "ssh -tt", SETTLE);
    assert!(status.success(), "{stderr}");
}

/// Past the grace period the bridge closes the SSH connection: the task's processes end (no
/// orphans), and the tunnel, once the network is back, says the session is lost.
#[test]
fn past_the_grace_period_the_session_ends_cleanly() {
    let path = Path3::start(ResumeSettings {
        grace: Duration::from_secs(2),
        ..ResumeSettings::default()
    });
    let mut ssh = path
        .command("ssh")
        .args(["-tt", path.sshd.alias(), "sh"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut keyboard = ssh.stdin.take().unwrap();
    let screen = Screen::watch(ssh.stdout.take().unwrap());
    keyboard
        .write_all(b"echo pid=$$:; exec sleep 1000\n")
        .unwrap();
    screen.wait_for(":\r\n");
    let text = screen.text.0.lock().unwrap().clone();
    let pid: u32 = text
        .split("pid=")
        .nth(2)
        .or_else(|| text.split("pid=").nth(1))
        .and_then(|rest| rest.split(':').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {text:?}"));
    let proc_dir = format!("/proc/{pid}");
    assert!(Path::new(&proc_dir).exists());
    assert_eq!(path.sessions.len(), 1);

    path.proxy.freeze();
    let deadline = Instant::now() + SETTLE;
    while !path.sessions.is_empty() || Path::new(&proc_dir).exists() {
        assert!(
            Instant::now() < deadline,
            "the session or its process outlived the grace period"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    path.proxy.thaw();
    let (status, stderr) = finish(ssh, "ssh -tt", SETTLE);
    assert_eq!(status.code(), Some(255), "{stderr}");
    assert!(
        stderr.contains("the SSH session was lost"),
        "the tunnel says why: {stderr}"
    );
}
