//! The client's resumable session: open it on the first connection, then keep attaching the
//! [`Link`] to new connections after each break, until the session is done, the server says it
//! is gone, or its grace period has passed.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::client::{ClientOptions, Socket};
use crate::link::{self, Ended, Link, Side};
use crate::resume::{self, Frame, KeyPair, Secret, SessionId, close};
use crate::{Result, TunnelError};

/// How long one reconnection's handshake may take (a frozen network accepts and then says
/// nothing).
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The first wait between reconnections, doubled up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between reconnections: the network is back within this of its return.
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// After our input ended and the server has all of it, how long we still wait for its end.
const CLOSE_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a frame of the handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn protocol(detail: impl Into<String>) -> TunnelError {
    TunnelError::Protocol {
        detail: detail.into(),
    }
}

/// The next resumption frame, or the close code the server ended with.
async fn next_frame(socket: &mut Socket) -> std::result::Result<Frame, Option<(u16, String)>> {
    let message = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Binary(bytes))) => return Ok(bytes),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(Some(frame)))) => {
                    return Err(Some((u16::from(frame.code), frame.reason.to_string())));
                }
                _ => return Err(None),
            }
        }
    })
    .await
    .map_err(|_| None)??;
    Frame::decode(&message).map_err(|e| Some((close::PROTOCOL, e.to_string())))
}

/// What a session was given when it opened.
struct Opened {
    session: SessionId,
    secret: Secret,
    grace: Duration,
}

async fn open(socket: &mut Socket) -> Result<Opened> {
    let keys = KeyPair::generate().map_err(|e| protocol(e.to_string()))?;
    let client_key = keys.public();
    match next_frame(socket).await {
        Ok(Frame::Challenge { .. }) => {}
        other => return Err(protocol(format!("expected CHALLENGE, got {other:?}"))),
    }
    socket
        .send(Message::Binary(Frame::Open { client_key }.encode()))
        .await
        .map_err(|e| protocol(format!("sending OPEN: {e}")))?;
    let (session, server_key, grace_secs) = match next_frame(socket).await {
        Ok(Frame::Opened {
            session,
            server_key,
            grace_secs,
        }) => (session, server_key, grace_secs),
        Err(Some((code, _))) if code == close::TARGET_UNREACHABLE => {
            return Err(TunnelError::RouteNotServing {
                detail: close::meaning(code).to_owned(),
            });
        }
        other => return Err(protocol(format!("expected OPENED, got {other:?}"))),
    };
    let secret = keys
        .agree(&server_key, &session, &client_key, &server_key)
        .map_err(|e| protocol(e.to_string()))?;
    Ok(Opened {
        session,
        secret,
        grace: Duration::from_secs(u64::from(grace_secs)),
    })
}

/// Why a reconnection failed: try again, or give up.
enum Retry {
    Later(String),
    Never(TunnelError),
}

async fn resume_once(
    options: &ClientOptions,
    link: &Link,
    opened: &Opened,
) -> std::result::Result<Socket, Retry> {
    let mut socket = match crate::client::reconnect(options, RECONNECT_TIMEOUT).await {
        Ok(socket) => socket,
        Err(e @ (TunnelError::LocalFile { .. } | TunnelError::BadUrl { .. })) => {
            return Err(Retry::Never(e));
        }
        Err(TunnelError::SessionLost { detail }) => {
            return Err(Retry::Never(TunnelError::SessionLost { detail }));
        }
        Err(e) => return Err(Retry::Later(e.to_string())),
    };
    let nonce = match next_frame(&mut socket).await {
        Ok(Frame::Challenge { nonce }) => nonce,
        other => return Err(Retry::Later(format!("expected CHALLENGE, got {other:?}"))),
    };
    let received = link.received();
    let proof = resume::proof(&opened.secret, &nonce, &opened.session, received);
    let ask = Frame::Resume {
        session: opened.session,
        received,
        proof,
    };
    if let Err(e) = socket.send(Message::Binary(ask.encode())).await {
        return Err(Retry::Later(e.to_string()));
    }
    match next_frame(&mut socket).await {
        Ok(Frame::Resumed { received }) => match link.resume_from(received) {
            Ok(()) => Ok(socket),
            Err(e) => Err(Retry::Never(protocol(format!(
                "the server's position is impossible: {e}"
            )))),
        },
        Err(Some((code, _)))
            if matches!(
                code,
                close::UNKNOWN_SESSION | close::BAD_PROOF | close::BAD_POSITION
            ) =>
        {
            Err(Retry::Never(TunnelError::SessionLost {
                detail: close::meaning(code).to_owned(),
            }))
        }
        other => Err(Retry::Later(format!("expected RESUMED, got {other:?}"))),
    }
}

/// Carry `input` and `output` over `socket` (the server agreed to resumption) and whatever
/// connections replace it.
pub(crate) async fn run<W>(
    options: &ClientOptions,
    mut socket: Socket,
    input: mpsc::Receiver<Bytes>,
    output: W,
) -> Result<()>
where
    W: AsyncWrite + Unpin,
{
    let opened = open(&mut socket).await?;
    let (delivery, queue) = mpsc::channel(16);
    let link = Link::new(Side::Client, delivery, resume::REPLAY_LIMIT);
    let feeding = link::feed(std::sync::Arc::clone(&link), input);
    let delivering = link::deliver(queue, output);
    let session = async {
        let mut socket = Some(socket);
        while let Some(current) = socket.take() {
            match link::attach(&link, current).await {
                Ended::Done | Ended::Closed(1000, _) => return Ok(()),
                Ended::Closed(code, _) if code == close::SUPERSEDED => {
                    return Err(TunnelError::SessionLost {
                        detail: close::meaning(code).to_owned(),
                    });
                }
                ended => tracing::info!(?ended, "the tunnel's connection broke; resuming"),
            }
            let give_up = Instant::now() + opened.grace + RECONNECT_TIMEOUT;
            let mut backoff = FIRST_BACKOFF;
            let mut last = String::new();
            while socket.is_none() {
                if Instant::now() >= give_up {
                    return Err(TunnelError::SessionLost {
                        detail: format!(
                            "no connection within the {} s grace period (last: {last})",
                            opened.grace.as_secs()
                        ),
                    });
                }
                match resume_once(options, &link, &opened).await {
                    Ok(resumed) => {
                        tracing::info!("resumed the tunnel's session");
                        socket = Some(resumed);
                    }
                    Err(Retry::Never(e)) => return Err(e),
                    Err(Retry::Later(why)) => {
                        tracing::debug!(%why, "resuming failed; trying again");
                        last = why;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
        Ok(())
    };
    // Our input ended and the server has all of it: give it a moment to finish, as without
    // resumption.
    let drained = async {
        link.until_sent_everything().await;
        tokio::time::sleep(CLOSE_DRAIN_TIMEOUT).await;
    };
    tokio::pin!(feeding, delivering, session, drained);
    let (mut fed, mut delivered) = (false, false);
    let result = loop {
        tokio::select! {
            result = &mut session => break result,
            () = &mut drained => break Ok(()),
            () = &mut feeding, if !fed => fed = true,
            () = &mut delivering, if !delivered => delivered = true,
        }
    };
    if !delivered {
        // Everything received is written out before we return: the delivery ends once what
        // is queued is written (the link no longer adds to it).
        let complete = link.peer_complete();
        link.end_delivery();
        if complete {
            delivering.await;
        } else {
            let _ = tokio::time::timeout(CLOSE_DRAIN_TIMEOUT, delivering).await;
        }
    }
    result
}
