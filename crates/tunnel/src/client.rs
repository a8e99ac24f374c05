//! The stdio side: `flyte-run tunnel URL`, run by ssh as its `ProxyCommand`.

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Bytes, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::transport::{BoxedStream, Transport};
use crate::{Header, MAX_FRAME_BYTES, Result, TunnelError};

/// How long the WebSocket handshake (TCP, TLS, HTTP upgrade) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A WebSocket ping this often keeps idle routes (and their load balancers) from dropping us.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
/// After our stdin ends, how long we still wait for the server's closing frame.
const CLOSE_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest chunk read from stdin into one frame. A pipe delivers at most 64 KiB per read, and
/// staying below glibc's 128 KiB mmap threshold lets chunk buffers be reused instead of mapped
/// and zeroed afresh each time.
const CHUNK_BYTES: usize = 64 * 1024;

/// The connection a tunnel runs over.
pub type Socket = WebSocketStream<MaybeTlsStream<BoxedStream>>;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `ws://` or `wss://` (`http(s)://` is accepted and means the same).
    pub url: String,
    /// Extra request headers, typically `Authorization: Bearer ...` from the headers file.
    pub headers: Vec<Header>,
    /// How the route is reached: proxy and TLS trust.
    pub transport: Transport,
    pub connect_timeout: Duration,
    pub ping_interval: Duration,
    /// Offer resumption ([`crate::resume`]): with a bridge that agrees, a broken connection is
    /// resumed instead of ending the SSH session.
    pub resume: bool,
    /// Read again before each reconnection, so a refreshed token is used.
    pub headers_file: Option<PathBuf>,
}

impl ClientOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            headers: Vec::new(),
            transport: Transport::default(),
            connect_timeout: CONNECT_TIMEOUT,
            ping_interval: PING_INTERVAL,
            resume: true,
            headers_file: None,
        }
    }
}

fn normalize_url(url: &str) -> Result<String> {
    let bad = |reason: &str| TunnelError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("it has no scheme; use wss://host/path"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "ws" | "http" => "ws",
        "wss" | "https" => "wss",
        _ => return Err(bad("the scheme must be ws, wss, http or https")),
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("it has no host"));
    }
    Ok(format!("{scheme}://{rest}"))
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_frame_size(Some(MAX_FRAME_BYTES))
        .max_message_size(Some(MAX_FRAME_BYTES))
}

/// Complete the WebSocket handshake, classifying failures by what the caller should do next.
/// Plain frames: no resumption is offered.
pub async fn connect(options: &ClientOptions) -> Result<Socket> {
    Ok(connect_asking(options, None).await?.0)
}

/// [`connect`], with the resumption header set to `ask` when given; also says whether the
/// server agreed to resumption.
async fn connect_asking(options: &ClientOptions, ask: Option<&str>) -> Result<(Socket, bool)> {
    let url = normalize_url(&options.url)?;
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| TunnelError::BadUrl {
            url: options.url.clone(),
            reason: e.to_string(),
        })?;
    for header in &options.headers {
        let invalid = || TunnelError::LocalFile {
            what: "the headers",
            path: PathBuf::from(&header.name),
            reason: "this header's name or value is not valid in HTTP (a line break?)".to_owned(),
        };
        let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| invalid())?;
        let value = HeaderValue::from_str(&header.value).map_err(|_| invalid())?;
        request.headers_mut().append(name, value);
    }
    if let Some(ask) = ask {
        request.headers_mut().insert(
            crate::resume::RESUME_HEADER,
            HeaderValue::from_str(ask).map_err(|_| TunnelError::Protocol {
                detail: "invalid resumption header".to_owned(),
            })?,
        );
    }
    let secure = url.starts_with("wss://");
    let connector = if secure {
        Connector::Rustls(options.transport.tls()?)
    } else {
        Connector::Plain
    };
    options.transport.check()?;
    let uri = request.uri();
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let handshake = async {
        let stream = options.transport.open(&host, port).await?;
        tokio_tungstenite::client_async_tls_with_config(
            request,
            stream,
            Some(ws_config()),
            Some(connector),
        )
        .await
        .map_err(classify_handshake_error)
    };
    match tokio::time::timeout(options.connect_timeout, handshake).await {
        Err(_) => Err(TunnelError::RouteNotServing {
            detail: format!("no answer within {} s", options.connect_timeout.as_secs()),
        }),
        Ok(Ok((socket, response))) => {
            let agreed = response
                .headers()
                .get(crate::resume::RESUME_HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim() == crate::resume::VERSION);
            Ok((socket, agreed && ask.is_some()))
        }
        Ok(Err(e)) => Err(e),
    }
}

