//! A shell in a debug task from another Rust program, using only `flyte-debug-client`: launch a
//! task in debug mode on the local sandbox, wait for it, connect (route token, host key pinned),
//! install the Host block in an ssh config file of your choosing, and run a command through the
//! system OpenSSH client.
//!
//!     flyte-run sandbox start
//!     cargo run -p flyte-examples --example debug_session -- "$(command -v flyte-run)" /tmp/dbg.config RUN_NAME
//!     ssh -F /tmp/dbg.config example-debug
#![allow(clippy::print_stdout)]
// Tests, examples and tools start processes and read their settings from the environment directly.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::time::Duration;

use flyte_debug_client::runs::{self, phase_named};
use flyte_debug_client::{
    ConnectOptions, ControlPlane, EditOptions, Endpoint, FlyteHome, NoProgress, PlaneOptions,
    RunScope,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: debug_session FLYTE_RUN_BINARY SSH_CONFIG_FILE RUN_NAME";
    let proxy_program = PathBuf::from(args.next().ok_or(usage)?);
    let ssh_config = PathBuf::from(args.next().ok_or(usage)?);
    let run_name = args.next().ok_or(usage)?;

    // The local sandbox announces its endpoint under ~/.flyte/sandbox; its credential is found
    // there too.
    let home = FlyteHome::new(std::env::var_os("HOME").ok_or("HOME is not set")?);
    let sandbox = home
        .sandbox()
        .running()
        .ok_or("no sandbox runs: start one with `flyte-run sandbox start`")?;
    let endpoint = Endpoint::parse(&sandbox.endpoint, false)?;
    let plane = ControlPlane::open(home, endpoint, PlaneOptions::default()).await?;

    let id = RunScope::default().run_id(&run_name);
    let command = ["sh", "-c", "sleep 600"].map(str::to_owned).to_vec();
    runs::launch_debug(&plane, id.clone(), command, Vec::new()).await?;
    let phase = runs::wait(
        &plane,
        &id,
        flyte_debug_client::DEFAULT_ACTION,
        phase_named("RUNNING")?,
        Duration::from_mins(2),
        Duration::from_millis(200),
        &NoProgress,
    )
    .await?;
    println!("run {run_name} is {phase}");

    let options = ConnectOptions {
        host_alias: "example-debug".to_owned(),
        timeout: Duration::from_mins(2),
        poll_interval: Duration::from_millis(200),
        proxy_program,
        ..ConnectOptions::default()
    };
    let connection = flyte_debug_client::connect(&plane, &run_name, &options, &NoProgress).await?;
    println!(
        "route {} (host key {})",
        connection.wss_url,
        connection
            .host_key_fingerprint
            .as_deref()
            .unwrap_or("learned on first use")
    );
    let edit = EditOptions {
        config_path: ssh_config.clone(),
        dry_run: false,
    };
    flyte_debug_client::ssh::install(&connection.block, connection.host_key.as_deref(), &edit)?;
    let output = flyte_debug_client::ssh::exec(
        &ssh_config,
        &options.host_alias,
        "echo connected as $(id -un)",
        None,
        Duration::from_mins(1),
    )
    .await?;
    print!("{}", output.stdout);
    runs::abort(&plane, &id, "the example is done").await?;
    if output.code == 0 {
        Ok(())
    } else {
        Err(format!("ssh exited with {}: {}", output.code, output.stderr).into())
    }
}
