//! The thin async driver: runs the builders' scripts with the system OpenSSH client.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

use crate::remote::{self, CurlRequest, CurlResponse};
use crate::session::{self, Answer, Shell};
use crate::{Result, RunnerConfig, RunnerError};

/// What a command in the runner printed, and its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The runner, reached with `ssh` (found on `PATH`).
#[derive(Debug, Clone)]
pub struct Runner {
    config: RunnerConfig,
    /// Calls share one SSH connection (OpenSSH's multiplexing) while this lives.
    shared: Option<std::sync::Arc<SharedConnection>>,
}

/// How long an idle shared connection stays up after the last call (ssh's `ControlPersist`):
/// the bound on a master left behind by a process that was killed before it could stop it.
pub const SHARED_IDLE: Duration = Duration::from_mins(1);
/// The longest control socket path used (the portable limit of a Unix socket path).
const MAX_SOCKET_PATH: usize = 100;

/// OpenSSH connection multiplexing for the calls of one [`Runner`] and its clones: a private
/// (0700) directory holds one control socket per destination (`%C`, a hash of host, port and
/// user: nothing secret in the path). Dropping the last clone stops the master (`ssh -O exit`)
/// and removes the directory.
#[derive(Debug)]
struct SharedConnection {
    dir: tempfile::TempDir,
    /// What `ssh -O exit` needs to find the master.
    host: String,
    options: Vec<String>,
    /// The shell on the management host that runs calls without input ([`crate::session`]).
    shell: tokio::sync::Mutex<ShellSlot>,
}

/// The shared connection's shell, when one is running and idle.
#[derive(Debug, Default)]
struct ShellSlot {
    shell: Option<Shell>,
    /// A new shell never answered: calls use exec channels from then on.
    disabled: bool,
}

impl SharedConnection {
    fn control_path(&self) -> String {
        format!("ControlPath={}/%C", self.dir.path().display())
    }
}

