//! The application context every command and script module works in: the home directory, the
//! control plane chosen on the command line, dry-run, the wall-clock deadline and the async
//! runtime library calls run on.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The longest wait any option may ask for (a week): longer is a typo, and would overflow
/// `Instant` arithmetic long before it mattered.
pub(crate) const MAX_WAIT: Duration = Duration::from_hours(7 * 24);

#[derive(Debug)]
pub(crate) struct AppContext {
    pub(crate) home: PathBuf,
    /// `--endpoint`, for everything that talks to a control plane.
    pub(crate) endpoint: Option<String>,
    /// `--dry-run`: show what would change instead of changing it.
    pub(crate) dry_run: bool,
    /// `--timeout`: the wall-clock limit, counted from `started`.
    pub(crate) timeout: Option<Duration>,
    pub(crate) started: Instant,
    /// The configuration in effect (Flyte's file, flyte-run.json, the environment,
    /// `--endpoint`), read on first use and then kept: one command reads its files once.
    pub(crate) config: std::sync::OnceLock<Result<flyte_config::Resolved, String>>,
    /// The async runtime library calls run on, created on first use; callers run on the main
    /// thread and block on it.
    pub(crate) runtime: std::sync::OnceLock<tokio::runtime::Runtime>,
    /// The runner, with the SSH connection its calls share, made on first use; dropping the
    /// context stops that connection.
    pub(crate) runner: std::sync::Mutex<Option<flyte_runner_proxy::Runner>>,
    /// The app client of `apps::`, made on first use.
    pub(crate) apps: std::sync::Mutex<Option<flyte_operator::AppClient>>,
}

impl AppContext {
    pub(crate) fn new(home: PathBuf, endpoint: Option<String>) -> Self {
        Self {
            home,
            endpoint,
            dry_run: false,
            timeout: None,
            started: Instant::now(),
            config: std::sync::OnceLock::new(),
            runner: std::sync::Mutex::default(),
            apps: std::sync::Mutex::default(),
            runtime: std::sync::OnceLock::new(),
        }
    }

    /// `wait` cut to what is left of `--timeout`, so a blocking call (a wait, a sleep, a remote
    /// command) cannot outlive the wall-clock limit; a script's engine then stops it with the
    /// timeout's own message.
    pub(crate) fn bound(&self, wait: Duration) -> Duration {
        let wait = wait.min(MAX_WAIT);
        match self.timeout {
            Some(limit) => wait.min(limit.saturating_sub(self.started.elapsed())),
            None => wait,
        }
    }

    /// The configuration in effect (see [`crate::config::resolve`]).
    pub(crate) fn config(&self) -> Result<&flyte_config::Resolved, String> {
        self.config
            .get_or_init(|| crate::config::resolve(&self.home, self.endpoint.as_deref()))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Where the endpoint in effect comes from (the sandbox's state is looked at each time: it
    /// may have been started meanwhile).
    pub(crate) fn endpoint_source(&self) -> Result<crate::config::EndpointSource, String> {
        crate::config::endpoint_source(self.config()?, &self.home)
    }

    /// The project and domain a run goes to when a call names none.
    pub(crate) fn run_defaults(&self) -> flyte_debug_client::RunScope {
        crate::config::run_defaults(self.config().ok())
    }

    /// The `~/.flyte` layout under this context's home.
    pub(crate) fn layout(&self) -> flyte_home::FlyteHome {
        flyte_home::FlyteHome::new(&self.home)
    }

    /// Run an async library call to completion while `spinner` shows the waits it reports.
    pub(crate) fn block_on_waiting<F: std::future::Future>(
        &self,
        spinner: &crate::progress::Spinner,
        future: F,
    ) -> F::Output {
        self.block_on(spinner.drive(future))
    }

    /// Run an async library call to completion.
    pub(crate) fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime
            .get_or_init(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("the OS can start two threads")
            })
            .block_on(future)
    }

    /// The runner: `DAP_RUNNER_*`, else the `runner` section of ~/.flyte/flyte-run.json, else
    /// the defaults; resolved on first use and kept, with the one SSH connection its calls share
    /// for the whole playbook (or command): the first call opens it, the context's end closes it.
    pub(crate) fn runner(&self) -> Result<flyte_runner_proxy::Runner, String> {
        let mut cached = self
            .runner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(runner) = cached.as_ref() {
            return Ok(runner.clone());
        }
        let settings = crate::config::load(&self.home)?.runner.unwrap_or_default();
        let file = |key: &str| match key {
            flyte_runner_proxy::ENV_SSH_HOST => settings.ssh_host.clone(),
            flyte_runner_proxy::ENV_SSH_KEY => settings.ssh_key.clone(),
            flyte_runner_proxy::ENV_VM => settings.vm.clone(),
            _ => None,
        };
        let mut config =
            flyte_runner_proxy::RunnerConfig::resolve(crate::env_vars::get, file, &self.home);
        if let Some(ssh_config) = &settings.ssh_config {
            config.ssh_options = vec!["-F".to_owned(), ssh_config.clone()];
        }
        let runner = flyte_runner_proxy::Runner::shared(config).map_err(|e| e.to_string())?;
        *cached = Some(runner.clone());
        Ok(runner)
    }
}

/// A command-line duration: a positive number of seconds (fractions allowed).
pub(crate) fn parse_seconds(raw: &str) -> Result<Duration, String> {
    let secs: f64 = raw
        .parse()
        .map_err(|_| format!("{raw:?} is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("{raw:?}: give a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}
