//! The bridge's resumable sessions: one per SSH connection whose client offered resumption.
//!
//! A session owns its SSH server connection and a [`Link`]; WebSocket connections come and go.
//! When one breaks, the session keeps reading the SSH server into its replay buffer (until the
//! buffer is full, then SSH's flow control holds the server) and waits up to the grace period
//! for a resume that proves the session's secret; then it closes the SSH connection, which ends
//! the SSH session and its processes. A resume that proves the secret while a connection is
//! still attached takes the session over (after a freeze the server cannot tell a dead link
//! from a live one for [`crate::link::DEAD_AFTER`], and knowing the secret is what makes a
//! client this session's); a wrong proof, an unknown session or an impossible position is
//! refused with its close code and leaves the session as it was.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::link::{self, Ended, Link, Side};
use crate::resume::{self, Frame, KeyPair, Secret, SessionId, close};

/// How long a session waits for its client to come back, by default.
pub const DEFAULT_GRACE: Duration = Duration::from_mins(15);
/// Sessions kept at once, by default (each holds at most the replay limit of memory).
pub const DEFAULT_MAX_SESSIONS: usize = 256;
/// How long a session whose SSH connection has ended waits for its client (to hand it the last
/// bytes) before it is dropped.
const ENDED_GRACE: Duration = Duration::from_secs(10);
/// How long a client has to send its OPEN or RESUME after the upgrade.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How resumable sessions behave.
#[derive(Clone, Debug)]
pub struct ResumeSettings {
    /// How long a session without a connection waits for a resume.
    pub grace: Duration,
    /// Sessions kept at once; a client offering resumption past this gets a plain tunnel.
    pub max_sessions: usize,
    /// Unacknowledged bytes kept per session.
    pub replay_limit: usize,
}

impl Default for ResumeSettings {
    fn default() -> Self {
        Self {
            grace: DEFAULT_GRACE,
            max_sessions: DEFAULT_MAX_SESSIONS,
            replay_limit: resume::REPLAY_LIMIT,
        }
    }
}

/// A resumed connection handed to its session.
struct Attachment {
    socket: WebSocketStream<TcpStream>,
    /// Where the client has the server's stream up to.
    received: u64,
    /// Dropped when the connection is done with, which ends the request that brought it.
    released: oneshot::Sender<()>,
}

struct Entry {
    secret: Secret,
    attach: mpsc::Sender<Attachment>,
}

/// The live sessions of one bridge.
pub struct Sessions {
    settings: ResumeSettings,
    entries: Mutex<HashMap<SessionId, Entry>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("settings", &self.settings)
            .field("live", &self.len())
            .finish_non_exhaustive()
    }
}

fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    }))
}

/// Refuse a connection with `code` (its meaning as the reason).
async fn refuse<S>(mut socket: WebSocketStream<S>, code: u16)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        socket.send(close_message(code, close::meaning(code))),
    )
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
}

/// The first resumption frame from the client, within the handshake time.
async fn first_frame<S>(socket: &mut WebSocketStream<S>) -> Option<Frame>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let next = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            match socket.next().await? {
                Ok(Message::Binary(bytes)) => return Some(bytes),
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .ok()??;
    Frame::decode(&next).ok()
}

/// Feed the link from the SSH server, reading only while the replay buffer has room. Owns the
/// reader, so stopping this stops reading (and, with the writer, closes the connection).
async fn feed_from<R: AsyncRead + Unpin>(link: Arc<Link>, mut reader: R) {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let feeding = link::feed(link, rx);
    let reading = async move {
        let mut buffer = vec![0u8; resume::MAX_DATA];
        loop {
            // Wait for the feeder to take the last chunk before reading the next.
            let Ok(permit) = tx.reserve().await else {
                return;
            };
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => permit.send(Bytes::copy_from_slice(&buffer[..n])),
            }
        }
    };
    tokio::join!(feeding, reading);
}

impl Sessions {
    /// No sessions yet.
    #[must_use]
    pub fn new(settings: ResumeSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            entries: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sessions kept now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none are kept.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether another session may start.
    #[must_use]
    pub fn has_room(&self) -> bool {
        self.len() < self.settings.max_sessions
    }

    /// Run a new session over `socket` (just upgraded) to `target` until it is done or its
    /// grace period runs out.
    pub(crate) async fn open<T>(self: Arc<Self>, mut socket: WebSocketStream<TcpStream>, target: T)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let Ok(nonce) = resume::random::<32>() else {
            return refuse(socket, close::PROTOCOL).await;
        };
        if socket
            .send(Message::Binary(Frame::Challenge { nonce }.encode()))
            .await
            .is_err()
        {
            return;
        }
        let Some(Frame::Open { client_key }) = first_frame(&mut socket).await else {
            return refuse(socket, close::PROTOCOL).await;
        };
        let (Ok(keys), Ok(session)) = (KeyPair::generate(), resume::random::<16>()) else {
            return refuse(socket, close::PROTOCOL).await;
        };
        let server_key = keys.public();
        let Ok(secret) = keys.agree(&client_key, &session, &client_key, &server_key) else {
            return refuse(socket, close::PROTOCOL).await;
        };
        let (attach, attachments) = mpsc::channel(4);
        let registered = {
            let mut entries = self.lock();
            let room = entries.len() < self.settings.max_sessions;
            if room {
                entries.insert(session, Entry { secret, attach });
            }
            room
        };
        if !registered {
            return refuse(socket, close::TOO_MANY_SESSIONS).await;
        }
        let grace_secs = u32::try_from(self.settings.grace.as_secs()).unwrap_or(u32::MAX);
        let opened = Frame::Opened {
            session,
            server_key,
            grace_secs,
        };
        if socket.send(Message::Binary(opened.encode())).await.is_ok() {
            self.run(socket, target, attachments).await;
        }
        self.lock().remove(&session);
    }

