//! The resumable tunnel's protocol (version 1): frames, the replay buffer, and the session keys.
//! No I/O and no clock here; [`crate::link`] drives it.
//!
//! A client offers resumption with the request header [`RESUME_HEADER`]. A server that does not
//! answer with it (Flyte's own pod side) gets plain frames exactly as before. When it is chosen,
//! every WebSocket message is one binary [`Frame`]: a type byte, then fixed big-endian fields.
//!
//! ```text
//! new:     C: GET (x-flyte-run-resume: v1)   S: 101 (x-flyte-run-resume: v1), CHALLENGE nonce
//!          C: OPEN client_key                S: OPENED session, server_key, grace
//! resume:  C: GET (x-flyte-run-resume: v1; resume)   S: 101 (same), CHALLENGE nonce
//!          C: RESUME session, received, proof     S: RESUMED received  (or a close code)
//! then:    DATA bytes | ACK received | FIN at, both ways
//! ```
//!
//! The secret is never sent: both ends derive it from an X25519 exchange (ephemeral keys in
//! OPEN and OPENED) and a resume proves it with an HMAC over the server's fresh nonce, the
//! session and the claimed position, so a recorded RESUME is useless later. Positions are
//! absolute byte counts of each direction's stream; an ACK says how many bytes of the peer's
//! stream were taken, and the peer may forget them. After a reconnection each side sends again
//! from the position the other says it has.

use std::collections::VecDeque;

use aws_lc_rs::{agreement, hmac, rand};
use tokio_tungstenite::tungstenite::Bytes;

/// The header that offers resumption (request: `v1`, or `v1; resume` to continue a session,
/// so the bridge opens no new SSH connection for it) and agrees to it (response: `v1`). A
/// header rather than a WebSocket subprotocol: a client that names subprotocols must fail when
/// the server picks none (tungstenite does), and Flyte's pod side picks none.
pub const RESUME_HEADER: &str = "x-flyte-run-resume";
/// The protocol version in [`RESUME_HEADER`].
pub const VERSION: &str = "v1";
/// Bytes of one direction kept until the peer acknowledges them. When it is full, reading from
/// the source stops, and SSH's own flow control holds the sender.
pub const REPLAY_LIMIT: usize = 4 * 1024 * 1024;
/// A receiver acknowledges at least this often (in bytes), so a sender's buffer drains.
pub const ACK_EVERY: u64 = 256 * 1024;
/// Largest DATA payload a side sends.
pub const MAX_DATA: usize = 64 * 1024;

/// Close codes (WebSocket's application range) that say why a resumable connection ended.
pub mod close {
    /// A frame that breaks the protocol (unknown type, wrong length, wrong order).
    pub const PROTOCOL: u16 = 4400;
    /// The resume's proof does not match the session's secret.
    pub const BAD_PROOF: u16 = 4401;
    /// No such session: it never existed, or its grace period ran out.
    pub const UNKNOWN_SESSION: u16 = 4404;
    /// Another connection resumed this session.
    pub const SUPERSEDED: u16 = 4409;
    /// A position before what was acknowledged or past what was sent.
    pub const BAD_POSITION: u16 = 4416;
    /// The session's connection is alive (heard from within [`crate::link::LIVE_WINDOW`]): a
    /// resume is taken only once it has gone silent, so a second client cannot take a live
    /// session over. The client that lost its connection tries again.
    pub const IN_USE: u16 = 4423;
    /// Too many sessions kept at once.
    pub const TOO_MANY_SESSIONS: u16 = 4429;
    /// The SSH server could not be reached for a new session.
    pub const TARGET_UNREACHABLE: u16 = 4502;
    /// Both streams ended: the session is over.
    pub const DONE: u16 = 1000;

