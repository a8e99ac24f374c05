//! `flyte-run`: the command line and the Rhai host. See `flyte-run --help`.
#![allow(clippy::print_stdout)] // This binary owns stdout: results, the ready line, dry-run diffs.

mod cli;
mod config;
mod debug;
mod debug_command;
mod debug_server;
mod doctor;
mod env_vars;
mod paths;
mod progress;
mod sandbox;
mod script;
mod tunnel;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging();
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // One clear line (plus causes), never a backtrace dump.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr (stdout is for results), filtered by `FLYTE_RUN_LOG` (default: warnings).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(env_vars::FLYTE_RUN_LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
