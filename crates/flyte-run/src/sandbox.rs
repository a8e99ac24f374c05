//! `flyte-run sandbox start|stop|status|serve`: the embedded control plane as a local service.
//!
//! Files under `~/.flyte/sandbox/`: `sandbox.pid` and `endpoint` (written by the serving process
//! once it listens, removed when it stops), `sandbox.log` (its output when started in the
//! background), and the sandbox's own state (`sandbox.db`, `signing.key`, `credential`).

use flyte_home::SandboxDir;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long `start` waits for the background sandbox to listen, and `stop` for it to exit.
const WAIT_LIMIT: Duration = Duration::from_secs(15);
/// Poll interval for those waits: a process we do not control has no readiness callback.
const POLL: Duration = Duration::from_millis(50);
/// How long running actions get to end after SIGTERM when the sandbox stops, before SIGKILL.
const ACTION_GRACE: Duration = Duration::from_secs(3);
/// `status` exit code when no sandbox runs (as `systemctl status` and LSB init scripts say).
const NOT_RUNNING: u8 = 3;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum SandboxCommand {
    /// Start the sandbox in the background (does nothing if it already runs) and print its endpoint.
    Start(ServeArgs),
    /// Stop the background sandbox (by its pid; does nothing if none runs).
    Stop,
    /// Say whether the sandbox runs: endpoint, pid, state directory. Exit 3 when it does not.
    Status,
    /// Run the sandbox in the foreground until interrupted.
    Serve(ServeArgs),
    /// Approve a device's login (Flyte's `DeviceFlow`) to this machine's sandbox: CODE is the
    /// code the device shows. Its tokens act for the sandbox's own credential.
    Approve {
        /// The user code the device printed, e.g. BCDF-GHJK (case and dash do not matter).
        code: String,
        /// Refuse the login instead.
        #[arg(long)]
        deny: bool,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServeArgs {
    /// The port to listen on (0 picks a free one; clients find it in the endpoint file).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The address to listen on. Anything but loopback exposes the sandbox to the network.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// Seconds a connection may take to send a request head (or sit idle between requests)
    /// before it is closed.
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = crate::context::parse_seconds)]
    header_timeout: Duration,
}

impl Default for ServeArgs {
    /// What `flyte-run sandbox start` does without options: a free port on loopback.
    fn default() -> Self {
        Self {
            port: 0,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            header_timeout: flyte_sandbox::DEFAULT_HEADER_TIMEOUT,
        }
    }
}

/// The running sandbox, if any: its pid (from the lock it holds, so never a stale number the
/// system has since given to another process) and the endpoint it announced.
fn running(dir: &SandboxDir) -> Option<(u32, String)> {
    dir.running().map(|s| (s.pid, s.endpoint))
}

/// The lock `start` holds while it checks for a sandbox and starts one, so concurrent starts
/// queue: the first starts the sandbox, the others find it running.
#[allow(
    clippy::disallowed_methods,
    reason = "a lock file: opened in place (never replaced, or the lock would split), 0600 at open"
)]
fn start_lock(dir: &SandboxDir) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.start_lock();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // Held by another `start` for at most its bounded wait for the sandbox to listen.
    file.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(file)
}

pub(crate) fn run(command: &SandboxCommand) -> anyhow::Result<ExitCode> {
    let home = crate::paths::home_dir()?;
    let dir = flyte_home::FlyteHome::new(home).sandbox();
    match command {
        SandboxCommand::Serve(args) => serve(&dir, args),
        SandboxCommand::Start(args) => {
            let (pid, endpoint, fresh) = start(&dir, args)?;
            if fresh {
                println!(
                    "the sandbox runs at {endpoint} (pid {pid}); log: {}",
                    dir.log_file().display()
                );
            } else {
                println!("the sandbox already runs at {endpoint} (pid {pid})");
            }
            println!(
                "Flyte's own CLI and SDK use it with: flyte --config {} get run",
                dir.flyte_config().display()
            );
            Ok(ExitCode::SUCCESS)
        }
        SandboxCommand::Stop => stop(&dir),
        SandboxCommand::Approve { code, deny } => approve(&dir, code, !deny),
        SandboxCommand::Status => Ok(status(&dir)),
    }
}

/// `sandbox approve`: tell the running sandbox, with its own credential, what to do with a
/// waiting device login.
fn approve(dir: &SandboxDir, code: &str, approve: bool) -> anyhow::Result<ExitCode> {
    let Some((_, endpoint)) = running(dir) else {
        bail!(
            "no sandbox runs here ({}); nothing waits for approval",
            dir.path().display()
        );
    };
    let credential = dir.credential();
    let text = std::fs::read_to_string(&credential).with_context(|| {
        format!(
            "cannot read the sandbox's credential {}",
            credential.display()
        )
    })?;
    let key =
        flyte_auth::ApiKey::decode(&text).with_context(|| format!("{}", credential.display()))?;
    let url = format!(
        "{}{}",
        endpoint.trim_end_matches('/'),
        flyte_sandbox::DEVICE_DECISION_PATH
    );
    let decision = if approve { "approve" } else { "deny" };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (status, body) = runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(&url)
            .basic_auth(&key.client_id, Some(key.client_secret.expose()))
            .form(&[("user_code", code), ("decision", decision)])
            .timeout(WAIT_LIMIT)
            .send()
            .await
            .with_context(|| format!("cannot reach the sandbox at {endpoint}"))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        anyhow::Ok((status, body))
    })?;
    if status.is_success() {
        let done = if approve { "approved" } else { "denied" };
        println!("{done} the device login {}", code.trim());
        return Ok(ExitCode::SUCCESS);
    }
    let described = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error_description"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("HTTP {status}"));
    bail!("the sandbox refused: {described}")
}

