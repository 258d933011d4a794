//! `/metrics`: a [`StatusSnapshot`] in the Prometheus text format.
//!
//! A fresh registry per scrape, filled from the snapshot: the node keeps no
//! second set of counters that could drift from `/status`. Windowed
//! heartbeat counts are gauges (they go down as minutes leave the window);
//! totals since start are counters.

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use super::StatusSnapshot;
use crate::net::PeerStats;

/// `Content-Type` of the response.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

type Labels = Vec<(String, String)>;
/// Picks one counter out of a peer's stats.
type PeerField = fn(&PeerStats) -> u64;

fn gauge(reg: &mut Registry, name: &str, help: &str, v: i64) {
    let g: Gauge = Gauge::default();
    g.set(v);
    reg.register(name, help, g);
}

fn counter(reg: &mut Registry, name: &str, help: &str, v: u64) {
    let c: Counter = Counter::default();
    c.inc_by(v);
    reg.register(name, help, c);
}

/// Saturating u64 -> i64 for gauges.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn gauge_f64(reg: &mut Registry, name: &str, help: &str, v: f64) {
    let g: Gauge<f64, AtomicU64> = Gauge::default();
    g.set(v);
    reg.register(name, help, g);
}

/// The drift monitor: per operation (`op` is `eval` or `verify`, nothing
/// else, so no label changes with the windows).
fn drift(reg: &mut Registry, d: &crate::node::drift::DriftStatus) {
    let ops = [("eval", &d.eval), ("verify", &d.verify)];
    let label = |op: &str| vec![("op".to_string(), op.to_string())];
    let drifting: Family<Labels, Gauge> = Family::default();
    let ratio: Family<Labels, Gauge<f64, AtomicU64>> = Family::default();
    let drifts: Family<Labels, Counter> = Family::default();
    for (op, o) in ops {
        drifting
            .get_or_create(&label(op))
            .set((o.state == "drifting") as i64);
        let r = match (o.live, o.reference) {
            (Some(l), Some(r)) if r > 0.0 => l / r,
            _ => 0.0,
        };
        ratio.get_or_create(&label(op)).set(r);
        drifts.get_or_create(&label(op)).inc_by(o.drifts);
    }
    reg.register(
        "drifting",
        "1 while the operation's backend runs below 70 % of its measured rate (until back at 85 %)",
        drifting,
    );
    reg.register(
        "drift_live_ratio",
        "Live rate (median of the last calls) over the measured rate; 0 when not watched",
        ratio,
    );
    reg.register("drifts", "Drift episodes since start", drifts);
    counter(
        reg,
        "backend_rerankings",
        "Times a drift moved an operation to another backend",
        d.rerankings,
    );
}

/// The values `montana_membership{state=...}` takes; the current one is 1.
pub const MEMBERSHIP_STATES: [&str; 4] = ["none", "syncing", "candidate", "active"];

