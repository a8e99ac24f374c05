//! Connect streaming envelopes: `[flags: u8][length: u32 big-endian][payload]`. Pure: bytes in,
//! messages out, so the framing is tested without a network.

/// Set on the last envelope of a stream: its payload is the end-of-stream JSON.
pub const END_STREAM: u8 = 0x02;
/// Set when the payload is compressed (we never ask for compression, so we refuse it).
pub const COMPRESSED: u8 = 0x01;

/// Frame one payload.
///
/// # Panics
/// If the payload is 4 GiB or more, which no Connect message is (servers and this client cap
/// messages at megabytes).
pub fn encode(flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("Connect messages are far below 4 GiB");
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(flags);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub flags: u8,
    pub payload: Vec<u8>,
}

/// Why the byte stream cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    TooLarge {
        len: usize,
        limit: usize,
    },
    Compressed,
    /// The stream ended in the middle of an envelope.
    Truncated {
        buffered: usize,
    },
}

/// Accumulates bytes as they arrive and yields whole envelopes.
#[derive(Debug)]
pub struct Decoder {
    buffer: Vec<u8>,
    limit: usize,
}

impl Decoder {
    /// `limit`: the largest payload accepted (bounded memory against a broken or hostile peer).
    pub fn new(limit: usize) -> Self {
        Self {
            buffer: Vec::new(),
            limit,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next complete envelope, if one is buffered.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, DecodeError> {
        let Some(header) = self.buffer.get(..5) else {
            return Ok(None);
        };
        let flags = header[0];
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > self.limit {
            return Err(DecodeError::TooLarge {
                len,
                limit: self.limit,
            });
        }
        if flags & COMPRESSED != 0 {
            return Err(DecodeError::Compressed);
        }
        if self.buffer.len() < 5 + len {
            return Ok(None);
        }
        let payload = self.buffer[5..5 + len].to_vec();
        self.buffer.drain(..5 + len);
        Ok(Some(Envelope { flags, payload }))
    }

    /// Call when the byte stream ended: an error if half an envelope is left.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Truncated {
                buffered: self.buffer.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_split_of_any_envelopes_decodes_back(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..6),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let wire: Vec<u8> = payloads.iter().enumerate().flat_map(|(i, p)| encode(if i + 1 == payloads.len() { END_STREAM } else { 0 }, p)).collect();
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
            points.sort_unstable();
            let mut decoder = Decoder::new(1024);
            let mut got = Vec::new();
            let mut last = 0;
            for point in points.into_iter().chain([wire.len()]) {
                decoder.push(&wire[last..point]);
                last = point;
                while let Some(envelope) = decoder.next_envelope().unwrap() {
                    got.push(envelope.payload);
                }
            }
            decoder.finish().unwrap();
            prop_assert_eq!(got, payloads);
        }
    }

    #[test]
    fn oversized_compressed_and_truncated_are_errors() {
        let mut decoder = Decoder::new(4);
        decoder.push(&encode(0, b"12345"));
        assert_eq!(
            decoder.next_envelope(),
            Err(DecodeError::TooLarge { len: 5, limit: 4 })
        );
        let mut decoder = Decoder::new(64);
        decoder.push(&encode(COMPRESSED, b"x"));
        assert_eq!(decoder.next_envelope(), Err(DecodeError::Compressed));
        let mut decoder = Decoder::new(64);
        decoder.push(&encode(0, b"abc")[..6]);
        assert_eq!(decoder.next_envelope(), Ok(None));
        assert_eq!(
            decoder.finish(),
            Err(DecodeError::Truncated { buffered: 6 })
        );
    }
}
