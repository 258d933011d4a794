//! The node's event loop: messages in, [`Action`]s out.
//!
//! Backend work (an evaluation, a verification) runs on
//! `tokio::task::spawn_blocking` and reports back on a channel, so the loop
//! keeps answering peers while hashing. Storage writes are synced before
//! the loop moves on: a window reported applied survives a crash.
//!
//! A backend that panics does not leave the node busy forever: the panic is
//! caught in its thread and reported like a failure; the node logs it, falls
//! back to the scalar backend for that operation (the reference, always
//! available) and retries; if the scalar backend itself panics, the node
//! stops with [`NodeError::BackendPanicked`].

use std::any::Any;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use montana_backends::ScalarBackend;
use montana_vdf::{Backend, ChainParams, EvalControl, Operation, VerifyOptions, VerifyOutcome};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

#[cfg(any(test, feature = "test-faults"))]
use super::faults;
use super::serve::{Gate, ServeBudget};
use super::state::NodeState;
use super::transport::{Incoming, Transport};
use super::{Node, NodeError};
use crate::chain::{Action, Batch, Cemented, Chain, Rules};
use crate::consensus::active::NodeId;
use crate::consensus::agreement::Timeout;
use crate::lograte::LogRate;
use crate::messages::{self, Message, MSG_CEMENTS, MSG_PROPOSALS};
use crate::net::misbehaviour::Offence;
use crate::net::relay::{message_id, MessageId, Relay};

/// The message types forwarded to peers that lack them (docs/SPEC.md
/// 10.6): what the agreement and joining need from every member.
fn relayed(msg_type: u8) -> bool {
    use crate::messages::{
        MSG_BEACON, MSG_CANDIDATE_PROOF, MSG_CEMENT, MSG_PROPOSE, MSG_REGISTRATION, MSG_VOTE,
    };
    matches!(
        msg_type,
        MSG_PROPOSE | MSG_VOTE | MSG_CEMENT | MSG_BEACON | MSG_CANDIDATE_PROOF | MSG_REGISTRATION
    )
}

/// How often the node tells its peers its tip.
const TIP_EVERY: Duration = Duration::from_secs(2);
/// How long the proposer waits for every genesis peer to connect and tell
/// its tip before its first window, so that a fresh network follows window
/// 1 live instead of fetching it, and a proposer that lost its data learns
/// that it is behind (after this it proposes regardless).
const START_GRACE: Duration = Duration::from_secs(10);
/// `state.json` is rewritten at once when something other than a timer or
/// a counter changed, and at least this often otherwise.
const STATE_FILE_EVERY: Duration = Duration::from_secs(5);
/// How often a node with a full disk tries to write again.
const WRITE_RETRY: Duration = Duration::from_secs(1);
/// Verified windows kept in memory while the disk is full, at most.
const MAX_UNWRITTEN: usize = 1024;
/// How long shutdown waits for backend work in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Backend work that finished. `panicked` carries the panic message of a
/// backend that panicked (the outcome is then an error).
enum Done {
    Verified {
        batch: Box<Batch>,
        outcome: Result<VerifyOutcome, String>,
        took: Duration,
        panicked: Option<String>,
    },
    Evaluated {
        window: u64,
        result: Result<Vec<montana_vdf::Hash32>, String>,
        took: Duration,
        panicked: Option<String>,
    },
    /// Gossiped candidate proofs verified.
    CandidatesVerified {
        proofs: Vec<crate::consensus::joining::CandidateProof>,
        outcome: Result<VerifyOutcome, String>,
    },
    /// This node's candidate chain evaluated (`None`: it failed).
    CandidateEvaluated {
        window: u64,
        checkpoints: Option<Vec<montana_vdf::Hash32>>,
    },
    /// A GetProposals answer was built (and queued): its size in bytes,
    /// charged to `source`'s budget.
    Served {
        source: crate::net::Source,
        result: Result<usize, crate::storage::StoreError>,
    },
}

/// `Some(e)` if `e` differs from the last error remembered in `last`
/// (which becomes `e`): the caller logs it; `None` for a repeat.
fn first_occurrence(last: &mut Option<String>, e: String) -> Option<String> {
    if last.as_deref() == Some(e.as_str()) {
        return None;
    }
    *last = Some(e.clone());
    Some(e)
}

/// The message of a caught panic.
pub(super) fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs backend work, turning a panic into an error and its message.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> (Result<T, String>, Option<String>) {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => (r, None),
        Err(p) => {
            let msg = panic_message(&*p);
            (Err(format!("backend panicked: {msg}")), Some(msg))
        }
    }
}

/// What a range request asks for.
#[derive(Clone, Copy, Debug)]
enum Served {
    Proposals,
    Cements,
}