    /// What a close code means, for messages.
    #[must_use]
    pub fn meaning(code: u16) -> &'static str {
        match code {
            PROTOCOL => "a frame broke the resumption protocol",
            BAD_PROOF => "the resume proof does not match the session's secret",
            UNKNOWN_SESSION => {
                "the session is gone (its grace period ran out, or it never existed)"
            }
            SUPERSEDED => "another connection resumed this session",
            BAD_POSITION => "a position outside what was sent and acknowledged",
            IN_USE => "the session's connection is alive",
            TOO_MANY_SESSIONS => "the server keeps too many sessions",
            TARGET_UNREACHABLE => "the SSH server is not reachable",
            DONE => "the session ended",
            _ => "closed",
        }
    }
}

/// A session's name (not secret: a resume must also prove the secret).
pub type SessionId = [u8; 16];

/// One message of the resumable protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Server, first: the nonce a RESUME's proof covers.
    Challenge { nonce: [u8; 32] },
    /// Client: start a session; its X25519 public key.
    Open { client_key: [u8; 32] },
    /// Server: the session, its X25519 public key, and how long it waits for a resume.
    Opened {
        session: SessionId,
        server_key: [u8; 32],
        grace_secs: u32,
    },
    /// Client: continue `session`; it has taken `received` bytes of the server's stream.
    Resume {
        session: SessionId,
        received: u64,
        proof: [u8; 32],
    },
    /// Server: resumed; it has taken `received` bytes of the client's stream.
    Resumed { received: u64 },
    /// Stream bytes, at the sender's next position.
    Data(Bytes),
    /// The sender has taken this many bytes of the receiver's stream (also the keepalive).
    Ack { received: u64 },
    /// The sender's stream ends at this position.
    Fin { at: u64 },
}

const CHALLENGE: u8 = 0x01;
const OPEN: u8 = 0x02;
const OPENED: u8 = 0x03;
const RESUME: u8 = 0x04;
const RESUMED: u8 = 0x05;
const DATA: u8 = 0x10;
const ACK: u8 = 0x11;
const FIN: u8 = 0x12;

/// A frame that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad resumption frame: {0}")]
pub struct FrameError(pub String);

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

fn u64_at(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(array(bytes))
}

impl Frame {
    /// The frame's bytes (one binary WebSocket message).
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(64);
        match self {
            Frame::Challenge { nonce } => {
                out.push(CHALLENGE);
                out.extend_from_slice(nonce);
            }
            Frame::Open { client_key } => {
                out.push(OPEN);
                out.extend_from_slice(client_key);
            }
            Frame::Opened {
                session,
                server_key,
                grace_secs,
            } => {
                out.push(OPENED);
                out.extend_from_slice(session);
                out.extend_from_slice(server_key);
                out.extend_from_slice(&grace_secs.to_be_bytes());
            }
            Frame::Resume {
                session,
                received,
                proof,
            } => {
                out.push(RESUME);
                out.extend_from_slice(session);
                out.extend_from_slice(&received.to_be_bytes());
                out.extend_from_slice(proof);
            }
            Frame::Resumed { received } => {
                out.push(RESUMED);
                out.extend_from_slice(&received.to_be_bytes());
            }
            Frame::Data(bytes) => {
                out.reserve(bytes.len());
                out.push(DATA);
                out.extend_from_slice(bytes);
            }
            Frame::Ack { received } => {
                out.push(ACK);
                out.extend_from_slice(&received.to_be_bytes());
            }
            Frame::Fin { at } => {
                out.push(FIN);
                out.extend_from_slice(&at.to_be_bytes());
            }
        }
        Bytes::from(out)
    }

    /// Read one message.
    ///
    /// # Errors
    /// An empty message, an unknown type, or a length that does not fit the type.
    pub fn decode(message: &Bytes) -> Result<Frame, FrameError> {
        let Some((&kind, body)) = message.split_first() else {
            return Err(FrameError("an empty message".to_owned()));
        };
        let want = |len: usize, name: &str| {
            if body.len() == len {
                Ok(())
            } else {
                Err(FrameError(format!(
                    "{name} carries {} bytes, not {len}",
                    body.len()
                )))
            }
        };
        Ok(match kind {
            CHALLENGE => {
                want(32, "CHALLENGE")?;
                Frame::Challenge { nonce: array(body) }
            }
            OPEN => {
                want(32, "OPEN")?;
                Frame::Open {
                    client_key: array(body),
                }
            }
            OPENED => {
                want(52, "OPENED")?;
                Frame::Opened {
                    session: array(body),
                    server_key: array(&body[16..]),
                    grace_secs: u32::from_be_bytes(array(&body[48..])),
                }
            }
            RESUME => {
                want(56, "RESUME")?;
                Frame::Resume {
                    session: array(body),
                    received: u64_at(&body[16..]),
                    proof: array(&body[24..]),
                }
            }
            RESUMED => {
                want(8, "RESUMED")?;
                Frame::Resumed {
                    received: u64_at(body),
                }
            }
            DATA => Frame::Data(message.slice(1..)),
            ACK => {
                want(8, "ACK")?;
                Frame::Ack {
                    received: u64_at(body),
                }
            }
            FIN => {
                want(8, "FIN")?;
                Frame::Fin { at: u64_at(body) }
            }
            other => return Err(FrameError(format!("unknown frame type {other:#04x}"))),
        })
    }
}

