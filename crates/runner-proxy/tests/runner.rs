//! The runner proxy through the real pieces that can run here: the system ssh client, a real
//! sshd on 127.0.0.1 as the management host, bash, curl and python3. Only `incus` and `kubectl`
//! are stand-ins (fixtures/), scripts that behave like their interfaces.
#![allow(clippy::disallowed_methods)] // Tests write fixtures and start processes directly.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use flyte_runner_proxy::{CurlRequest, Runner, RunnerConfig, RunnerError};
use flyte_testkit::{RunnerLab, reserve_port};

struct Lab(RunnerLab);

impl Lab {
    fn new() -> Self {
        Self(RunnerLab::new())
    }

    fn config(&self) -> RunnerConfig {
        let sshd = self.0.sshd();
        RunnerConfig {
            ssh_host: sshd.alias().to_owned(),
            ssh_key: sshd.client_key(),
            vm: self.0.vm().to_owned(),
            ssh_options: vec!["-F".to_owned(), sshd.client_config().display().to_string()],
        }
    }

    fn runner(&self) -> Runner {
        Runner::new(self.config())
    }

    /// A config whose key the management host refuses. (The harness's client config names
    /// its own key; a copy without it leaves only ours.)
    fn refused_key_config(&self) -> RunnerConfig {
        let mut config = self.config();
        let other_key = self.path("other_key");
        flyte_testkit::ssh_keygen(&other_key, "other");
        config.ssh_key = other_key;
        let client_config = std::fs::read_to_string(self.0.sshd().client_config()).unwrap();
        let without_key = client_config
            .lines()
            .filter(|l| !l.trim_start().starts_with("IdentityFile"))
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(self.path("no_key_config"), without_key).unwrap();
        config.ssh_options = vec![
            "-F".to_owned(),
            self.path("no_key_config").display().to_string(),
        ];
        config
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn kubectl_calls(&self) -> Vec<Vec<String>> {
        self.0.kubectl_calls()
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn kubectl_arguments_arrive_exactly_and_commands_report_their_exit() {
    let lab = Lab::new();
    let runner = lab.runner();
    let args = [
        "get",
        "pods",
        "-n",
        "my ns",
        "-l",
        "app in (a, b)",
        "-o",
        "jsonpath={.items[*].metadata.name}",
        "it's",
        "$HOME",
        "`date`",
        "",
        "a\nb",
    ];
    let out = block_on(runner.kubectl(&args, None, WAIT)).unwrap();
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "pod/web-0\n"),
        "{}",
        out.stderr
    );
    assert_eq!(lab.kubectl_calls(), vec![args.map(str::to_owned).to_vec()]);

    let out = block_on(runner.kubectl(&["fail"], None, WAIT)).unwrap();
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("doesn't have a resource type"),
        "{}",
        out.stderr
    );

