//! Serve Flyte's control-plane API from a state directory on this machine, using only
//! `flyte-sandbox` (and tokio); Flyte's CLI reads the config.yaml it writes:
//!
//!     cargo run -p flyte-examples --example local_sandbox -- /tmp/my-sandbox
//!     flyte --config /tmp/my-sandbox/flyte-config.yaml get project
#![allow(clippy::print_stdout)]

use flyte_sandbox::Sandbox;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let state = std::env::args()
        .nth(1)
        .ok_or("usage: local_sandbox STATE_DIR")?;
    let state = std::path::Path::new(&state);
    // Loopback only: the sandbox is its owner's.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let sandbox = Sandbox::open(state, &endpoint)?;
    let stopper = sandbox.process_stopper();
    println!("serving {endpoint}");
    println!(
        "owner's credential (0600): {}",
        Sandbox::credential_path(state).display()
    );
    tokio::select! {
        served = sandbox.serve(listener) => served?,
        _ = tokio::signal::ctrl_c() => {
            let ended = stopper.stop_all(std::time::Duration::from_secs(5));
            println!("ended {ended} running task(s)");
        }
    }
    Ok(())
}