/// A position outside what a replay buffer holds.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("position {position} is outside {start}..={end}")]
pub struct PositionError {
    pub position: u64,
    pub start: u64,
    pub end: u64,
}

/// The bytes of one direction that were sent (or are to be sent) but not yet acknowledged:
/// positions `start()..end()`.
#[derive(Debug, Default)]
pub struct ReplayBuffer {
    start: u64,
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl ReplayBuffer {
    /// The first byte held (everything before it was acknowledged).
    #[must_use]
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The position after the last byte held: the stream's length so far.
    #[must_use]
    pub fn end(&self) -> u64 {
        self.start + self.len as u64
    }

    /// Bytes held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append the stream's next bytes.
    pub fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.chunks.push_back(bytes);
        }
    }

    fn check(&self, position: u64) -> Result<(), PositionError> {
        if (self.start..=self.end()).contains(&position) {
            Ok(())
        } else {
            Err(PositionError {
                position,
                start: self.start,
                end: self.end(),
            })
        }
    }

    /// The peer has everything before `position`: forget it.
    ///
    /// # Errors
    /// `position` is before what was already forgotten or past what was sent.
    pub fn acknowledge(&mut self, position: u64) -> Result<(), PositionError> {
        self.check(position)?;
        let mut drop = usize::try_from(position - self.start).unwrap_or(usize::MAX);
        while drop > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.len() <= drop {
                drop -= front.len();
                self.len -= front.len();
                self.chunks.pop_front();
            } else {
                let _ = front.split_to(drop);
                self.len -= drop;
                drop = 0;
            }
        }
        self.start = position;
        Ok(())
    }

    /// Up to `max` bytes from `position` (empty at the end).
    ///
    /// # Errors
    /// `position` is not held.
    pub fn slice_from(&self, position: u64, max: usize) -> Result<Bytes, PositionError> {
        self.check(position)?;
        let mut skip = usize::try_from(position - self.start).unwrap_or(usize::MAX);
        for chunk in &self.chunks {
            if skip < chunk.len() {
                let end = chunk.len().min(skip + max);
                return Ok(chunk.slice(skip..end));
            }
            skip -= chunk.len();
        }
        Ok(Bytes::new())
    }

    /// Whether `position` can be sent from (acknowledged ..= sent).
    ///
    /// # Errors
    /// It cannot.
    pub fn resume_from(&self, position: u64) -> Result<(), PositionError> {
        self.check(position)
    }
}

/// A session's shared secret (32 bytes); never printed.
#[derive(Clone)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The randomness or key agreement failed (the system's random source).
#[derive(Debug, thiserror::Error)]
#[error("the key exchange failed")]
pub struct KeyError;

