//! The driver of one resumable byte stream pair ([`crate::resume`]'s protocol) over a
//! succession of WebSocket connections: the same code on the client and in the bridge.
//!
//! A [`Link`] outlives connections. The source (ssh's stdin, or the SSH server's output) is fed
//! into the link's replay buffer while it has room ([`feed`]); each connection is
//! [`attach`]ed: its writer sends what the peer has not got, acknowledgements and keepalives;
//! its reader hands the peer's bytes to the delivery queue (counted only once queued, so a
//! connection cut mid-message loses nothing) and frees the replay buffer on acknowledgements.
//! The reader and the writer are independent, so a full socket in one direction never stops
//! the other.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::resume::{self, Frame, ReplayBuffer, close};

/// A side sends at least this often (an ACK when it has nothing else), so silence means a dead
/// link.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// No frame for this long: the connection is dead (the peer sends at least every
/// [`KEEPALIVE_INTERVAL`]).
pub const DEAD_AFTER: Duration = Duration::from_secs(5);
/// A connection heard from within this is alive: a resume is refused while it is (two
/// keepalive intervals, so one late keepalive does not make a live connection look gone).
pub const LIVE_WINDOW: Duration = Duration::from_secs(2);

/// Which end of the tunnel a link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `flyte-run tunnel`: done when the server's stream has ended and been delivered.
    Client,
    /// The bridge: done when its stream (the SSH server's output) has ended and been
    /// acknowledged.
    Server,
}

#[derive(Debug, Default)]
struct State {
    /// Our stream, from the first byte the peer has not acknowledged.
    out: ReplayBuffer,
    /// Our stream's next byte to send on the current connection.
    next_send: u64,
    /// The source ended: our stream ends at `out.end()`.
    out_ended: bool,
    /// Bytes of the peer's stream taken into the delivery queue.
    received: u64,
    /// The last position we acknowledged on the current connection.
    ack_sent: u64,
    /// Where the peer's stream ends, once it said so.
    peer_end: Option<u64>,
    /// The delivery queue; dropped once the peer's stream is complete (the consumer then
    /// sees its end).
    delivery: Option<mpsc::Sender<Bytes>>,
    /// When the current connection last brought a frame (or was attached); `None` without one.
    last_heard: Option<tokio::time::Instant>,
}

/// One resumable stream pair.
#[derive(Debug)]
pub struct Link {
    state: Mutex<State>,
    changed: Notify,
    limit: usize,
    side: Side,
}

/// How an attached connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The session is complete.
    Done,
    /// The connection broke or went silent; the session can resume.
    Dead(String),
    /// The peer closed it with this code and reason.
    Closed(u16, String),
    /// The peer broke the protocol (the connection was closed with this code).
    Refused(u16, String),
}

impl Link {
    /// A link whose peer bytes go to `delivery`, keeping at most about `limit` unacknowledged
    /// bytes of our own.
    #[must_use]
    pub fn new(side: Side, delivery: mpsc::Sender<Bytes>, limit: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                delivery: Some(delivery),
                ..State::default()
            }),
            changed: Notify::new(),
            limit,
            side,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Bytes of the peer's stream taken so far (what a RESUME or RESUMED claims).
    #[must_use]
    pub fn received(&self) -> u64 {
        self.lock().received
    }

    /// Whether [`Link::resume_from`] would take `position`.
    #[must_use]
    pub fn can_resume_from(&self, position: u64) -> bool {
        self.lock().out.resume_from(position).is_ok()
    }

    /// Send from `position` on the next connection (what the peer says it has).
    ///
    /// # Errors
    /// `position` is before what the peer acknowledged or past what we have.
    pub fn resume_from(&self, position: u64) -> Result<(), resume::PositionError> {
        let mut state = self.lock();
        state.out.resume_from(position)?;
        // The peer has everything before `position`: that acknowledges it.
        state.out.acknowledge(position)?;
        state.next_send = position;
        drop(state);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Whether our stream ended and the peer has all of it.
    #[must_use]
    pub fn sent_everything(&self) -> bool {
        let state = self.lock();
        state.out_ended && state.out.is_empty()
    }

    /// Whether our source ended (for the bridge: the SSH server closed its connection).
    #[must_use]
    pub fn source_ended(&self) -> bool {
        self.lock().out_ended
    }

    /// Wait until our source ended.
    pub async fn until_source_ended(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.source_ended() {
                return;
            }
            notified.await;
        }
    }

    /// Whether the peer's whole stream was taken (its FIN reached).
    #[must_use]
    pub fn peer_complete(&self) -> bool {
        let state = self.lock();
        state.peer_end == Some(state.received)
    }

    /// Stop delivering: the consumer sees the end of what was delivered so far.
    pub fn end_delivery(&self) {
        self.lock().delivery = None;
    }

    /// Wait until our stream ended and the peer has all of it.
    pub async fn until_sent_everything(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.sent_everything() {
                return;
            }
            notified.await;
        }
    }

    fn is_done(&self, state: &State) -> bool {
        match self.side {
            // The client closes with 1000 once it has everything (FIN included); the server
            // waits for that rather than guessing that its FIN arrived.
            Side::Server => false,
            Side::Client => {
                state.peer_end == Some(state.received) && state.ack_sent == state.received
            }
        }
    }

    /// Whether the current connection brought a frame (or was attached) within `window`.
    #[must_use]
    pub fn heard_within(&self, window: Duration) -> bool {
        self.lock()
            .last_heard
            .is_some_and(|at| at.elapsed() < window)
    }

    /// Bytes held for the peer.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.lock().out.len()
    }
}

