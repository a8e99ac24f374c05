//! `flyte-run debug-server` reached by the real OpenSSH client through `flyte-run tunnel`.
// Tests, examples and tools start processes and read their settings from the environment directly.
#![allow(clippy::disallowed_methods)]
// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

use flyte_testkit::TempHome;
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_flyte-run");

/// A debug server process and everything a client needs to reach it with its host key pinned.
struct DebugServer {
    child: Child,
    home: TempHome,
    port: u16,
    key: PathBuf,
    known_hosts: PathBuf,
    _stdout: BufReader<ChildStdout>,
}

impl DebugServer {
    fn start() -> Self {
        Self::start_with(|_| {})
    }

    fn start_with(configure: impl FnOnce(&mut Command)) -> Self {
        let home = TempHome::new();
        let key = home.path().join("id_ed25519");
        flyte_testkit::ssh_keygen(&key, "client");
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let workdir = home.path().join("task dir");
        std::fs::create_dir_all(&workdir).unwrap();
        let mut cmd = home.command(BIN);
        cmd.args(["debug-server", "--port", "0"])
            .current_dir(&workdir)
            .env("_F_E_SSH", "1")
            .env("_F_SSH_PK", public.trim())
            .env("_F_E_VS", "True")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::piped());
        configure(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(
            line.starts_with("SSH debug server is ready on 127.0.0.1:"),
            "{line:?}"
        );
        let port = line["SSH debug server is ready on 127.0.0.1:".len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        // Pin the key the server published.
        let host_key = std::fs::read_to_string(
            home.path()
                .join(".flyte-ssh-debug/ssh_host_ed25519_key.pub"),
        )
        .unwrap();
        assert!(line.contains(&fingerprint(&host_key)), "{line}");
        let known_hosts = home.path().join("known_hosts");
        std::fs::write(&known_hosts, format!("flyte-debug {host_key}")).unwrap();
        Self {
            child,
            home,
            port,
            key,
            known_hosts,
            _stdout: stdout,
        }
    }

    fn workdir(&self) -> PathBuf {
        self.home.path().join("task dir")
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port)
    }

