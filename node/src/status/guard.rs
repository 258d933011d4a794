//! Bounds on the status server's connections, below axum (which exposes no
//! timeouts of its own): a [`GuardedListener`] hands axum connections that
//! - are at most [`MAX_CONNECTIONS`] at once, and at most
//!   [`MAX_PER_IP`] from one address other than loopback (the operator's
//!   own tools), so one remote client cannot take every slot (more are
//!   closed on accept);
//! - may send at most [`MAX_REQUEST_BYTES`] in all (request lines and
//!   headers of GET requests; this is the header-size limit, and a client
//!   past it is cut off);
//! - are closed after [`READ_TIMEOUT`] without a byte from the client (a
//!   silent or slow-loris client) and after [`MAX_LIFETIME`] whatever they
//!   do (a keep-alive scraper simply reconnects).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep, sleep_until, Instant, Sleep};

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Connections served at once from one address other than loopback.
pub const MAX_PER_IP: usize = 4;
/// Bytes one connection may send in all.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Longest wait for the client's next bytes.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of one connection.
pub const MAX_LIFETIME: Duration = Duration::from_secs(60);

/// A [`TcpListener`] whose connections are bounded (module docs).
pub struct GuardedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Loopback connections are not counted per address.
    exempt_loopback: bool,
    read_timeout: Duration,
}

impl GuardedListener {
    pub fn new(inner: TcpListener) -> Self {
        Self::with_read_timeout(inner, READ_TIMEOUT)
    }

    /// With another read timeout (tests).
    pub fn with_read_timeout(inner: TcpListener, read_timeout: Duration) -> Self {
        GuardedListener {
            inner,
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            per_ip: Arc::default(),
            exempt_loopback: true,
            read_timeout,
        }
    }

    /// Loopback counted per address too (tests of the per-address bound).
    #[cfg(test)]
    fn counting_loopback(mut self) -> Self {
        self.exempt_loopback = false;
        self
    }

    /// A seat for one more connection from `ip`, if it has one left.
    fn seat(&self, ip: IpAddr) -> Option<Option<IpSeat>> {
        if self.exempt_loopback && ip.is_loopback() {
            return Some(None);
        }
        let mut m = self.per_ip.lock().unwrap();
        let n = m.entry(ip).or_default();
        if *n >= MAX_PER_IP {
            return None;
        }
        *n += 1;
        Some(Some(IpSeat {
            map: self.per_ip.clone(),
            ip,
        }))
    }
}

/// One connection's count against its address; given back when dropped.
struct IpSeat {
    map: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for IpSeat {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap();
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Guarded, SocketAddr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(a) => a,
                Err(_) => {
                    sleep(Duration::from_millis(100)).await; // e.g. out of fds
                    continue;
                }
            };
            let Some(seat) = self.seat(addr.ip()) else {
                continue; // dropped: closed at once
            };
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                continue; // dropped: closed at once
            };
            let now = Instant::now();
            return (
                Guarded {
                    inner: stream,
                    read_timeout: self.read_timeout,
                    idle: Box::pin(sleep(self.read_timeout)),
                    end: now + MAX_LIFETIME,
                    life: Box::pin(sleep_until(now + MAX_LIFETIME)),
                    read: 0,
                    _permit: permit,
                    _seat: seat,
                },
                addr,
            );
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// One bounded connection.
pub struct Guarded {
    inner: TcpStream,
    read_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    end: Instant,
    life: Pin<Box<Sleep>>,
    read: usize,
    _permit: OwnedSemaphorePermit,
    _seat: Option<IpSeat>,
}

fn cut(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, why)
}

impl Guarded {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.life.as_mut().poll(cx).is_ready() || Instant::now() >= self.end
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.expired(cx) {
            return Poll::Ready(Err(cut("connection lifetime over")));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                this.read += n;
                if this.read > MAX_REQUEST_BYTES {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "client sent more than the request limit",
                    )));
                }
                let next = Instant::now() + this.read_timeout;
                this.idle.as_mut().reset(next);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if this.idle.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(cut("client silent too long")));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(cut("connection lifetime over")));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;
    use tokio::io::AsyncReadExt;

    /// One address gets MAX_PER_IP connections; the next is closed at
    /// once, and a seat comes back when a connection ends.
    #[tokio::test]
    async fn one_address_cannot_take_every_slot() {
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let mut l = GuardedListener::new(inner).counting_loopback();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (g, _) = l.accept().await;
                if tx.send(g).is_err() {
                    return;
                }
            }
        });
        let mut held = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..MAX_PER_IP {
            clients.push(TcpStream::connect(addr).await.unwrap());
            held.push(rx.recv().await.unwrap());
        }
        // One more from the same address: closed at once (EOF).
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut b))
            .await
            .expect("closed at once")
            .unwrap_or(0);
        assert_eq!(n, 0);
        // The held ones are still open (a read waits).
        let waits = tokio::time::timeout(Duration::from_millis(200), clients[0].read(&mut b)).await;
        assert!(waits.is_err(), "a held connection is open");
        // One ends: a new one is served.
        held.pop();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _again = TcpStream::connect(addr).await.unwrap();
        let g = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert!(matches!(g, Ok(Some(_))), "served again");
    }
}