/// Move `input` into the link's stream while it has room; mark the stream ended when `input`
/// ends.
pub async fn feed(link: Arc<Link>, mut input: mpsc::Receiver<Bytes>) {
    loop {
        loop {
            let notified = link.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if link.lock().out.len() < link.limit {
                break;
            }
            notified.await;
        }
        let chunk = input.recv().await;
        let mut state = link.lock();
        match chunk {
            Some(chunk) => state.out.push(chunk),
            None => state.out_ended = true,
        }
        let ended = state.out_ended;
        drop(state);
        link.changed.notify_waiters();
        if ended {
            return;
        }
    }
}

/// Write what the link delivers to `output`, in order; shut `output` down at the end of the
/// peer's stream.
pub async fn deliver<W: AsyncWrite + Unpin>(mut queue: mpsc::Receiver<Bytes>, mut output: W) {
    while let Some(bytes) = queue.recv().await {
        if output.write_all(&bytes).await.is_err() || output.flush().await.is_err() {
            // The consumer is gone; what follows has nowhere to go.
            return;
        }
    }
    let _ = output.shutdown().await;
}

fn close_frame(code: u16, reason: &str) -> Message {
    // A close reason must fit in a control frame (123 bytes).
    let mut reason = reason.to_owned();
    while reason.len() > 120 {
        reason.pop();
    }
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    }))
}

/// Carry the link over `socket` until the session is done or the connection ends. The
/// handshake (OPEN or RESUME) is already done, and [`Link::resume_from`] set where to send
/// from.
pub async fn attach<S>(link: &Link, socket: WebSocketStream<S>) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, stream) = socket.split();
    {
        // A new connection starts by telling the peer where we are.
        let mut state = link.lock();
        state.ack_sent = state.received.wrapping_sub(1);
        state.last_heard = Some(tokio::time::Instant::now());
    }
    let ended = {
        let reader = read_frames(link, stream);
        let writer = write_frames(link, &mut sink);
        tokio::pin!(reader, writer);
        tokio::select! {
            ended = &mut reader => ended,
            ended = &mut writer => ended,
        }
    };
    link.lock().last_heard = None;
    if let Ended::Refused(code, reason) = &ended {
        tracing::debug!(code, %reason, "refusing the peer's frames");
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            sink.send(close_frame(*code, reason)),
        )
        .await;
    }
    ended
}

/// The reader of one connection: the peer's data into the delivery queue, its
/// acknowledgements into the replay buffer.
async fn read_frames<St>(link: &Link, mut stream: St) -> Ended
where
    St: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let message = match tokio::time::timeout(DEAD_AFTER, stream.next()).await {
            Err(_) => {
                return Ended::Dead(format!("no frame for {} s", DEAD_AFTER.as_secs()));
            }
            Ok(None) => return Ended::Dead("the connection ended".to_owned()),
            Ok(Some(Err(e))) => return Ended::Dead(e.to_string()),
            Ok(Some(Ok(message))) => message,
        };
        link.lock().last_heard = Some(tokio::time::Instant::now());
        let bytes = match message {
            Message::Binary(bytes) => bytes,
            Message::Close(frame) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                });
                return Ended::Closed(code, reason);
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            Message::Text(_) => {
                return Ended::Refused(close::PROTOCOL, "a text frame".to_owned());
            }
        };
        match Frame::decode(&bytes) {
            Ok(Frame::Data(data)) => {
                if let Err(refused) = take_data(link, data).await {
                    return refused;
                }
            }
            Ok(Frame::Ack { received }) => {
                let mut state = link.lock();
                // Only what was sent on this connection can be acknowledged.
                if received > state.next_send {
                    return Ended::Refused(
                        close::BAD_POSITION,
                        format!("ACK {received} past what was sent ({})", state.next_send),
                    );
                }
                if let Err(e) = state.out.acknowledge(received) {
                    return Ended::Refused(close::BAD_POSITION, e.to_string());
                }
                drop(state);
                link.changed.notify_waiters();
            }
            Ok(Frame::Fin { at }) => {
                let mut state = link.lock();
                if at < state.received {
                    return Ended::Refused(
                        close::BAD_POSITION,
                        "FIN before received data".to_owned(),
                    );
                }
                state.peer_end = Some(at);
                complete(&mut state);
                drop(state);
                link.changed.notify_waiters();
            }
            Ok(other) => {
                return Ended::Refused(close::PROTOCOL, format!("unexpected {other:?}"));
            }
            Err(e) => return Ended::Refused(close::PROTOCOL, e.to_string()),
        }
    }
}