/// Renders `s` as Prometheus text.
pub fn render(s: &StatusSnapshot) -> String {
    let mut reg = Registry::with_prefix("montana");
    reg.register(
        "node",
        "Node identity and configuration",
        Info::new(vec![
            ("label".to_string(), s.label.clone()),
            ("node_id".to_string(), s.node_id.clone()),
            ("network_id".to_string(), s.network_id.clone()),
            ("host".to_string(), s.host.clone()),
            ("phase".to_string(), s.phase.clone()),
            ("hash".to_string(), s.hash.clone()),
            ("eval_backend".to_string(), s.eval_backend.clone()),
            ("verify_backend".to_string(), s.verify_backend.clone()),
        ]),
    );
    gauge(&mut reg, "window", "Last applied window", int(s.window));
    gauge(
        &mut reg,
        "lag",
        "Windows behind the best known peer",
        int(s.lag),
    );
    gauge(&mut reg, "d", "Hash iterations per window", int(s.d));
    gauge(
        &mut reg,
        "cemented_window",
        "Highest window cemented by a quorum (0 before any)",
        int(s.cemented),
    );
    let membership: Family<Labels, Gauge> = Family::default();
    for state in MEMBERSHIP_STATES {
        membership
            .get_or_create(&vec![("state".to_string(), state.to_string())])
            .set((s.membership == state) as i64);
    }
    reg.register(
        "membership",
        "1 for the node's membership state, 0 for the others",
        membership,
    );
    gauge_f64(
        &mut reg,
        "eval_rate",
        "Rate of the last evaluation, hashes per second",
        s.eval_rate,
    );
    gauge_f64(
        &mut reg,
        "verify_rate",
        "Rate of the last verification (all threads), hashes per second",
        s.verify_rate,
    );
    gauge_f64(
        &mut reg,
        "verify_share",
        "Share of the last window spent verifying",
        s.verify_share,
    );
    gauge_f64(
        &mut reg,
        "last_applied_seconds",
        "Seconds since the last window was applied",
        s.last_applied_secs_ago,
    );
    gauge(
        &mut reg,
        "stalled",
        "1 while no window came for more than 3 window lengths",
        s.stalled as i64,
    );
    gauge(
        &mut reg,
        "uptime_seconds",
        "Seconds since the node started",
        int(s.uptime_secs),
    );
    gauge(
        &mut reg,
        "rss_bytes",
        "Resident memory of the node process",
        int(s.rss_bytes),
    );
    let rejected: Family<Labels, Counter> = Family::default();
    for (reason, n) in &s.rejected {
        rejected
            .get_or_create(&vec![("reason".to_string(), reason.clone())])
            .inc_by(*n);
    }
    reg.register(
        "rejected",
        "Rejected proposals and messages, by reason",
        rejected,
    );
    counter(
        &mut reg,
        "backend_faults",
        "Backends refused at run time (device failure or a wrong verdict)",
        s.backend_faults,
    );
    drift(&mut reg, &s.drift);

    let per_peer = |reg: &mut Registry, name: &str, help: &str, pick: &dyn Fn(usize) -> u64| {
        let fam: Family<Labels, Gauge> = Family::default();
        for (i, p) in s.peers.iter().enumerate() {
            fam.get_or_create(&vec![
                ("peer".to_string(), p.peer.0.to_string()),
                ("label".to_string(), p.label.clone()),
            ])
            .set(int(pick(i)));
        }
        reg.register(name, help, fam);
    };
    let p = &s.peers;
    per_peer(&mut reg, "peer_connected", "1 while connected", &|i| {
        p[i].connected as u64
    });
    let windowed: [(&str, &str, PeerField); 6] = [
        (
            "peer_heartbeats_ok_5m",
            "Answered pings, last 5 minutes",
            |x| x.heartbeats_ok_5m,
        ),
        (
            "peer_heartbeat_errors_5m",
            "Unanswered pings, last 5 minutes",
            |x| x.heartbeat_errors_5m,
        ),
        (
            "peer_closed_5m",
            "Closed connections, last 5 minutes",
            |x| x.closed_5m,
        ),
        ("peer_heartbeats_ok_1h", "Answered pings, last hour", |x| {
            x.heartbeats_ok_1h
        }),
        (
            "peer_heartbeat_errors_1h",
            "Unanswered pings, last hour",
            |x| x.heartbeat_errors_1h,
        ),
        ("peer_closed_1h", "Closed connections, last hour", |x| {
            x.closed_1h
        }),
    ];
    for (name, help, f) in windowed {
        per_peer(&mut reg, name, help, &|i| f(&p[i]));
    }

    let n = &s.net;
    counter(
        &mut reg,
        "net_handshakes",
        "Completed handshakes",
        n.handshakes_ok,
    );
    counter(
        &mut reg,
        "net_handshake_failures",
        "Failed handshakes",
        n.handshake_failures,
    );
    counter(
        &mut reg,
        "net_unknown_peers",
        "Handshakes from keys not in the genesis",
        n.unknown_peers,
    );
    counter(
        &mut reg,
        "net_bad_signatures",
        "Handshakes with a bad signature",
        n.bad_signatures,
    );
    counter(
        &mut reg,
        "net_dial_failures",
        "Dials that reached no listener",
        n.dial_failures,
    );
    let refused: Family<Labels, Counter> = Family::default();
    for (reason, v) in [
        ("pool_full", n.refused_pool_full),
        ("per_ip", n.refused_per_ip),
        ("members_full", n.refused_members_full),
        ("guests_full", n.refused_guests_full),
        ("rate", n.refused_rate),
        ("banned", n.refused_banned),
    ] {
        refused
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc_by(v);
    }
    reg.register(
        "net_inbound_refused",
        "Sockets and connections refused, by reason (pool of handshakes full, two handshakes or guests from that address already, every member slot taken, every guest seat taken and nobody to evict, handshake starts over the address's rate, the node banned for misbehaviour)",
        refused,
    );
    counter(
        &mut reg,
        "net_peer_offences",
        "Attributable offences of peers: messages that do not decode, bad signatures, messages for another network",
        n.peer_offences,
    );
    counter(
        &mut reg,
        "net_peers_banned",
        "Peers banned for misbehaviour: disconnected, their connections refused for a back-off",
        n.peers_banned,
    );
    counter(
        &mut reg,
        "net_handshakes_evicted",
        "Handshakes in progress whose pool slot went to a socket from a less represented address",
        n.handshakes_evicted,
    );
    counter(
        &mut reg,
        "net_guests_evicted",
        "Guests whose seat went to a guest from a less represented address",
        n.guests_evicted,
    );
    counter(
        &mut reg,
        "net_joiner_handshakes",
        "Handshakes completed by nodes outside the genesis",
        n.joiner_handshakes,
    );
    counter(
        &mut reg,
        "net_addrs_ignored",
        "Address lists ignored (over the rate, or malformed)",
        n.addrs_ignored,
    );
    counter(
        &mut reg,
        "net_addrs_out_of_scope",
        "Learned addresses skipped: loopback, link-local or private, on a network this node is not on",
        n.addrs_out_of_scope,
    );
    counter(
        &mut reg,
        "net_queue_full",
        "Messages dropped on a full peer queue",
        n.queue_full,
    );
    counter(
        &mut reg,
        "net_protocol_errors",
        "Connections closed for a protocol error",
        n.protocol_errors,
    );
    counter(
        &mut reg,
        "net_messages_sent",
        "Messages written to peers (heartbeats and address lists aside)",
        n.messages_sent,
    );
    counter(
        &mut reg,
        "net_sent_bytes",
        "Bytes of those messages (envelope header and payload, before encryption)",
        n.bytes_sent,
    );

    let mut out = String::new();
    prometheus_text::encode(&mut out, &reg).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::PeerId;

    #[test]
    fn snapshot_values_appear_as_metrics() {
        let s = StatusSnapshot {
            label: "n0".into(),
            phase: "following".into(),
            window: 42,
            lag: 1,
            d: 1000,
            hash: "sha256".into(),
            eval_rate: 2.5e6,
            verify_rate: 7.0e6,
            membership: "active".into(),
            cemented: 40,
            backend_faults: 1,
            peers: vec![PeerStats {
                peer: PeerId(3),
                label: "n3".into(),
                connected: true,
                heartbeats_ok_5m: 17,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut s = s;
        s.rejected.insert("bad_signature".into(), 2);
        s.drift.verify = crate::node::drift::OpDrift {
            state: "drifting".into(),
            backend: "sha-ni".into(),
            reference: Some(1000.0),
            live: Some(500.0),
            drifts: 3,
        };
        s.drift.rerankings = 1;
        let text = render(&s);
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(has(r#"montana_drifting{op="verify"} 1"#), "{text}");
        assert!(has(r#"montana_drifting{op="eval"} 0"#), "{text}");
        assert!(
            has(r#"montana_drift_live_ratio{op="verify"} 0.5"#),
            "{text}"
        );
        assert!(has(r#"montana_drift_live_ratio{op="eval"} 0.0"#), "{text}");
        assert!(has(r#"montana_drifts_total{op="verify"} 3"#), "{text}");
        assert!(has("montana_backend_rerankings_total 1"), "{text}");
        assert!(has("montana_window 42"), "{text}");
        assert!(has("montana_lag 1"), "{text}");
        assert!(has("montana_eval_rate 2500000.0"), "{text}");
        assert!(has("montana_verify_rate 7000000.0"), "{text}");
        assert!(has("montana_cemented_window 40"), "{text}");
        assert!(has(r#"montana_membership{state="active"} 1"#), "{text}");
        assert!(has(r#"montana_membership{state="none"} 0"#), "{text}");
        assert!(
            has(r#"montana_rejected_total{reason="bad_signature"} 2"#),
            "{text}"
        );
        assert!(
            text.contains("# HELP montana_verify_rate Rate of the last verification"),
            "{text}"
        );
        assert!(
            has(r#"montana_peer_connected{peer="3",label="n3"} 1"#),
            "{text}"
        );
        assert!(
            has(r#"montana_peer_heartbeats_ok_5m{peer="3",label="n3"} 17"#),
            "{text}"
        );
        assert!(has("montana_net_queue_full_total 0"), "{text}");
        assert!(has("montana_backend_faults_total 1"), "{text}");
        assert!(
            has(r#"montana_net_inbound_refused_total{reason="per_ip"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"montana_node_info{label="n0",node_id="","#)
                && text.contains(r#",phase="following","#),
            "{text}"
        );
    }
}
