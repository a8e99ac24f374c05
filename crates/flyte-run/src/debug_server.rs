//! `flyte-run debug-server`: the in-task side of SSH debugging.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use flyte_debug_server::settings::{DEFAULT_PORT, Settings};
use flyte_debug_server::{DebugServer, READY_MESSAGE};

#[derive(Debug, clap::Args)]
pub(crate) struct DebugServerArgs {
    /// The port the bridge listens on (the cluster routes debug traffic to 6060).
    #[arg(long, default_value_t = DEFAULT_PORT)]
    port: u16,
    /// The address to listen on. Default: 127.0.0.1, or 0.0.0.0 inside a Kubernetes pod
    /// (`KUBERNETES_SERVICE_HOST` set), where the cluster's ingress must reach it.
    #[arg(long, value_name = "ADDR")]
    bind: Option<IpAddr>,
    /// Where the host key is kept (default: ~/.flyte-ssh-debug, as Flyte's server).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

pub(crate) fn run(args: &DebugServerArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_env(crate::env_vars::get)?;
    let home = crate::paths::home_dir()?;
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| home.join(".flyte-ssh-debug"));
    let workdir = std::env::current_dir().context("cannot read the working directory")?;
    let bind = args.bind.unwrap_or(
        if crate::env_vars::get_os(crate::env_vars::KUBERNETES_SERVICE_HOST).is_some() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        },
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // The sessions' process groups end with this server, even if it is SIGKILLed.
        let groups = flyte_reaper::Groups::with_watchdog()?;
        let server = DebugServer::new(settings, &state_dir, workdir)?.with_process_groups(groups);
        let (listener, addr) = DebugServer::bind(SocketAddr::new(bind, args.port)).await?;
        // The ready line: launchers wait for it, and it carries the key to pin.
        println!(
            "{READY_MESSAGE} on {addr} (host key {}, public key in {})",
            server.host_key_fingerprint(),
            state_dir
                .join(format!("{}.pub", flyte_debug_server::HOST_KEY_FILE))
                .display()
        );
        server.serve(listener).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
