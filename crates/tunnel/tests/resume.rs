//! The bridge's resumable sessions against a client written here frame by frame, so resumes
//! can be as wrong as a hostile peer makes them: a wrong secret, an unknown session, an
//! impossible position, a second client, a flood. A TCP echo server stands in for sshd.

// Helpers outside #[test] functions may unwrap too: this whole file is test code.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flyte_tunnel::bridge::{BridgeConfig, Target};
use flyte_tunnel::resume::{self, Frame, KeyPair, Secret, SessionId, close};
use flyte_tunnel::sessions::{ResumeSettings, Sessions};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Every wait here is bounded.
const LIMIT: Duration = Duration::from_secs(20);

async fn bridge(settings: ResumeSettings) -> (SocketAddr, Arc<Sessions>) {
    let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let sessions = Sessions::new(settings);
    let mut config = BridgeConfig::new(Target::Tcp(echo_addr));
    config.sessions = Some(Arc::clone(&sessions));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(flyte_tunnel::bridge::serve(listener, Arc::new(config)));
    (addr, sessions)
}

/// Upgrade with the resumption header set to `ask`; whether the bridge agreed.
async fn upgrade(addr: SocketAddr, ask: &str) -> (Socket, bool) {
    let mut request = format!("ws://{addr}/route").into_client_request().unwrap();
    request
        .headers_mut()
        .insert(resume::RESUME_HEADER, ask.parse().unwrap());
    let (socket, response) = tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(request))
        .await
        .unwrap()
        .unwrap();
    let agreed = response.headers().get(resume::RESUME_HEADER).is_some();
    (socket, agreed)
}

