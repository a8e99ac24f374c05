//! `flyte-run`: the command line and the Rhai host. See `flyte-run --help`.
#![allow(clippy::print_stdout)] // This binary owns stdout: results, the ready line, dry-run diffs.

mod cli;
mod config;
mod context;
mod control_plane;
mod debug_command;
mod debug_server;
mod doctor;
mod env_vars;
mod operator;
mod paths;
mod progress;
mod sandbox;
mod script;
mod tunnel;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging(cli.default_log());
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // One clear line (plus causes), never a backtrace dump.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Counts the bytes the process holds, so a script's memory budget can be enforced before the
/// system refuses an allocation (which aborts the process).
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// Bytes allocated now, by the whole process.
pub(crate) fn allocated_bytes() -> usize {
    ALLOCATOR.allocated()
}

/// Libraries we use that log raw requests, headers included, at trace level (tungstenite's
/// client handshake logs the whole upgrade request, `Authorization: Bearer ...` with it). Their
/// trace lines are dropped whatever `FLYTE_RUN_LOG` asks for: no log level shows a secret.
const RAW_REQUEST_LOGGERS: &[&str] = &["tungstenite", "tokio_tungstenite"];

/// Logs go to stderr (stdout is for results), filtered by `FLYTE_RUN_LOG` (default: `default`,
/// warnings for everything but services).
fn init_logging(default: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env(env_vars::FLYTE_RUN_LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let no_raw_requests = tracing_subscriber::filter::filter_fn(|meta| {
        *meta.level() < tracing::Level::TRACE
            || !RAW_REQUEST_LOGGERS
                .iter()
                .any(|target| meta.target().starts_with(target))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(no_raw_requests)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_target(false),
        )
        .init();
}