fn serve(dir: &SandboxDir, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.bind, args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.bind, args.port))?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let sandbox = flyte_sandbox::Sandbox::open(dir.path(), &endpoint)?
            .with_header_timeout(args.header_timeout);
        // Announce only once listening (and holding the directory's lock), so a client that
        // reads the endpoint can connect.
        let pid = std::process::id().to_string();
        flyte_fs::replace(&dir.pid_file(), pid.as_bytes(), 0o600)?;
        flyte_fs::replace(&dir.endpoint_file(), endpoint.as_bytes(), 0o600)?;
        let ingress = tokio::net::TcpListener::bind(SocketAddr::new(args.bind, 0))
            .await
            .with_context(|| format!("cannot listen on {} for the ingress", args.bind))?;
        println!(
            "flyte sandbox serving on {endpoint}, debug ingress on http://{} (state in {})",
            ingress.local_addr()?,
            dir.path().display()
        );
        let stopper = sandbox.process_stopper();
        let served = tokio::select! {
            result = sandbox.serve_with_ingress(listener, ingress) => result.context("the sandbox server failed"),
            () = crate::tunnel::interrupted() => Ok(()),
        };
        // The actions' processes are ours: they end with the sandbox, whichever way it ends.
        let ended = tokio::task::block_in_place(|| stopper.stop_all(ACTION_GRACE));
        if ended > 0 {
            eprintln!("stopped {ended} running action(s)");
        }
        served?;
        // Withdraw the announcement, unless another sandbox has replaced it meanwhile.
        if std::fs::read_to_string(dir.pid_file()).is_ok_and(|p| p.trim() == pid) {
            let _ = std::fs::remove_file(dir.endpoint_file());
            let _ = std::fs::remove_file(dir.pid_file());
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The running sandbox, started in the background first if none runs: (pid, endpoint, whether
/// this call started it).
pub(crate) fn start(dir: &SandboxDir, args: &ServeArgs) -> anyhow::Result<(u32, String, bool)> {
    if let Some((pid, endpoint)) = running(dir) {
        return Ok((pid, endpoint, false));
    }
    crate::paths::private_dir(dir.path())?;
    let _queue = start_lock(dir)?;
    // Another start may have finished while this one waited for the lock.
    if let Some((pid, endpoint)) = running(dir) {
        return Ok((pid, endpoint, false));
    }
    // Forget a stale announcement from a sandbox that died without cleaning up.
    let _ = std::fs::remove_file(dir.endpoint_file());
    let log_path = dir.log_file();
    #[allow(
        clippy::disallowed_methods,
        reason = "the sandbox's log, appended to while it serves: opened in place, 0600 at open"
    )]
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the flyte-run binary")?;
    // `sandbox start` runs this binary's `sandbox serve` in the background.
    #[allow(clippy::disallowed_methods)]
    let mut child = std::process::Command::new(exe)
        .args([
            "sandbox",
            "serve",
            "--port",
            &args.port.to_string(),
            "--bind",
            &args.bind.to_string(),
            "--header-timeout",
            &args.header_timeout.as_secs_f64().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C in this terminal does not reach it.
        .process_group(0)
        .spawn()
        .context("cannot start the sandbox")?;
    let started = Instant::now();
    loop {
        if let Some((pid, endpoint)) = running(dir).filter(|(pid, _)| *pid == child.id()) {
            return Ok((pid, endpoint, true));
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the sandbox exited at start ({status}); see {}",
                log_path.display()
            );
        }
        if started.elapsed() > WAIT_LIMIT {
            let _ = child.kill();
            bail!(
                "the sandbox did not start within {} s; see {}",
                WAIT_LIMIT.as_secs(),
                log_path.display()
            );
        }
        std::thread::sleep(POLL);
    }
}

fn stop(dir: &SandboxDir) -> anyhow::Result<ExitCode> {
    let Some((pid, _)) = running(dir) else {
        println!("the sandbox is not running");
        let _ = std::fs::remove_file(dir.endpoint_file());
        let _ = std::fs::remove_file(dir.pid_file());
        return Ok(ExitCode::SUCCESS);
    };
    let target = Pid::from_raw(i32::try_from(pid).context("the sandbox's pid is out of range")?);
    kill(target, Signal::SIGTERM)
        .with_context(|| format!("cannot signal the sandbox (pid {pid})"))?;
    let started = Instant::now();
    while kill(target, None).is_ok() {
        if started.elapsed() > WAIT_LIMIT {
            let _ = kill(target, Signal::SIGKILL);
            break;
        }
        std::thread::sleep(POLL);
    }
    let _ = std::fs::remove_file(dir.endpoint_file());
    let _ = std::fs::remove_file(dir.pid_file());
    println!("stopped the sandbox (pid {pid})");
    Ok(ExitCode::SUCCESS)
}

fn status(dir: &SandboxDir) -> ExitCode {
    if let Some((pid, endpoint)) = running(dir) {
        println!(
            "the sandbox runs at {endpoint} (pid {pid}); state in {}",
            dir.path().display()
        );
        ExitCode::SUCCESS
    } else {
        println!("the sandbox is not running (start it with `flyte-run sandbox start`)");
        ExitCode::from(NOT_RUNNING)
    }
}
