//! A minimal status client: one HTTP/1.0 GET on a loopback address.
//!
//! Deliberately tiny (std only, blocking): the status server is local and
//! answers with one small body, so a full HTTP client stack would add
//! weight for nothing. HTTP/1.0 means the server closes after the body, so
//! the response ends at EOF.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{StatusError, StatusSnapshot};

/// Largest response accepted.
const MAX_RESPONSE: u64 = 16 << 20;

/// GETs `path` and returns the body of a 200 response.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String, StatusError> {
    let connect = |source| StatusError::Connect { addr, source };
    let bad = |why: String| StatusError::BadResponse { addr, why };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(connect)?;
    stream.set_read_timeout(Some(timeout)).map_err(connect)?;
    stream.set_write_timeout(Some(timeout)).map_err(connect)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").map_err(connect)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut raw)
        .map_err(|e| bad(e.to_string()))?;
    let text = String::from_utf8(raw).map_err(|_| bad("response is not UTF-8".into()))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of headers".into()))?;
    let status_line = head.lines().next().unwrap_or_default();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(bad(format!("{path}: {status_line}")));
    }
    Ok(body.to_string())
}

/// The node's `/status` snapshot.
pub fn fetch(addr: SocketAddr, timeout: Duration) -> Result<StatusSnapshot, StatusError> {
    let body = get(addr, "/status", timeout)?;
    serde_json::from_str(&body).map_err(|e| StatusError::BadResponse {
        addr,
        why: format!("/status is not a status snapshot: {e}"),
    })
}