/// Queue the peer's `data` for delivery and count it.
async fn take_data(link: &Link, data: Bytes) -> Result<(), Ended> {
    if data.is_empty() {
        return Ok(());
    }
    let (queue, past_end) = {
        let state = link.lock();
        let past_end = state
            .peer_end
            .is_some_and(|end| state.received + data.len() as u64 > end);
        (state.delivery.clone(), past_end)
    };
    if past_end {
        return Err(Ended::Refused(close::PROTOCOL, "data past FIN".to_owned()));
    }
    // Counted once queued, piece by piece: if this connection is dropped while waiting, the
    // bytes not yet queued were not taken and the peer sends them again. Pieces of at most
    // MAX_DATA keep the queue's memory bounded whatever the peer's frame size.
    let mut rest = data;
    while !rest.is_empty() {
        let piece = rest.split_to(rest.len().min(resume::MAX_DATA));
        let len = piece.len() as u64;
        if let Some(queue) = &queue {
            let _ = queue.send(piece).await;
        }
        link.lock().received += len;
    }
    let mut state = link.lock();
    let wake = state.received - state.ack_sent.min(state.received) >= resume::ACK_EVERY
        || complete(&mut state);
    drop(state);
    if wake {
        link.changed.notify_waiters();
    }
    Ok(())
}

/// What the writer sends next, if anything, and whether the session is done.
fn next_frame(link: &Link, fin_sent: &mut bool) -> (Option<Frame>, bool) {
    let mut state = link.lock();
    let data = (state.next_send < state.out.end())
        .then(|| state.out.slice_from(state.next_send, resume::MAX_DATA).ok())
        .flatten()
        .filter(|d| !d.is_empty());
    let frame = if let Some(data) = data {
        state.next_send += data.len() as u64;
        Some(Frame::Data(data))
    } else if state.received != state.ack_sent {
        state.ack_sent = state.received;
        Some(Frame::Ack {
            received: state.received,
        })
    } else if state.out_ended && !*fin_sent && state.next_send == state.out.end() {
        *fin_sent = true;
        Some(Frame::Fin {
            at: state.out.end(),
        })
    } else {
        None
    };
    let done = link.is_done(&state);
    let quiet = frame.is_none();
    (frame, done && quiet)
}

/// The writer of one connection: our stream from where the peer has it, acknowledgements,
/// FIN, and a keepalive when there is nothing else to say.
async fn write_frames<Si>(link: &Link, sink: &mut Si) -> Ended
where
    Si: futures_util::Sink<Message> + Unpin,
{
    let mut fin_sent = false;
    let mut last_sent = tokio::time::Instant::now();
    loop {
        let notified = link.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (frame, done) = next_frame(link, &mut fin_sent);
        if let Some(frame) = frame {
            if sink.feed(Message::Binary(frame.encode())).await.is_err() {
                return Ended::Dead("sending failed".to_owned());
            }
            last_sent = tokio::time::Instant::now();
            continue;
        }
        if sink.flush().await.is_err() {
            return Ended::Dead("sending failed".to_owned());
        }
        if done {
            let _ = sink.send(close_frame(close::DONE, "done")).await;
            return Ended::Done;
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(last_sent + KEEPALIVE_INTERVAL) => {
                // Nothing to say: an ACK anyway, so the peer knows the link is alive.
                let received = link.lock().received;
                if sink.send(Message::Binary(Frame::Ack { received }.encode())).await.is_err() {
                    return Ended::Dead("sending failed".to_owned());
                }
                last_sent = tokio::time::Instant::now();
            }
        }
    }
}

/// When the peer's stream is complete, end the delivery queue (the consumer sees its end).
/// Returns whether it did just now.
fn complete(state: &mut State) -> bool {
    if state.peer_end == Some(state.received) && state.delivery.is_some() {
        state.delivery = None;
        true
    } else {
        false
    }
}