/// The next resumption frame, skipping ACKs; or the close code.
async fn next(socket: &mut Socket) -> Result<Frame, u16> {
    loop {
        let message = tokio::time::timeout(LIMIT, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no frame within {LIMIT:?}"));
        match message {
            Some(Ok(Message::Binary(bytes))) => match Frame::decode(&bytes).unwrap() {
                Frame::Ack { .. } => {}
                frame => return Ok(frame),
            },
            Some(Ok(Message::Close(Some(frame)))) => return Err(u16::from(frame.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return Err(0),
        }
    }
}

async fn send(socket: &mut Socket, frame: Frame) {
    socket.send(Message::Binary(frame.encode())).await.unwrap();
}

/// The echo of `text` through `socket`.
async fn echo(socket: &mut Socket, text: &'static str) {
    send(socket, Frame::Data(Bytes::from_static(text.as_bytes()))).await;
    let mut got = Vec::new();
    while got.len() < text.len() {
        match next(socket).await {
            Ok(Frame::Data(bytes)) => got.extend_from_slice(&bytes),
            other => panic!("expected the echo of {text:?}, got {other:?}"),
        }
    }
    assert_eq!(got, text.as_bytes());
}

/// A live session: its socket, id, secret, and the bytes the client has received.
struct Live {
    socket: Socket,
    session: SessionId,
    secret: Secret,
}

/// Bytes of the server's stream so far: every byte echoed.
fn echoed(texts: &[&str]) -> u64 {
    texts.iter().map(|t| t.len() as u64).sum()
}

async fn open(addr: SocketAddr) -> Live {
    let (mut socket, agreed) = upgrade(addr, "v1").await;
    assert!(agreed, "the bridge agrees to resumption");
    assert!(matches!(
        next(&mut socket).await,
        Ok(Frame::Challenge { .. })
    ));
    let keys = KeyPair::generate().unwrap();
    let client_key = keys.public();
    send(&mut socket, Frame::Open { client_key }).await;
    let Ok(Frame::Opened {
        session,
        server_key,
        grace_secs,
    }) = next(&mut socket).await
    else {
        panic!("no OPENED");
    };
    assert_eq!(grace_secs, 900, "the default grace is 15 minutes");
    let secret = keys
        .agree(&server_key, &session, &client_key, &server_key)
        .unwrap();
    Live {
        socket,
        session,
        secret,
    }
}

/// Try to resume `session` claiming `received`, proving with `secret` (or garbage).
async fn resume(
    addr: SocketAddr,
    session: SessionId,
    received: u64,
    secret: Option<&Secret>,
) -> (Socket, Result<Frame, u16>) {
    let (mut socket, agreed) = upgrade(addr, "v1; resume").await;
    assert!(agreed);
    let Ok(Frame::Challenge { nonce }) = next(&mut socket).await else {
        panic!("no CHALLENGE");
    };
    let proof = secret.map_or([7u8; 32], |s| resume::proof(s, &nonce, &session, received));
    send(
        &mut socket,
        Frame::Resume {
            session,
            received,
            proof,
        },
    )
    .await;
    let answer = next(&mut socket).await;
    (socket, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_resumes_are_refused_with_their_code_and_the_live_session_is_untouched() {
    let (addr, sessions) = bridge(ResumeSettings::default()).await;
    let mut live = open(addr).await;
    echo(&mut live.socket, "hello").await;

    // Before each case the server has sent "hello" and one "still here" per case so far.
    let past = |case: usize| echoed(&["hello"]) + echoed(&["still here"]) * case as u64 + 1;
    let cases: [(&str, SessionId, u64, Option<&Secret>, u16); 4] = [
        ("a wrong secret", live.session, 5, None, close::BAD_PROOF),
        (
            "an unknown session",
            [0xAB; 16],
            5,
            Some(&live.secret),
            close::UNKNOWN_SESSION,
        ),
        (
            "a position past what was sent",
            live.session,
            past(2),
            Some(&live.secret),
            close::BAD_POSITION,
        ),
        (
            "a position far past",
            live.session,
            u64::MAX,
            Some(&live.secret),
            close::BAD_POSITION,
        ),
    ];
    for (what, session, received, secret, code) in cases {
        let (_socket, answer) = resume(addr, session, received, secret).await;
        assert_eq!(answer, Err(code), "{what}");
        echo(&mut live.socket, "still here").await;
    }

    // A flood of wrong resumes: each refused, nothing kept, the session untouched.
    let flood = (0..64).map(|_| resume(addr, live.session, 0, None));
    for (_socket, answer) in futures_util::future::join_all(flood).await {
        assert_eq!(answer, Err(close::BAD_PROOF));
    }
    assert_eq!(sessions.len(), 1);
    echo(&mut live.socket, "after the flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_that_proves_the_secret_takes_the_session_over_once_its_connection_is_silent() {
    let (addr, sessions) = bridge(ResumeSettings::default()).await;
    let mut live = open(addr).await;
    echo(&mut live.socket, "12345").await;
    // A second client, even one with the secret, cannot take a connection that is heard from.
    let (_refused, answer) = resume(addr, live.session, 5, Some(&live.secret)).await;
    assert_eq!(answer, Err(close::IN_USE));
    echo(&mut live.socket, "678").await;
    // Once the old connection has been silent for LIVE_WINDOW (as when the client's network
    // broke), the client's resume takes it over; it tries again meanwhile, as the tunnel does.
    // Claim only 2 of the 8 echoed bytes: the server sends the other 6 again.
    let (mut second, answer) = tokio::time::timeout(LIMIT, async {
        loop {
            let (socket, answer) = resume(addr, live.session, 2, Some(&live.secret)).await;
            if answer != Err(close::IN_USE) {
                return (socket, answer);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap();
    let Ok(Frame::Resumed { received }) = answer else {
        panic!("not resumed: {answer:?}");
    };
    assert_eq!(received, 8, "the server took all 8 bytes the client sent");
    let mut replayed = Vec::new();
    while replayed.len() < 6 {
        let Ok(Frame::Data(bytes)) = next(&mut second).await else {
            panic!("no replay after {replayed:?}");
        };
        replayed.extend_from_slice(&bytes);
    }
    assert_eq!(&replayed[..], b"345678");
    echo(&mut second, "on the new connection").await;
    // The old connection is dropped.
    assert_eq!(next(&mut live.socket).await, Err(0));
    assert_eq!(sessions.len(), 1);
    // The client finishes: its close ends the session.
    second.close(None).await.unwrap();
    tokio::time::timeout(LIMIT, async {
        while !sessions.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_session_limit_a_client_gets_a_plain_tunnel() {
    let (addr, sessions) = bridge(ResumeSettings {
        max_sessions: 1,
        ..ResumeSettings::default()
    })
    .await;
    let mut live = open(addr).await;
    echo(&mut live.socket, "one").await;
    let (mut plain, agreed) = upgrade(addr, "v1").await;
    assert!(!agreed, "no second resumable session");
    plain
        .send(Message::Binary(Bytes::from_static(b"raw bytes")))
        .await
        .unwrap();
    let Some(Ok(Message::Binary(back))) = tokio::time::timeout(LIMIT, plain.next()).await.unwrap()
    else {
        panic!("no echo");
    };
    assert_eq!(&back[..], b"raw bytes");
    assert_eq!(sessions.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledgement_of_bytes_never_sent_is_refused() {
    let (addr, sessions) = bridge(ResumeSettings::default()).await;
    let mut live = open(addr).await;
    echo(&mut live.socket, "hello").await;
    // The server sent 5 bytes; acknowledging 6 would let it skip data it never sent.
    send(&mut live.socket, Frame::Ack { received: 6 }).await;
    assert_eq!(next(&mut live.socket).await, Err(close::BAD_POSITION));
    // The session waits for a resume from where the client really is.
    let (mut again, answer) = resume(addr, live.session, 5, Some(&live.secret)).await;
    assert!(
        matches!(answer, Ok(Frame::Resumed { received: 5 })),
        "{answer:?}"
    );
    echo(&mut again, "back").await;
    assert_eq!(sessions.len(), 1);
}
