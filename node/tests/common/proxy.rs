//! A TCP proxy on loopback (tokio, its own runtime): listens on `listen`,
//! forwards each connection to `upstream`, and can
//! - cut: close every connection and refuse new ones (a partition);
//! - limit what it reads from the client (the side that connected to the
//!   proxy) to some bytes per second, or to nothing, after the first
//!   `free_bytes` of each connection (so a Noise handshake still completes):
//!   the upstream then looks like a peer that reads slowly, or not at all.
//!
//! Dropping the proxy stops its runtime, which closes every socket.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// No limit on reads from the client.
const UNLIMITED: u64 = u64::MAX;

pub struct Proxy {
    rt: Option<tokio::runtime::Runtime>,
    cut: watch::Sender<bool>,
    /// Bytes per second read from the client (UNLIMITED, or 0: none).
    rate: Arc<AtomicU64>,
    free_bytes: u64,
    pub listen: SocketAddr,
    accepted: Arc<AtomicU64>,
    cut_flag: Arc<AtomicBool>,
}

impl Proxy {
    /// Binds `listen` (which must be free) and forwards to `upstream`.
    pub fn start(listen: SocketAddr, upstream: SocketAddr, free_bytes: u64) -> Proxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (cut, cut_rx) = watch::channel(false);
        let rate = Arc::new(AtomicU64::new(UNLIMITED));
        let accepted = Arc::new(AtomicU64::new(0));
        let cut_flag = Arc::new(AtomicBool::new(false));
        let listener = rt.block_on(TcpListener::bind(listen)).unwrap_or_else(|e| {
            panic!("proxy cannot listen on {listen}: {e}");
        });
        let (r, a, f) = (rate.clone(), accepted.clone(), cut_flag.clone());
        rt.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if f.load(Ordering::SeqCst) {
                    drop(client); // refused while cut
                    continue;
                }
                a.fetch_add(1, Ordering::SeqCst);
                let (r, mut cut_rx) = (r.clone(), cut_rx.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    tokio::select! {
                        _ = pump(client, server, r, free_bytes) => {}
                        _ = cut_rx.wait_for(|c| *c) => {}
                    }
                    // Both sockets drop here: closed.
                });
            }
        });
        Proxy {
            rt: Some(rt),
            cut,
            rate,
            free_bytes,
            listen,
            accepted,
            cut_flag,
        }
    }

    /// Closes every connection and refuses new ones until [`Proxy::heal`].
    pub fn cut(&self) {
        self.cut_flag.store(true, Ordering::SeqCst);
        self.cut.send_replace(true);
    }

    pub fn heal(&self) {
        self.cut_flag.store(false, Ordering::SeqCst);
        self.cut.send_replace(false);
    }

    /// Reads from the client at most `bytes_per_sec` (0: nothing) past the
    /// first `free_bytes` of each connection; `None`: no limit.
    pub fn limit_reads(&self, bytes_per_sec: Option<u64>) {
        self.rate
            .store(bytes_per_sec.unwrap_or(UNLIMITED), Ordering::SeqCst);
    }

    /// Connections accepted (not refused) so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn free_bytes(&self) -> u64 {
        self.free_bytes
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Forwards both ways until either side closes; reads from the client
/// within the rate limit.
async fn pump(client: TcpStream, server: TcpStream, rate: Arc<AtomicU64>, free: u64) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let r = rate.load(Ordering::SeqCst);
            let want = if total < free || r == UNLIMITED {
                buf.len()
            } else if r == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            } else {
                // Reads of at most r/10 bytes every 100 ms.
                tokio::time::sleep(Duration::from_millis(100)).await;
                (r / 10).clamp(1, buf.len() as u64) as usize
            };
            let want = if total < free {
                want.min((free - total) as usize)
            } else {
                want
            };
            match cr.read(&mut buf[..want]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    total += n as u64;
                    if sw.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let down = async move {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}
