//! Envelopes: the typed messages carried by a connection's decrypted stream.
//!
//! Layout (all integers little-endian except where noted):
//!
//! | offset | size | field                         |
//! |--------|------|-------------------------------|
//! | 0      | 1    | message type                  |
//! | 1      | 1    | version of that type's layout |
//! | 2      | 8    | request id (u64 LE)           |
//! | 10     | 4    | payload length (u32 LE)       |
//! | 14     | n    | payload, n <= 1 MiB           |
//!
//! The decrypted stream is a plain byte sequence: an envelope may span many
//! Noise messages (a 1 MiB payload needs 17), and the [`Decoder`] accepts it
//! split anywhere. Oversize lengths are refused from the header alone, before
//! anything is buffered, so a peer cannot make us allocate more than one
//! maximal envelope per connection.

use thiserror::Error;

/// Header bytes before the payload.
pub const HEADER_LEN: usize = 14;
/// Largest payload (1 MiB).
pub const MAX_PAYLOAD: usize = 1 << 20;

/// One message.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Envelope {
    pub msg_type: u8,
    pub version: u8,
    pub request_id: u64,
    pub payload: Vec<u8>,
}

/// Envelope encoding and decoding failures; one line each.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EnvelopeError {
    #[error("envelope payload of {0} bytes exceeds the {MAX_PAYLOAD}-byte limit")]
    TooLarge(u64),
    #[error("stream ended {0} bytes into an envelope")]
    Truncated(usize),
}

impl Envelope {
    pub fn new(msg_type: u8, version: u8, request_id: u64, payload: Vec<u8>) -> Self {
        Envelope {
            msg_type,
            version,
            request_id,
            payload,
        }
    }

    /// Checks the payload bound.
    pub fn check(&self) -> Result<(), EnvelopeError> {
        if self.payload.len() > MAX_PAYLOAD {
            return Err(EnvelopeError::TooLarge(self.payload.len() as u64));
        }
        Ok(())
    }

    /// The 14-byte header.
    pub fn header(&self) -> Result<[u8; HEADER_LEN], EnvelopeError> {
        self.check()?;
        let mut h = [0u8; HEADER_LEN];
        h[0] = self.msg_type;
        h[1] = self.version;
        h[2..10].copy_from_slice(&self.request_id.to_le_bytes());
        h[10..14].copy_from_slice(&(self.payload.len() as u32).to_le_bytes());
        Ok(h)
    }

    /// Appends header and payload to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), EnvelopeError> {
        out.extend_from_slice(&self.header()?);
        out.extend_from_slice(&self.payload);
        Ok(())
    }

    pub fn encode(&self) -> Result<Vec<u8>, EnvelopeError> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        self.encode_into(&mut out)?;
        Ok(out)
    }
}

/// Buffer capacity a [`Decoder`] keeps between envelopes.
const KEEP_CAPACITY: usize = 128 * 1024;

