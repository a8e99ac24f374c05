//! A TCP proxy on loopback whose network the test controls: cut every connection through it,
//! freeze it (bytes stop flowing both ways, new connections are accepted but carry nothing, like
//! a link that went silent), and thaw it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};

#[derive(Default)]
struct State {
    frozen: bool,
    /// Every live connection's two sockets, to cut them.
    sockets: Vec<TcpStream>,
    /// Connections accepted so far.
    accepted: usize,
    /// Bytes carried so far, both ways.
    forwarded: u64,
    /// Set when the proxy is dropped.
    stopped: bool,
}

struct Shared {
    state: Mutex<State>,
    thawed: Condvar,
    /// Told of every accepted connection and every chunk carried.
    progress: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wait while the link is frozen; false once the proxy stopped.
    fn wait_thawed(&self) -> bool {
        let mut state = self.lock();
        while state.frozen && !state.stopped {
            state = self
                .thawed
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        !state.stopped
    }
}

/// The proxy; stopped (and every connection cut) when dropped.
pub struct CutProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

fn copy(mut from: TcpStream, mut to: TcpStream, shared: &Shared) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !shared.wait_thawed() || to.write_all(&buffer[..n]).is_err() {
            break;
        }
        shared.lock().forwarded += n as u64;
        shared.progress.notify_all();
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl std::fmt::Debug for CutProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CutProxy")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl CutProxy {
    /// A proxy on 127.0.0.1 to `target`.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            thawed: Condvar::new(),
            progress: Condvar::new(),
        });
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if accepting.lock().stopped {
                    return;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
                    client.try_clone(),
                    server.try_clone(),
                    client.try_clone(),
                    server.try_clone(),
                ) else {
                    continue;
                };
                {
                    let mut state = accepting.lock();
                    state.accepted += 1;
                    state.sockets.push(c3);
                    state.sockets.push(s3);
                }
                accepting.progress.notify_all();
                let up = Arc::clone(&accepting);
                std::thread::spawn(move || copy(client, server, &up));
                let down = Arc::clone(&accepting);
                std::thread::spawn(move || copy(s2, c2, &down));
            }
        });
        Self { addr, shared }
    }

    /// Where clients connect.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    #[must_use]
    pub fn accepted(&self) -> usize {
        self.shared.lock().accepted
    }

    /// Bytes carried so far, both ways.
    #[must_use]
    pub fn forwarded(&self) -> u64 {
        self.shared.lock().forwarded
    }

    /// Wait until `done` holds of (connections accepted, bytes carried), at most `limit`.
    ///
    /// # Panics
    /// When it does not hold within `limit`, naming `what`.
    pub fn wait_until(
        &self,
        what: &str,
        limit: std::time::Duration,
        done: impl Fn(usize, u64) -> bool,
    ) {
        let deadline = std::time::Instant::now() + limit;
        let mut state = self.shared.lock();
        while !done(state.accepted, state.forwarded) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            assert!(
                !left.is_zero(),
                "the proxy did not see {what} within {limit:?} ({} connections, {} bytes)",
                state.accepted,
                state.forwarded
            );
            state = self
                .shared
                .progress
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }

    /// Break every connection through the proxy now (both ends see it closed); new ones are
    /// still accepted.
    pub fn cut(&self) {
        let sockets = std::mem::take(&mut self.shared.lock().sockets);
        for socket in sockets {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// Stop every byte, both ways, on every connection (new ones included), without closing
    /// anything.
    pub fn freeze(&self) {
        self.shared.lock().frozen = true;
    }

    /// Let bytes flow again.
    pub fn thaw(&self) {
        self.shared.lock().frozen = false;
        self.shared.thawed.notify_all();
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.stopped = true;
            state.frozen = false;
        }
        self.shared.thawed.notify_all();
        self.cut();
        // Wake the accept loop so it sees `stopped`.
        let _ = TcpStream::connect(self.addr);
    }
}
