//! An established session: envelopes in and out as Noise transport messages.
//!
//! The handshake yields a [`Session`]: a [`Sealer`] (our sending cipher and
//! nonce) and an [`Opener`] (the receiving ones). snow's stateless transport
//! lets the two directions live in separate tasks without a lock; each side
//! keeps its own nonce counter, which must match the peer's exactly (TCP
//! preserves order, so a gap is a forgery or a bug and fails decryption).

use std::io;
use std::sync::Arc;

use snow::StatelessTransportState;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::envelope::{Decoder, Envelope, EnvelopeError};
use super::frame::{self, FrameError, MAX_MESSAGE, MAX_PLAINTEXT};

/// Failures of an established connection; one line each.
#[derive(Debug, Error)]
pub enum LinkError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("a transport message failed to decrypt (forged, corrupt or out of order)")]
    Decrypt,
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
    #[error("nonce space exhausted; the connection must be re-established")]
    NonceExhausted,
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl LinkError {
    /// Whether the peer broke the protocol (as opposed to the connection
    /// simply going away, which restarts and crashes do).
    pub fn is_protocol_violation(&self) -> bool {
        match self {
            LinkError::Frame(FrameError::Empty | FrameError::TooLarge(_)) => true,
            LinkError::Frame(_) | LinkError::Io(_) => false,
            LinkError::Envelope(EnvelopeError::TooLarge(_)) => true,
            LinkError::Envelope(EnvelopeError::Truncated(_)) => false,
            LinkError::Decrypt | LinkError::Encrypt(_) | LinkError::NonceExhausted => true,
        }
    }
}

impl LinkError {
    /// The offence of the peer this error is ([`super::misbehaviour`]):
    /// only what the peer itself sealed. An envelope header announcing an
    /// oversize payload came out of a message that decrypted, so the
    /// peer's session key made it, and no honest encoder writes one
    /// ([`Envelope::check`]): [`Offence::Malformed`]. A frame length or a
    /// ciphertext that fails is not: those bytes are not authenticated
    /// until they decrypt, and anyone on the path can inject some (the
    /// connection is closed all the same, and the peer reconnects).
    pub fn offence(&self) -> Option<super::misbehaviour::Offence> {
        match self {
            LinkError::Envelope(EnvelopeError::TooLarge(_)) => {
                Some(super::misbehaviour::Offence::Malformed)
            }
            _ => None,
        }
    }
}

/// Encrypts outgoing transport messages.
pub struct Sealer {
    transport: Arc<StatelessTransportState>,
    nonce: u64,
    cipher: Vec<u8>,
}

impl Sealer {
    pub fn new(transport: Arc<StatelessTransportState>) -> Self {
        Sealer {
            transport,
            nonce: 0,
            cipher: vec![0; MAX_MESSAGE],
        }
    }

    /// Encrypts one message (at most [`MAX_PLAINTEXT`] bytes) and appends
    /// its frame to `out`.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), LinkError> {
        if self.nonce == u64::MAX {
            return Err(LinkError::NonceExhausted);
        }
        let n = self
            .transport
            .write_message(self.nonce, plaintext, &mut self.cipher)
            .map_err(|e| LinkError::Encrypt(e.to_string()))?;
        self.nonce += 1;
        frame::encode(&self.cipher[..n], out)?;
        Ok(())
    }

    /// Encrypts an envelope into as many transport messages as it needs.
    pub fn seal_envelope(&mut self, env: &Envelope, out: &mut Vec<u8>) -> Result<(), LinkError> {
        let plain = env.encode()?;
        for chunk in plain.chunks(MAX_PLAINTEXT) {
            self.seal(chunk, out)?;
        }
        Ok(())
    }
}

/// Decrypts incoming transport messages.
pub struct Opener {
    transport: Arc<StatelessTransportState>,
    nonce: u64,
    plain: Vec<u8>,
}

impl Opener {
    pub fn new(transport: Arc<StatelessTransportState>) -> Self {
        Opener {
            transport,
            nonce: 0,
            plain: vec![0; MAX_MESSAGE],
        }
    }

    /// Decrypts one transport message.
    pub fn open(&mut self, message: &[u8]) -> Result<&[u8], LinkError> {
        if self.nonce == u64::MAX {
            return Err(LinkError::NonceExhausted);
        }
        let n = self
            .transport
            .read_message(self.nonce, message, &mut self.plain)
            .map_err(|_| LinkError::Decrypt)?;
        self.nonce += 1;
        Ok(&self.plain[..n])
    }
}

/// An authenticated peer and the session keys agreed with it.
pub struct Session {
    /// Who the other end proved to be.
    pub remote: super::handshake::Remote,
    pub sealer: Sealer,
    pub opener: Opener,
}

impl Session {
    /// Binds the session to the two halves of its stream.
    pub fn into_halves<R, W>(self, r: R, w: W) -> (EnvelopeReader<R>, EnvelopeWriter<W>) {
        (
            EnvelopeReader {
                io: r,
                opener: self.opener,
                decoder: Decoder::new(),
                frame: Vec::new(),
            },
            EnvelopeWriter {
                io: w,
                sealer: self.sealer,
                out: Vec::new(),
            },
        )
    }
}

/// Reads envelopes from the receiving half.
pub struct EnvelopeReader<R> {
    io: R,
    opener: Opener,
    decoder: Decoder,
    frame: Vec<u8>,
}

impl<R: AsyncRead + Unpin> EnvelopeReader<R> {
    /// The next envelope; `None` when the peer closed between envelopes.
    pub async fn next(&mut self) -> Result<Option<Envelope>, LinkError> {
        loop {
            if let Some(env) = self.decoder.next_envelope()? {
                return Ok(Some(env));
            }
            match frame::read(&mut self.io, &mut self.frame).await {
                Ok(()) => {}
                Err(FrameError::Closed) => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
            let plain = self.opener.open(&self.frame)?;
            self.decoder.push(plain);
        }
    }
}

/// Writes envelopes to the sending half.
pub struct EnvelopeWriter<W> {
    io: W,
    sealer: Sealer,
    out: Vec<u8>,
}

/// Buffer capacity kept between writes; a 1 MiB message borrows more briefly.
const KEEP_CAPACITY: usize = 128 * 1024;

impl<W: AsyncWrite + Unpin> EnvelopeWriter<W> {
    pub async fn send(&mut self, env: &Envelope) -> Result<(), LinkError> {
        self.out.clear();
        self.sealer.seal_envelope(env, &mut self.out)?;
        self.io.write_all(&self.out).await?;
        self.io.flush().await?;
        if self.out.capacity() > KEEP_CAPACITY {
            self.out = Vec::new();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::misbehaviour::Offence;

    /// Of the protocol violations that close a connection, only what the
    /// peer sealed itself is its offence: an oversize envelope header in
    /// decrypted bytes; not an empty or oversize frame, nor a ciphertext
    /// that fails (bytes anyone on the path can inject).
    #[test]
    fn only_violations_inside_decrypted_bytes_are_offences() {
        let sealed = LinkError::Envelope(EnvelopeError::TooLarge(1 << 30));
        assert!(sealed.is_protocol_violation());
        assert_eq!(sealed.offence(), Some(Offence::Malformed));
        for e in [
            LinkError::Decrypt,
            LinkError::Frame(FrameError::Empty),
            LinkError::Frame(FrameError::TooLarge(70_000)),
            LinkError::NonceExhausted,
            LinkError::Envelope(EnvelopeError::Truncated(3)),
            LinkError::Io(io::Error::other("reset")),
        ] {
            assert_eq!(e.offence(), None, "{e}");
        }
    }
}
