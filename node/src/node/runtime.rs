//! The node's event loop: messages in, [`Action`]s out.
//!
//! Backend work (an evaluation, a verification) runs on
//! `tokio::task::spawn_blocking` and reports back on a channel, so the loop
//! keeps answering peers while hashing. Storage writes are synced before
//! the loop moves on: a window reported applied survives a crash.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use montana_vdf::{ChainParams, EvalControl, VerifyOptions, VerifyOutcome};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::faults;
use super::state::NodeState;
use super::transport::{Incoming, Transport};
use super::{Node, NodeError};
use crate::chain::{Action, Batch, Chain, Rules};
use crate::messages::{self, Message, MSG_GET_PROPOSALS, MSG_PROPOSAL, MSG_PROPOSALS, MSG_TIP};
use crate::proposal::Proposal;

/// How often the node tells its peers its tip.
const TIP_EVERY: Duration = Duration::from_secs(2);
/// How long the proposer waits for every genesis peer to connect before its
/// first window, so that a fresh network follows window 1 live instead of
/// fetching it (after this it proposes regardless).
const START_GRACE: Duration = Duration::from_secs(10);
/// How long shutdown waits for backend work in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Backend work that finished.
enum Done {
    Verified {
        batch: Batch,
        outcome: Result<VerifyOutcome, String>,
        took: Duration,
    },
    Evaluated {
        result: Result<(Proposal, Vec<Proposal>), String>,
        took: Duration,
    },
}

struct Runner {
    node: Node,
    chain: Chain,
    transport: Arc<dyn Transport>,
    state: Arc<Mutex<NodeState>>,
    done_tx: mpsc::UnboundedSender<Done>,
    cancel: Arc<AtomicBool>,
    in_flight: usize,
    last_applied_at: Instant,
    /// The snapshot last written to `state.json`.
    last_written: NodeState,
    /// Seconds the last verification took per window.
    last_verify_secs: f64,
    verify_threads: usize,
}

pub(super) async fn run(
    node: Node,
    transport: Arc<dyn Transport>,
    mut inbound: mpsc::Receiver<Incoming>,
    state: Arc<Mutex<NodeState>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<NodeState, NodeError> {
    let mut chain = Chain::new(
        Rules::from_genesis(&node.genesis),
        node.me,
        node.store.tip(),
    );
    chain.set_last_window(node.last_window);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    info!(
        label = node.label(),
        window = chain.tip().window,
        t = %chain.tip().t,
        role = if chain.is_proposer() { "proposer" } else { "follower" },
        eval = node.backends.eval.name(),
        verify = node.backends.verify.name(),
        "node running"
    );
    let mut r = Runner {
        node,
        chain,
        transport,
        state,
        done_tx,
        cancel: Arc::new(AtomicBool::new(false)),
        in_flight: 0,
        last_applied_at: Instant::now(),
        last_verify_secs: 0.0,
        last_written: NodeState::default(),
        verify_threads: VerifyOptions::default().threads,
    };
    r.publish();
    r.send_tip();
    let started_at = Instant::now();
    let peers = r.node.genesis.peers.len() - 1;
    let mut started = false;
    let mut last_connected = 0;

    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut tip_every = tokio::time::interval(TIP_EVERY);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(m) = inbound.recv() => r.on_incoming(m)?,
            Some(d) = done_rx.recv() => r.on_done(d)?,
            _ = tick.tick() => {
                // A new connection learns our tip now, not at the next round:
                // a restarted follower starts catching up at once.
                let connected = r.transport.summary().connected;
                if connected > last_connected {
                    r.send_tip();
                }
                last_connected = connected;
                if !started
                    && (r.transport.summary().connected >= peers
                        || started_at.elapsed() >= START_GRACE)
                {
                    started = true;
                    let a = r.chain.start();
                    r.exec(a)?;
                }
                let a = r.chain.on_tick(Instant::now());
                r.exec(a)?;
                r.publish();
            }
            _ = tip_every.tick() => r.send_tip(),
        }
    }

    // Shutdown: no new work; cancel an evaluation; let verifications finish
    // and apply them (nothing verified is lost).
    info!("shutting down");
    r.chain.stop();
    r.cancel.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while r.in_flight > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, done_rx.recv()).await {
            Ok(Some(d)) => r.on_done(d)?,
            _ => break,
        }
    }
    r.publish();
    let final_state = r.state.lock().unwrap().clone();
    info!(window = final_state.window, t = %final_state.t, "stopped");
    Ok(final_state)
}

