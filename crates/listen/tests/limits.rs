//! The listener's limits, on real loopback sockets.

// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use flyte_listen::{GuardedListener, Limits};
use tokio::net::{TcpListener, TcpStream};

async fn listener(max_connections: usize) -> GuardedListener {
    let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
    GuardedListener::new(
        inner,
        Limits {
            max_connections,
            max_per_peer: 1,
        },
    )
}

#[tokio::test]
async fn a_full_listener_waits_and_a_dropped_permit_frees_a_slot() {
    let listener = listener(2).await;
    let address = listener.local_addr().unwrap();
    let _clients: Vec<TcpStream> = {
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(address).await.unwrap());
        }
        clients
    };
    let (_a, _, first) = listener.accept().await;
    let (_b, _, _second) = listener.accept().await;
    assert_eq!(listener.open_connections(), 2);
    // The third waits in the backlog: accept does not finish while the listener is full.
    let mut third = std::pin::pin!(listener.accept());
    assert!(futures_poll_once(third.as_mut()).await.is_none());
    drop(first);
    let (_c, peer, _third) = third.await;
    assert!(peer.ip().is_loopback());
    assert_eq!(listener.open_connections(), 2);
}

#[tokio::test]
async fn loopback_peers_are_not_cut_to_the_per_peer_share() {
    // max_per_peer is 1, but every local client shares 127.0.0.1: the second is still served.
    let listener = listener(4).await;
    let address = listener.local_addr().unwrap();
    let _one = TcpStream::connect(address).await.unwrap();
    let _two = TcpStream::connect(address).await.unwrap();
    let _a = listener.accept().await;
    let _b = listener.accept().await;
    assert_eq!(listener.open_connections(), 2);
}

/// Poll `future` once: its output if it is ready now.
async fn futures_poll_once<F: Future + Unpin>(future: F) -> Option<F::Output> {
    let mut future = future;
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

#[test]
fn the_budget_is_shared_out_and_never_zero() {
    let quarter = Limits::share_of_budget(0.25, 512);
    assert!(quarter.max_connections >= 4 && quarter.max_connections <= 512);
    assert!(quarter.max_per_peer < quarter.max_connections);
    assert_eq!(Limits::share_of_budget(0.0, 512).max_connections, 4);
}
