//! Run kubectl inside the runner VM (ssh -> incus exec -> bash -lc), using only
//! `flyte-runner-proxy`. The runner comes from `DAP_RUNNER_SSH_HOST`, `DAP_RUNNER_SSH_KEY` and
//! `DAP_RUNNER_VM`; `--print` shows the command the management host would run, and connects
//! nowhere.
//!
//!     cargo run -p flyte-examples --example runner_kubectl -- [--print] KUBECTL_ARGS...
#![allow(clippy::print_stdout)]
// Tests, examples and tools start processes and read their settings from the environment directly.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use flyte_runner_proxy::remote::{in_vm, kubectl_script};
use flyte_runner_proxy::{Runner, RunnerConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let print_only = args.first().is_some_and(|a| a == "--print");
    if print_only {
        args.remove(0);
    }
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    let config = RunnerConfig::resolve(|k| std::env::var(k).ok(), |_| None, home.as_ref());
    if print_only {
        println!(
            "ssh {} {}",
            config.ssh_host,
            in_vm(&config.vm, &kubectl_script(&args)?)?
        );
        return Ok(());
    }
    let output = tokio::runtime::Runtime::new()?.block_on(Runner::new(config).kubectl(
        &args,
        None,
        Duration::from_mins(1),
    ))?;
    print!("{}", output.stdout);
    eprint!("{}", output.stderr);
    std::process::exit(output.code);
}