/// The SSH host key the route's bridge publishes (`GET <route>?ssh-host-key`, with the same
/// headers as the tunnel), or `None` when the server there does not publish one (Flyte's own pod
/// side answers its readiness `200 ok`; anything that is not one OpenSSH public-key line counts as
/// none). Errors are for routes that cannot be reached or refuse the token.
pub async fn fetch_host_key(options: &ClientOptions) -> Result<Option<String>> {
    let url = normalize_url(&options.url)?;
    let bad = |reason: &str| TunnelError::BadUrl {
        url: options.url.clone(),
        reason: reason.to_owned(),
    };
    let uri: tungstenite::http::Uri = url.parse().map_err(|_| bad("it is not a valid URL"))?;
    let secure = uri.scheme_str() == Some("wss");
    let host = uri.host().ok_or_else(|| bad("it has no host"))?.to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let authority = uri
        .authority()
        .map_or(host.as_str(), |a| a.as_str())
        .to_owned();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let separator = if path.contains('?') { '&' } else { '?' };
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    options.transport.check()?;
    for header in &options.headers {
        if header.name.contains(['\r', '\n']) || header.value.contains(['\r', '\n']) {
            return Err(TunnelError::LocalFile {
                what: "the headers",
                path: PathBuf::from(&header.name),
                reason: "this header's name or value is not valid in HTTP (a line break?)"
                    .to_owned(),
            });
        }
    }
    let mut request = tungstenite::http::Request::get(format!(
        "{path}{separator}{}",
        crate::bridge::HOST_KEY_QUERY
    ))
    .header("host", authority)
    .header("connection", "close");
    for header in &options.headers {
        request = request.header(header.name.as_str(), header.value.as_str());
    }
    let request = request
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| TunnelError::LocalFile {
            what: "the headers",
            path: PathBuf::new(),
            reason: format!("not a valid HTTP request: {e}"),
        })?;
    let tls = if secure {
        Some(options.transport.tls()?)
    } else {
        None
    };
    let exchange = async {
        let tcp = options
            .transport
            .open(&bare_host, port)
            .await
            .map_err(std::io::Error::other)?;
        if let Some(config) = tls {
            let name = rustls::pki_types::ServerName::try_from(bare_host.clone())
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            exchange_once(stream, request).await
        } else {
            exchange_once(tcp, request).await
        }
    };
    let (status, body) = match tokio::time::timeout(options.connect_timeout, exchange).await {
        Err(_) => {
            return Err(TunnelError::RouteNotServing {
                detail: format!("no answer within {} s", options.connect_timeout.as_secs()),
            });
        }
        Ok(Err(e)) => return Err(exchange_error(e)),
        Ok(Ok(answer)) => answer,
    };
    match status {
        401 | 403 => return Err(TunnelError::AuthRefused { status }),
        200 => {}
        _ => return Ok(None),
    }
    let Some(body) = body else {
        // Longer than any key: not one.
        return Ok(None);
    };
    let body = String::from_utf8_lossy(&body);
    let line = body.trim();
    let looks_like_a_key = line.lines().count() == 1
        && line.split_whitespace().count() >= 2
        && line.starts_with("ssh-");
    Ok(looks_like_a_key.then(|| line.to_owned()))
}

/// What a failed host-key exchange means: a refused certificate, a classified failure to open
/// the connection (a proxy's refusal), else a route that is not serving.
fn exchange_error(error: std::io::Error) -> TunnelError {
    if let Some(tls) = error.get_ref().and_then(|inner| inner.downcast_ref()) {
        return tls_refused(tls);
    }
    let detail = error.to_string();
    error
        .into_inner()
        .and_then(|inner| inner.downcast::<TunnelError>().ok())
        .map_or(TunnelError::RouteNotServing { detail }, |t| *t)
}

/// A host-key answer is one line; anything longer is not one.
const MAX_HOST_KEY_RESPONSE: usize = 16 * 1024;

/// One request on a fresh HTTP/1.1 connection (hyper reads the answer's framing: a
/// `Content-Length`, chunks, or up to EOF; a keep-alive server does not hold us once the body
/// is complete): the status, and the body unless it is longer than any host key.
async fn exchange_once<S>(
    stream: S,
    request: tungstenite::http::Request<http_body_util::Empty<hyper::body::Bytes>>,
) -> std::io::Result<(u16, Option<Vec<u8>>)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
    // The connection is driven here, beside the request: it ends with this exchange.
    let drive = async move {
        let _ = connection.await;
    };
    let ask = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(std::io::Error::other)?;
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), MAX_HOST_KEY_RESPONSE)
            .collect()
            .await
            .ok()
            .map(|collected| collected.to_bytes().to_vec());
        Ok::<_, std::io::Error>((status, body))
    };
    tokio::pin!(drive);
    tokio::pin!(ask);
    let mut driven = false;
    loop {
        tokio::select! {
            answer = &mut ask => return answer,
            // A connection that ends first has handed over what it read; the answer follows.
            () = &mut drive, if !driven => driven = true,
        }
    }
}