/// Random bytes from the system's source.
///
/// # Errors
/// The source failed.
pub fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut out = [0u8; N];
    rand::fill(&mut out).map_err(|_| KeyError)?;
    Ok(out)
}

/// One side's ephemeral X25519 key.
pub struct KeyPair {
    private: agreement::EphemeralPrivateKey,
    public: [u8; 32],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair").finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh key.
    ///
    /// # Errors
    /// The random source failed.
    pub fn generate() -> Result<Self, KeyError> {
        let rng = rand::SystemRandom::new();
        let private = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng)
            .map_err(|_| KeyError)?;
        let public = private.compute_public_key().map_err(|_| KeyError)?;
        let public: [u8; 32] = public.as_ref().try_into().map_err(|_| KeyError)?;
        Ok(Self { private, public })
    }

    /// The public half, sent to the peer.
    #[must_use]
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// The session secret agreed with the peer's public key: HMAC-SHA256 keyed by the X25519
    /// result over the session and both public keys (client's first).
    ///
    /// # Errors
    /// The peer's key is not a valid X25519 key.
    pub fn agree(
        self,
        peer: &[u8; 32],
        session: &SessionId,
        client_key: &[u8; 32],
        server_key: &[u8; 32],
    ) -> Result<Secret, KeyError> {
        let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, peer);
        agreement::agree_ephemeral(self.private, peer, KeyError, |shared| {
            let key = hmac::Key::new(hmac::HMAC_SHA256, shared);
            let mut context = hmac::Context::with_key(&key);
            context.update(b"flyte-run resume v1 secret");
            context.update(session);
            context.update(client_key);
            context.update(server_key);
            let tag = context.sign();
            let mut secret = [0u8; 32];
            secret.copy_from_slice(tag.as_ref());
            Ok(Secret(secret))
        })
    }
}

fn proof_message(nonce: &[u8; 32], session: &SessionId, received: u64) -> Vec<u8> {
    let mut message = b"flyte-run resume v1 proof".to_vec();
    message.extend_from_slice(nonce);
    message.extend_from_slice(session);
    message.extend_from_slice(&received.to_be_bytes());
    message
}