impl Drop for SharedConnection {
    // Stopping the master is the one ssh call made without tokio: drops are synchronous.
    #[allow(clippy::disallowed_methods)]
    fn drop(&mut self) {
        let _ = std::process::Command::new("ssh")
            .args(["-o", &self.control_path(), "-O", "exit"])
            .args(&self.options)
            .arg("--")
            .arg(&self.host)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// What `incus exec` says while the VM's agent has not connected yet.
const AGENT_NOT_RUNNING: &str = "VM agent isn't currently running";
/// What ssh itself prints when it cannot get a session (it then exits 255, which a remote
/// command may also do).
const SSH_FAILURES: &[&str] = &[
    "ssh: ",
    "Permission denied",
    "Host key verification failed",
    "REMOTE HOST IDENTIFICATION HAS CHANGED",
    "Connection closed by",
    "Connection refused",
    "Connection timed out",
    "Could not resolve hostname",
    "kex_exchange_identification",
];

impl Runner {
    /// Each call opens its own SSH connection.
    pub fn new(config: RunnerConfig) -> Self {
        Self {
            config,
            shared: None,
        }
    }

    /// Calls (and clones' calls) share one SSH connection while this value or a clone lives:
    /// after the first call, each one skips the TCP, key exchange and authentication round
    /// trips. Calls without input also share one shell on the management host (see the
    /// `session` module), which saves sshd's per-channel cost (about 100 ms with OpenSSH 9.2).
    /// Port-forwards keep a connection of their own (their lifetime is their session's).
    pub fn shared(config: RunnerConfig) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("flyte-run-ssh-")
            // Only we may reach the control socket: whoever can is logged in as us.
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .map_err(|source| RunnerError::Io {
                context: "creating the directory for the shared ssh connection",
                source,
            })?;
        // A Unix socket path holds at most 104 bytes on some systems (108 on Linux): under a
        // long $TMPDIR the socket could not be made, so calls connect on their own instead.
        let socket_len = dir.path().as_os_str().len() + 1 + 40;
        if socket_len > MAX_SOCKET_PATH {
            tracing::debug!(dir = %dir.path().display(), "the control socket path would be too long; not sharing the ssh connection");
            return Ok(Self::new(config));
        }
        let shared = SharedConnection {
            dir,
            host: config.ssh_host.clone(),
            options: config.ssh_options.clone(),
            shell: tokio::sync::Mutex::default(),
        };
        Ok(Self {
            config,
            shared: Some(std::sync::Arc::new(shared)),
        })
    }

    pub fn config(&self) -> &RunnerConfig {
        &self.config
    }

    /// The private directory of the shared connection's control socket, when calls share one.
    pub fn control_dir(&self) -> Option<&std::path::Path> {
        self.shared.as_deref().map(|s| s.dir.path())
    }

    /// The settings ssh needs are usable (checked before anything is started).
    fn check(&self) -> Result<()> {
        if !self.config.ssh_key.exists() {
            return Err(RunnerError::Invalid {
                what: "runner key",
                reason: format!(
                    "{} does not exist; set {} to the private key for {}",
                    self.config.ssh_key.display(),
                    crate::ENV_SSH_KEY,
                    self.config.ssh_host
                ),
            });
        }
        if self.config.ssh_host.starts_with('-') || self.config.ssh_host.trim().is_empty() {
            return Err(RunnerError::Invalid {
                what: "runner host",
                reason: format!("{:?} is not an ssh destination", self.config.ssh_host),
            });
        }
        if self.config.vm.is_empty()
            || self.config.vm.starts_with('-')
            || self.config.vm.contains(char::is_whitespace)
        {
            return Err(RunnerError::Invalid {
                what: "runner VM",
                reason: format!(
                    "{:?} is not an incus instance name; set {}",
                    self.config.vm,
                    crate::ENV_VM
                ),
            });
        }
        Ok(())
    }

    /// `ssh ... <host> <remote>`, stdout and stderr piped (stdin too when asked), killed when
    /// dropped: a timeout or a caller giving up ends the session.
    fn ssh(&self, remote: String, stdin: bool) -> Result<tokio::process::Child> {
        self.ssh_via(remote, stdin, self.shared.as_deref())
    }

    fn ssh_via(
        &self,
        remote: String,
        stdin: bool,
        shared: Option<&SharedConnection>,
    ) -> Result<tokio::process::Child> {
        self.ssh_command(remote, stdin, shared)?
            .spawn()
            .map_err(RunnerError::SshMissing)
    }

    // The runner chain starts with the system ssh (ARCHITECTURE.md, runner-proxy).
    #[allow(clippy::disallowed_methods)]
    fn ssh_command(
        &self,
        remote: String,
        stdin: bool,
        shared: Option<&SharedConnection>,
    ) -> Result<tokio::process::Command> {
        self.check()?;
        let mut command = tokio::process::Command::new("ssh");
        if let Some(shared) = shared {
            command.args([
                "-o",
                "ControlMaster=auto",
                "-o",
                &shared.control_path(),
                "-o",
                &format!("ControlPersist={}", SHARED_IDLE.as_secs()),
                // A shared connection that died silently (sleep, a network change) is noticed
                // within 45 s and replaced, instead of every later call hanging on it.
                "-o",
                "ServerAliveInterval=15",
                "-o",
                "ServerAliveCountMax=3",
            ]);
        }
        command
            .arg("-i")
            .arg(&self.config.ssh_key)
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-T"])
            .args(&self.config.ssh_options)
            .arg("--")
            .arg(&self.config.ssh_host)
            .arg(remote)
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Ok(command)
    }

    /// Failures of the chain itself, told apart from the command's own exit: incus without its
    /// VM agent, and ssh without a session.
    fn classify(&self, code: i32, stderr: &str) -> Result<()> {
        if code != 0 && stderr.contains(AGENT_NOT_RUNNING) {
            return Err(RunnerError::AgentNotReady {
                vm: self.config.vm.clone(),
            });
        }
        if code == 255 && SSH_FAILURES.iter().any(|m| stderr.contains(m)) {
            return Err(RunnerError::Connect {
                host: self.config.ssh_host.clone(),
                detail: stderr
                    .trim()
                    .lines()
                    .last()
                    .unwrap_or("no message")
                    .to_owned(),
            });
        }
        Ok(())
    }

    /// Run `script` in the runner's login shell, feeding `input` to its stdin. The script is
    /// stopped in the VM at `timeout` (not only the local ssh).
    async fn run_script(
        &self,
        script: &str,
        input: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Output> {
        tracing::debug!(host = %self.config.ssh_host, vm = %self.config.vm, %script, "runner");
        let remote = remote::in_vm_for(&self.config.vm, script, timeout.as_secs())?;
        if input.is_none()
            && let Some(shared) = self.shared.as_deref()
            && let Some(result) = self.run_in_shell(shared, &remote, timeout).await
        {
            return result;
        }
        let mut child = self.ssh(remote, input.is_some())?;
        // Stdin has its own task so a command that never reads it, or echoes it, cannot block us.
        let feeder = match (input, child.stdin.take()) {
            (Some(bytes), Some(mut stdin)) => Some(tokio::spawn(async move {
                let _ = stdin.write_all(&bytes).await;
            })),
            _ => None,
        };
        // The VM stops the script at `timeout`; this is the backstop for a hung connection.
        let backstop = timeout + Duration::from_secs(15);
        let waited = tokio::time::timeout(backstop, child.wait_with_output()).await;
        if let Some(feeder) = feeder {
            feeder.abort();
        }
        let output = waited
            .map_err(|_| RunnerError::Timeout(timeout.as_secs()))?
            .map_err(|source| RunnerError::Io {
                context: "waiting for ssh",
                source,
            })?;
        self.answer(
            output.status.code().unwrap_or(-1),
            &output.stdout,
            &output.stderr,
            timeout,
        )
    }

    /// Run `remote` in the shared connection's shell (started on first use). `None`: the shell
    /// is busy with another call or could not start the command, which then runs on an exec
    /// channel of its own.
    async fn run_in_shell(
        &self,
        shared: &SharedConnection,
        remote: &str,
        timeout: Duration,
    ) -> Option<Result<Output>> {
        let mut slot = shared.shell.try_lock().ok()?;
        if slot.disabled {
            return None;
        }
        // Out of the slot while the call runs: a call abandoned by its caller drops (and so
        // kills) the shell with it, and the next call never reads an answer that was not its.
        let alive = slot.shell.as_mut().is_some_and(Shell::is_alive);
        let (mut shell, fresh) = if let Some(shell) = slot.shell.take().filter(|_| alive) {
            (shell, false)
        } else {
            let mut command = self
                .ssh_command(session::REMOTE_SHELL.to_owned(), true, Some(shared))
                .ok()?;
            // The command's own stderr goes to a file; what the shell says is not read.
            command.stderr(Stdio::null());
            (
                Shell::start(command.spawn().ok()?, session::new_marker()).await?,
                true,
            )
        };
        // The VM stops the command at `timeout`; this is the backstop for a hung connection.
        let backstop = timeout + Duration::from_secs(15);
        let Ok(answer) = tokio::time::timeout(backstop, shell.call(remote)).await else {
            return Some(Err(RunnerError::Timeout(timeout.as_secs())));
        };
        match answer {
            Answer::Done {
                code,
                stdout,
                stderr,
            } => {
                slot.shell = Some(shell);
                Some(self.answer(code, &stdout, &stderr, timeout))
            }
            Answer::NotStarted => {
                // A shell that never answered (the host refuses the key, say) is not tried
                // again for this runner: each call would cost a second failed login.
                slot.disabled = fresh;
                None
            }
            Answer::Lost => Some(Err(RunnerError::Connect {
                host: self.config.ssh_host.clone(),
                detail:
                    "the connection ended while the command ran in the runner (it may have run)"
                        .to_owned(),
            })),
            Answer::TooLarge => Some(Err(RunnerError::Io {
                context: "reading a command's output from the runner",
                source: std::io::Error::other(format!(
                    "more than {} MiB of output",
                    session::MAX_OUTPUT / (1024 * 1024)
                )),
            })),
        }
    }

    /// A command's exit code and output as the caller sees them: failures of the chain and
    /// the VM's timeout told apart from the command's own answer.
    fn answer(&self, code: i32, stdout: &[u8], stderr: &[u8], timeout: Duration) -> Result<Output> {
        let stdout = String::from_utf8_lossy(stdout).into_owned();
        let stderr = String::from_utf8_lossy(stderr).into_owned();
        self.classify(code, &stderr)?;
        if code == remote::TIMED_OUT {
            return Err(RunnerError::Timeout(timeout.as_secs()));
        }
        Ok(Output {
            code,
            stdout,
            stderr,
        })
    }

    /// Run a shell command line in the runner, as it is (the runner's bash parses it).
    pub async fn run(
        &self,
        command: &str,
        input: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Output> {
        self.run_script(command, input, timeout).await
    }

    /// `kubectl <args>` in the runner, each argument arriving exactly as given.
    pub async fn kubectl<S: AsRef<str>>(
        &self,
        args: &[S],
        input: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Output> {
        self.run_script(&remote::kubectl_script(args)?, input, timeout)
            .await
    }

    /// One HTTP request with curl in the runner. A non-2xx status is an answer, not an error;
    /// curl failing to get any answer (refused, DNS, TLS) is.
    pub async fn curl(&self, request: &CurlRequest) -> Result<CurlResponse> {
        let config = remote::curl_config(request)?;
        // Room for ssh and incus on top of curl's own limit.
        let timeout = Duration::from_secs(request.timeout_secs.max(1) + 30);
        let output = self
            .run_script(
                &remote::curl_script(request),
                Some(config.into_bytes()),
                timeout,
            )
            .await?;
        if output.code != 0 {
            return Err(RunnerError::Failed {
                what: "curl",
                code: output.code,
                stderr: output.stderr.trim().to_owned(),
            });
        }
        remote::parse_curl_output(&output.stdout)
    }

    /// Start `kubectl port-forward` in the runner; the port is ON THE RUNNER (reach it with
    /// [`Runner::curl`] or [`Runner::run`]). The forward lives as long as the returned value's
    /// ssh session: [`PortForward::close`] ends it and waits; dropping it ends it too.
    pub async fn port_forward(
        &self,
        namespace: &str,
        pod: &str,
        local_port: u16,
        remote_port: u16,
    ) -> Result<PortForward> {
        use tokio::io::AsyncBufReadExt as _;
        for (what, value) in [("namespace", namespace), ("pod", pod)] {
            if value.trim().is_empty() {
                return Err(RunnerError::Invalid {
                    what,
                    reason: "it is empty".to_owned(),
                });
            }
        }
        if local_port == 0 || remote_port == 0 {
            return Err(RunnerError::Invalid {
                what: "port",
                reason: "ports are 1 to 65535".to_owned(),
            });
        }
        let script = remote::port_forward_script(namespace, pod, local_port, remote_port)?;
        // A connection of its own: the forward ends with this session.
        let mut child = self.ssh_via(remote::in_vm(&self.config.vm, &script)?, true, None)?;
        let stdout = child.stdout.take().ok_or_else(|| RunnerError::Io {
            context: "reading ssh's output",
            source: std::io::Error::other("no stdout pipe"),
        })?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_mins(1), async {
            while let Some(line) = lines.next_line().await? {
                if line.trim() == remote::READY {
                    return Ok(true);
                }
            }
            Ok::<_, std::io::Error>(false)
        })
        .await;
        match ready {
            Ok(Ok(true)) => Ok(PortForward {
                child,
                port: local_port,
            }),
            Ok(Ok(false)) => {
                // The script ended before forwarding: kubectl's own message is on stderr.
                let output = child
                    .wait_with_output()
                    .await
                    .map_err(|source| RunnerError::Io {
                        context: "waiting for ssh",
                        source,
                    })?;
                let code = output.status.code().unwrap_or(-1);
                let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
                self.classify(code, &stderr)?;
                Err(RunnerError::Failed {
                    what: "kubectl port-forward",
                    code,
                    stderr: stderr.trim().to_owned(),
                })
            }
            Ok(Err(source)) => Err(RunnerError::Io {
                context: "reading ssh's output",
                source,
            }),
            Err(_) => Err(RunnerError::Timeout(60)),
        }
    }
}

/// A `kubectl port-forward` running in the runner, for as long as this value's ssh session.
#[derive(Debug)]
#[must_use = "the forward ends when this is dropped"]
pub struct PortForward {
    child: tokio::process::Child,
    port: u16,
}

impl PortForward {
    /// The forwarded port on the runner (127.0.0.1 there).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// End the session: the script in the runner reads end-of-input, stops kubectl and removes
    /// its log; this waits (bounded) for that.
    pub async fn close(mut self) -> Result<()> {
        drop(self.child.stdin.take());
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(RunnerError::Failed {
                what: "stopping kubectl port-forward",
                code: status.code().unwrap_or(-1),
                stderr: String::new(),
            }),
            Ok(Err(source)) => Err(RunnerError::Io {
                context: "waiting for ssh",
                source,
            }),
            // ssh is killed when `self` drops here, which ends the session anyway.
            Err(_) => Err(RunnerError::Timeout(30)),
        }
    }
}