/// A TLS handshake that failed: a certificate we do not trust is a setting to fix, not a route
/// that is still starting.
fn tls_refused(error: &rustls::Error) -> TunnelError {
    let hint = match error {
        rustls::Error::InvalidCertificate(_) => {
            "; if the route's certificate comes from a private CA, trust it (Flyte's admin.caCertFilePath, or --cacert FILE)"
        }
        _ => "",
    };
    TunnelError::Protocol {
        detail: format!("TLS: {error}{hint}"),
    }
}

fn classify_handshake_error(error: tungstenite::Error) -> TunnelError {
    match error {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            if matches!(status, 401 | 403) {
                TunnelError::AuthRefused { status }
            } else {
                TunnelError::RouteNotServing {
                    detail: format!("HTTP {status} instead of a WebSocket upgrade"),
                }
            }
        }
        tungstenite::Error::Io(e) => match e.get_ref().and_then(|inner| inner.downcast_ref()) {
            Some(tls) => tls_refused(tls),
            None => TunnelError::RouteNotServing {
                detail: e.to_string(),
            },
        },
        tungstenite::Error::Tls(e) => TunnelError::Protocol {
            detail: format!("TLS: {e}"),
        },
        tungstenite::Error::Url(e) => TunnelError::BadUrl {
            url: String::new(),
            reason: e.to_string(),
        },
        other => TunnelError::Protocol {
            detail: other.to_string(),
        },
    }
}

/// Carry bytes between `input`/`output` (ssh's pipes) and an open socket until the connection
/// ends. Returns when the server closed, or when `input` ended and the server acknowledged.
pub async fn pump<W>(
    socket: Socket,
    mut input: mpsc::Receiver<Bytes>,
    mut output: W,
    ping_interval: Duration,
) -> Result<()>
where
    W: AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = socket.split();
    let down = async move {
        while let Some(message) = stream.next().await {
            let bytes = match message {
                Ok(Message::Binary(bytes)) => bytes,
                // Flyte's bridge forwards the payload of every data frame; so do we.
                Ok(Message::Text(text)) => Bytes::from(text),
                Ok(Message::Close(_)) => break,
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    break;
                }
                Err(e) => {
                    return Err(TunnelError::Protocol {
                        detail: e.to_string(),
                    });
                }
            };
            // ssh going away mid-stream (a broken pipe) simply ends the tunnel.
            if output.write_all(&bytes).await.is_err() {
                return Ok(());
            }
            if output.flush().await.is_err() {
                return Ok(());
            }
        }
        let _ = output.shutdown().await;
        Ok(())
    };
    let up = async move {
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
        let sending = |e: tungstenite::Error| TunnelError::Protocol {
            detail: format!("sending: {e}"),
        };
        loop {
            tokio::select! {
                chunk = input.recv() => {
                    let Some(chunk) = chunk else {
                        let close = CloseFrame { code: CloseCode::Normal, reason: "client done".into() };
                        let _ = sink.send(Message::Close(Some(close))).await;
                        return Ok::<_, TunnelError>(());
                    };
                    // Queue everything already read, then flush once: fewer, fuller writes.
                    sink.feed(Message::Binary(chunk)).await.map_err(sending)?;
                    while let Ok(more) = input.try_recv() {
                        sink.feed(Message::Binary(more)).await.map_err(sending)?;
                    }
                    sink.flush().await.map_err(sending)?;
                }
                _ = ping.tick() => {
                    sink.send(Message::Ping(Bytes::new())).await.map_err(sending)?;
                }
            }
        }
    };
    tokio::pin!(down, up);
    tokio::select! {
        // The server side ended: everything it sent is written; stdin no longer matters.
        result = &mut down => result,
        result = &mut up => {
            match result {
                // Our side ended: give the server a moment to finish and close.
                Ok(()) => tokio::time::timeout(CLOSE_DRAIN_TIMEOUT, down).await.unwrap_or(Ok(())),
                Err(e) => Err(e),
            }
        }
    }
}

/// How many chunks of input may wait for the socket before reading pauses.
const INPUT_QUEUE: usize = 16;

/// How large the pipes to and from ssh are made (Linux's default is 64 KiB). Fewer, larger
/// reads and writes on each side mean fewer wake-ups, which is what a loopback transfer spends
/// its CPU on. Kept well below the per-user budget of pipe memory (64 MiB by default), so many
/// tunnels at once do not shrink the user's other pipes.
const PIPE_BYTES: i32 = 256 * 1024;

