//! An echo server that no client can stop by holding every descriptor, using only
//! `flyte-listen` (and tokio):
//!
//!     cargo run -p flyte-examples --example guarded_echo -- 127.0.0.1:7007
//!     nc 127.0.0.1 7007
#![allow(clippy::print_stdout)]

use flyte_listen::{GuardedListener, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .ok_or("usage: guarded_echo LISTEN_ADDR")?;
    let listener = GuardedListener::new(
        tokio::net::TcpListener::bind(&addr).await?,
        Limits::default(),
    );
    let limits = listener.limits();
    println!(
        "echoing on {} (at most {} connections, {} from one remote peer)",
        listener.local_addr()?,
        limits.max_connections,
        limits.max_per_peer
    );
    loop {
        // Never an error: past the limits or out of descriptors, accept waits instead.
        let (mut stream, peer, permit) = listener.accept().await;
        tokio::spawn(async move {
            // The slot is free again when the permit drops with this task.
            let _permit = permit;
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buffer).await {
                if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                    break;
                }
            }
            println!("{peer} left");
        });
    }
}
