//! Issue 13: each test reproduces one defect found by attacking flyte-run as an attacker or a
//! careless user would, and checks the behaviour that replaced it. Numbers are the issue's.
// Tests, examples and tools start processes and read their settings from the environment directly.
#![allow(clippy::disallowed_methods)]
// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use flyte_testkit::TempHome;

const BIN: &str = env!("CARGO_BIN_EXE_flyte-run");

/// A child process killed (by its pid) when the test ends, also on panic.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A home whose background sandbox is stopped when the test ends.
struct Home(TempHome);

impl Home {
    fn new() -> Self {
        Self(TempHome::new())
    }

    fn command(&self) -> Command {
        let mut command = self.0.command(BIN);
        command
            .env_remove("FLYTE_ENDPOINT")
            .env_remove("DAP_RUNNER_SSH_HOST");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    fn sandbox_dir(&self) -> std::path::PathBuf {
        self.0.path().join(".flyte/sandbox")
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = self.run(&["sandbox", "stop"]);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Start `flyte-run ARGS` (with `env` added) under `ulimit -n LIMIT` and return it with the
/// first line it prints.
fn start_with_fd_limit(
    home: &Home,
    limit: u32,
    args: &str,
    env: &[(&str, &str)],
) -> (Killed, String) {
    let mut command = Command::new("sh");
    command
        .args([
            "-c",
            &format!("ulimit -n {limit} && exec \"$FLYTE_RUN_BIN\" {args}"),
        ])
        .env("HOME", home.0.path())
        .env("FLYTE_RUN_BIN", BIN)
        .env_remove("FLYTE_ENDPOINT")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Killed(child), line)
}

/// The `host:port` after `label` in `line` (such as `serving on http://127.0.0.1:1234,`).
fn address_after(line: &str, label: &str) -> SocketAddr {
    let rest = &line[line
        .find(label)
        .unwrap_or_else(|| panic!("{label:?} in {line:?}"))
        + label.len()..];
    let rest = rest
        .trim_start_matches("http://")
        .trim_start_matches("ws://");
    let end = rest.find([',', ' ', '\n', ')']).unwrap_or(rest.len());
    rest[..end].parse().unwrap()
}

/// Open up to `count` connections to `target`, each sending half a request head, from several
/// threads (connects beyond the listener's backlog time out; they are left out).
fn flood(target: SocketAddr, count: usize) -> Vec<TcpStream> {
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                (0..count / 8)
                    .filter_map(|_| {
                        let mut stream =
                            TcpStream::connect_timeout(&target, Duration::from_millis(300)).ok()?;
                        stream.write_all(b"POST /x HTTP/1.1\r\nHost: a\r\n").ok()?;
                        Some(stream)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

/// A plain GET of `/healthz` (the readiness probe on the ingress): the status line.
fn get(target: SocketAddr) -> String {
    let mut stream = TcpStream::connect(target).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_mins(1)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.lines().next().unwrap_or_default().to_owned()
}

/// Defect 1: Holding connections until the descriptors run out used to make the sandbox exit and stop
/// every action; half-sent heads were never timed out.
#[test]
fn one_client_holding_connections_cannot_stop_the_sandbox() {
    let home = Home::new();
    let (mut sandbox, line) =
        start_with_fd_limit(&home, 256, "sandbox serve --header-timeout 1", &[]);
    let api = address_after(&line, "serving on ");
    let ingress = address_after(&line, "debug ingress on ");

    let held = flood(api, 320);
    assert!(held.len() > 64, "only {} connections were made", held.len());
    // The ingress has descriptors of its own and answers at once.
    assert_eq!(get(ingress), "HTTP/1.1 200 OK");
    assert!(
        sandbox.0.try_wait().unwrap().is_none(),
        "the sandbox exited"
    );

    // A half-sent head is closed by the server after the header timeout: this read ends.
    let mut slow = held.into_iter().next().unwrap();
    slow.set_read_timeout(Some(Duration::from_mins(1))).unwrap();
    let mut rest = Vec::new();
    slow.read_to_end(&mut rest).unwrap();

    // Once the flood is gone (timed out or closed), the API serves again.
    assert_eq!(get(api), "HTTP/1.1 200 OK");
    assert!(
        sandbox.0.try_wait().unwrap().is_none(),
        "the sandbox exited"
    );
}

/// Defect 1: The same for `flyte-run debug-server`, the in-task side.
#[test]
fn one_client_holding_connections_cannot_stop_the_debug_server() {
    let home = Home::new();
    let key_path = home.0.path().join("client_key");
    flyte_testkit::ssh_keygen(&key_path, "client");
    let key = std::fs::read_to_string(key_path.with_extension("pub")).unwrap();
    let port = flyte_testkit::reserve_port();
    let (mut server, _ready) = start_with_fd_limit(
        &home,
        128,
        &format!(
            "debug-server --port {} --state-dir \"$HOME/dbg\"",
            port.port()
        ),
        &[("_F_E_SSH", "1"), ("_F_SSH_PK", key.trim())],
    );
    let target: SocketAddr = format!("127.0.0.1:{}", port.port()).parse().unwrap();
    let held = flood(target, 240);
    assert!(held.len() > 32, "only {} connections were made", held.len());
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "the debug server exited"
    );
    drop(held);
    assert_eq!(get(target), "HTTP/1.1 200 OK");
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "the debug server exited"
    );
}

/// Defect 2: Eight concurrent first starts in a fresh HOME used to start several sandboxes on one
/// database, and most of them failed.
#[test]
fn concurrent_first_starts_agree_on_one_sandbox() {
    let home = Home::new();
    let starts: Vec<_> = (0..8)
        .map(|_| {
            home.command()
                .args(["sandbox", "start"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = starts
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for out in &outputs {
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let pid = std::fs::read_to_string(home.sandbox_dir().join("sandbox.pid")).unwrap();
    let fresh = outputs
        .iter()
        .filter(|o| !text(&o.stdout).contains("already runs"))
        .count();
    assert_eq!(fresh, 1, "exactly one start starts the sandbox");
    for out in &outputs {
        assert!(
            text(&out.stdout).contains(&format!("(pid {})", pid.trim())),
            "{}",
            text(&out.stdout)
        );
    }
    // A second server on the same directory refuses to start, naming the one that runs.
    let second = home.run(&["sandbox", "serve"]);
    assert!(!second.status.success());
    assert!(
        text(&second.stderr).contains("another sandbox already serves")
            && text(&second.stderr).contains(pid.trim()),
        "{}",
        text(&second.stderr)
    );
}

/// Defect 13: A pid file naming a live process that is not the sandbox (a reused pid) used to make
/// `status` say the sandbox runs and `stop` signal that process.
#[test]
fn a_stale_pid_file_naming_a_live_process_is_not_the_sandbox() {
    let home = Home::new();
    std::fs::create_dir_all(home.sandbox_dir()).unwrap();
    let bystander = Killed(Command::new("sleep").arg("600").spawn().unwrap());
    let pid = bystander.0.id().to_string();
    std::fs::write(home.sandbox_dir().join("sandbox.pid"), &pid).unwrap();
    std::fs::write(home.sandbox_dir().join("sandbox.lock"), &pid).unwrap();
    std::fs::write(home.sandbox_dir().join("endpoint"), "http://127.0.0.1:9").unwrap();
    assert_eq!(home.run(&["sandbox", "status"]).status.code(), Some(3));
    let stop = home.run(&["sandbox", "stop"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    assert!(
        text(&stop.stdout).contains("not running"),
        "{}",
        text(&stop.stdout)
    );
    let mut bystander = bystander;
    assert!(
        bystander.0.try_wait().unwrap().is_none(),
        "stop signalled an unrelated process"
    );
}

/// Pids of processes whose command line is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted)
                && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                })
        })
        .collect()
}

/// Poll (bounded) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..800 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("{what}");
}

/// Launch debug run `name` on the sandbox: its route URL, host key and `Bearer` token.
fn debug_run(home: &Home, name: &str) -> [String; 3] {
    let script = format!(
        r#"let key = keys::ensure_keypair();
        runs::launch(#{{ name: "{name}", command: ["sleep", "300"],
                        env: #{{ _F_E_SSH: "1", _F_SSH_PK: key.public_key }} }});
        auth::ensure_api_key("flyte-ssh-debug");
        runs::wait("{name}", #{{ timeout: 60, poll_interval: 0 }});
        let link = runs::details("{name}").log_links.filter(|l| l.type == "IDE")[0];
        print(link.uri);
        print(debug::host_key(link.uri));
        print(auth::bearer_token().authorization());"#
    );
    let out = home.run(&["-e", &script]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    [
        lines[0].to_owned(),
        lines[1].to_owned(),
        lines[2].to_owned(),
    ]
}

/// Launch debug run `name` on the sandbox and start the system ssh running `command` in it
/// (no pty), through our tunnel with the published host key pinned.
fn ssh_session_in_debug_run(home: &Home, name: &str, command: &str) -> Killed {
    let lines = debug_run(home, name);
    let headers = home.0.path().join(format!("{name}.headers"));
    std::fs::write(&headers, format!("Authorization: {}\n", lines[2])).unwrap();
    let child = ssh_through_route(home, name, &lines[0], &lines[1], &headers, command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Killed(child)
}

/// The system ssh running `command` in debug run `name` through our tunnel to `route`, with
/// `host_key` pinned and the token in `headers`.
fn ssh_through_route(
    home: &Home,
    name: &str,
    route: &str,
    host_key: &str,
    headers: &std::path::Path,
    command: &str,
) -> Command {
    let known_hosts = home.0.path().join(format!("{name}.known_hosts"));
    std::fs::write(&known_hosts, format!("{name}.pinned {host_key}\n")).unwrap();
    let mut ssh = Command::new("ssh");
    ssh.args(["-F", "none", "-i"])
        .arg(home.0.ssh_debug_dir().join("id_ed25519"))
        .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
        .arg("-o")
        .arg(format!("HostKeyAlias={name}.pinned"))
        .args(["-o", "StrictHostKeyChecking=yes"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .arg("-o")
        .arg(format!(
            "ProxyCommand={BIN} tunnel {route} --http-headers-file {}",
            headers.display()
        ))
        .args([&format!("root@{name}"), command]);
    ssh
}

/// One plain HTTP/1.1 request to `url`'s host (`http://` only) for its path plus `suffix`, with
/// `authorization` and `body`: the status line and the body.
fn http(
    method: &str,
    url: &str,
    suffix: &str,
    authorization: &str,
    body: &str,
) -> (String, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = TcpStream::connect(authority).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_mins(1)))
        .unwrap();
    write!(
        stream,
        "{method} {path}{suffix} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: {authorization}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Defect 3: after `AbortRun` an open ssh session kept running commands; after `sandbox stop` a
/// non-pty session's children were left behind with parent pid 1.
#[test]
fn shells_end_with_their_run_and_with_the_sandbox() {
    let home = Home::new();
    let mut session = ssh_session_in_debug_run(&home, "aborted", "sleep 791 & sleep 792");
    eventually("the session's commands start", || {
        !processes(&["sleep", "791"]).is_empty() && !processes(&["sleep", "792"]).is_empty()
    });
    let out = home.run(&["-e", r#"runs::abort("aborted"); runs::wait("aborted", #{ phase: "ABORTED", timeout: 60, poll_interval: 0 })"#]);
    assert_eq!(text(&out.stdout), "ABORTED\n", "{}", text(&out.stderr));
    // The connection is dropped (ssh ends) and the session's processes are gone.
    session.0.wait().unwrap();
    eventually("the aborted run's shell processes end", || {
        processes(&["sleep", "791"]).is_empty() && processes(&["sleep", "792"]).is_empty()
    });

    let _session = ssh_session_in_debug_run(&home, "stopped", "sleep 793 & sleep 794");
    eventually("the session's commands start", || {
        !processes(&["sleep", "793"]).is_empty() && !processes(&["sleep", "794"]).is_empty()
    });
    let stop = home.run(&["sandbox", "stop"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    eventually("the stopped sandbox's shell processes end", || {
        processes(&["sleep", "793"]).is_empty() && processes(&["sleep", "794"]).is_empty()
    });
}

/// Defect 5: `sandbox stop` used to end a running action as the task's failure (`killed by
/// signal 15`, `KIND_USER`); a shutdown is the system's doing.
#[test]
fn a_sandbox_stop_is_a_system_event_not_the_tasks_failure() {
    let home = Home::new();
    let out = home.run(&[
        "-e",
        r#"runs::launch(#{ name: "long", command: ["sleep", "300"] });
        runs::wait("long", #{ timeout: 60, poll_interval: 0 })"#,
    ]);
    assert_eq!(text(&out.stdout), "RUNNING\n", "{}", text(&out.stderr));
    let stop = home.run(&["sandbox", "stop"]);
    assert!(stop.status.success(), "{}", text(&stop.stderr));
    let out = home.run(&[
        "-e",
        r#"let v = runs::details("long"); `${v.phase} ${v.error.kind} ${v.error.code}`"#,
    ]);
    assert_eq!(
        text(&out.stdout),
        "FAILED KIND_SYSTEM SandboxStopped\n",
        "{}",
        text(&out.stderr)
    );
}

/// Defect 10: `FLYTE_RUN_LOG=trace` printed `authorization: Bearer eyJ...` in `flyte-run
/// tunnel`'s stderr, which ssh shows on the terminal.
#[test]
fn no_log_level_shows_the_token() {
    let home = Home::new();
    let [uri, _, authorization] = debug_run(&home, "logged");
    let token = authorization.trim_start_matches("Bearer ").to_owned();
    assert!(token.len() > 20, "{authorization}");
    let headers = home.0.path().join("logged.headers");
    std::fs::write(&headers, format!("Authorization: {authorization}\n")).unwrap();
    // stdin ends at once: the tunnel connects (the handshake is what logged the token), sends
    // Close and exits.
    let out = home
        .command()
        .env("FLYTE_RUN_LOG", "trace")
        .args(["tunnel", &uri, "--http-headers-file"])
        .arg(&headers)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    // The handshake's own logger is on (its trace line with the raw request is what leaked).
    assert!(
        stderr.contains("Client handshake done"),
        "logging was not on:\n{stderr}"
    );
    assert!(
        !stderr.contains(&token),
        "the token reached the log:\n{stderr}"
    );
}

/// Defect 14: large strings held across 60 call levels aborted the process under an address
/// space limit (exit 134); `loop { a.push(1) }` ran for minutes, the operations limit never
/// firing. A memory budget and a CPU budget stop both with an error naming the limit.
#[test]
fn scripts_have_a_memory_budget_and_a_cpu_budget() {
    let home = Home::new();
    let deep = r#"fn f(n, s) { let t = s + "y"; if n > 0 { f(n - 1, t) } else { t.len() } }
        let s = "x"; for i in 0..23 { s += s; }
        s.truncate(16000000);
        f(60, s)"#;
    let out = Command::new("sh")
        .args([
            "-c",
            "ulimit -v 2500000 && exec \"$0\" -e \"$1\"",
            BIN,
            deep,
        ])
        .env("HOME", home.0.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("held more than 512 MiB of memory"),
        "{}",
        text(&out.stderr)
    );

    // The CPU budget counts computing only: a script that waits is not stopped by it.
    let out = home.run(&[
        "--cpu-limit",
        "0.5",
        "-e",
        "let a = []; loop { a.push(1); }",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("computed for longer than --cpu-limit"),
        "{}",
        text(&out.stderr)
    );
    let out = home.run(&["--cpu-limit", "0.5", "-e", "sleep(0.8); 7"]);
    assert_eq!(text(&out.stdout), "7\n", "{}", text(&out.stderr));
}

/// Defect 9: with umask 000, `config init` made `~/.flyte` 0777, another local user replaced
/// `flyte-run.json` (their endpoint), and `doctor` said nothing.
#[test]
fn umask_000_makes_nothing_others_can_write_and_a_writable_config_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let home = Home::new();
    let init = Command::new("sh")
        .args([
            "-c",
            "umask 000 && exec \"$0\" config init --endpoint https://flyte.example.com",
            BIN,
        ])
        .env("HOME", home.0.path())
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", text(&init.stderr));
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let dir = home.0.path().join(".flyte");
    let file = dir.join("flyte-run.json");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&file) & 0o022, 0, "{:o}", mode(&file));

    // Someone made it writable by others: flyte-run refuses to use it and says how to fix it.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    for args in [&["config", "show"][..], &["doctor"][..]] {
        let out = home.run(args);
        let all = text(&out.stdout) + &text(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {all}");
        assert!(
            all.contains("writable by other users") && all.contains("chmod go-w"),
            "{args:?}: {all}"
        );
    }
}

/// Store an API key made for `prod.example.com:443` as the user's key.
fn write_foreign_key(home: &Home) {
    let dir = home.0.ssh_debug_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let key = flyte_auth::ApiKey {
        endpoint: "prod.example.com:443".to_owned(),
        client_id: "prod-client".to_owned(),
        client_secret: flyte_api::Secret::new("prod-secret"),
        org: String::new(),
    };
    std::fs::write(dir.join("api-key"), key.encode().unwrap() + "\n").unwrap();
}

/// Defect 8: an API key made for `prod.example.com:443` was sent as Basic auth to whatever
/// endpoint was configured (a server on 127.0.0.1). Now it goes only to its own endpoint.
#[test]
fn an_api_key_is_sent_only_to_the_endpoint_it_was_made_for() {
    let home = Home::new();
    write_foreign_key(&home);
    // A server that records what it is sent: it must see no request at all.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let out = home.run(&[
        "--endpoint",
        &format!("http://{address}"),
        "-e",
        r#"runs::details("anything")"#,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("made for prod.example.com:443"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        listener.accept().is_err(),
        "the key's holder contacted the foreign endpoint"
    );
}

/// Defect 8, the rest: `doctor` names a key made for another endpoint without contacting that
/// endpoint, and the explicit opt-out lets the key go to the one endpoint it names.
#[test]
fn doctor_flags_a_key_for_another_endpoint_and_the_opt_out_names_one_endpoint() {
    let home = Home::new();
    write_foreign_key(&home);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let endpoint = format!("http://{address}");
    listener.set_nonblocking(true).unwrap();
    let out = home.run(&["doctor", "--endpoint", &endpoint]);
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("FAIL  token") && all.contains("made for prod.example.com:443"),
        "{all}"
    );
    assert!(listener.accept().is_err(), "doctor contacted the endpoint");

    // Naming another endpoint in the opt-out changes nothing; naming this one lets it through.
    let refused = home
        .command()
        .env("FLYTE_RUN_ALLOW_KEY_ENDPOINT", "127.0.0.1:1")
        .args(["--endpoint", &endpoint, "-e", r#"runs::details("x")"#])
        .output()
        .unwrap();
    assert!(
        text(&refused.stderr).contains("FLYTE_RUN_ALLOW_KEY_ENDPOINT="),
        "{}",
        text(&refused.stderr)
    );
    assert!(listener.accept().is_err());
    listener.set_nonblocking(false).unwrap();
    let allowed = home
        .command()
        .env("FLYTE_RUN_ALLOW_KEY_ENDPOINT", address.to_string())
        .args(["--endpoint", &endpoint, "-e", r#"runs::details("x")"#])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let allowed = Killed(allowed);
    let (mut stream, _) = listener.accept().unwrap();
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).unwrap();
    assert!(
        text(&head[..n]).starts_with("POST /"),
        "{}",
        text(&head[..n])
    );
    drop(stream);
    drop(allowed);
}

/// Defect 11, the rest: a hand edit that lets another block override the managed one (an
/// earlier `Host *`, an `Include` above it, an unmanaged block for the alias) fails `doctor`.
#[test]
fn doctor_flags_ssh_blocks_that_shadow_the_managed_one() {
    let home = Home::new();
    let ssh = home.0.path().join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let managed = "# >>> flyte-run managed: flyte-debug >>>\nHost flyte-debug\n  User root\n# <<< flyte-run managed: flyte-debug <<<\n";
    for (before, after, expected) in [
        ("", "Host *\n  User me\n", None),
        ("Host *\n  User me\n", "", Some("line 1 (`Host *`)")),
        ("Include config.d/*\n", "", Some("line 1 (`Include`)")),
        ("User me\n", "", Some("line 1 sets `User` for every host")),
        (
            "",
            "Host flyte-debug\n  ForwardAgent yes\n",
            Some("line 5 has a `Host` block"),
        ),
    ] {
        std::fs::write(ssh.join("config"), format!("{before}{managed}{after}")).unwrap();
        let out = home.run(&["doctor"]);
        let stdout = text(&out.stdout);
        let line = stdout
            .lines()
            .find(|l| l.contains("ssh config"))
            .unwrap_or_default()
            .to_owned();
        match expected {
            None => assert!(line.starts_with("ok"), "{stdout}"),
            Some(expected) => {
                assert!(!out.status.success(), "{stdout}");
                assert!(
                    line.starts_with("FAIL") && line.contains(expected),
                    "{line}"
                );
            }
        }
    }
}

/// Defect 2, the rest: sixteen copies of the main job started at once in a fresh HOME all end
/// connected to one run (one launches it, the others reuse it, including those that lost the
/// race to launch the same name).
#[test]
fn sixteen_concurrent_main_jobs_in_a_fresh_home_all_succeed() {
    let home = Home::new();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let jobs: Vec<Child> = (0..16)
        .map(|_| {
            home.command()
                .current_dir(root)
                .arg("playbooks/debug.rhai")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = jobs
        .into_iter()
        .map(|job| job.wait_with_output().unwrap())
        .collect();
    let mut launched = 0;
    for out in &outputs {
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
        assert!(stdout.contains("checked:     connected as "), "{stdout}");
        launched += usize::from(stdout.contains("launched:    run flyte-run-debug "));
    }
    assert_eq!(launched, 1, "exactly one job launches the run");
}

/// "A debug-route token is not tied to a run": the headers file ssh's `ProxyCommand` reads now
/// holds a token for its own route only. With it, ssh reaches that run's shell; the other run's
/// route, the API, and minting another token all refuse it. The access token (what Flyte's own
/// client sends to a route) still opens every route.
#[test]
fn the_headers_file_token_opens_its_own_route_and_nothing_else() {
    let home = Home::new();
    let [alpha_route, alpha_key, access] = debug_run(&home, "alpha");
    let [beta_route, _, _] = debug_run(&home, "beta");
    let out = home.run(&[
        "-e",
        r#"let c = debug::connect("alpha", #{ host_alias: "alpha" }); print(c.headers_file);"#,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let headers = std::path::PathBuf::from(text(&out.stdout).trim());
    let line = std::fs::read_to_string(&headers).unwrap();
    let scoped = line
        .trim()
        .strip_prefix("Authorization: ")
        .unwrap()
        .to_owned();
    assert_ne!(scoped, access, "the headers file holds the access token");

    let ssh = ssh_through_route(
        &home,
        "alpha",
        &alpha_route,
        &alpha_key,
        &headers,
        "echo in-alpha",
    )
    .output()
    .unwrap();
    assert_eq!(text(&ssh.stdout), "in-alpha\n", "{}", text(&ssh.stderr));

    let host_key = |route: &str, token: &str| http("GET", route, "?ssh-host-key", token, "").0;
    assert_eq!(host_key(&alpha_route, &scoped), "HTTP/1.1 200 OK");
    assert_eq!(host_key(&beta_route, &scoped), "HTTP/1.1 401 Unauthorized");
    assert_eq!(host_key(&beta_route, &access), "HTTP/1.1 200 OK");

    let api = std::fs::read_to_string(home.sandbox_dir().join("endpoint")).unwrap();
    let api = api.trim();
    let call = |method: &str, token: &str, body: &str| {
        http("POST", &format!("{api}/{method}"), "", token, body)
    };
    let (status, body) = call("flyteidl2.workflow.RunService/ListRuns", &scoped, "{}");
    assert_eq!(status, "HTTP/1.1 401 Unauthorized", "{body}");
    assert!(body.contains("opens one debug route"), "{body}");
    let mint = format!("{{\"routeUri\": \"{beta_route}\"}}");
    let route_tokens = "flyterun.sandbox.v1.RouteTokenService/CreateRouteToken";
    assert_eq!(
        call(route_tokens, &scoped, &mint).0,
        "HTTP/1.1 401 Unauthorized"
    );
    assert_eq!(call(route_tokens, &access, &mint).0, "HTTP/1.1 200 OK");
    // Bad input names the field and the fix.
    let (status, body) = call(route_tokens, &access, r#"{"routeUri": "beta"}"#);
    assert_eq!(status, "HTTP/1.1 400 Bad Request", "{body}");
    assert!(
        body.contains("route_uri") && body.contains("IDE link"),
        "{body}"
    );
    let gone = format!("{{\"routeUri\": \"{alpha_route}-gone\"}}");
    let (status, body) = call(route_tokens, &access, &gone);
    assert_eq!(status, "HTTP/1.1 404 Not Found", "{body}");
}