    async fn run<T>(
        &self,
        socket: WebSocketStream<TcpStream>,
        target: T,
        mut attachments: mpsc::Receiver<Attachment>,
    ) where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (delivery, queue) = mpsc::channel(16);
        let link = Link::new(Side::Server, delivery, self.settings.replay_limit);
        let (from_ssh, to_ssh) = tokio::io::split(target);
        let feeding = tokio::spawn(feed_from(Arc::clone(&link), from_ssh));
        let delivering = tokio::spawn(link::deliver(queue, to_ssh));
        let mut current = Some((socket, None::<oneshot::Sender<()>>));
        while let Some((socket, released)) = current.take() {
            let attached = link::attach(&link, socket);
            tokio::pin!(attached);
            let ended = loop {
                tokio::select! {
                    ended = &mut attached => break Some(ended),
                    Some(next) = attachments.recv() => {
                        // An impossible position, or a connection still heard from, is
                        // refused without touching the live connection; a possible position
                        // on a silent one takes the session over (the client's link broke
                        // before we noticed).
                        if !link.can_resume_from(next.received) {
                            tokio::spawn(refuse(next.socket, close::BAD_POSITION));
                        } else if link.heard_within(link::LIVE_WINDOW) {
                            tokio::spawn(refuse(next.socket, close::IN_USE));
                        } else {
                            current = Self::resumed(&link, next).await;
                            break None;
                        }
                    }
                }
            };
            drop(released);
            match ended {
                // Taken over by a newer connection (already in `current`).
                None if current.is_some() => continue,
                // The takeover failed as it began: wait for another.
                None => {}
                // Done, or the client ended the session itself (a normal close, or one with no
                // code; an intermediary going away says 1001, and the client comes back).
                Some(Ended::Done | Ended::Closed(1000 | 1005, _)) => break,
                Some(ended) => {
                    tracing::debug!(?ended, "a resumable connection ended; waiting for a resume");
                }
            }
            // No connection: wait for one within the grace period; once the SSH server has
            // closed its side (the SSH session is over, as when ssh exits and its tunnel is
            // killed before it can say so) only the last bytes are left to deliver, and a short
            // wait is enough.
            let mut deadline = tokio::time::Instant::now() + self.settings.grace;
            let mut ending = false;
            while current.is_none() {
                if !ending && link.source_ended() {
                    ending = true;
                    deadline = deadline.min(tokio::time::Instant::now() + ENDED_GRACE);
                }
                tokio::select! {
                    next = attachments.recv() => match next {
                        Some(next) => current = Self::resumed(&link, next).await,
                        None => break,
                    },
                    () = link.until_source_ended(), if !ending => {}
                    () = tokio::time::sleep_until(deadline) => {
                        tracing::info!(
                            grace_secs = self.settings.grace.as_secs(),
                            ended = ending,
                            "no resume within the grace period; closing the SSH connection"
                        );
                        break;
                    }
                }
            }
            if current.is_none() {
                break;
            }
        }
        // Stopping both halves closes the SSH connection (and so ends its session).
        feeding.abort();
        delivering.abort();
        let _ = feeding.await;
        let _ = delivering.await;
    }

    /// Take `next` on if its position is possible; else refuse it and keep waiting.
    async fn resumed(
        link: &Link,
        mut next: Attachment,
    ) -> Option<(WebSocketStream<TcpStream>, Option<oneshot::Sender<()>>)> {
        if link.resume_from(next.received).is_err() {
            refuse(next.socket, close::BAD_POSITION).await;
            return None;
        }
        let resumed = Frame::Resumed {
            received: link.received(),
        };
        if next
            .socket
            .send(Message::Binary(resumed.encode()))
            .await
            .is_err()
        {
            return None;
        }
        Some((next.socket, Some(next.released)))
    }

    /// Hand a resuming connection (just upgraded) to its session, if it proves the secret;
    /// returns when the session is done with it.
    pub(crate) async fn resume(self: Arc<Self>, mut socket: WebSocketStream<TcpStream>) {
        let Ok(nonce) = resume::random::<32>() else {
            return refuse(socket, close::PROTOCOL).await;
        };
        if socket
            .send(Message::Binary(Frame::Challenge { nonce }.encode()))
            .await
            .is_err()
        {
            return;
        }
        let Some(Frame::Resume {
            session,
            received,
            proof,
        }) = first_frame(&mut socket).await
        else {
            return refuse(socket, close::PROTOCOL).await;
        };
        let attach = {
            let entries = self.lock();
            match entries.get(&session) {
                None => None,
                Some(entry)
                    if resume::verify(&entry.secret, &nonce, &session, received, &proof) =>
                {
                    Some(Ok(entry.attach.clone()))
                }
                Some(_) => Some(Err(())),
            }
        };
        let attach = match attach {
            None => return refuse(socket, close::UNKNOWN_SESSION).await,
            Some(Err(())) => return refuse(socket, close::BAD_PROOF).await,
            Some(Ok(attach)) => attach,
        };
        let (released, done) = oneshot::channel();
        let attachment = Attachment {
            socket,
            received,
            released,
        };
        if let Err(mpsc::error::SendError(attachment)) = attach.send(attachment).await {
            // The session ended meanwhile.
            return refuse(attachment.socket, close::UNKNOWN_SESSION).await;
        }
        let _ = done.await;
    }
}