    /// Options that reach the server through the tunnel with only our key and its host key pinned.
    fn ssh_options(&self) -> Vec<String> {
        [
            "-F",
            "none",
            "-i",
            &self.key.display().to_string(),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "HostKeyAlias=flyte-debug",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            &format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "-o",
            &format!("ProxyCommand={BIN} tunnel {}", self.url()),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    fn ssh(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(self.ssh_options()).arg("root@flyte-debug");
        cmd
    }
}

impl Drop for DebugServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fingerprint(public_key_line: &str) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = out;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(public_key_line.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn exec_runs_in_the_task_directory_with_a_login_environment() {
    let server = DebugServer::start();
    let out = run(server
        .ssh()
        .arg(r#"echo "$HOME|$USER|$LOGNAME|$SHELL|$TERM"; pwd; env | grep -c '^_F_' ; exit 7"#));
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let user = flyte_testkit::current_user();
    let fields: Vec<&str> = lines[0].split('|').collect();
    assert_eq!(fields[1], user);
    assert_eq!(fields[2], user);
    assert!(Path::new(fields[3]).exists(), "{}", fields[3]);
    assert_eq!(fields[4], "dumb");
    assert_eq!(lines[1], server.workdir().display().to_string());
    // The debug contract's variables do not leak into sessions.
    assert_eq!(lines[2], "0");
}

#[test]
fn stdin_stdout_and_stderr_are_piped() {
    let server = DebugServer::start();
    let mut child = server
        .ssh()
        .arg("tr a-z A-Z; echo to-stderr >&2")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "HELLO\n");
    assert!(text(&out.stderr).contains("to-stderr"));
}

#[test]
fn a_process_killed_by_a_signal_is_reported_as_such() {
    let server = DebugServer::start();
    let out = run(server.ssh().arg("kill -TERM $$"));
    // OpenSSH reports a remote signal death as exit status 255 and says which signal.
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
}

#[test]
fn pty_sessions_get_a_terminal_and_window_size() {
    let server = DebugServer::start();
    let out = run(server
        .ssh()
        .args(["-tt", "tty; echo TERM=$TERM; stty size"])
        .env("TERM", "xterm-256color"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("/dev/pts/"), "{stdout}");
    assert!(stdout.contains("TERM=xterm-256color"), "{stdout}");
    // No local terminal: the server's 80x24 default.
    assert!(stdout.contains("24 80"), "{stdout}");
}

#[test]
fn a_wrong_key_is_refused() {
    let server = DebugServer::start();
    let other = server.home.path().join("other_key");
    flyte_testkit::ssh_keygen(&other, "intruder");
    // The same options with the other key as the only identity.
    let mut cmd = Command::new("ssh");
    let options: Vec<String> = server
        .ssh_options()
        .into_iter()
        .map(|o| {
            if o == server.key.display().to_string() {
                other.display().to_string()
            } else {
                o
            }
        })
        .collect();
    let refused = run(cmd.args(options).args(["root@flyte-debug", "true"]));
    assert_eq!(refused.status.code(), Some(255));
    assert!(
        text(&refused.stderr).contains("Permission denied"),
        "{}",
        text(&refused.stderr)
    );
}

/// Three megabytes that compress badly, written to `name` under the server's home.
fn test_file(server: &DebugServer, name: &str) -> (PathBuf, Vec<u8>) {
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[1])
        .collect();
    let path = server.home.path().join(name);
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

/// Run `sftp -b` with `script` (commands run in the task directory).
fn sftp_batch(server: &DebugServer, script: &str) -> Output {
    let batch = server.home.path().join("batch");
    std::fs::write(
        &batch,
        format!("cd \"{}\"\n{script}", server.workdir().display()),
    )
    .unwrap();
    run(Command::new("sftp")
        .args(["-q", "-b"])
        .arg(&batch)
        .args(server.ssh_options())
        .arg("root@flyte-debug"))
}

#[test]
fn scp_works_both_ways() {
    let server = DebugServer::start();
    let (local, data) = test_file(&server, "upload.bin");
    let remote = server.workdir().join("uploaded.bin");
    let scp = |from: String, to: String| {
        let out = run(Command::new("scp")
            .arg("-q")
            .args(server.ssh_options())
            .arg(from)
            .arg(to));
        assert!(out.status.success(), "scp: {}", text(&out.stderr));
    };
    scp(
        local.display().to_string(),
        format!("root@flyte-debug:{}", remote.display()),
    );
    assert_eq!(std::fs::read(&remote).unwrap(), data);
    let back = server.home.path().join("downloaded.bin");
    scp(
        format!("root@flyte-debug:{}", remote.display()),
        back.display().to_string(),
    );
    assert_eq!(std::fs::read(&back).unwrap(), data);
}

/// The in-process SFTP server, operation by operation, checked on the filesystem.
#[test]
fn sftp_operations_work() {
    let server = DebugServer::start();
    let (local, data) = test_file(&server, "upload.bin");
    std::fs::write(server.workdir().join("uploaded.bin"), &data).unwrap();
    let via_sftp = server.home.path().join("via-sftp");
    let out = sftp_batch(
        &server,
        &format!(
            "mkdir sub\nput \"{local}\" sub/put.bin\nrename sub/put.bin sub/moved.bin\nsymlink uploaded.bin link.bin\n\
             ls -l\nget uploaded.bin \"{back}\"\nrm sub/moved.bin\nrmdir sub\n",
            local = local.display(),
            back = via_sftp.display()
        ),
    );
    assert!(
        out.status.success(),
        "sftp: {}\n{}",
        text(&out.stderr),
        text(&out.stdout)
    );
    let listing = text(&out.stdout);
    assert!(
        listing.contains("uploaded.bin") && listing.contains("sub"),
        "{listing}"
    );
    assert_eq!(std::fs::read(&via_sftp).unwrap(), data);
    assert_eq!(
        std::fs::read_link(server.workdir().join("link.bin")).unwrap(),
        Path::new("uploaded.bin")
    );
    assert!(
        !server.workdir().join("sub").exists(),
        "rm and rmdir did not happen"
    );

    let out = sftp_batch(
        &server,
        &format!(
            "put \"{}\" kept.bin\nchmod 640 kept.bin\nrename kept.bin renamed.bin\n",
            local.display()
        ),
    );
    assert!(out.status.success(), "sftp: {}", text(&out.stderr));
    let renamed = server.workdir().join("renamed.bin");
    assert_eq!(std::fs::read(&renamed).unwrap(), data);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&renamed).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o640);

    // Errors come back as SFTP errors, not a dead session.
    let out = sftp_batch(&server, "get /no/such/file\n");
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("not found") || stderr.contains("No such file"),
        "{stderr}"
    );
}

/// A one-shot HTTP server on loopback; returns its port.
fn http_server(body: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// `ssh <forward flags> host`, returned once its forwards listen: ssh opens them before the
/// session starts, so the remote command's first line proves it.
fn forwarding(server: &DebugServer, flags: &[&str]) -> std::process::Child {
    let mut ssh = server
        .ssh()
        .args(["-o", "ExitOnForwardFailure=yes"])
        .args(flags)
        .arg("echo forwarding; cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(ssh.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "forwarding\n");
    ssh
}

/// End a `forwarding` session by closing its input; it must exit cleanly.
fn stop_forwarding(mut ssh: std::process::Child) {
    drop(ssh.stdin.take());
    assert!(ssh.wait().unwrap().success());
}

#[test]
fn local_forwarding_reaches_a_server_on_the_task_side() {
    let server = DebugServer::start();
    let http = http_server("from-the-task");
    let local = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let local_forward = format!("{local}:127.0.0.1:{http}");
    let ssh = forwarding(&server, &["-L", &local_forward]);
    let out = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{local}/")])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "from-the-task");
    stop_forwarding(ssh);

    // A SOCKS proxy (`ssh -D`) opens direct-tcpip channels to wherever the client asks.
    let socks = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dynamic = forwarding(&server, &["-D", &format!("127.0.0.1:{socks}")]);
    let out = Command::new("curl")
        .args([
            "-s",
            "--socks5-hostname",
            &format!("127.0.0.1:{socks}"),
            &format!("http://127.0.0.1:{http}/"),
        ])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "from-the-task");
    stop_forwarding(dynamic);

    // `ssh -W` uses the same direct-tcpip channels.
    let mut w = server
        .ssh()
        .args(["-W", &format!("127.0.0.1:{http}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    w.stdin
        .as_mut()
        .unwrap()
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .unwrap();
    let out = w.wait_with_output().unwrap();
    assert!(
        text(&out.stdout).ends_with("from-the-task"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn twenty_concurrent_sessions() {
    let server = DebugServer::start();
    let children: Vec<_> = (0..20)
        .map(|i| {
            server
                .ssh()
                .arg(format!("echo session-{i}"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "session {i}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("session-{i}\n"));
    }
}

#[test]
fn a_256_mib_transfer_arrives_intact_both_ways() {
    const SIZE: usize = 256 * 1024 * 1024;
    let server = DebugServer::start();
    // Upload: stream pseudo-random bytes into sha256sum on the far side.
    let mut up = server
        .ssh()
        .arg("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = up.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut hasher = Sha256::new();
        let mut block = vec![0u8; 1 << 20];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..SIZE / block.len() {
            for chunk in block.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes());
            }
            hasher.update(&block);
            stdin.write_all(&block).unwrap();
        }
        hex::encode(hasher.finalize())
    });
    let sent = writer.join().unwrap();
    let out = up.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).split_whitespace().next().unwrap(), sent);

    // Download: the far side sends the same amount with its own digest after it on stderr.
    let mut down = server
        .ssh()
        .arg(format!(
            "head -c {SIZE} /dev/urandom | tee >(sha256sum >&2)"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = down.stdout.take().unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = stdout.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
        hasher.update(&buf[..n]);
    }
    let out = down.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(total, SIZE);
    assert_eq!(
        text(&out.stderr).split_whitespace().next().unwrap(),
        hex::encode(hasher.finalize())
    );
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_client_killed_mid_transfer_leaves_no_process_and_the_server_keeps_serving() {
    let server = DebugServer::start();
    let pid_file = server.workdir().join("remote.pid");
    let mut ssh = server
        .ssh()
        .arg(format!(
            "echo $$ > '{}'; echo started; exec cat /dev/zero",
            pid_file.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(ssh.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "started\n");
    let remote: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(remote));
    ssh.kill().unwrap();
    ssh.wait().unwrap();
    drop(reader);
    // The server notices the dead connection and hangs up the session's process group; wait for
    // that condition (bounded), then check the server still serves.
    let mut gone = false;
    for _ in 0..200 {
        if !alive(remote) {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(gone, "remote process {remote} outlived its session");
    let out = run(server.ssh().arg("echo still-serving"));
    assert_eq!(
        text(&out.stdout),
        "still-serving\n",
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_bad_public_key_setting_is_a_clear_error_at_start() {
    let home = TempHome::new();
    for (value, want) in [
        (None, "_F_SSH_PK is missing or empty"),
        (Some(""), "_F_SSH_PK is missing or empty"),
        (
            Some("ssh-ed25519 garbage"),
            "not an OpenSSH public key line",
        ),
    ] {
        let mut cmd = home.command(BIN);
        cmd.args(["debug-server", "--port", "0"])
            .env_remove("_F_SSH_PK");
        if let Some(v) = value {
            cmd.env("_F_SSH_PK", v);
        }
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            text(&out.stderr).contains(want),
            "{value:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn the_server_exits_after_its_max_uptime() {
    let mut server = DebugServer::start_with(|cmd| {
        cmd.env("SSH_SERVER_MAX_UPTIME_SECONDS", "1");
    });
    // It stops by itself (the test's only bound is the runner's timeout) and exits cleanly.
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn the_readiness_probe_answers_200_ok() {
    let server = DebugServer::start();
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "-",
            "-w",
            " %{http_code}",
            &format!("http://127.0.0.1:{}/", server.port),
        ])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "ok 200");
}