/// The proof a RESUME carries: HMAC-SHA256 under the secret of the server's nonce, the session
/// and the claimed position.
#[must_use]
pub fn proof(secret: &Secret, nonce: &[u8; 32], session: &SessionId, received: u64) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &secret.0);
    let tag = hmac::sign(&key, &proof_message(nonce, session, received));
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Whether `proof` is right (compared in constant time).
#[must_use]
pub fn verify(
    secret: &Secret,
    nonce: &[u8; 32],
    session: &SessionId,
    received: u64,
    proof: &[u8; 32],
) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, &secret.0);
    hmac::verify(&key, &proof_message(nonce, session, received), proof).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Challenge { nonce: [7; 32] },
            Frame::Open {
                client_key: [1; 32],
            },
            Frame::Opened {
                session: [2; 16],
                server_key: [3; 32],
                grace_secs: 900,
            },
            Frame::Resume {
                session: [2; 16],
                received: u64::MAX - 1,
                proof: [9; 32],
            },
            Frame::Resumed { received: 42 },
            Frame::Data(Bytes::from_static(b"ssh bytes")),
            Frame::Data(Bytes::new()),
            Frame::Ack { received: 1 << 40 },
            Frame::Fin { at: 5 },
        ];
        for frame in frames {
            assert_eq!(
                Frame::decode(&frame.encode()),
                Ok(frame.clone()),
                "{frame:?}"
            );
        }
    }

    #[test]
    fn malformed_frames_are_named() {
        for (bytes, want) in [
            (&b""[..], "an empty message"),
            (&[0x7f][..], "unknown frame type 0x7f"),
            (&[ACK, 1, 2][..], "ACK carries 2 bytes, not 8"),
            (&[RESUME; 20][..], "RESUME carries 19 bytes, not 56"),
            (&[OPEN][..], "OPEN carries 0 bytes, not 32"),
        ] {
            assert_eq!(
                Frame::decode(&Bytes::copy_from_slice(bytes)),
                Err(FrameError(want.to_owned()))
            );
        }
    }

    #[test]
    fn the_replay_buffer_forgets_what_is_acknowledged_and_replays_the_rest() {
        let mut buffer = ReplayBuffer::default();
        buffer.push(Bytes::from_static(b"hello "));
        buffer.push(Bytes::from_static(b"world"));
        assert_eq!((buffer.start(), buffer.end(), buffer.len()), (0, 11, 11));
        assert_eq!(buffer.slice_from(3, 100).unwrap(), "lo ");
        assert_eq!(buffer.slice_from(6, 3).unwrap(), "wor");
        assert_eq!(buffer.slice_from(11, 3).unwrap(), "");
        buffer.acknowledge(8).unwrap();
        assert_eq!((buffer.start(), buffer.end(), buffer.len()), (8, 11, 3));
        assert_eq!(buffer.slice_from(8, 100).unwrap(), "rld");
        for (position, ok) in [(7, false), (8, true), (11, true), (12, false)] {
            assert_eq!(buffer.resume_from(position).is_ok(), ok, "{position}");
        }
        assert_eq!(
            buffer.acknowledge(12),
            Err(PositionError {
                position: 12,
                start: 8,
                end: 11
            })
        );
        assert_eq!(buffer.acknowledge(5).unwrap_err().position, 5);
        buffer.acknowledge(11).unwrap();
        assert!(buffer.is_empty());
        assert_eq!(buffer.start(), 11);
    }

    proptest::proptest! {
        #[test]
        fn replayed_bytes_are_the_stream(
            chunks in proptest::collection::vec(proptest::collection::vec(0u8..=255, 0..50), 0..20),
            ack_fraction in 0.0f64..=1.0,
            from_fraction in 0.0f64..=1.0,
        ) {
            let stream: Vec<u8> = chunks.concat();
            let mut buffer = ReplayBuffer::default();
            for chunk in &chunks {
                buffer.push(Bytes::from(chunk.clone()));
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
            let acked = (stream.len() as f64 * ack_fraction) as u64;
            buffer.acknowledge(acked).unwrap();
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
            let mut position = acked + ((stream.len() as u64 - acked) as f64 * from_fraction) as u64;
            let start = position;
            let mut replayed = Vec::new();
            loop {
                let piece = buffer.slice_from(position, 7).unwrap();
                if piece.is_empty() { break; }
                position += piece.len() as u64;
                replayed.extend_from_slice(&piece);
            }
            proptest::prop_assert_eq!(&replayed[..], &stream[usize::try_from(start).unwrap()..]);
        }
    }

    #[test]
    fn both_ends_agree_on_the_secret_and_only_it_proves_a_resume() {
        let client = KeyPair::generate().unwrap();
        let server = KeyPair::generate().unwrap();
        let (ck, sk) = (client.public(), server.public());
        let session = [5u8; 16];
        let at_client = client.agree(&sk, &session, &ck, &sk).unwrap();
        let at_server = server.agree(&ck, &session, &ck, &sk).unwrap();
        let nonce = [8u8; 32];
        let p = proof(&at_client, &nonce, &session, 77);
        assert!(verify(&at_server, &nonce, &session, 77, &p));
        // Another position, nonce, session or secret: refused.
        assert!(!verify(&at_server, &nonce, &session, 78, &p));
        assert!(!verify(&at_server, &[9u8; 32], &session, 77, &p));
        assert!(!verify(&at_server, &nonce, &[6u8; 16], 77, &p));
        let other = KeyPair::generate()
            .unwrap()
            .agree(&sk, &session, &ck, &sk)
            .unwrap();
        assert!(!verify(&other, &nonce, &session, 77, &p));
        assert_eq!(format!("{at_client:?}"), "Secret(<redacted>)");
    }
}
