//! Little-endian byte writer and bounds-checked reader for the node's
//! canonical binary layouts (genesis, proposals, messages; docs/SPEC.md).
//!
//! One place that checks lengths so no decoder can read past its input or
//! allocate from an unchecked count.

use thiserror::Error;

/// Why bytes do not decode; one line each.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    #[error("{what} is truncated: needed {needed} more bytes, {left} left")]
    Truncated {
        what: &'static str,
        needed: usize,
        left: usize,
    },
    #[error("{what} has {extra} trailing bytes")]
    TrailingBytes { what: &'static str, extra: usize },
    #[error("bad magic in {what}")]
    BadMagic { what: &'static str },
    #[error("unsupported {what} version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        what: &'static str,
        found: u8,
        supported: u8,
    },
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },
}

/// Appends fields to a buffer.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    /// A string as a u16 length then its UTF-8 bytes; callers bound the length.
    pub fn str16(&mut self, s: &str) -> &mut Self {
        debug_assert!(s.len() <= u16::MAX as usize);
        self.u16(s.len() as u16).bytes(s.as_bytes())
    }
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads fields from a slice, failing (never panicking) on short input.
pub struct Reader<'a> {
    what: &'static str,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(what: &'static str, bytes: &'a [u8]) -> Self {
        Reader { what, rest: bytes }
    }
    pub fn left(&self) -> usize {
        self.rest.len()
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.rest.len() < n {
            return Err(CodecError::Truncated {
                what: self.what,
                needed: n,
                left: self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
    pub fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn str16(&mut self) -> Result<&'a str, CodecError> {
        let n = self.u16()? as usize;
        let b = self.take(n)?;
        std::str::from_utf8(b).map_err(|_| CodecError::Invalid {
            what: self.what,
            why: "string is not UTF-8".into(),
        })
    }
    /// Checks the magic and version bytes at the start of a layout.
    pub fn header(&mut self, magic: &[u8; 4], version: u8) -> Result<(), CodecError> {
        if &self.array::<4>()? != magic {
            return Err(CodecError::BadMagic { what: self.what });
        }
        let v = self.u8()?;
        if v != version {
            return Err(CodecError::UnsupportedVersion {
                what: self.what,
                found: v,
                supported: version,
            });
        }
        Ok(())
    }
    /// Fails unless every byte was read.
    pub fn end(self) -> Result<(), CodecError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(CodecError::TrailingBytes {
                what: self.what,
                extra: self.rest.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_short_input() {
        let mut w = Writer::default();
        w.bytes(b"ABCD").u8(1).u16(7).u32(9).u64(11).str16("hé");
        let b = w.finish();
        let mut r = Reader::new("test", &b);
        r.header(b"ABCD", 1).unwrap();
        assert_eq!(
            (r.u16().unwrap(), r.u32().unwrap(), r.u64().unwrap()),
            (7, 9, 11)
        );
        assert_eq!(r.str16().unwrap(), "hé");
        r.end().unwrap();
        for cut in 0..b.len() {
            let mut r = Reader::new("test", &b[..cut]);
            let res = (|| {
                r.header(b"ABCD", 1)?;
                r.u16()?;
                r.u32()?;
                r.u64()?;
                r.str16()?;
                Ok::<_, CodecError>(())
            })();
            assert!(matches!(res, Err(CodecError::Truncated { .. })), "{cut}");
        }
        let mut r = Reader::new("test", &b);
        assert!(matches!(
            r.header(b"ABCE", 1),
            Err(CodecError::BadMagic { .. })
        ));
        let mut r = Reader::new("test", &b);
        assert!(matches!(
            r.header(b"ABCD", 2),
            Err(CodecError::UnsupportedVersion { found: 1, .. })
        ));
    }
}
