//! The in-task side: WebSocket in, SSH server out.
//!
//! One listener answers two kinds of request on any path (the cluster ingress rewrites paths):
//! a plain HTTP request is the readiness probe and gets `200 ok`; a WebSocket upgrade is bridged
//! to the SSH server. The SSH server is reached over TCP, or in-process through a pipe so the
//! debug server needs no second port.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Bytes, Message};

pub use flyte_listen::Limits;

/// A request head must arrive completely within this time, or the connection is dropped (a
/// slow or idle client must not hold a connection open forever).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How long connecting to a TCP target may take before the client gets a 502.
const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After one direction ends, how long the other may take to finish.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Read size from the SSH server, and so the largest frame we send (below glibc's mmap
/// threshold, so frame buffers are reused rather than mapped afresh).
const CHUNK_BYTES: usize = 64 * 1024;
/// Buffer of the in-process pipe to the SSH server.
const PIPE_BYTES: usize = 1024 * 1024;
/// Largest frame or message the bridge takes from a client. SSH packets are at most 256 KiB and
/// clients send what they read from a pipe (64 KiB at a time), so 1 MiB refuses nothing real,
/// and it bounds what one connection may make us buffer: with [`Limits`] on the number of
/// connections, the bridge's memory for frames is bounded too (connections x (this + the pipe)).
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 1024 * 1024;

/// Hands one end of a fresh in-process pipe to an SSH server.
pub type InProcessServer = Arc<dyn Fn(DuplexStream) + Send + Sync>;
/// Chooses the target for a request path (`None`: nothing serves that path, a 404).
pub type Router = Arc<dyn Fn(&str) -> Option<Target> + Send + Sync>;
/// Says whether a presented bearer token (first argument) is good for the request path (second,
/// without the query): for tokens that are verified, not compared, and that may be scoped to one
/// route.
pub type TokenVerifier = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;
/// The SSH server's public key (an OpenSSH `ssh-ed25519 AAAA...` line) for a request path.
pub type HostKeyLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The query that asks the bridge for its SSH server's host key instead of the readiness answer:
/// `GET <route>?ssh-host-key`, authorized like an upgrade. The key travels on the route the
/// client already trusts with its token, so a client can pin it before its first SSH connection;
/// servers that do not know the query (Flyte's own pod side) answer the probe's `200 ok`, which
/// is not a key, and the client falls back to learning the key on first use.
pub const HOST_KEY_QUERY: &str = "ssh-host-key";

/// Where upgraded connections go.
#[derive(Clone)]
pub enum Target {
    /// An SSH server listening on TCP.
    Tcp(SocketAddr),
    /// An SSH server in this process, given the server end of a pipe per connection.
    InProcess(InProcessServer),
    /// One of several targets, chosen by the request path (an ingress in front of many).
    Route(Router),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp(addr) => write!(f, "Tcp({addr})"),
            Target::InProcess(_) => f.write_str("InProcess"),
            Target::Route(_) => f.write_str("Route"),
        }
    }
}

/// How the bridge behaves.
#[derive(Clone)]
pub struct BridgeConfig {
    pub target: Target,
    /// When set, upgrades must carry `Authorization: Bearer <token>` (the bridge as an ingress).
    pub bearer_token: Option<String>,
    /// When set, upgrades must carry a bearer token this accepts (signed tokens, say).
    pub verifier: Option<TokenVerifier>,
    pub head_timeout: Duration,
    /// Connections held at once (in all, and per peer address).
    pub limits: Limits,
    /// Answers `GET <path>?ssh-host-key`; `None` answers it `404`.
    pub host_key: Option<HostKeyLookup>,
    /// Resumable sessions for clients that offer resumption ([`crate::resume`]); `None`
    /// serves every client plain frames.
    pub sessions: Option<Arc<crate::sessions::Sessions>>,
}

impl fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeConfig")
            .field("target", &self.target)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("verifier", &self.verifier.is_some())
            .field("head_timeout", &self.head_timeout)
            .field("limits", &self.limits)
            .field("host_key", &self.host_key.is_some())
            .field("sessions", &self.sessions)
            .finish()
    }
}

impl BridgeConfig {
    pub fn new(target: Target) -> Self {
        Self {
            target,
            bearer_token: None,
            verifier: None,
            head_timeout: HEAD_TIMEOUT,
            limits: Limits::default(),
            host_key: None,
            sessions: Some(crate::sessions::Sessions::new(
                crate::sessions::ResumeSettings::default(),
            )),
        }
    }
}