struct Runner {
    node: Node,
    chain: Chain,
    transport: Arc<dyn Transport>,
    state: Arc<Mutex<NodeState>>,
    done_tx: mpsc::UnboundedSender<Done>,
    cancel: Arc<AtomicBool>,
    /// Backend work running.
    in_flight: usize,
    /// GetProposals answers being built.
    serving: usize,
    budget: ServeBudget,
    /// Every answer (catch-up and fast-sync) is built through it, a few at
    /// a time ([`super::serve::Gate`]).
    gate: Gate,
    last_applied_at: Instant,
    started_at: Instant,
    /// Windows were fetched since the last catch-up ended: memory is
    /// trimmed once this node is caught up ([`super::memory::trim`]).
    caught_up_trim: bool,
    /// The stable view of the snapshot last written to `state.json`, and when.
    last_written: NodeState,
    last_written_at: Instant,
    /// Seconds the last verification took per window.
    last_verify_secs: f64,
    /// The last error writing `state.json`, logged once until it changes.
    state_write_error: Option<String>,
    verify_threads: usize,
    /// Cemented windows not yet in the database because the disk is full;
    /// written, in order, as soon as space returns.
    unwritten: Vec<Cemented>,
    /// Armed agreement timers: (deadline, window, timer, round).
    timers: Vec<(Instant, u64, Timeout, u32)>,
    /// When the live window was applied (for the cementing latency).
    applied_at: Option<(u64, Instant)>,
    /// The disk is full: said once, until writing works again.
    disk_full: bool,
    /// The drift monitor, fed every successful evaluation and verification.
    drift: super::drift::NodeDrift,
    last_write_try: Instant,
    /// Fast-sync serving: snapshots and chunk requests (node/fastsync.rs).
    snapshots: super::fastsync::Serving,
    /// Which consensus messages went to which peers (SPEC 10.6).
    relay: Relay,
    /// The sender (node, connection) each peer index was last heard from
    /// (over the network), charged for an offence judged later:
    /// when another node's message comes through an index, or its
    /// connection closes, the chain forgets who held it
    /// ([`Chain::on_peer_left`]). Bounded by the transport's slots.
    holders: HashMap<u16, crate::net::Sender>,
    /// The (window, round) this node last proposed in (logged once each).
    last_proposed: Option<(u64, u32)>,
    /// Lines that peers cause (rejections, malformed messages): at most
    /// one a minute per (peer, reason).
    log_rate: LogRate<(i64, &'static str)>,
}

pub(super) async fn run(
    node: Node,
    transport: Arc<dyn Transport>,
    mut inbound: mpsc::Receiver<Incoming>,
    state: Arc<Mutex<NodeState>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<NodeState, NodeError> {
    // Fast-sync (node/fastsync.rs): before the chain is built from the store.
    let mut node = node;
    tokio::pin!(shutdown);
    let early = tokio::select! {
        r = super::fastsync::before_run(&mut node, &transport, &mut inbound, &state) => r?,
        _ = &mut shutdown => return Ok(state.lock().unwrap().clone()),
    };
    let gate = Gate::default();
    let snapshots = super::fastsync::Serving::new(&node, gate.clone());
    let (cstate, tip_meta, bundle) = node.store.consensus(&node.genesis)?;
    let mut chain = Chain::new(
        Rules::from_genesis(&node.genesis),
        Some(node.keys.clone()),
        node.store.tip(),
        tip_meta,
        cstate,
        bundle,
    );
    // The transport gives member slots to the members after the tip.
    transport.set_members(&chain.state().active().ids());
    chain.restore_signed(node.store.signed()?);
    chain.set_last_window(node.last_window);
    chain.set_min_window(node.min_window);
    if node.backends.verify.kind() == montana_vdf::BackendKind::Gpu {
        // A GPU pays off on whole batches: up to MAX_BATCH_WINDOWS windows
        // per call, whatever their size (hosts with a GPU are not the 1 GB
        // ones the CPU default is sized for).
        chain.set_batch_bytes(usize::MAX);
    }
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    info!(
        label = node.label(),
        window = chain.applied(),
        cemented = chain.tip().window,
        t = %chain.tip().t,
        state_root = %chain.state_root(),
        node_id = %chain.node_id(),
        eval = node.backends.eval.name(),
        verify = node.backends.verify.name(),
        "node running"
    );
    let drift = super::drift::NodeDrift::new(&node.backends);
    let mut r = Runner {
        drift,
        node,
        chain,
        transport,
        state,
        done_tx,
        cancel: Arc::new(AtomicBool::new(false)),
        in_flight: 0,
        serving: 0,
        budget: ServeBudget::default(),
        gate,
        last_applied_at: Instant::now(),
        caught_up_trim: false,
        started_at: Instant::now(),
        last_verify_secs: 0.0,
        last_written: NodeState::default(),
        last_written_at: Instant::now(),
        state_write_error: None,
        verify_threads: VerifyOptions::default().threads,
        unwritten: Vec::new(),
        timers: Vec::new(),
        applied_at: None,
        disk_full: false,
        last_write_try: Instant::now(),
        snapshots,
        relay: Relay::default(),
        holders: HashMap::new(),
        log_rate: LogRate::per_minute(),
        last_proposed: None,
    };
    r.publish();
    r.send_tip();
    for m in early {
        r.on_incoming(m)?;
    }
    let started_at = Instant::now();
    let peers = r.node.genesis.peers.len() - 1;
    let mut started = false;
    let mut last_connected = 0;
    // What the operator was last told: peers waited for, last window reached.
    let mut told_waiting: Option<usize> = None;
    let mut told_done = false;

    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut timer_tick = tokio::time::interval(Duration::from_millis(20));
    let mut tip_every = tokio::time::interval(TIP_EVERY);
    // Connections coming up: the relay forgets what a (re)connected peer
    // had (none in-process).
    let mut links = r.transport.link_events();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(ev) = async {
                match links.as_mut() {
                    Some(rx) => rx.recv().await.ok(),
                    None => std::future::pending().await,
                }
            } => {
                match ev {
                    crate::net::LinkEvent::Up(l) => r.relay.forget(l.peer.0),
                    crate::net::LinkEvent::Down(l) => r.link_down(l.peer.0, l.node_id)?,
                }
            }
            Some(m) = inbound.recv() => r.on_incoming(m)?,
            Some(d) = done_rx.recv() => r.on_done(d)?,
            _ = timer_tick.tick(), if !r.timers.is_empty() => r.fire_timers()?,
            _ = tick.tick() => {
                // A new connection learns our tip now, not at the next round:
                // a restarted follower starts catching up at once.
                let connected = r.transport.summary().connected;
                if connected > last_connected {
                    r.send_tip();
                }
                last_connected = connected;
                if !started
                    && connected < peers
                    && started_at.elapsed() < START_GRACE
                    && told_waiting != Some(connected)
                {
                    told_waiting = Some(connected);
                    info!(
                        "waiting for peers ({connected} of {peers}, up to {} s)",
                        START_GRACE.as_secs()
                    );
                }
                // Every peer connected and its tip heard (a proposer that
                // lost its data must learn it is behind before proposing).
                if !started
                    && ((r.transport.summary().connected >= peers
                        && r.chain.heard_from() >= peers)
                        || started_at.elapsed() >= START_GRACE)
                {
                    started = true;
                    let a = r.chain.start(Instant::now());
                    r.exec(a)?;
                }
                if r.disk_full && r.last_write_try.elapsed() >= WRITE_RETRY {
                    r.write_unwritten()?;
                }
                let a = r.chain.on_tick(Instant::now());
                r.exec(a)?;
                if !told_done && r.chain.phase() == "done" {
                    told_done = true;
                    info!(window = r.chain.tip().window, "last window cemented; staying up");
                }
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
    while r.in_flight > 0 || r.serving > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, done_rx.recv()).await {
            Ok(Some(d)) => r.on_done(d)?,
            _ => break,
        }
    }
    r.write_unwritten()?;
    if !r.unwritten.is_empty() {
        warn!(
            windows = r.unwritten.len(),
            "stopping with verified windows not written (disk full); the next start catches them up from the peers"
        );
    }
    r.publish();
    let final_state = r.state.lock().unwrap().clone();
    info!(window = final_state.window, t = %final_state.t, "stopped");
    Ok(final_state)
}

impl Runner {
    fn exec(&mut self, actions: Vec<Action>) -> Result<(), NodeError> {
        // A signed message is sent only after its step is on disk: if that
        // write fails, what follows it in this batch is not sent.
        let mut may_send = true;
        for a in actions {
            match a {
                Action::Verify(batch) => self.spawn_verify(batch),
                Action::VerifyCandidates { proofs, chains } => {
                    self.spawn_verify_candidates(proofs, chains)
                }
                Action::EvaluateCandidate { window, start } => {
                    self.spawn_evaluate_candidate(window, start)
                }
                Action::Members(set) => {
                    info!(
                        members = set.len(),
                        me = set.index_of(&self.chain.node_id()).is_some(),
                        "the active set changed"
                    );
                    self.transport.set_members(&set.ids());
                }
                Action::Evaluate { window, start } => self.spawn_evaluate(window, start),
                Action::Applied { window, t } => {
                    info!(window, t = %t, "applied window");
                    self.applied_at = Some((window, Instant::now()));
                    let now = Instant::now();
                    {
                        let mut s = self.state.lock().unwrap();
                        let since = now.duration_since(self.last_applied_at).as_secs_f64();
                        if since > 0.0 && self.last_verify_secs > 0.0 {
                            s.verify_share = (self.last_verify_secs / since).min(1.0);
                        }
                    }
                    self.last_applied_at = now;
                    if let Err(e) = self.node.store.applied(window, &t) {
                        debug!(error = %e, "applied window not recorded");
                    }
                }
                Action::Cement(ws) => self.cement(ws)?,
                Action::Persist(signed) => {
                    may_send = match self.node.store.save_signed(&signed) {
                        Ok(()) => true,
                        Err(e) => {
                            warn!(error = %e, "cannot record the signed step; not sending what was signed");
                            false
                        }
                    };
                }
                Action::Send { to, msg } => {
                    if !may_send {
                        continue;
                    }
                    self.send(to, msg);
                }
                Action::Request {
                    peer,
                    proposals,
                    cements,
                } => {
                    debug!(peer, ?proposals, ?cements, "requesting cemented windows");
                    let cements = cements.map(|(from, count)| Message::GetCements { from, count });
                    let get = proposals.map(|(from, count)| Message::GetProposals { from, count });
                    for m in cements.into_iter().chain(get) {
                        if let Err(e) = self.transport.send(peer, m.msg_type(), 0, m.encode()) {
                            debug!(peer, error = %e, "request not sent");
                        }
                    }
                }
                Action::Arm {
                    window,
                    timer,
                    round,
                    after,
                } => {
                    self.timers
                        .retain(|(_, w, t, _)| !(*w == window && *t == timer));
                    self.timers
                        .push((Instant::now() + after, window, timer, round));
                }
                Action::Rejected {
                    peer,
                    window,
                    reason,
                } => {
                    // Counted always (by the chain); a line at most once a
                    // minute per peer and reason (crate::lograte).
                    let peer = peer.map(|p| p as i64).unwrap_or(-1);
                    if let Some(left_out) =
                        self.log_rate.allow((peer, reason.kind()), Instant::now())
                    {
                        warn!(
                            peer,
                            window,
                            reason = reason.kind(),
                            detail = %reason,
                            left_out,
                            "rejected (logged once a minute per peer and reason)"
                        );
                    }
                }
                // Read by the relay in `on_incoming`.
                Action::Unchecked => {}
                Action::Forward { from, msg } => {
                    let (t, payload) = (msg.msg_type(), msg.encode());
                    let connected = self.connected();
                    let to = match from {
                        Some(p) => self.relay.accepted(message_id(t, &payload), p, &connected),
                        None => {
                            self.relay
                                .should_forward(message_id(t, &payload), None, &connected)
                        }
                    };
                    self.forward(&to, t, &payload);
                }
                Action::Offence { peer, offence } => {
                    // The sender of the message judged, fixed when it was
                    // read: the chain forgets a peer's messages when
                    // another node takes its index (`on_peer_left`).
                    if let Some(from) = self.holders.get(&peer) {
                        self.transport.offence(from, offence);
                    }
                }
            }
        }
        Ok(())
    }

