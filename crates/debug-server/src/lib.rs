//! The SSH server that runs inside a debug task.
//!
//! It speaks to the outside only through the WebSocket bridge of flyte-tunnel: every upgraded
//! connection is handed to this server in-process, so the server itself has no TCP port. Only
//! the key injected in `_F_SSH_PK` logs in (no passwords, no keyboard-interactive). Sessions get
//! a login shell (with a pty when asked), commands, the `sftp` subsystem and `ssh -L`/`-D`
//! forwarding, which is what `ssh`, `scp` and VS Code Remote-SSH need. SFTP is served in-process, so
//! it works in images without OpenSSH.
//!
//! The host key is generated once (0600, through flyte-keys) and published next to it as a
//! `.pub` file and in the ready line, so a launcher can pin it in the client's known_hosts.

#[cfg(feature = "server")]
mod handler;
#[cfg(feature = "server")]
pub mod login;
#[cfg(feature = "server")]
mod process;
pub mod settings;
#[cfg(feature = "server")]
mod sftp;

#[cfg(feature = "server")]
use std::net::SocketAddr;
#[cfg(feature = "server")]
use std::path::{Path, PathBuf};
#[cfg(feature = "server")]
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "server")]
use flyte_tunnel::bridge::{BridgeConfig, Target};
#[cfg(feature = "server")]
use russh::MethodKind;
#[cfg(feature = "server")]
use tokio::net::TcpListener;

pub use settings::Settings;

#[cfg(feature = "server")]
use crate::login::Login;

/// The log line launchers and users wait for (Flyte's readiness message).
pub const READY_MESSAGE: &str = "SSH debug server is ready";
/// File name of the host key inside the state directory (`.pub` beside it).
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";
/// SSH keepalive interval, as Flyte's server sets it.
pub const KEEPALIVE: Duration = Duration::from_secs(30);

/// Everything that can stop the server from starting.
#[derive(Debug, thiserror::Error)]
pub enum DebugServerError {
    #[error("{0}")]
    Settings(String),
    #[error("host key: {0}")]
    HostKey(#[from] flyte_keys::KeyError),
    #[error("cannot {action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with this crate's error.
pub type Result<T, E = DebugServerError> = std::result::Result<T, E>;

/// State shared by every connection.
#[cfg(feature = "server")]
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) login: Arc<Login>,
    /// The process groups of the sessions, so the owner can end them all.
    pub(crate) groups: flyte_reaper::Groups,
}

/// A debug server ready to accept connections.
#[cfg(feature = "server")]
pub struct DebugServer {
    shared: Arc<Shared>,
    /// The SSH connections being served, so [`DebugServer::shutdown`] can end them.
    connections: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    closed: Arc<std::sync::atomic::AtomicBool>,
    config: Arc<russh::server::Config>,
    host_key: flyte_keys::HostKey,
}

#[cfg(feature = "server")]
impl std::fmt::Debug for DebugServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebugServer")
            .field("host_key", &self.host_key)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "server")]
