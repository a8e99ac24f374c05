//! Put a WebSocket bridge in front of any SSH server, using only `flyte-tunnel`:
//!
//!     cargo run -p flyte-examples --example ws_bridge -- 127.0.0.1:22 127.0.0.1:6060
//!     ssh -o ProxyCommand='flyte-run tunnel ws://127.0.0.1:6060/' you@anything
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::Arc;

use flyte_tunnel::bridge::{BridgeConfig, Target};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: ws_bridge SSH_SERVER_ADDR LISTEN_ADDR";
    let target: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let listen: SocketAddr = args.next().ok_or(usage)?.parse()?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("bridging ws://{} to {target}", listener.local_addr()?);
    flyte_tunnel::bridge::serve(listener, Arc::new(BridgeConfig::new(Target::Tcp(target)))).await?;
    Ok(())
}