    fn send(&mut self, to: Option<u16>, msg: Message) {
        #[cfg(any(test, feature = "test-faults"))]
        if let (None, Message::Propose(p)) = (to, &msg) {
            for bad in faults::bad_twins(&self.node.faults, &self.node.keys, p) {
                warn!(
                    window = bad.key.window,
                    "test fault: sending a bad proposal"
                );
                self.transport.broadcast(
                    messages::MSG_PROPOSE,
                    Message::Propose(Box::new(bad)).encode(),
                );
            }
        }
        trace_consensus("send", to, &msg);
        if let (None, Message::Propose(p)) = (to, &msg) {
            let key = (p.key.window, p.key.round);
            if self.last_proposed.is_none_or(|k| k < key) {
                self.last_proposed = Some(key);
                info!(window = key.0, round = key.1, "proposed window");
            }
        }
        let t = msg.msg_type();
        let payload = msg.encode();
        match to {
            None => {
                if relayed(t) {
                    self.sent_to_all(message_id(t, &payload));
                }
                self.transport.broadcast(t, payload)
            }
            Some(peer) => {
                if let Err(e) = self.transport.send(peer, t, 0, payload) {
                    debug!(peer, error = %e, "not sent");
                }
            }
        }
    }

    /// Fires the agreement timers that are due.
    fn fire_timers(&mut self) -> Result<(), NodeError> {
        let now = Instant::now();
        let (due, keep): (Vec<_>, Vec<_>) = self.timers.drain(..).partition(|(at, ..)| *at <= now);
        self.timers = keep;
        for (_, window, timer, round) in due {
            let a = self.chain.on_timeout(window, timer, round, now);
            self.exec(a)?;
        }
        Ok(())
    }