impl DebugServer {
    /// Load (or create) the host key in `state_dir` and prepare the server. Sessions start in
    /// `workdir` (the task's working directory).
    pub fn new(settings: Settings, state_dir: &Path, workdir: PathBuf) -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        // 0700 whatever the umask: the host key lives here.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| DebugServerError::Io {
                action: format!("create the state directory {}", state_dir.display()),
                source,
            })?;
        let key_path = state_dir.join(HOST_KEY_FILE);
        let host_key = flyte_keys::HostKey::load_or_generate(&key_path)?;
        let public = format!("{}\n", host_key.public_key_line()?);
        flyte_fs_write(&key_path.with_extension("pub"), public.as_bytes())?;
        let config = russh::server::Config {
            keys: vec![host_key.private_key().clone()],
            methods: (&[MethodKind::PublicKey][..]).into(),
            // Constant-time rejections, but no delay for OpenSSH's initial "none" probe.
            auth_rejection_time: Duration::from_millis(300),
            auth_rejection_time_initial: Some(Duration::ZERO),
            keepalive_interval: Some(KEEPALIVE),
            // A debug shell may sit idle for hours; the max uptime bounds the server instead.
            inactivity_timeout: None,
            // OpenSSH's own window and packet sizes. A larger window looks faster but is
            // slower: ssh then queues megabytes in front of the ProxyCommand's 64 KiB pipe, and
            // compacting that buffer made uploads 3x slower (measured with `cargo xtask bench`).
            window_size: 2 * 1024 * 1024,
            maximum_packet_size: 32_768,
            nodelay: true,
            ..Default::default()
        };
        Ok(Self {
            shared: Arc::new(Shared {
                login: Arc::new(Login::current(workdir)),
                settings,
                groups: flyte_reaper::Groups::new(),
            }),
            connections: Arc::default(),
            closed: Arc::default(),
            config: Arc::new(config),
            host_key,
        })
    }

    /// Sessions also get these variables (the task's environment, for a server that runs
    /// outside the task's process); `_F_*` debug variables are left out as always.
    #[must_use]
    pub fn with_task_environment(
        mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        let mut login = (*self.shared.login).clone();
        login.add_task_environment(vars);
        self.shared = Arc::new(Shared {
            login: Arc::new(login),
            settings: self.shared.settings.clone(),
            groups: self.shared.groups.clone(),
        });
        self
    }

    /// Register the sessions' process groups in `groups` (a child set of the owner's, say), so
    /// that whoever owns the server can end them, and its watchdog if it is killed.
    #[must_use]
    pub fn with_process_groups(mut self, groups: flyte_reaper::Groups) -> Self {
        self.shared = Arc::new(Shared {
            login: Arc::clone(&self.shared.login),
            settings: self.shared.settings.clone(),
            groups,
        });
        self
    }

    /// End everything this server serves: refuse new connections, drop the open SSH
    /// connections, and end every session's process group (SIGHUP and SIGTERM now, SIGKILL
    /// three seconds later). A debug run's shells end with the run.
    pub fn shutdown(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let connections = std::mem::take(
            &mut *self
                .connections
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for connection in connections {
            connection.abort();
        }
        self.shared
            .groups
            .terminate_all_in_background(Duration::from_secs(3));
    }

    /// `SHA256:...` of the host key.
    pub fn host_key_fingerprint(&self) -> String {
        self.host_key.fingerprint()
    }

    /// The host key as an OpenSSH public key line.
    pub fn host_public_key(&self) -> Result<String> {
        Ok(self.host_key.public_key_line()?)
    }

    /// The bridge target that hands each WebSocket connection to this server in-process.
    pub fn target(&self) -> Target {
        let shared = Arc::clone(&self.shared);
        let config = Arc::clone(&self.config);
        let connections = Arc::clone(&self.connections);
        let closed = Arc::clone(&self.closed);
        Target::InProcess(Arc::new(move |stream| {
            if closed.load(std::sync::atomic::Ordering::SeqCst) {
                return; // Shut down: the stream drops, the client sees the connection end.
            }
            let handler = handler::ConnectionHandler {
                shared: Arc::clone(&shared),
            };
            let config = Arc::clone(&config);
            let task = tokio::spawn(async move {
                match russh::server::run_stream(config, stream, handler).await {
                    Ok(session) => {
                        if let Err(e) = session.await {
                            tracing::debug!(error = %e, "SSH session ended with an error");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "SSH handshake failed"),
                }
            });
            let mut connections = connections
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            connections.retain(|c| !c.is_finished());
            connections.push(task.abort_handle());
        }))
    }

    /// Serve on `listener` until the max uptime passes.
    pub async fn serve(&self, listener: TcpListener) -> Result<()> {
        let mut bridge = BridgeConfig::new(self.target());
        bridge.sessions = self.shared.settings.resume_grace.map(|grace| {
            flyte_tunnel::sessions::Sessions::new(flyte_tunnel::sessions::ResumeSettings {
                grace,
                ..flyte_tunnel::sessions::ResumeSettings::default()
            })
        });
        // Any path: the cluster's ingress may rewrite it.
        let key = self.host_public_key()?;
        bridge.host_key = Some(Arc::new(move |_path: &str| Some(key.clone())));
        let bridge = Arc::new(bridge);
        let max_uptime = self.shared.settings.max_uptime;
        tokio::select! {
            result = flyte_tunnel::bridge::serve(listener, bridge) => result.map_err(|source| DebugServerError::Io {
                action: "accept connections".to_owned(),
                source,
            }),
            () = tokio::time::sleep(max_uptime) => {
                tracing::info!(seconds = max_uptime.as_secs(), "max uptime reached; stopping");
                Ok(())
            }
        }
    }

    /// Bind `addr` and return the listener and its actual address (port 0 picks one).
    pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| DebugServerError::Io {
                action: format!("listen on {addr}"),
                source,
            })?;
        let local = listener
            .local_addr()
            .map_err(|source| DebugServerError::Io {
                action: "read the listening address".to_owned(),
                source,
            })?;
        Ok((listener, local))
    }
}

/// Write a public file: 0644 at open whatever the umask, replaced atomically.
#[cfg(feature = "server")]
fn flyte_fs_write(path: &Path, contents: &[u8]) -> Result<()> {
    flyte_fs::replace(path, contents, 0o644).map_err(|e| DebugServerError::Io {
        action: format!("write {}", path.display()),
        source: std::io::Error::other(e.to_string()),
    })
}