/// Reassembles envelopes from decrypted chunks.
///
/// Envelopes are read at a cursor; consumed bytes are dropped from the
/// front only when they are at least half the buffer (and at once when
/// nothing is left), so each byte is moved at most about once whatever the
/// envelope sizes: linear, not quadratic, in a stream of tiny envelopes.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    at: usize,
    /// Bytes moved to the front so far (the cost the cursor keeps linear).
    moved: usize,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds decrypted bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.at > 0 && self.at * 2 >= self.buf.len() {
            self.moved += self.buf.len() - self.at;
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete envelope, `None` if more bytes are needed, or an
    /// error as soon as a header announces an oversize payload.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, EnvelopeError> {
        let b = &self.buf[self.at..];
        if b.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_le_bytes(b[10..14].try_into().expect("4 bytes")) as usize;
        if len > MAX_PAYLOAD {
            return Err(EnvelopeError::TooLarge(len as u64));
        }
        let end = HEADER_LEN + len;
        if b.len() < end {
            return Ok(None);
        }
        let env = Envelope {
            msg_type: b[0],
            version: b[1],
            request_id: u64::from_le_bytes(b[2..10].try_into().expect("8 bytes")),
            payload: b[HEADER_LEN..end].to_vec(),
        };
        self.at += end;
        if self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new(); // a 1 MiB envelope's buffer is not kept per connection
            }
        }
        Ok(Some(env))
    }

    /// Bytes held that do not yet form an envelope.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.at
    }

    /// Bytes moved within the buffer so far.
    pub fn bytes_moved(&self) -> usize {
        self.moved
    }

    /// At the end of the stream: an error if an envelope was left unfinished.
    pub fn finish(&self) -> Result<(), EnvelopeError> {
        match self.buffered() {
            0 => Ok(()),
            n => Err(EnvelopeError::Truncated(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn envelope() -> impl Strategy<Value = Envelope> {
        (
            any::<u8>(),
            any::<u8>(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..4096),
        )
            .prop_map(|(t, v, r, p)| Envelope::new(t, v, r, p))
    }

    /// Feeds `wire` to a decoder in chunks cut at `cuts`.
    fn decode_chunked(wire: &[u8], cuts: &[usize]) -> Result<Vec<Envelope>, EnvelopeError> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();
        let mut at = 0;
        for p in points {
            d.push(&wire[at..p]);
            at = p;
            while let Some(e) = d.next_envelope()? {
                out.push(e);
            }
        }
        d.finish()?;
        Ok(out)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn round_trip_split_anywhere(envs in prop::collection::vec(envelope(), 0..6),
                                     cuts in prop::collection::vec(any::<usize>(), 0..12)) {
            let mut wire = Vec::new();
            for e in &envs {
                e.encode_into(&mut wire).unwrap();
            }
            prop_assert_eq!(decode_chunked(&wire, &cuts).unwrap(), envs);
        }

        #[test]
        fn truncation_is_an_error(e in envelope(), cut in any::<prop::sample::Index>()) {
            let wire = e.encode().unwrap();
            let cut = 1 + cut.index(wire.len() - 1);
            prop_assert_eq!(decode_chunked(&wire[..cut], &[]), Err(EnvelopeError::Truncated(cut)));
        }

        #[test]
        fn oversize_header_is_refused_before_its_payload(len in (MAX_PAYLOAD as u32 + 1)..=u32::MAX,
                                                         t in any::<u8>()) {
            let mut h = Envelope::new(t, 1, 7, vec![]).header().unwrap();
            h[10..14].copy_from_slice(&len.to_le_bytes());
            let mut d = Decoder::new();
            d.push(&h);
            prop_assert_eq!(d.next_envelope(), Err(EnvelopeError::TooLarge(len as u64)));
        }
    }

    #[test]
    fn tiny_envelopes_decode_in_linear_time() {
        // 100,000 empty envelopes arriving in Noise-message-sized chunks.
        let mut wire = Vec::new();
        for i in 0..100_000u64 {
            Envelope::new(16, 1, i, vec![])
                .encode_into(&mut wire)
                .unwrap();
        }
        let mut d = Decoder::new();
        let mut n = 0u64;
        for chunk in wire.chunks(65_519) {
            d.push(chunk);
            while let Some(e) = d.next_envelope().unwrap() {
                assert_eq!(e.request_id, n);
                n += 1;
            }
        }
        d.finish().unwrap();
        assert_eq!(n, 100_000);
        // A drain per envelope would have moved gigabytes; the cursor moves at
        // most one partial envelope per chunk.
        assert!(
            d.bytes_moved() <= wire.len(),
            "{} bytes moved for {} received",
            d.bytes_moved(),
            wire.len()
        );
    }

    #[test]
    fn header_layout_and_payload_bound() {
        let e = Envelope::new(16, 2, 0x0102_0304_0506_0708, vec![0xaa; 3]);
        assert_eq!(
            e.encode().unwrap(),
            [16, 2, 8, 7, 6, 5, 4, 3, 2, 1, 3, 0, 0, 0, 0xaa, 0xaa, 0xaa]
        );
        let max = Envelope::new(16, 1, 0, vec![1; MAX_PAYLOAD]);
        let wire = max.encode().unwrap();
        assert_eq!(
            decode_chunked(&wire, &[65_519, 131_038]).unwrap(),
            vec![max]
        );
        let over = Envelope::new(16, 1, 0, vec![1; MAX_PAYLOAD + 1]);
        assert_eq!(
            over.encode(),
            Err(EnvelopeError::TooLarge(MAX_PAYLOAD as u64 + 1))
        );
    }
}
