//! The in-task SSH server behind its WebSocket bridge, using only `flyte-debug-server` (and
//! tokio); one public key may log in:
//!
//!     cargo run -p flyte-examples --example debug_server -- ~/.ssh/id_ed25519.pub /tmp/debug-state
//!     # put the "pin it with" line in ./known_hosts, then:
//!     ssh -o ProxyCommand="flyte-run tunnel ws://127.0.0.1:PORT/" -o UserKnownHostsFile=./known_hosts you@task
#![allow(clippy::print_stdout)]

use std::time::Duration;

use flyte_debug_server::{DebugServer, Settings};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: debug_server AUTHORIZED_KEY.pub STATE_DIR";
    let key_file = args.next().ok_or(usage)?;
    let state = std::path::PathBuf::from(args.next().ok_or(usage)?);
    let settings = Settings {
        authorized_key: ssh_key::PublicKey::read_openssh_file(std::path::Path::new(&key_file))?,
        user: None,
        max_uptime: Duration::from_hours(1),
        // Tunnel sessions that lose their network wait this long for the client to come back.
        resume_grace: Some(Duration::from_mins(15)),
    };
    let server = DebugServer::new(settings, &state, std::env::current_dir()?)?;
    let (listener, addr) = DebugServer::bind(([127, 0, 0, 1], 0).into()).await?;
    println!("serving ws://{addr}/ for an hour");
    println!("host key: {}", server.host_key_fingerprint());
    println!("pin it with: task {}", server.host_public_key()?.trim());
    server.serve(listener).await?;
    Ok(())
}
