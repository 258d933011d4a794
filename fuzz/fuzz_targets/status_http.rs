//! The status HTTP server (status/http.rs behind status/guard.rs): the
//! fuzzed bytes are one client's whole request stream, sent over loopback
//! to the real server (`status::serve`, started once), then the write side
//! is closed. The answer, if any, must be an HTTP/1.x response; the server
//! must keep serving (a GET /status every 256 inputs must answer 200); a
//! panic in a server task aborts (libFuzzer's panic hook).
#![no_main]
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use montana_node::status::{self, StatusSnapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Server {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
}

fn server() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let source = Arc::new(StatusSnapshot::default);
        let addr = rt
            .block_on(status::serve(
                "127.0.0.1:0".parse().unwrap(),
                source,
                std::future::pending(),
            ))
            .unwrap();
        Server { rt, addr }
    })
}

/// Sends `request`, closes the write side if `half_close` (so the server
/// never waits for more; it may then close without answering, as hyper
/// does not serve half-closed clients), reads the answer (to EOF, at most
/// 4 MiB, 5 s).
async fn exchange(addr: SocketAddr, request: &[u8], half_close: bool) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.set_linger(Some(Duration::ZERO));
    let _ = s.write_all(request).await;
    if half_close {
        let _ = s.shutdown().await;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 || answer.len() > 4 << 20 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    answer
}

fuzz_target!(|data: &[u8]| {
    static N: AtomicU64 = AtomicU64::new(0);
    let s = server();
    s.rt.block_on(async {
        let answer = exchange(s.addr, data, true).await;
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1."),
            "not an HTTP response: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
        if N.fetch_add(1, Ordering::Relaxed) % 256 == 0 {
            let ok = exchange(s.addr, b"GET /status HTTP/1.0\r\n\r\n", false).await;
            assert!(
                ok.starts_with(b"HTTP/1.0 200") || ok.starts_with(b"HTTP/1.1 200"),
                "the server stopped serving: {:?}",
                String::from_utf8_lossy(&ok[..ok.len().min(200)])
            );
        }
    });
});