impl Runner {
    fn exec(&mut self, actions: Vec<Action>) -> Result<(), NodeError> {
        for a in actions {
            match a {
                Action::Verify(batch) => self.spawn_verify(batch),
                Action::Evaluate {
                    window,
                    start,
                    link,
                } => self.spawn_evaluate(window, start, link),
                Action::Apply(ps) => self.apply(&ps)?,
                Action::Broadcast(p) => {
                    self.transport.broadcast(MSG_PROPOSAL, p.to_bytes());
                }
                Action::Request { peer, from, count } => {
                    debug!(peer, from, count, "requesting proposals");
                    let m = Message::GetProposals { from, count };
                    if let Err(e) = self.transport.send(peer, MSG_GET_PROPOSALS, 0, m.encode()) {
                        debug!(peer, error = %e, "request not sent");
                    }
                }
                Action::Rejected {
                    peer,
                    window,
                    reason,
                } => {
                    warn!(
                        peer = peer.map(|p| p as i64).unwrap_or(-1),
                        window,
                        reason = reason.kind(),
                        detail = %reason,
                        "rejected proposal"
                    );
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, ps: &[Proposal]) -> Result<(), NodeError> {
        let tip = self.node.store.apply(ps)?;
        let now = Instant::now();
        for p in ps {
            info!(window = p.window(), t = %p.header.t, "applied window");
        }
        if ps.len() == 1 {
            let mut s = self.state.lock().unwrap();
            let since = now.duration_since(self.last_applied_at).as_secs_f64();
            if since > 0.0 && !self.chain.is_proposer() {
                s.verify_share = (self.last_verify_secs / since).min(1.0);
            }
        }
        self.last_applied_at = now;
        debug_assert_eq!(tip, self.chain.tip());
        self.publish();
        Ok(())
    }

    fn spawn_verify(&mut self, batch: Batch) {
        let backend = self.node.backends.verify.clone();
        let tx = self.done_tx.clone();
        let opts = VerifyOptions::threads(self.verify_threads);
        self.in_flight += 1;
        tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            let outcome = backend
                .verify_proofs(&batch.proofs, &opts)
                .map_err(|e| e.to_string());
            let _ = tx.send(Done::Verified {
                batch,
                outcome,
                took: t0.elapsed(),
            });
        });
    }

    fn spawn_evaluate(&mut self, window: u64, start: montana_vdf::Hash32, link: [u8; 32]) {
        let backend = self.node.backends.eval.clone();
        let tx = self.done_tx.clone();
        let keys = self.node.keys.clone();
        let g = &self.node.genesis;
        let (suite, d, k, me) = (g.hash, g.d, g.checkpoints, self.node.me);
        let cancel = self.cancel.clone();
        let faults = self.node.faults.clone();
        self.in_flight += 1;
        tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            let result = (|| {
                let params = ChainParams::new(d, k).map_err(|e| e.to_string())?;
                let ctl = EvalControl {
                    cancel: Some(&cancel),
                    progress: None,
                };
                let cps = backend
                    .evaluate(suite, &start, params, &ctl)
                    .map_err(|e| e.to_string())?;
                let p = Proposal::sign(&keys, suite, window, link, d, me, cps);
                let bad = faults::bad_twins(&faults, &keys, &p);
                Ok((p, bad))
            })();
            let _ = tx.send(Done::Evaluated {
                result,
                took: t0.elapsed(),
            });
        });
    }

    fn on_done(&mut self, d: Done) -> Result<(), NodeError> {
        self.in_flight -= 1;
        let now = Instant::now();
        match d {
            Done::Verified {
                batch,
                outcome,
                took,
            } => {
                if let Err(e) = &outcome {
                    error!(error = %e, "verify backend failed; will retry");
                }
                let windows = batch.proposals.len() as f64;
                self.last_verify_secs = took.as_secs_f64() / windows;
                {
                    let mut s = self.state.lock().unwrap();
                    s.hash_rate = windows * self.node.genesis.d as f64 / took.as_secs_f64();
                }
                debug!(
                    windows = batch.proposals.len(),
                    secs = took.as_secs_f64(),
                    "verified batch"
                );
                let a = self.chain.on_verified(batch, outcome, now);
                self.exec(a)
            }
            Done::Evaluated { result, took } => match result {
                Ok((p, bad)) => {
                    self.state.lock().unwrap().hash_rate =
                        self.node.genesis.d as f64 / took.as_secs_f64();
                    for b in bad {
                        warn!(window = b.window(), "test fault: sending a bad proposal");
                        self.transport.broadcast(MSG_PROPOSAL, b.to_bytes());
                    }
                    let a = self.chain.on_evaluated(p, now);
                    self.exec(a)
                }
                Err(e) => {
                    self.chain.on_evaluation_failed();
                    if !self.cancel.load(Ordering::Relaxed) {
                        error!(error = %e, "evaluation failed; retrying");
                    }
                    Ok(())
                }
            },
        }
    }

    fn on_incoming(&mut self, m: Incoming) -> Result<(), NodeError> {
        let now = Instant::now();
        let msg = match Message::decode(m.msg_type, m.version, &m.payload) {
            None => return Ok(()),
            Some(Err(e)) => {
                warn!(peer = m.peer, msg_type = m.msg_type, error = %e, "malformed message");
                let mut s = self.state.lock().unwrap();
                *s.rejected.entry("malformed".into()).or_default() += 1;
                return Ok(());
            }
            Some(Ok(msg)) => msg,
        };
        let actions = match msg {
            Message::Proposal(p) => self.chain.on_proposal(m.peer, p, now),
            Message::Proposals(ps) => self.chain.on_proposals(m.peer, ps, now),
            Message::Tip(t) => self.chain.on_tip(m.peer, t.window, now),
            Message::GetProposals { from, count } => {
                self.serve(m.peer, m.request_id, from, count)?;
                Vec::new()
            }
        };
        self.exec(actions)
    }

    /// Answers GetProposals from storage: consecutive windows from `from`,
    /// as many as fit one message.
    fn serve(
        &mut self,
        peer: u16,
        request_id: u64,
        from: u64,
        count: u32,
    ) -> Result<(), NodeError> {
        let tip = self.node.store.tip().window;
        if from == 0 || from > tip {
            return Ok(());
        }
        let last = tip.min(from.saturating_add(count.min(messages::MAX_REQUEST) as u64) - 1);
        let mut encoded = Vec::new();
        let mut size = 0usize;
        for w in from..=last {
            let Some(b) = self.node.store.proposal_bytes(w)? else {
                break;
            };
            size += b.len() + 4;
            encoded.push(b);
            if size >= messages::MAX_PAYLOAD {
                break;
            }
        }
        let (payload, n) = messages::encode_proposals(encoded);
        debug!(peer, from, n, "serving proposals");
        if let Err(e) = self
            .transport
            .send(peer, MSG_PROPOSALS, request_id, payload)
        {
            debug!(peer, error = %e, "answer not sent");
        }
        Ok(())
    }

    fn send_tip(&self) {
        let m = Message::Tip(self.chain.tip());
        self.transport.broadcast(MSG_TIP, m.encode());
    }

    /// Refreshes the shared snapshot and `DIR/state.json`.
    fn publish(&mut self) {
        let tip = self.chain.tip();
        let mut s = self.state.lock().unwrap();
        s.phase = self.chain.phase().into();
        s.window = tip.window;
        s.t = tip.t.to_hex();
        s.lag = self.chain.lag();
        // The backends in use after any fallback, and how many were refused.
        s.eval_backend = self.node.backends.eval.name().into();
        s.verify_backend = self.node.backends.verify.name().into();
        s.backend_faults = self.node.backends.faults.get();
        for (k, v) in self.chain.rejected() {
            s.rejected.insert((*k).to_string(), *v);
        }
        s.set_peers(&self.transport.summary());
        // Only when something changed: no disk write every tick.
        if *s != self.last_written {
            match s.write(&self.node.data_dir) {
                Ok(()) => self.last_written = s.clone(),
                Err(e) => debug!(error = %e, "state file not written"),
            }
        }
    }
}
