//! The status server and `montana status`, on loopback.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use montana_node::net::{NetTotals, PeerId, PeerStats};
use montana_node::status::{self, StatusSnapshot, STATUS_ADDR_FILE};
use serde_json::Value;
use tokio::sync::oneshot;

fn snapshot(window: u64) -> StatusSnapshot {
    StatusSnapshot {
        label: "n0".into(),
        phase: "following".into(),
        window,
        lag: 2,
        d: 325_000_000,
        hash: "sha256".into(),
        eval_backend: "scalar".into(),
        verify_backend: "sha-ni".into(),
        eval_rate: 1.5e7,
        verify_rate: 4.5e7,
        membership: "active".into(),
        node_id: "ab".repeat(32),
        backend_faults: 0,
        peers: vec![PeerStats {
            peer: PeerId(1),
            label: "n1".into(),
            connected: true,
            heartbeats_ok_5m: 60,
            heartbeats_ok_1h: 700,
            closed_1h: 1,
            ..Default::default()
        }],
        net: NetTotals {
            queue_full: 3,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Serves a snapshot whose window advances on every request.
async fn server() -> (SocketAddr, oneshot::Sender<()>) {
    let calls = Arc::new(AtomicU64::new(0));
    let source = Arc::new(move || snapshot(40 + calls.fetch_add(1, Ordering::SeqCst)));
    let (stop, stopped) = oneshot::channel::<()>();
    let addr = status::serve("127.0.0.1:0".parse().unwrap(), source, async {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    (addr, stop)
}

async fn get(addr: SocketAddr, path: &'static str) -> Result<String, status::StatusError> {
    tokio::task::spawn_blocking(move || status::get(addr, path, Duration::from_secs(5)))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_status_json_and_prometheus_metrics() {
    let (addr, stop) = server().await;
    assert!(addr.ip().is_loopback() && addr.port() != 0);

    let body = get(addr, "/status").await.unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["label"], "n0");
    assert_eq!(v["window"], 40);
    assert_eq!(v["lag"], 2);
    assert_eq!(v["hash"], "sha256");
    assert_eq!(v["peers"][0]["peer"], 1);
    assert_eq!(v["peers"][0]["heartbeats_ok_5m"], 60);
    assert_eq!(v["net"]["queue_full"], 3);
    // Fresh per request, and the typed client reads the same thing.
    let typed = tokio::task::spawn_blocking(move || status::fetch(addr, Duration::from_secs(5)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(typed, snapshot(41));

    let metrics = get(addr, "/metrics").await.unwrap();
    let lines: Vec<&str> = metrics.lines().collect();
    assert!(lines.contains(&"montana_window 42"), "{metrics}");
    assert!(lines.contains(&"# TYPE montana_lag gauge"), "{metrics}");
    assert!(
        lines.contains(&r#"montana_peer_heartbeats_ok_1h{peer="1",label="n1"} 700"#),
        "{metrics}"
    );
    assert!(
        lines.contains(&"montana_net_queue_full_total 3"),
        "{metrics}"
    );

    assert!(matches!(
        get(addr, "/nope").await,
        Err(status::StatusError::BadResponse { .. })
    ));

    stop.send(()).unwrap();
    let mut refused = false;
    for _ in 0..100 {
        if matches!(
            get(addr, "/status").await,
            Err(status::StatusError::Connect { .. })
        ) {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "server still answering after shutdown");
}

fn montana(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_montana"))
        .args(args)
        .output()
        .expect("run montana")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn montana_status_prints_a_table_or_json() {
    let (addr, stop) = server().await;
    let a = addr.to_string();

    let out = tokio::task::spawn_blocking({
        let a = a.clone();
        move || montana(&["status", "--addr", &a, "--json"])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["phase"], "following");
    assert_eq!(v["peers"][0]["label"], "n1");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(STATUS_ADDR_FILE), format!("{a}\n")).unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || montana(&["status", "--data-dir", &d]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("label      n0"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("1 ") && l.contains("n1") && l.contains(" up ")),
        "{text}"
    );
    stop.send(()).unwrap();
}

/// (args, exit code, a word of the one stderr line)
#[test]
fn montana_status_bad_input_and_unreachable_nodes() {
    let missing = tempfile::tempdir().unwrap();
    let m = missing.path().to_str().unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string() // closed when `l` drops
    };
    let gone = missing.path().join("no-such-dir");
    let gone = gone.to_str().unwrap();
    // One rule: a stopped node is exit 1 whichever way it is named; a data
    // dir that does not exist is bad input (2).
    let cases: [(&[&str], i32, &str); 6] = [
        (&["status"], 2, "required"),
        (
            &["status", "--addr", "x:1", "--data-dir", m],
            2,
            "cannot be used",
        ),
        (
            &["status", "--addr", "no port"],
            2,
            "invalid status address",
        ),
        (&["status", "--data-dir", m], 1, STATUS_ADDR_FILE),
        (&["status", "--data-dir", gone], 2, "does not exist"),
        (&["status", "--addr", &closed], 1, "cannot reach"),
    ];
    for (args, code, needle) in cases {
        let out = montana(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// Reads until the server closes the connection (or `within` passes);
/// returns what it sent and whether it closed.
async fn read_until_closed(s: &mut tokio::net::TcpStream, within: Duration) -> (String, bool) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&got).to_string(), closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_and_silent_clients_are_cut_off() {
    use tokio::io::AsyncWriteExt;
    let (addr, _stop) = server().await;
    // 100 KiB of headers: cut off, never answered.
    let mut big = tokio::net::TcpStream::connect(addr).await.unwrap();
    let header = format!(
        "GET /status HTTP/1.1\r\nHost: x\r\nX-Junk: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let _ = big.write_all(header.as_bytes()).await;
    let (answer, closed) = read_until_closed(&mut big, Duration::from_secs(30)).await;
    assert!(closed, "still open");
    assert!(!answer.contains("200 OK"), "{answer}");
    // A client that says nothing is closed after the read timeout.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let t0 = std::time::Instant::now();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(40)).await;
    assert!(closed, "a silent client kept its connection");
    assert!(t0.elapsed() >= status::guard::READ_TIMEOUT / 2);
    // A normal request is still served.
    assert!(get(addr, "/status").await.is_ok());
}
