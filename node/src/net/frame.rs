//! Framing of Noise messages on a byte stream (TCP).
//!
//! Each Noise message (handshake or transport) is sent after its length as a
//! 2-byte big-endian integer, so a frame is 2 + 1..=65,535 bytes. Noise caps
//! a message at 65,535 bytes including the 16-byte AEAD tag, which is why a
//! u16 suffices and why larger application messages span several frames (see
//! [`super::envelope`]).

use std::io;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest Noise message (and frame body), tag included.
pub const MAX_MESSAGE: usize = 65_535;
/// ChaChaPoly authentication tag carried by every transport message.
pub const TAG_LEN: usize = 16;
/// Most plaintext one transport message can carry.
pub const MAX_PLAINTEXT: usize = MAX_MESSAGE - TAG_LEN;

/// Framing failures; one line each.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The stream ended cleanly between frames.
    #[error("connection closed by peer")]
    Closed,
    /// The stream ended inside a frame.
    #[error("connection closed inside a frame ({got} of {want} bytes)")]
    Truncated { got: usize, want: usize },
    #[error("empty frame")]
    Empty,
    #[error("frame of {0} bytes exceeds the {MAX_MESSAGE}-byte Noise limit")]
    TooLarge(usize),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Appends `msg` as one frame to `out`.
pub fn encode(msg: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    check_len(msg.len())?;
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
    Ok(())
}

fn check_len(len: usize) -> Result<(), FrameError> {
    match len {
        0 => Err(FrameError::Empty),
        n if n > MAX_MESSAGE => Err(FrameError::TooLarge(n)),
        _ => Ok(()),
    }
}

/// Writes `msg` as one frame.
pub async fn write<W: AsyncWrite + Unpin>(w: &mut W, msg: &[u8]) -> Result<(), FrameError> {
    let mut out = Vec::with_capacity(2 + msg.len());
    encode(msg, &mut out)?;
    w.write_all(&out).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame into `buf` (replacing its contents).
pub async fn read<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    let mut len = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        let n = r.read(&mut len[got..]).await?;
        if n == 0 {
            return Err(if got == 0 {
                FrameError::Closed
            } else {
                FrameError::Truncated { got, want: 2 }
            });
        }
        got += n;
    }
    let want = u16::from_be_bytes(len) as usize;
    check_len(want)?;
    buf.clear();
    buf.resize(want, 0);
    let mut got = 0;
    while got < want {
        let n = r.read(&mut buf[got..]).await?;
        if n == 0 {
            return Err(FrameError::Truncated { got, want });
        }
        got += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn frames_round_trip(msgs in prop::collection::vec(
            prop::collection::vec(any::<u8>(), 1..3000), 1..8)) {
            let mut wire = Vec::new();
            for m in &msgs {
                encode(m, &mut wire).unwrap();
            }
            let got = rt().block_on(async {
                let mut r = &wire[..];
                let mut out = Vec::new();
                let mut buf = Vec::new();
                loop {
                    match read(&mut r, &mut buf).await {
                        Ok(()) => out.push(buf.clone()),
                        Err(FrameError::Closed) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                out
            });
            prop_assert_eq!(got, msgs);
        }

        #[test]
        fn truncated_frames_are_rejected(m in prop::collection::vec(any::<u8>(), 1..3000),
                                        cut in any::<prop::sample::Index>()) {
            let mut wire = Vec::new();
            encode(&m, &mut wire).unwrap();
            let cut = 1 + cut.index(wire.len() - 1); // 1..len: never the whole frame, never empty
            let res = rt().block_on(async {
                let mut r = &wire[..cut];
                read(&mut r, &mut Vec::new()).await
            });
            let is_truncated = matches!(res, Err(FrameError::Truncated { .. }));
            prop_assert!(is_truncated, "{:?}", res);
        }
    }

    #[test]
    fn limits() {
        let mut out = Vec::new();
        assert!(matches!(encode(&[], &mut out), Err(FrameError::Empty)));
        assert!(matches!(
            encode(&vec![0; MAX_MESSAGE + 1], &mut out),
            Err(FrameError::TooLarge(65_536))
        ));
        encode(&vec![7; MAX_MESSAGE], &mut out).unwrap();
        assert_eq!(&out[..2], &[0xff, 0xff]);
        // A zero length on the wire is refused too.
        let res = rt().block_on(async { read(&mut &[0u8, 0][..], &mut Vec::new()).await });
        assert!(matches!(res, Err(FrameError::Empty)));
    }
}
