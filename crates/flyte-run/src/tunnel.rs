//! `flyte-run tunnel URL`: the ssh `ProxyCommand`.

use std::path::PathBuf;
use std::process::ExitCode;

use flyte_tunnel::client::ClientOptions;
use flyte_tunnel::transport::Transport;
use flyte_tunnel::{TunnelError, exit_code};

#[derive(Debug, clap::Args)]
pub(crate) struct TunnelArgs {
    /// The debug route, `wss://...` (or `ws://` for a local sandbox).
    url: String,
    /// A file of `Name: value` lines to send as HTTP headers (read on every start, so a refreshed
    /// token is picked up without changing the ssh config).
    #[arg(long, value_name = "FILE")]
    http_headers_file: Option<PathBuf>,
    /// A PEM file of CA certificates to trust besides the system's.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Accept any TLS certificate (Flyte's `admin.insecureSkipVerify`).
    #[arg(long)]
    insecure_skip_verify: bool,
    /// Reach the route through this HTTP proxy (`http://host:port`, Flyte's
    /// `admin.httpProxyURL`), with CONNECT.
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
    /// Do not offer resumption: a broken connection ends the SSH session (as with Flyte's own
    /// pod side, which never agrees to it).
    #[arg(long)]
    no_resume: bool,
}

async fn tunnel(args: &TunnelArgs) -> Result<(), TunnelError> {
    let mut options = ClientOptions::new(&args.url);
    if let Some(path) = &args.http_headers_file {
        options.headers = flyte_tunnel::read_headers_file(path)?;
        options.headers_file = Some(path.clone());
    }
    options.resume = !args.no_resume;
    options.transport = Transport {
        extra_ca: args.cacert.clone(),
        skip_verify: args.insecure_skip_verify,
        http_proxy: args.proxy.clone(),
    };
    let run = flyte_tunnel::client::run(
        &options,
        flyte_tunnel::client::stdin_chunks(),
        flyte_tunnel::client::stdout_writer(),
    );
    // ssh sends its ProxyCommand SIGHUP as it exits, right after writing its last bytes (the
    // disconnect) and closing our stdin. Dying then would lose those bytes, and a resumable
    // session would wait out its grace period on the server; so SIGHUP is held (the handler is
    // never awaited) and the closed stdin ends the tunnel as usual, within its drain time.
    let _hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    // An interrupt wins over a tunnel that ended in the same instant (its stdin closing as the
    // signal arrived): the user asked to stop, and the exit code says so.
    tokio::select! {
        biased;
        () = interrupted() => Err(TunnelError::Interrupted),
        result = run => result,
    }
}

pub(crate) async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        // Without signal handlers the default action (termination) still applies.
        _ => std::future::pending().await,
    }
}

/// Run the tunnel and turn its outcome into the documented exit code. Errors are one line on
/// stderr; stdout carries only tunnel bytes.
pub(crate) fn run(args: &TunnelArgs) -> ExitCode {
    // One thread is plenty for two byte pumps, and starts faster than a pool.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flyte-run tunnel: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(tunnel(args));
    // Blocking stdin reads may still be parked in the runtime's pool; do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flyte-run tunnel: {e}");
            let code = u8::try_from(e.exit_code()).unwrap_or(1);
            debug_assert_ne!(e.exit_code(), exit_code::OK);
            ExitCode::from(code)
        }
    }
}