/// Accept connections forever, each on its own task, within `config.limits`. Running out of
/// file descriptors pauses accepting; it never ends the server.
pub async fn serve(listener: TcpListener, config: Arc<BridgeConfig>) -> std::io::Result<()> {
    let listener = flyte_listen::GuardedListener::new(listener, config.limits);
    loop {
        let (stream, peer, permit) = listener.accept().await;
        let config = Arc::clone(&config);
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &config).await {
                tracing::debug!(%peer, error = %e, "bridge connection ended with an error");
            }
            drop(permit);
        });
    }
}

/// A client's resumption header: a new resumable session, or the resumption of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ResumeAsk {
    Offer,
    Resume,
}

fn resume_ask(value: &str) -> Option<ResumeAsk> {
    let mut words = value.split(';').map(str::trim);
    if words.next() != Some(crate::resume::VERSION) {
        return None;
    }
    Some(if words.any(|w| w == "resume") {
        ResumeAsk::Resume
    } else {
        ResumeAsk::Offer
    })
}

struct RequestHead {
    path: String,
    upgrade: bool,
    key: Option<String>,
    authorization: Option<String>,
    /// What the client asked of resumption ([`crate::resume::RESUME_HEADER`]).
    resume: Option<ResumeAsk>,
    /// Bytes read past the head (a client may send its first frame right away).
    rest: Vec<u8>,
}

/// Read and parse the request head; `Ok(None)` when the client sent garbage or too much.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<RequestHead>> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buffer) {
            Ok(httparse::Status::Complete(len)) => {
                let find = |name: &str| {
                    request
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                        .map(|v| v.trim().to_owned())
                };
                let upgrade = find("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
                return Ok(Some(RequestHead {
                    path: request.path.unwrap_or("/").to_owned(),
                    upgrade,
                    key: find("sec-websocket-key"),
                    authorization: find("authorization"),
                    resume: find(crate::resume::RESUME_HEADER)
                        .as_deref()
                        .and_then(resume_ask),
                    rest: buffer[len..].to_vec(),
                }));
            }
            Ok(httparse::Status::Partial) if buffer.len() < MAX_HEAD_BYTES => {}
            _ => return Ok(None),
        }
    }
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Compare secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Serve one connection: the readiness probe, or an upgrade bridged to the target.
pub async fn handle(mut stream: TcpStream, config: &BridgeConfig) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let Ok(head) = tokio::time::timeout(config.head_timeout, read_head(&mut stream)).await else {
        return Ok(()); // Too slow: drop it without a word.
    };
    let Some(head) = head? else {
        return respond(&mut stream, "400 Bad Request", "bad request").await;
    };
    let (path, query) = head
        .path
        .split_once('?')
        .unwrap_or((head.path.as_str(), ""));
    let wants_host_key = query.split('&').any(|q| q == HOST_KEY_QUERY);
    if !head.upgrade && !wants_host_key {
        return respond(&mut stream, "200 OK", "ok").await;
    }
    let presented = head
        .authorization
        .as_deref()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let refused = config
        .bearer_token
        .as_ref()
        .is_some_and(|t| !presented.is_some_and(|p| same_secret(p, t)))
        || config
            .verifier
            .as_ref()
            .is_some_and(|verify| !presented.is_some_and(|p| verify(p, path)));
    if refused {
        return respond(
            &mut stream,
            "401 Unauthorized",
            "a valid bearer token is required",
        )
        .await;
    }
    if wants_host_key {
        return match config.host_key.as_ref().and_then(|lookup| lookup(path)) {
            Some(key) => respond(&mut stream, "200 OK", &format!("{}\n", key.trim())).await,
            None => respond(&mut stream, "404 Not Found", "no host key at this path").await,
        };
    }
    let Some(key) = head.key else {
        return respond(&mut stream, "400 Bad Request", "missing Sec-WebSocket-Key").await;
    };
    let sessions = config.sessions.as_ref();
    if head.resume == Some(ResumeAsk::Resume) {
        // A session already has its SSH connection: no target to reach.
        let Some(sessions) = sessions else {
            return respond(&mut stream, "404 Not Found", "no resumable sessions here").await;
        };
        let socket = upgrade(stream, &key, true, head.rest).await?;
        Arc::clone(sessions).resume(socket).await;
        return Ok(());
    }
    let resumable = sessions.filter(|s| head.resume == Some(ResumeAsk::Offer) && s.has_room());
    let target = match &config.target {
        Target::Route(route) => match route(&head.path) {
            Some(target) => target,
            None => {
                return respond(&mut stream, "404 Not Found", "no debug route at this path").await;
            }
        },
        other => other.clone(),
    };
    // Reach the SSH server before agreeing to the upgrade, so a dead target is a clean 502.
    let target: Box<dyn AsyncStream> = match &target {
        Target::Tcp(addr) => {
            match tokio::time::timeout(TARGET_CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    Box::new(tcp)
                }
                _ => {
                    return respond(
                        &mut stream,
                        "502 Bad Gateway",
                        "the SSH server is not reachable",
                    )
                    .await;
                }
            }
        }
        Target::InProcess(start) => {
            let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
            start(theirs);
            Box::new(ours)
        }
        // A router answers with a concrete target; one that answers with another router is a
        // configuration mistake, refused rather than followed.
        Target::Route(_) => return respond(&mut stream, "502 Bad Gateway", "misrouted").await,
    };
    let socket = upgrade(stream, &key, resumable.is_some(), head.rest).await?;
    match resumable {
        Some(sessions) => Arc::clone(sessions).open(socket, target).await,
        None => bridge(socket, target).await,
    }
    Ok(())
}