    // A command line runs as written, in the VM's login shell (its profile applied), with stdin.
    let out = block_on(runner.run(
        "command -v kubectl >/dev/null && echo on-path; wc -c; exit 3",
        Some(b"12345".to_vec()),
        WAIT,
    ))
    .unwrap();
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (3, "on-path\n5\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn curl_in_the_runner_sends_headers_and_body_and_splits_the_status() {
    let lab = Lab::new();
    let runner = lab.runner();
    // A real HTTP server on loopback that echoes what it received.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/echo", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        use std::io::{BufRead as _, BufReader, Read as _, Write as _};
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let answer = format!("{head}--\n{}", String::from_utf8_lossy(&body));
        let mut stream = stream;
        write!(
            stream,
            "HTTP/1.1 201 Created\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
            answer.len()
        )
        .unwrap();
    });
    let request = CurlRequest {
        url,
        method: "POST".to_owned(),
        headers: vec![(
            "Authorization".to_owned(),
            "Bearer s3cr3t \"quoted\"".to_owned(),
        )],
        data: Some("{\"a\": \"b c\"}\nsecond line".to_owned()),
        timeout_secs: 10,
        insecure: false,
    };
    let response = block_on(runner.curl(&request)).unwrap();
    server.join().unwrap();
    assert_eq!(response.status, 201);
    assert!(
        response.body.starts_with("POST /echo HTTP/1.1\r\n"),
        "{}",
        response.body
    );
    assert!(
        response
            .body
            .contains("Authorization: Bearer s3cr3t \"quoted\"\r\n"),
        "{}",
        response.body
    );
    assert!(
        response.body.ends_with("--\n{\"a\": \"b c\"}\nsecond line"),
        "{}",
        response.body
    );

    // Nothing listens: curl gets no answer at all, which is an error (not a status).
    let closed = reserve_port();
    let err = block_on(runner.curl(&CurlRequest::get(format!(
        "http://127.0.0.1:{}/",
        closed.port()
    ))))
    .unwrap_err();
    assert!(
        matches!(
            err,
            RunnerError::Failed {
                what: "curl",
                code: 7,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn port_forward_serves_until_closed() {
    let lab = Lab::new();
    let runner = lab.runner();
    let port = reserve_port();
    let forward = block_on(runner.port_forward("web ns", "pod/web-0", port.port(), 80)).unwrap();
    assert_eq!(forward.port(), port.port());
    let url = format!("http://127.0.0.1:{}/hello.txt", forward.port());
    let response = block_on(runner.curl(&CurlRequest::get(&url))).unwrap();
    assert_eq!(
        (response.status, response.body.as_str()),
        (200, "hello from the pod\n")
    );
    assert_eq!(
        lab.kubectl_calls().first().unwrap(),
        &[
            "-n",
            "web ns",
            "port-forward",
            "pod/web-0",
            &format!("{}:80", port.port())
        ]
    );
    block_on(forward.close()).unwrap();
    let err = block_on(runner.curl(&CurlRequest::get(&url))).unwrap_err();
    assert!(matches!(err, RunnerError::Failed { code: 7, .. }), "{err}");

    // kubectl that exits instead of forwarding: its message comes back.
    let err = block_on(runner.port_forward("ns", "pod/x", 0, 80)).unwrap_err();
    assert!(err.to_string().contains("ports are 1 to 65535"), "{err}");
    std::fs::write(
        lab.0.kubectl_path(),
        "#!/bin/sh\necho 'error: pods \"x\" not found' >&2\nexit 1\n",
    )
    .unwrap();
    let err = block_on(runner.port_forward("ns", "pod/x", port.port(), 80)).unwrap_err();
    assert!(
        err.to_string().contains("error: pods \"x\" not found"),
        "{err}"
    );
}

#[test]
fn failures_name_the_cause() {
    let lab = Lab::new();
    // The VM agent has not connected yet.
    std::fs::write(lab.path("agent-down"), "").unwrap();
    let err = block_on(lab.runner().run("true", None, WAIT)).unwrap_err();
    assert!(matches!(err, RunnerError::AgentNotReady { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("incus wait dap-runner agent --timeout=60"),
        "{err}"
    );
    std::fs::remove_file(lab.path("agent-down")).unwrap();

    // A VM that does not exist: incus's own message.
    let mut config = lab.config();
    config.vm = "other-vm".to_owned();
    let out = block_on(Runner::new(config).run("true", None, WAIT)).unwrap();
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("Instance not found"), "{}", out.stderr);

    // The management host refuses the key: ssh's failure (255), not the command's.
    let err = block_on(Runner::new(lab.refused_key_config()).run("true", None, WAIT)).unwrap_err();
    assert!(matches!(err, RunnerError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("Permission denied"), "{err}");

    // A key file that is not there.
    let mut config = lab.config();
    config.ssh_key = lab.path("missing_key");
    let err = block_on(Runner::new(config).run("true", None, WAIT)).unwrap_err();
    assert!(err.to_string().contains("set DAP_RUNNER_SSH_KEY"), "{err}");

    // A command that outlives its timeout is stopped.
    // A command that outlives its timeout is stopped in the VM, not only on this side: by the
    // time the error comes back, the process is gone.
    let pid_file = lab.path("slow.pid");
    let script = format!("echo $$ > {}; exec sleep 30", pid_file.display());
    let err = block_on(lab.runner().run(&script, None, Duration::from_secs(1))).unwrap_err();
    assert!(matches!(err, RunnerError::Timeout(1)), "{err}");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
    assert!(
        stat.map_or(true, |s| s
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))),
        "the remote command still runs"
    );

    // Exit 255 from the command itself is the command's answer, not a connection failure; nor
    // is incus's agent message printed by a command that succeeds.
    let out = block_on(lab.runner().run("exit 255", None, WAIT)).unwrap();
    assert_eq!(out.code, 255);
    let out = block_on(lab.runner().run(
        "echo \"VM agent isn't currently running\" >&2",
        None,
        WAIT,
    ))
    .unwrap();
    assert_eq!(out.code, 0);
}

/// A forward that is dropped rather than closed ends with its ssh session: kubectl stops in the
/// runner. (Checked by asking until the port stops answering, a bounded number of times.)
#[test]
fn a_dropped_port_forward_stops() {
    let lab = Lab::new();
    let runner = lab.runner();
    let port = reserve_port();
    let url = format!("http://127.0.0.1:{}/hello.txt", port.port());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let forward = runner
            .port_forward("ns", "pod/web-0", port.port(), 80)
            .await
            .unwrap();
        assert_eq!(
            runner.curl(&CurlRequest::get(&url)).await.unwrap().status,
            200
        );
        drop(forward);
        let mut stopped = false;
        for _ in 0..100 {
            if runner.curl(&CurlRequest::get(&url)).await.is_err() {
                stopped = true;
                break;
            }
        }
        assert!(
            stopped,
            "the port still answers after the forward was dropped"
        );
    });
}

/// The sshd's "Accepted publickey" lines: one per SSH connection authenticated.
/// Sessions the management host's sshd started (exec channels and shells).
fn sessions(lab: &Lab) -> usize {
    lab.0
        .sshd()
        .log_text()
        .lines()
        .filter(|l| l.contains("Starting session:"))
        .count()
}

fn logins(lab: &Lab) -> usize {
    lab.0
        .sshd()
        .log_text()
        .lines()
        .filter(|l| l.contains("Accepted publickey"))
        .count()
}

/// The pid `ssh -O check` reports for the master behind `control_dir`, if one runs.
fn master_pid(lab: &Lab, control_dir: &std::path::Path) -> Option<i32> {
    let config = lab.config();
    let out = std::process::Command::new("ssh")
        .args(["-o", &format!("ControlPath={}/%C", control_dir.display())])
        .args(["-O", "check"])
        .args(&config.ssh_options)
        .arg(&config.ssh_host)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    text.split("pid=")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
}

#[test]
fn thirty_calls_share_one_connection_which_ends_with_the_runner() {
    let lab = Lab::new();
    let runner = Runner::shared(lab.config()).unwrap();
    let logins_before = logins(&lab);
    block_on(async {
        for _ in 0..30 {
            let out = runner.kubectl(&["get", "pods"], None, WAIT).await.unwrap();
            assert_eq!(out.code, 0, "{}", out.stderr);
        }
    });
    assert_eq!(logins(&lab) - logins_before, 1, "one login for 30 calls");
    assert_eq!(
        sessions(&lab),
        1,
        "one session (the shell on the management host) for 30 calls"
    );
    assert_eq!(lab.kubectl_calls().len(), 30);
    let dir = runner.control_dir().unwrap().to_owned();
    // Private, and the socket is named by ssh's hash of the destination: nothing secret.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&dir).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o700);
    let sockets: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    assert!(
        sockets[0].chars().all(|c| c.is_ascii_hexdigit()),
        "{sockets:?}"
    );
    let master = master_pid(&lab, &dir).expect("a master runs while the runner lives");
    let argv = std::fs::read(format!("/proc/{master}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&argv).contains("PRIVATE KEY"));

    // A clone shares it; dropping the last one stops the master and removes the directory.
    let clone = runner.clone();
    drop(runner);
    assert!(dir.exists());
    drop(clone);
    assert!(!dir.exists(), "the control directory is removed");
    // `ssh -O exit` returns once the master has been told; it exits right after (bounded wait:
    // on a loaded machine that can take a moment).
    let gone = || {
        !std::path::Path::new(&format!("/proc/{master}")).exists()
            || std::fs::read_to_string(format!("/proc/{master}/stat"))
                .is_ok_and(|s| s.contains(" Z "))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !gone() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(gone(), "the master is gone");
    // The shell's private directory on the management host goes with it (the remote shell
    // removes it on its way out: a bounded wait).
    let mgmt_tmp = lab.path("mgmt-tmp");
    let empty = || std::fs::read_dir(&mgmt_tmp).unwrap().next().is_none();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(empty(), "the management host keeps nothing of the calls");
}

#[test]
fn a_killed_master_does_not_hang_the_next_call() {
    let lab = Lab::new();
    let runner = Runner::shared(lab.config()).unwrap();
    block_on(runner.kubectl(&["get", "pods"], None, WAIT)).unwrap();
    let dir = runner.control_dir().unwrap().to_owned();
    let master = master_pid(&lab, &dir).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(master),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // The stale socket is passed over: the call connects on its own and succeeds.
    let out = block_on(runner.kubectl(&["get", "pods"], None, WAIT)).unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// A shared runner runs its calls through one shell on the management host: what each command
/// prints, and its exit code, arrive exactly as on an exec channel of its own.
#[test]
fn calls_through_the_shared_shell_answer_exactly_as_on_their_own_channel() {
    let lab = Lab::new();
    let fresh = lab.runner();
    let shared = Runner::shared(lab.config()).unwrap();
    let commands = [
        "true",
        "exit 3",
        "printf 'no newline at the end'",
        "printf 'a\\nb\\n'; echo oops >&2; exit 7",
        // Lines shaped like the shell's own framing, and a line of spaces.
        "echo 'flyte-run-call-1-2 end 0 0 0'; echo 'flyte-run-call-1-2 start'; echo '   '",
        // 1 MiB on stdout, 64 KiB on stderr.
        "head -c 1048576 /dev/zero | tr '\\0' x; head -c 65536 /dev/zero | tr '\\0' y >&2",
        // No input: a command reading stdin ends at once.
        "cat; echo read-nothing",
        "sleep 0.2; echo after-a-while",
    ];
    block_on(async {
        for command in commands {
            let want = fresh.run(command, None, WAIT).await.unwrap();
            let got = shared.run(command, None, WAIT).await.unwrap();
            assert_eq!(got, want, "{command}");
        }
        // Two calls at once: one goes through the shell, the other on a channel of its own.
        let (a, b) = tokio::join!(
            shared.run("sleep 0.3; echo a", None, WAIT),
            shared.run("echo b", None, WAIT)
        );
        assert_eq!(a.unwrap().stdout, "a\n");
        assert_eq!(b.unwrap().stdout, "b\n");
    });
}

/// A command stopped at its timeout in the VM is reported as a timeout, and the shell answers
/// the next call.
#[test]
fn a_timeout_in_the_shared_shell_leaves_it_usable() {
    let lab = Lab::new();
    let shared = Runner::shared(lab.config()).unwrap();
    block_on(async {
        let err = shared
            .run("sleep 30", None, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, RunnerError::Timeout(1)), "{err}");
        let out = shared.run("echo still-here", None, WAIT).await.unwrap();
        assert_eq!(out.stdout, "still-here\n");
    });
}

/// The shell dying while a command runs is an error that says the command may have run; the
/// command is not run a second time, and the next call gets a new shell.
#[test]
fn a_shell_lost_mid_call_is_an_error_and_the_call_is_not_repeated() {
    let lab = Lab::new();
    let shared = Runner::shared(lab.config()).unwrap();
    // The command kills the management host's shell that runs it (its nearest `sh -s`
    // ancestor), then records that it ran.
    let script = format!(
        "p=$$; while [ \"$p\" -gt 1 ]; do \
           if [ \"$(tr '\\0' ' ' < /proc/$p/cmdline)\" = 'sh -s ' ]; then kill -9 $p; break; fi; \
           p=$(cut -d' ' -f4 < /proc/$p/stat); done; echo ran >> {}",
        lab.path("ran").display()
    );
    block_on(async {
        let err = shared.run(&script, None, WAIT).await.unwrap_err();
        assert!(matches!(err, RunnerError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("may have run"), "{err}");
        let out = shared.run("echo next", None, WAIT).await.unwrap();
        assert_eq!(out.stdout, "next\n");
    });
    assert_eq!(
        std::fs::read_to_string(lab.path("ran")).unwrap(),
        "ran\n",
        "the command ran once"
    );
}

/// Failures of the chain are named the same way when calls share a connection and a shell.
#[test]
fn a_shared_runner_names_failures_as_a_fresh_one_does() {
    let lab = Lab::new();
    let shared = Runner::shared(lab.config()).unwrap();
    std::fs::write(lab.path("agent-down"), "").unwrap();
    let err = block_on(shared.run("true", None, WAIT)).unwrap_err();
    assert!(matches!(err, RunnerError::AgentNotReady { .. }), "{err}");
    std::fs::remove_file(lab.path("agent-down")).unwrap();

    // A refused key: the shell cannot start, the call falls back to its own channel, and
    // ssh's own failure is what the caller sees.
    let refused = Runner::shared(lab.refused_key_config()).unwrap();
    let err = block_on(refused.run("true", None, WAIT)).unwrap_err();
    assert!(matches!(err, RunnerError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("Permission denied"), "{err}");
}

/// A call its caller abandons (its answer never read) takes the shell with it: the next call
/// gets its own answer, not the abandoned one's.
#[test]
fn an_abandoned_call_does_not_hand_its_answer_to_the_next() {
    let lab = Lab::new();
    let shared = Runner::shared(lab.config()).unwrap();
    block_on(async {
        shared.run("true", None, WAIT).await.unwrap();
        let abandoned = tokio::time::timeout(
            Duration::from_millis(300),
            shared.run("sleep 2; echo abandoned", None, WAIT),
        )
        .await;
        assert!(abandoned.is_err(), "the caller gave up first");
        let out = shared.run("echo next", None, WAIT).await.unwrap();
        assert_eq!(out.stdout, "next\n");
    });
}
