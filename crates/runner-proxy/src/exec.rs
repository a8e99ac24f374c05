//! The thin async driver: runs the builders' scripts with the system OpenSSH client.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

use crate::remote::{self, CurlRequest, CurlResponse};
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
}

/// What `incus exec` says while the VM's agent has not connected yet.
const AGENT_NOT_RUNNING: &str = "VM agent isn't currently running";

impl Runner {
    pub fn new(config: RunnerConfig) -> Self {
        Self { config }
    }

    pub fn config(&self) -> &RunnerConfig {
        &self.config
    }

    /// Run `script` in the runner's login shell, feeding `input` to its stdin.
    async fn run_script(
        &self,
        script: &str,
        input: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Output> {
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
        let remote = remote::in_vm(&self.config.vm, script);
        tracing::debug!(host = %self.config.ssh_host, vm = %self.config.vm, %script, "runner");
        let mut command = tokio::process::Command::new("ssh");
        command
            .arg("-i")
            .arg(&self.config.ssh_key)
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-T"])
            .args(&self.config.ssh_options)
            .arg("--")
            .arg(&self.config.ssh_host)
            .arg(remote)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Ours to stop: a timeout (or the caller giving up) kills ssh, which ends the session.
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(RunnerError::SshMissing)?;
        // Stdin has its own task so a command that never reads it, or echoes it, cannot block us.
        let feeder = match (input, child.stdin.take()) {
            (Some(bytes), Some(mut stdin)) => Some(tokio::spawn(async move {
                let _ = stdin.write_all(&bytes).await;
            })),
            _ => None,
        };
        let waited = tokio::time::timeout(timeout, child.wait_with_output()).await;
        if let Some(feeder) = feeder {
            feeder.abort();
        }
        let output = waited
            .map_err(|_| RunnerError::Timeout(timeout.as_secs()))?
            .map_err(|source| RunnerError::Io {
                context: "waiting for ssh",
                source,
            })?;
        let code = output.status.code().unwrap_or(-1);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if stderr.contains(AGENT_NOT_RUNNING) {
            return Err(RunnerError::AgentNotReady {
                vm: self.config.vm.clone(),
            });
        }
        // 255 is ssh's own failure (connection, authentication, host key), not the command's.
        if code == 255 {
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
        self.run_script(&remote::kubectl_script(args), input, timeout)
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
    /// [`Runner::curl`] or [`Runner::run`]). Call [`PortForward::close`] to stop it.
    pub async fn port_forward(
        &self,
        namespace: &str,
        pod: &str,
        local_port: u16,
        remote_port: u16,
    ) -> Result<PortForward> {
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
        let script = remote::port_forward_script(namespace, pod, local_port, remote_port);
        let output = self
            .run_script(&script, None, Duration::from_mins(1))
            .await?;
        let started = (output.code == 0)
            .then(|| remote::parse_ready(&output.stdout))
            .flatten();
        let Some((pid, log)) = started else {
            return Err(RunnerError::Failed {
                what: "kubectl port-forward",
                code: output.code,
                stderr: output.stderr.trim().to_owned(),
            });
        };
        Ok(PortForward {
            runner: self.clone(),
            pid,
            log,
            port: local_port,
        })
    }
}

/// A `kubectl port-forward` running in the runner.
#[derive(Debug)]
#[must_use = "a port-forward keeps running in the runner until it is closed"]
pub struct PortForward {
    runner: Runner,
    pid: u32,
    log: String,
    port: u16,
}

impl PortForward {
    /// The forwarded port on the runner (127.0.0.1 there).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pid of kubectl in the runner.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Stop kubectl in the runner and remove its log.
    pub async fn close(self) -> Result<()> {
        self.runner
            .run_script(
                &remote::stop_script(self.pid, &self.log),
                None,
                Duration::from_secs(30),
            )
            .await
            .map(|_| ())
    }
}