/// Agree to the upgrade (and to resumption, when `resumable`).
async fn upgrade(
    mut stream: TcpStream,
    key: &str,
    resumable: bool,
    rest: Vec<u8>,
) -> std::io::Result<WebSocketStream<TcpStream>> {
    let accept = derive_accept_key(key.as_bytes());
    let resume = if resumable {
        format!(
            "{}: {}\r\n",
            crate::resume::RESUME_HEADER,
            crate::resume::VERSION
        )
    } else {
        String::new()
    };
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{resume}\r\n"
    );
    stream.write_all(response.as_bytes()).await?;
    let config = WebSocketConfig::default()
        .max_frame_size(Some(MAX_CLIENT_MESSAGE_BYTES))
        .max_message_size(Some(MAX_CLIENT_MESSAGE_BYTES));
    Ok(WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(config)).await)
}

trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

/// The close frame that tells the peer why its frames were refused.
fn close_for(error: &tungstenite::Error) -> CloseFrame {
    let code = match error {
        tungstenite::Error::Capacity(_) => CloseCode::Size,
        tungstenite::Error::Utf8(_) => CloseCode::Invalid,
        tungstenite::Error::Protocol(_) => CloseCode::Protocol,
        _ => CloseCode::Error,
    };
    // A close reason must fit in a control frame (123 bytes).
    let mut reason = error.to_string();
    while reason.len() > 120 {
        reason.pop();
    }
    CloseFrame {
        code,
        reason: reason.into(),
    }
}

async fn bridge(socket: WebSocketStream<TcpStream>, target: Box<dyn AsyncStream>) {
    let (mut sink, mut frames) = socket.split();
    let (mut from_ssh, mut to_ssh) = tokio::io::split(target);
    // Why the client's side ended, when it was an error: sent in our close frame.
    let refused: Arc<std::sync::Mutex<Option<CloseFrame>>> = Arc::default();
    let refused_in = Arc::clone(&refused);
    // Told when the client is done, so our side answers its close instead of sending more data.
    let (client_done, mut client_done_rx) = tokio::sync::oneshot::channel::<()>();
    let inbound = async move {
        while let Some(message) = frames.next().await {
            let bytes = match message {
                Ok(Message::Binary(bytes)) => bytes,
                Ok(Message::Text(text)) => Bytes::from(text),
                Ok(Message::Close(_)) => break,
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "refusing the client's frames");
                    *refused_in
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(close_for(&e));
                    break;
                }
            };
            if to_ssh.write_all(&bytes).await.is_err() {
                break;
            }
        }
        // The client is done: tell the SSH server, which then ends the connection.
        let _ = to_ssh.shutdown().await;
        let _ = client_done.send(());
    };
    let outbound = async move {
        let mut buffer = vec![0u8; CHUNK_BYTES];
        loop {
            tokio::select! {
                read = from_ssh.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => {
                        let reason = refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
                        let close = reason.unwrap_or(CloseFrame { code: CloseCode::Normal, reason: "ssh server closed".into() });
                        // When the client's close already arrived, the WebSocket layer refuses a
                        // second close frame before flushing its queued reply; `close` flushes it.
                        let _ = sink.send(Message::Close(Some(close))).await;
                        let _ = sink.close().await;
                        return;
                    }
                    Ok(n) => {
                        if sink.send(Message::Binary(Bytes::copy_from_slice(&buffer[..n]))).await.is_err() {
                            return;
                        }
                    }
                },
                _ = &mut client_done_rx => {
                    // Complete the closing handshake: answer the client's close (queued by the
                    // WebSocket layer and sent by `close`), or say why its frames were refused.
                    let reason = refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
                    let _ = match reason {
                        Some(frame) => sink.send(Message::Close(Some(frame))).await,
                        None => sink.close().await,
                    };
                    return;
                }
            }
        }
    };
    tokio::pin!(inbound, outbound);
    tokio::select! {
        () = &mut inbound => { let _ = tokio::time::timeout(CLOSE_GRACE, outbound).await; }
        () = &mut outbound => { let _ = tokio::time::timeout(CLOSE_GRACE, inbound).await; }
    }
}