/// A pipe of our own onto `fd` when it is a pipe (what ssh gives its `ProxyCommand`),
/// enlarged to [`PIPE_BYTES`] where the system allows. Opened afresh through `/proc` so that
/// the non-blocking mode we use stays ours: on a duplicate it would reach whoever shares the
/// pipe, even after we exit or are killed.
fn pipe_of(fd: std::os::fd::BorrowedFd<'_>, write: bool) -> Option<std::fs::File> {
    use nix::sys::stat::{SFlag, fstat};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let stat = fstat(fd).ok()?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFIFO {
        return None;
    }
    // Best effort: a smaller pipe only costs speed.
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES));
    // Non-blocking from the open on: a FIFO opened blocking waits for its other end.
    #[allow(
        clippy::disallowed_methods,
        reason = "opens our own stdin or stdout, not a file users own"
    )]
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ok()
}

/// The process's stdout for the tunnel's output. A pipe is written by the runtime itself,
/// non-blocking, so each write costs no hand-off to another thread (tokio's `stdout()` sends
/// every write through its blocking pool); anything else (a terminal, a file) goes through
/// tokio's `stdout()`. Must be called within the runtime.
#[must_use]
pub fn stdout_writer() -> Box<dyn AsyncWrite + Unpin + Send> {
    use std::os::fd::AsFd;
    let stdout = std::io::stdout();
    match pipe_of(stdout.as_fd(), true).map(tokio::net::unix::pipe::Sender::from_file) {
        Some(Ok(pipe)) => Box::new(pipe),
        _ => Box::new(tokio::io::stdout()),
    }
}

/// The process's stdin as chunks. A pipe is read by the runtime itself, non-blocking;
/// anything else on a thread of its own: one blocking `read` per chunk, with no round trip
/// through the async runtime's blocking pool (which halves upload speed). Must be called within
/// the runtime.
#[must_use]
pub fn stdin_chunks() -> mpsc::Receiver<Bytes> {
    use std::os::fd::AsFd;
    if let Some(Ok(pipe)) =
        pipe_of(std::io::stdin().as_fd(), false).map(tokio::net::unix::pipe::Receiver::from_file)
    {
        return reader_chunks(pipe);
    }
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buffer = vec![0u8; CHUNK_BYTES];
        loop {
            match std::io::Read::read(&mut stdin, &mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .blocking_send(Bytes::copy_from_slice(&buffer[..n]))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Any async reader as chunks (for tests and embedders).
pub fn reader_chunks<R: AsyncRead + Unpin + Send + 'static>(
    mut reader: R,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    tokio::spawn(async move {
        let mut buffer = vec![0u8; CHUNK_BYTES];
        while let Ok(n) = reader.read(&mut buffer).await {
            if n == 0 || tx.send(Bytes::copy_from_slice(&buffer[..n])).await.is_err() {
                break;
            }
        }
    });
    rx
}

/// Connect and carry `input` to the server and its answers to `output` until the connection
/// ends. With `options.resume` and a bridge that agrees, the session survives broken
/// connections ([`crate::resume`]); otherwise plain frames, as Flyte's own pod side speaks.
pub async fn run<W>(options: &ClientOptions, input: mpsc::Receiver<Bytes>, output: W) -> Result<()>
where
    W: AsyncWrite + Unpin,
{
    let ask = options.resume.then_some(crate::resume::VERSION);
    let (socket, resumable) = connect_asking(options, ask).await?;
    if resumable {
        crate::resumable::run(options, socket, input, output).await
    } else {
        pump(socket, input, output, options.ping_interval).await
    }
}

/// [`connect_asking`] for a resumption (the headers file read again first).
pub(crate) async fn reconnect(options: &ClientOptions, timeout: Duration) -> Result<Socket> {
    let mut options = options.clone();
    if let Some(path) = &options.headers_file {
        options.headers = crate::read_headers_file(path)?;
    }
    options.connect_timeout = timeout;
    let ask = format!("{}; resume", crate::resume::VERSION);
    match connect_asking(&options, Some(&ask)).await? {
        (socket, true) => Ok(socket),
        (_, false) => Err(TunnelError::SessionLost {
            detail: "the server there does not resume sessions".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for (url, want) in [
            ("wss://h/p?x=1", Some("wss://h/p?x=1")),
            ("https://h:8443/p", Some("wss://h:8443/p")),
            ("ws://127.0.0.1:6060", Some("ws://127.0.0.1:6060")),
            ("HTTP://h/", Some("ws://h/")),
            ("ftp://h/", None),
            ("h/p", None),
            ("wss:///p", None),
        ] {
            assert_eq!(normalize_url(url).ok().as_deref(), want, "{url}");
        }
    }
}