    fn cement(&mut self, ws: Vec<Cemented>) -> Result<(), NodeError> {
        self.unwritten.extend(ws);
        if !self.disk_full {
            return self.write_unwritten();
        }
        // Paused: the tick tries again; memory stays bounded.
        if self.unwritten.len() > MAX_UNWRITTEN {
            return Err(NodeError::Write {
                path: self.node.data_dir.join("db").display().to_string(),
                source: std::io::Error::other(format!(
                    "no space left on device for {MAX_UNWRITTEN} windows; stopping"
                )),
            });
        }
        Ok(())
    }

    /// Writes the windows kept in memory. A full disk pauses writing (said
    /// once, with the database path); the windows stay in memory, in order,
    /// and are written at the first tick that finds space again (at most
    /// once per [`WRITE_RETRY`]). Past [`MAX_UNWRITTEN`] windows the node
    /// stops (see [`Runner::cement`]).
    fn write_unwritten(&mut self) -> Result<(), NodeError> {
        if self.unwritten.is_empty() {
            return Ok(());
        }
        self.last_write_try = Instant::now();
        if self.disk_full && (self.serving > 0 || !self.node.store.reopen()?) {
            return Ok(());
        }
        let ws = std::mem::take(&mut self.unwritten);
        match self.node.store.cement(&ws, self.chain.state()) {
            Ok(tip) => {
                if std::mem::take(&mut self.disk_full) {
                    info!(
                        windows = ws.len(),
                        "database writable again; the windows kept in memory are written"
                    );
                }
                self.cemented(&ws, tip);
                Ok(())
            }
            Err(e) if self.disk_full || e.is_no_space() => {
                if !self.disk_full {
                    self.disk_full = true;
                    warn!(
                        "{e}; not cementing until space returns (verified windows kept in memory, up to {MAX_UNWRITTEN})"
                    );
                }
                self.unwritten = ws;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn cemented(&mut self, ws: &[Cemented], tip: crate::storage::Tip) {
        let now = Instant::now();
        for c in ws {
            let w = c.proposal.window();
            let latency = match self.applied_at {
                Some((aw, at)) if aw == w => Some(now.duration_since(at).as_secs_f64()),
                _ => None,
            };
            info!(
                window = w,
                t = %c.proposal.header.t,
                round = c.cement.round,
                signers = c.cement.precommits.len(),
                state_root = %c.root,
                cement_latency_secs = latency,
                "cemented window"
            );
            if let Some(l) = latency {
                self.state.lock().unwrap().cement_latency_secs = Some(l);
            }
        }
        if ws.len() > 1 || self.applied_at.is_none_or(|(aw, _)| aw != tip.window) {
            // Windows fetched (catch-up) were applied as they were cemented.
            self.last_applied_at = now;
            self.caught_up_trim = true;
        }
        if self.caught_up_trim && self.chain.lag() <= 1 {
            // Caught up: the batches and proposals fetched are gone.
            self.caught_up_trim = false;
            super::memory::trim();
        }
        self.snapshots.cemented(&self.node.store, tip.window);
        self.publish();
    }

    fn spawn_verify(&mut self, batch: Batch) {
        let backend = self.node.backends.verify.clone();
        let tx = self.done_tx.clone();
        let opts = VerifyOptions::threads(self.verify_threads);
        let g = &self.node.genesis;
        let (network_id, quorum) = (self.node.network_id, g.quorum);
        self.in_flight += 1;
        tokio::task::spawn_blocking(move || {
            let mut batch = batch;
            let t0 = Instant::now();
            let (outcome, panicked) = guarded(|| {
                // Catch-up: every Cement's signatures first, each against
                // the set of its window (a bad one ends the run there and
                // is named in the batch for the chain to drop), then the
                // VDF in one call.
                let upto = batch.check_cements(&network_id, quorum);
                if batch.bad_cement.is_some() && upto == 0 {
                    return Ok(montana_vdf::VerifyOutcome::Valid); // nothing left
                }
                // Live: the carried candidates' chains in the same call
                // (catch-up carries none: no copy of the checkpoints).
                let all: std::borrow::Cow<[montana_vdf::Proof]> = if batch.candidates.is_empty() {
                    std::borrow::Cow::Borrowed(&batch.proofs[..upto])
                } else {
                    let mut all = batch.proofs[..upto].to_vec();
                    all.extend(batch.candidates.iter().cloned());
                    std::borrow::Cow::Owned(all)
                };
                backend
                    .verify_proofs(&all, &opts)
                    .map_err(|e| e.to_string())
            });
            let _ = tx.send(Done::Verified {
                batch: Box::new(batch),
                outcome,
                took: t0.elapsed(),
                panicked,
            });
        });
    }

    fn spawn_verify_candidates(
        &mut self,
        proofs: Vec<crate::consensus::joining::CandidateProof>,
        chains: Vec<montana_vdf::Proof>,
    ) {
        let backend = self.node.backends.verify.clone();
        let tx = self.done_tx.clone();
        let opts = VerifyOptions::threads(self.verify_threads);
        self.in_flight += 1;
        tokio::task::spawn_blocking(move || {
            let (outcome, _) = guarded(|| {
                backend
                    .verify_proofs(&chains, &opts)
                    .map_err(|e| e.to_string())
            });
            let _ = tx.send(Done::CandidatesVerified { proofs, outcome });
        });
    }

    fn spawn_evaluate_candidate(&mut self, window: u64, start: montana_vdf::Hash32) {
        let backend = self.node.backends.eval.clone();
        let tx = self.done_tx.clone();
        let suite = self.node.genesis.hash;
        let params = self.node.genesis.joining().params();
        let cancel = self.cancel.clone();
        self.in_flight += 1;
        tokio::task::spawn_blocking(move || {
            let (result, _) = guarded(|| {
                let ctl = EvalControl {
                    cancel: Some(&cancel),
                    progress: None,
                };
                backend
                    .evaluate(suite, &start, params, &ctl)
                    .map_err(|e| e.to_string())
            });
            let _ = tx.send(Done::CandidateEvaluated {
                window,
                checkpoints: result.ok(),
            });
        });
    }

    fn spawn_evaluate(&mut self, window: u64, start: montana_vdf::Hash32) {
        let backend = self.node.backends.eval.clone();
        let tx = self.done_tx.clone();
        let g = &self.node.genesis;
        let (suite, d, k) = (g.hash, g.d, g.checkpoints);
        let cancel = self.cancel.clone();
        self.in_flight += 1;
        tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            let (result, panicked) = guarded(|| {
                let params = ChainParams::new(d, k).map_err(|e| e.to_string())?;
                let ctl = EvalControl {
                    cancel: Some(&cancel),
                    progress: None,
                };
                backend
                    .evaluate(suite, &start, params, &ctl)
                    .map_err(|e| e.to_string())
            });
            let _ = tx.send(Done::Evaluated {
                window,
                result,
                took: t0.elapsed(),
                panicked,
            });
        });
    }

    fn on_done(&mut self, d: Done) -> Result<(), NodeError> {
        let now = Instant::now();
        if let Done::Served { source, result } = d {
            self.serving -= 1;
            let bytes = result?;
            self.budget.done(source, bytes);
            return Ok(());
        }
        self.in_flight -= 1;
        match d {
            Done::Served { .. } => unreachable!("handled above"),
            Done::CandidatesVerified { proofs, outcome } => {
                let a = self.chain.on_candidates_verified(proofs, outcome, now);
                self.exec(a)
            }
            Done::CandidateEvaluated {
                window,
                checkpoints,
            } => {
                if checkpoints.is_some() {
                    info!(window, "candidate chain evaluated; proof sent");
                }
                let a = self.chain.on_candidate_evaluated(window, checkpoints, now);
                self.exec(a)
            }
            Done::Verified {
                batch,
                outcome,
                took,
                panicked,
            } => {
                if let Some(msg) = panicked {
                    self.backend_panicked(Operation::Verify, msg)?;
                } else if let Err(e) = &outcome {
                    error!(error = %e, "verify backend failed; will retry");
                }
                let windows = batch.proposals.len() as f64;
                if matches!(outcome, Ok(VerifyOutcome::Valid)) && batch.bad_cement.is_none() {
                    let steps = batch.proposals.len() as u64 * self.node.genesis.d;
                    let secs = took.as_secs_f64();
                    let b = &mut self.node.backends;
                    self.drift.observe(b, Operation::Verify, steps, secs);
                }
                self.last_verify_secs = took.as_secs_f64() / windows;
                {
                    let mut s = self.state.lock().unwrap();
                    s.verify_rate = windows * self.node.genesis.d as f64 / took.as_secs_f64();
                }
                debug!(
                    windows = batch.proposals.len(),
                    secs = took.as_secs_f64(),
                    "verified batch"
                );
                let a = self.chain.on_verified(*batch, outcome, now);
                self.exec(a)
            }
            Done::Evaluated {
                window,
                result,
                took,
                panicked,
            } => match result {
                Ok(cps) => {
                    self.state.lock().unwrap().eval_rate =
                        self.node.genesis.d as f64 / took.as_secs_f64();
                    let (d, secs) = (self.node.genesis.d, took.as_secs_f64());
                    let b = &mut self.node.backends;
                    self.drift.observe(b, Operation::Eval, d, secs);
                    let a = self.chain.on_evaluated(window, cps, now);
                    self.exec(a)
                }
                Err(e) => {
                    self.chain.on_evaluation_failed();
                    if let Some(msg) = panicked {
                        self.backend_panicked(Operation::Eval, msg)?;
                    } else if !self.cancel.load(Ordering::Relaxed) {
                        error!(error = %e, "evaluation failed; retrying");
                    }
                    Ok(())
                }
            },
        }
    }

    /// A backend panicked: fall back to the scalar backend for `op`, or stop
    /// if the scalar backend is the one that panicked.
    fn backend_panicked(&mut self, op: Operation, message: String) -> Result<(), NodeError> {
        let slot = match op {
            Operation::Eval => &mut self.node.backends.eval,
            Operation::Verify => &mut self.node.backends.verify,
        };
        let backend = slot.name();
        if backend == ScalarBackend.name() {
            error!(op = op.name(), backend, %message, "backend panicked; no fallback left, stopping");
            return Err(NodeError::BackendPanicked {
                op: op.name(),
                backend,
                message,
            });
        }
        error!(
            op = op.name(),
            backend,
            %message,
            "backend panicked; falling back to scalar"
        );
        *slot = Arc::new(ScalarBackend);
        let mut s = self.state.lock().unwrap();
        match op {
            Operation::Eval => s.eval_backend = ScalarBackend.name().into(),
            Operation::Verify => s.verify_backend = ScalarBackend.name().into(),
        }
        Ok(())
    }

    /// A message that does not decode: counted always, a line at most once
    /// a minute per peer (crate::lograte), and an offence of the peer
    /// (crate::net::misbehaviour).
    fn malformed(&mut self, m: &Incoming, e: &dyn std::fmt::Display) {
        self.charge(m, Offence::Malformed);
        *self
            .state
            .lock()
            .unwrap()
            .rejected
            .entry("malformed".into())
            .or_default() += 1;
        if let Some(left_out) = self
            .log_rate
            .allow((m.peer as i64, "malformed"), Instant::now())
        {
            warn!(
                peer = m.peer,
                msg_type = m.msg_type,
                error = %e,
                left_out,
                "malformed message (logged once a minute per peer)"
            );
        }
    }

    /// `m`'s sender committed `offence`: charged to the connection it came
    /// on, whoever holds its peer index now (nobody in-process, where
    /// nothing is scored).
    fn charge(&self, m: &Incoming, offence: Offence) {
        if let Some(from) = &m.from {
            self.transport.offence(from, offence);
        }
    }

    /// `peer`'s connection to `node` closed. A late event changes nothing:
    /// after another node's messages came through that index (that node
    /// left it then), or once the same node is connected there again
    /// (link events and messages come on separate channels).
    fn link_down(&mut self, peer: u16, node: NodeId) -> Result<(), NodeError> {
        if self.holders.get(&peer).is_some_and(|h| h.node_id != node)
            || self.transport.link(peer).is_some_and(|l| l.node_id == node)
        {
            return Ok(());
        }
        self.holders.remove(&peer);
        let a = self.chain.on_peer_left(peer, Instant::now());
        self.exec(a)
    }

    fn on_incoming(&mut self, m: Incoming) -> Result<(), NodeError> {
        let now = Instant::now();
        if let Some(f) = &m.from {
            if self
                .holders
                .insert(m.peer, *f)
                .is_some_and(|h| h.node_id != f.node_id)
            {
                // Another node holds this index now: what the one before
                // sent is not charged to it.
                let a = self.chain.on_peer_left(m.peer, now);
                self.exec(a)?;
            }
        }
        // Relayed kinds: every copy still goes to the chain (a resend is
        // how a node that dropped the first one, behind or restarting,
        // gets it; the chain drops duplicates by key before any
        // signature), and the relay decides whom to forward it to once the
        // chain did not refuse it ([`Relay::accepted`]: junk never enters
        // the seen-cache).
        let relayed = relayed(m.msg_type).then(|| message_id(m.msg_type, &m.payload));
        let msg = match Message::decode(m.msg_type, m.version, &m.payload) {
            None => {
                // Not a chain message: a fast-sync one (types 26-31), or
                // unknown (ignored).
                if let Some(Err(e)) = crate::snapshot::messages::SyncMessage::decode(
                    m.msg_type, m.version, &m.payload,
                ) {
                    self.malformed(&m, &e);
                    return Ok(());
                }
                self.snapshots.on_request(&m, &self.transport);
                return Ok(());
            }
            Some(Err(e)) => {
                self.malformed(&m, &e);
                return Ok(());
            }
            Some(Ok(msg)) => msg,
        };
        trace_consensus("recv", Some(m.peer), &msg);
        let actions = match msg {
            Message::GetProposals { from, count } => {
                self.serve(&m, Served::Proposals, from, count);
                Vec::new()
            }
            Message::GetCements { from, count } => {
                self.serve(&m, Served::Cements, from, count);
                Vec::new()
            }
            Message::Tip { cemented, .. } => {
                // Bounded: peers are the slots the transport admitted.
                self.state
                    .lock()
                    .unwrap()
                    .peer_tips
                    .insert(m.peer, cemented.window);
                self.chain
                    .on_claim(m.peer, cemented.window, m.from_member(), now)
            }
            msg => self.chain.on_message(m.peer, msg, now),
        };
        // Rejections that are offences of the peer that sent this message
        // (Reject::offence); rejections of other messages the chain went
        // through meanwhile (held ones) are not charged to this peer.
        for a in &actions {
            if let Action::Rejected {
                peer: Some(p),
                reason,
                ..
            } = a
            {
                if let Some(o) = reason.offence(m.msg_type).filter(|_| *p == m.peer) {
                    self.charge(&m, o);
                }
            }
        }
        // Passed the chain's cheap checks (a proposal: before its VDF is
        // verified): on to the peers that lack it.
        if let Some(id) = relayed {
            if !actions
                .iter()
                .any(|a| matches!(a, Action::Rejected { .. } | Action::Unchecked))
            {
                let to = self.relay.accepted(id, m.peer, &self.connected());
                self.forward(&to, m.msg_type, &m.payload);
            }
        }
        self.exec(actions)
    }

    /// The peers connected now.
    fn connected(&self) -> Vec<u16> {
        self.transport.links().iter().map(|l| l.peer.0).collect()
    }

    fn forward(&self, to: &[u16], msg_type: u8, payload: &[u8]) {
        for &p in to {
            if let Err(e) = self.transport.send(p, msg_type, 0, payload.to_vec()) {
                debug!(peer = p, error = %e, "not relayed");
            }
        }
    }

    /// Our own broadcast of a relayed kind: every connected peer gets it
    /// now, so none is sent a relayed copy later.
    fn sent_to_all(&mut self, id: MessageId) {
        self.relay.observe(id, None);
        let _ = self.relay.forward_to(id, &self.connected());
    }

    /// Answers GetProposals (GetCements) request `m` from storage, within
    /// its sender's budget ([`super::serve`]; a guest's is its source
    /// address's): consecutive windows from `from`, as many as fit one
    /// message, read and queued on a blocking thread (through the node's
    /// [`Gate`]) so the event loop never waits on the database for a peer.
    fn serve(&mut self, m: &Incoming, what: Served, from: u64, count: u32) {
        let (peer, request_id, source, asker) = (m.peer, m.request_id, m.source(), m.asker());
        let tip = self.chain.tip().window;
        if from == 0 || from > tip || self.chain.is_stopped() {
            return;
        }
        let Some(ticket) = self.gate.ticket(&source) else {
            debug!(peer, from, reason = "busy", "request over budget; dropped");
            return;
        };
        let backlog = self.transport.queued_bytes(peer);
        if let Err(why) = self.budget.admit(source, backlog, Instant::now()) {
            debug!(
                peer,
                from,
                reason = why.name(),
                "request over budget; dropped"
            );
            return;
        }
        let last = tip.min(from.saturating_add(count.min(messages::MAX_REQUEST) as u64) - 1);
        let reader = self.node.store.reader();
        let transport = self.transport.clone();
        let tx = self.done_tx.clone();
        self.serving += 1;
        self.gate.spawn(
            ticket,
            move || {
                let t = match what {
                    Served::Proposals => MSG_PROPOSALS,
                    Served::Cements => MSG_CEMENTS,
                };
                super::serve::answer(
                    |w| match what {
                        Served::Proposals => reader.proposal_bytes(w),
                        Served::Cements => reader.cement_bytes(w),
                    },
                    from,
                    last,
                    &*transport,
                    asker,
                    t,
                    request_id,
                )
            },
            move |built| {
                let result = built.unwrap_or_else(|panic| {
                    error!(peer, from, panic = %panic, "building an answer panicked; nothing sent");
                    Ok(0)
                });
                let _ = tx.send(Done::Served { source, result });
            },
        );
    }

    fn send_tip(&self) {
        let m = Message::Tip {
            cemented: self.chain.tip(),
            applied: self.chain.applied(),
        };
        self.transport.broadcast(m.msg_type(), m.encode());
    }

    /// Refreshes the shared snapshot and `DIR/state.json`.
    fn publish(&mut self) {
        let tip = self.chain.tip();
        let now = Instant::now();
        let mut s = self.state.lock().unwrap();
        s.phase = self.chain.phase().into();
        s.window = self.chain.applied();
        s.cemented = tip.window;
        s.t = self.chain.applied_t().to_hex();
        s.state_root = self.chain.state_root().to_hex();
        s.round = self.chain.round();
        s.lag = self.chain.lag();
        s.membership = self.chain.membership().into();
        s.members = self.chain.state().active().len();
        s.candidate_windows = self.chain.candidacy().map(|c| c.count);
        s.set_since_applied(now.duration_since(self.last_applied_at));
        s.uptime_secs = now.duration_since(self.started_at).as_secs();
        s.rss_bytes = super::state::rss_bytes();
        s.peak_rss_bytes = super::state::peak_rss_bytes();
        // The backends serving calls now: a fallback backend names the one
        // it moved to after a run-time failure.
        s.eval_backend = self.node.backends.eval.name().into();
        s.verify_backend = self.node.backends.verify.name().into();
        s.backend_faults = self.node.backends.faults.get();
        s.drift = self.drift.status();
        for (k, v) in self.chain.rejected() {
            s.rejected.insert((*k).to_string(), *v);
        }
        s.set_peers(&self.transport.summary());
        s.peers = self.transport.peers();
        s.net = self.transport.totals();
        // At once when something changed, else every few seconds (timers and
        // counters): no disk write every tick.
        let stable = s.stable_view();
        if stable != self.last_written
            || now.duration_since(self.last_written_at) >= STATE_FILE_EVERY
        {
            match s.write(&self.node.data_dir) {
                Ok(()) => {
                    self.last_written = stable;
                    self.last_written_at = now;
                    if self.state_write_error.take().is_some() {
                        info!("state file written again");
                    }
                }
                Err(e) => {
                    if let Some(e) = first_occurrence(&mut self.state_write_error, e.to_string()) {
                        warn!(error = %e, "state file not written (said once per distinct error)");
                    }
                }
            }
        }
    }
}

/// One debug line per agreement message sent or received (target
/// `montana_node::consensus_trace`, off unless asked for:
/// `MONTANA_LOG=info,montana_node::consensus_trace=debug`), to follow a
/// window's rounds across nodes.
fn trace_consensus(dir: &str, peer: Option<u16>, msg: &Message) {
    let short = |h: &montana_vdf::Hash32| h.to_hex()[..8].to_string();
    match msg {
        Message::Propose(p) => debug!(
            target: "montana_node::consensus_trace",
            dir,
            peer = peer.map_or(-1, i64::from),
            window = p.key.window,
            round = p.key.round,
            valid_round = p.key.valid_round.map_or(-1, i64::from),
            value = %short(&p.key.value),
            signer = %&p.key.signer.to_hex()[..8],
            "propose"
        ),
        Message::Vote(v) => debug!(
            target: "montana_node::consensus_trace",
            dir,
            peer = peer.map_or(-1, i64::from),
            window = v.key.window,
            round = v.key.round,
            kind = ?v.key.kind,
            value = %v.key.value.as_ref().map_or("nil".to_string(), short),
            signer = %&v.key.signer.to_hex()[..8],
            "vote"
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_error_is_reported_once() {
        let mut last = None;
        assert!(first_occurrence(&mut last, "disk full".into()).is_some());
        for _ in 0..100 {
            assert!(first_occurrence(&mut last, "disk full".into()).is_none());
        }
        assert!(first_occurrence(&mut last, "permission denied".into()).is_some());
        assert!(first_occurrence(&mut last, "disk full".into()).is_some());
    }

    #[test]
    fn panics_become_errors_with_their_message() {
        let (r, p) = guarded::<()>(|| panic!("boom {}", 7));
        assert_eq!(p.as_deref(), Some("boom 7"));
        assert!(r.unwrap_err().contains("boom 7"));
        let (r, p) = guarded(|| Ok(3));
        assert_eq!((r, p), (Ok(3), None));
    }
}
