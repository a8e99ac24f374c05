//! Accepting TCP connections so that no client can stop the server.
//!
//! A server that exits when `accept` fails (`EMFILE` once clients hold every file descriptor)
//! lets one unauthenticated client stop it. [`GuardedListener`] instead:
//!
//! - holds a limited number of connections per listener: past the limit it stops accepting, so
//!   new connections wait in the kernel's backlog and cost the process no descriptor;
//! - holds a limited number per peer address: a remote peer over its share is accepted and
//!   closed at once, so it cannot take every slot from the others. Loopback peers are exempt:
//!   every local client shares one address, so closing "that peer's" connections would close the
//!   legitimate ones with the abusive ones; locally the listener's own limit and the servers'
//!   timeouts are the defence;
//! - treats resource errors (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) as a reason to wait and
//!   retry with a growing pause (10 ms to 1 s), and per-connection errors (`ECONNABORTED`, ...)
//!   as nothing at all. `accept` never returns an error.
//!
//! Each accepted connection comes with a [`Permit`]; the slot is free again when it drops, so a
//! connection task that keeps the permit beside its stream frees the slot however it ends.
//! Limits derive from the descriptor budget ([`fd_budget`]), so several listeners of one
//! process can together never use every descriptor.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The first pause after a resource error; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// The longest pause between accept attempts while resources are exhausted.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How many connections a listener holds at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once on this listener.
    pub max_connections: usize,
    /// Connections open at once from one peer address.
    pub max_per_peer: usize,
}

impl Limits {
    /// `share` of this process's descriptor budget (at most `ceiling`), with a peer allowed
    /// three quarters of it, so one peer always leaves room for another.
    pub fn share_of_budget(share: f64, ceiling: usize) -> Self {
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let max_connections =
            ((fd_budget() as f64 * share.clamp(0.0, 1.0)) as usize).clamp(4, ceiling.max(4));
        Self {
            max_connections,
            max_per_peer: (max_connections * 3 / 4).max(1),
        }
    }
}

impl Default for Limits {
    /// A quarter of the descriptor budget, at most 512 connections.
    fn default() -> Self {
        Self::share_of_budget(0.25, 512)
    }
}

/// The soft limit on open files, raised to the hard limit first (the usual practice of
/// servers: the soft limit is a default for programs that do not manage descriptors).
pub fn fd_budget() -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    let soft = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    usize::try_from(soft).unwrap_or(usize::MAX)
}

/// Open connections per peer address.
type PeerCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A listener that bounds its connections and survives resource exhaustion.
#[derive(Debug)]
pub struct GuardedListener {
    listener: TcpListener,
    limits: Limits,
    slots: Arc<Semaphore>,
    peers: PeerCounts,
}

/// One accepted connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit {
    _slot: OwnedSemaphorePermit,
    peer: IpAddr,
    peers: PeerCounts,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut peers = self
            .peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = peers.get_mut(&self.peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

/// Whether an accept error is about the process's resources (wait, then retry) rather than
/// the one connection (skip it).
fn is_resource_error(error: &std::io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        error.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
    )
}

impl GuardedListener {
    /// Guard `listener` with `limits`.
    pub fn new(listener: TcpListener, limits: Limits) -> Self {
        let limits = Limits {
            max_connections: limits.max_connections.max(1),
            max_per_peer: limits.max_per_peer.max(1),
        };
        Self {
            listener,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            peers: PeerCounts::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.limits.max_connections - self.slots.available_permits()
    }

    /// The next connection within the limits. Waits while the listener is full or the process
    /// is out of resources; never fails.
    pub async fn accept(&self) -> (TcpStream, SocketAddr, Permit) {
        let mut backoff = MIN_BACKOFF;
        loop {
            // The semaphore is never closed, so acquiring only waits.
            let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await else {
                continue;
            };
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) if is_resource_error(&error) => {
                    tracing::warn!(%error, pause_ms = backoff.as_millis(), "cannot accept a connection now; retrying");
                    drop(slot);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
                Err(error) => {
                    tracing::debug!(%error, "a connection failed while being accepted");
                    continue;
                }
            };
            backoff = MIN_BACKOFF;
            let admitted = {
                let mut peers = self
                    .peers
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let count = peers.entry(peer.ip()).or_default();
                if *count < self.limits.max_per_peer || peer.ip().is_loopback() {
                    *count += 1;
                    true
                } else {
                    false
                }
            };
            if !admitted {
                tracing::debug!(%peer, limit = self.limits.max_per_peer, "refusing a connection: the peer holds its share");
                drop(stream);
                continue;
            }
            let permit = Permit {
                _slot: slot,
                peer: peer.ip(),
                peers: Arc::clone(&self.peers),
            };
            return (stream, peer, permit);
        }
    }
}
