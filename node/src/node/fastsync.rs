//! Fast-sync in the running node (docs/SPEC.md section 13): the syncing
//! phase before the window loop ([`before_run`]) and the serving side
//! ([`Serving`]: snapshots taken every `snapshot_interval` cemented windows,
//! requests answered off the event loop within a per-source budget).
//!
//! The runtime calls three hooks: [`before_run`] once before it builds the
//! chain, [`Serving::on_request`] for each message type
//! [`crate::messages::Message`] does not know, and [`Serving::cemented`]
//! after each cementing write.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::state::FastSyncStats;
use super::{Incoming, Node, NodeError, NodeState, Transport};
use crate::messages::{Message, MSG_GET_PROPOSALS};
use crate::snapshot::disk::{self, ChunkBudget, Snapshots};
use crate::snapshot::messages::SyncMessage;
use crate::snapshot::staging::Staging;
use crate::snapshot::sync::{Action, Config, FastSync, Resume};
use crate::snapshot::{DEFAULT_FAST_SYNC_THRESHOLD, DEFAULT_SNAPSHOT_INTERVAL, SNAPSHOTS_KEPT};
use crate::storage::{Abandoned, InstallError, Store};

/// Chunk requests outstanding per peer while syncing.
pub const IN_FLIGHT_PER_PEER: usize = 4;
/// A fast-sync request unanswered this long counts against the peer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The node gives up and catches up by replay once the sync has had no
/// snapshot left to try (no candidate waiting, being certified or
/// fetched) and no chunk verified for this long
/// ([`FastSync::exhausted`]).
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(30);
/// One peer's membership certificates, every page, must be in within this
/// long (else the next peer that sent the same manifest is asked).
pub const CERTIFY_BUDGET: Duration = Duration::from_secs(30);
/// At start-up without `--fast-sync`: how long the node listens for its
/// peers' tips (less once every peer's is heard) to learn whether it is
/// more than `--fast-sync-threshold` windows behind.
pub const PROBE: Duration = Duration::from_secs(2);
/// Most messages (and bytes of them) kept from the probe for the window
/// loop; the rest are dropped (what matters is sent again: Tips every few
/// seconds, votes every [`crate::chain::RESEND_EVERY`]).
pub const PROBE_KEPT: usize = 256;
pub const PROBE_KEPT_BYTES: usize = 8 << 20;

/// `montana start --fast-sync [--fast-sync-threshold N]` and the snapshot
/// interval.
#[derive(Clone, Debug)]
pub struct FastSyncOptions {
    /// Sync from a snapshot before running windows.
    pub enabled: bool,
    /// Windows behind a verified tip beyond which a node fast-syncs.
    pub threshold: u64,
    /// Cemented windows between two snapshots this node writes (0: none).
    pub snapshot_interval: u64,
}

impl Default for FastSyncOptions {
    fn default() -> Self {
        FastSyncOptions {
            enabled: false,
            threshold: DEFAULT_FAST_SYNC_THRESHOLD,
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
        }
    }
}

fn staging_dir(node: &Node) -> PathBuf {
    node.data_dir.join("staging")
}

fn snapshots_dir(node: &Node) -> PathBuf {
    node.data_dir.join("snapshots")
}

fn store_err(e: crate::storage::StoreError) -> NodeError {
    NodeError::Store(e)
}

/// The runtime's side of the member check ([`Action::CheckMembers`],
/// [`Action::Install`]): if the staged members are not the set the
/// certificates lead to, nothing is installed, staging is cleared, what is
/// still queued for that snapshot is dropped, and the machine blames the
/// source and goes on (or falls back to replay). Whether it refused.
fn refuse_untrusted(
    staging: &mut Staging,
    sync: &mut FastSync,
    queue: &mut std::collections::VecDeque<Action>,
    window: u64,
    now: Instant,
) -> Result<bool, NodeError> {
    let Some(why) = staging.untrusted().map_err(store_err)? else {
        return Ok(false);
    };
    warn!(window, "fast-sync: snapshot refused: {why}");
    staging.clear().map_err(store_err)?;
    queue.retain(|a| !a.is_for(window));
    queue.extend(sync.members_refused(window, why, now));
    Ok(true)
}

/// Installs `staging` into the store and records it in the node state.
fn install(
    store: &mut Store,
    staging: &mut Staging,
    state: &Mutex<NodeState>,
) -> Result<(), NodeError> {
    let tip = store.install_snapshot(staging).map_err(store_err)?;
    installed(staging, state, tip)
}

/// At start-up, before anything reads the state: opens the staging area
/// when `wanted` or an install is pending (one it cannot use, say written
/// by an older build, is discarded with one line: it holds only what can
/// be fetched again), and finishes the install interrupted at the last
/// stop; when the staging area cannot give it, gives the install up with
/// one line ([`Store::abandon_install`]: the state kept if the install
/// had not touched it, else the genesis state; the cemented proposals and
/// Cements kept either way), so the node syncs again or replays. Returns
/// the staging area and whether an install was finished.
fn start_staging(
    store: &mut Store,
    genesis: &crate::genesis::Genesis,
    dir: &std::path::Path,
    wanted: bool,
    state: &Mutex<NodeState>,
) -> Result<(Option<Staging>, bool), NodeError> {
    let pending = store.pending_install().map_err(store_err)?;
    if !wanted && pending.is_none() {
        return Ok((None, false));
    }
    let (mut staging, discarded) = Staging::open_or_discard(dir).map_err(store_err)?;
    let Some(window) = pending else {
        if let Some(u) = discarded {
            warn!("fast-sync: {u}; discarded, a sync starts over");
        }
        return Ok((Some(staging), false));
    };
    let why = match discarded {
        Some(u) => u.to_string(),
        None => match store.try_install_snapshot(&staging) {
            Ok(tip) => {
                info!(
                    window,
                    "finished the snapshot install interrupted at the last stop"
                );
                installed(&mut staging, state, tip)?;
                return Ok((Some(staging), true));
            }
            Err(InstallError::Store(e)) => return Err(store_err(e)),
            Err(InstallError::Refused(why)) => {
                drop(staging);
                staging = Staging::discard(dir).map_err(store_err)?;
                why
            }
        },
    };
    let left = match store.abandon_install(genesis).map_err(store_err)? {
        Abandoned::Kept(tip) => format!("the state of window {} kept", tip.window),
        Abandoned::Reset => "the state, half replaced, is the genesis state again (the cemented proposals kept): syncing again or replaying".into(),
    };
    warn!(
        window,
        "the snapshot install interrupted at the last stop cannot be finished ({why}); staging discarded, {left}"
    );
    Ok((Some(staging), false))
}

/// Records an installed snapshot: staging cleared, the node state moved to
/// its tip.
fn installed(
    staging: &mut Staging,
    state: &Mutex<NodeState>,
    tip: crate::storage::Tip,
) -> Result<(), NodeError> {
    staging.clear().map_err(store_err)?;
    let mut s = state.lock().unwrap();
    s.snapshot_window = Some(tip.window);
    s.window = tip.window;
    s.cemented = tip.window;
    s.t = tip.t.to_hex();
    info!(window = tip.window, t = %tip.t, "snapshot installed; catching up from the next window");
    Ok(())
}

/// What the probe heard: every genesis peer's claimed cemented window, and
/// the messages kept for the window loop (at most [`PROBE_KEPT`] and
/// [`PROBE_KEPT_BYTES`]).
#[derive(Debug, Default)]
struct Heard {
    /// Genesis peers in the plan; only their Tips count (a joiner's could
    /// end the probe early or claim any window).
    genesis_peers: usize,
    claims: std::collections::BTreeMap<u16, u64>,
    kept: Vec<Incoming>,
    kept_bytes: usize,
}

impl Heard {
    fn new(genesis_peers: usize) -> Self {
        Heard {
            genesis_peers,
            ..Heard::default()
        }
    }

    fn take(&mut self, m: Incoming) {
        if usize::from(m.peer) < self.genesis_peers {
            if let Some(Ok(Message::Tip { cemented, .. })) =
                Message::decode(m.msg_type, m.version, &m.payload)
            {
                self.claims.insert(m.peer, cemented.window);
            }
        }
        if self.kept.len() < PROBE_KEPT && self.kept_bytes + m.payload.len() <= PROBE_KEPT_BYTES {
            self.kept_bytes += m.payload.len();
            self.kept.push(m);
        }
    }

    /// Every other genesis peer has made a claim.
    fn all_heard(&self) -> bool {
        self.claims.len() >= self.genesis_peers.saturating_sub(1)
    }

    /// The highest claim (0: none), and the messages kept.
    fn finish(self) -> (u64, Vec<Incoming>) {
        (self.claims.values().copied().max().unwrap_or(0), self.kept)
    }
}

/// Listens up to [`PROBE`] for every other genesis peer's Tip (sending
/// ours every 250 ms, so that peers probing too hear it): the highest
/// cemented window claimed, and the messages received (for the window
/// loop to handle next; see [`Heard`]).
async fn probe(
    node: &Node,
    transport: &Arc<dyn Transport>,
    inbound: &mut mpsc::Receiver<Incoming>,
) -> (u64, Vec<Incoming>) {
    let tip = node.store.tip();
    let ours = Message::Tip {
        cemented: tip,
        applied: tip.window,
    };
    let mut heard = Heard::new(node.genesis.peers.len());
    let deadline = tokio::time::Instant::now() + PROBE;
    let mut every = tokio::time::interval(Duration::from_millis(250));
    while !heard.all_heard() {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = every.tick() => transport.broadcast(ours.msg_type(), ours.encode()),
            m = inbound.recv() => {
                let Some(m) = m else { break };
                heard.take(m);
            }
        }
    }
    heard.finish()
}

/// Before the window loop: finishes an interrupted install, and syncs from
/// a snapshot when `--fast-sync` was given, when a sync was under way
/// (staging holds a target), or when the peers claim a tip more than
/// `--fast-sync-threshold` windows ahead. That claim is only a hint: the
/// snapshot taken must then be of a window more than the threshold ahead
/// *and* verified through its Cement (docs/SPEC.md 13.1), else the node
/// replays. Returns when the snapshot is installed, or when the sync has
/// had no such snapshot left to try for [`GIVE_UP_AFTER`] (every candidate
/// refused, none offered, no chunk verified meanwhile: the node then
/// catches up by replay), with the messages the probe received (for the
/// window loop to handle first).
pub async fn before_run(
    node: &mut Node,
    transport: &Arc<dyn Transport>,
    inbound: &mut mpsc::Receiver<Incoming>,
    state: &Arc<Mutex<NodeState>>,
) -> Result<Vec<Incoming>, NodeError> {
    let dir = staging_dir(node);
    let wanted = dir.exists() || node.fast_sync.enabled;
    let (mut staging, finished) =
        start_staging(&mut node.store, &node.genesis, &dir, wanted, state)?;
    if finished {
        return Ok(Vec::new());
    }
    state.lock().unwrap().snapshot_window = node.store.snapshot_window().map_err(store_err)?;
    let tip = node.store.tip().window;
    let mut above = tip;
    let has_target = staging.as_ref().is_some_and(|s| s.target().is_some());
    if !node.fast_sync.enabled && !has_target {
        let threshold = node.fast_sync.threshold;
        if threshold == u64::MAX {
            return Ok(Vec::new());
        }
        let (claimed, kept) = probe(node, transport, inbound).await;
        if claimed <= tip.saturating_add(threshold) {
            return Ok(kept);
        }
        info!(
            tip,
            claimed,
            threshold,
            "peers claim a tip more than the threshold ahead; fast-syncing from a snapshot verified through its cement"
        );
        above = tip + threshold;
    }
    let mut staging = match staging.take() {
        Some(s) => s,
        None => Staging::open(&dir).map_err(store_err)?,
    };
    let resume = match staging.target() {
        Some(m) if m.window > tip => Some(Resume {
            manifest: m.clone(),
            held: staging.held_chunks().map_err(store_err)?,
            proposal: staging.proposal().map_err(store_err)?.is_some(),
        }),
        _ => None,
    };
    if !node.fast_sync.enabled && above == tip && resume.is_none() {
        // A target at or below our tip: nothing to resume.
        staging.clear().map_err(store_err)?;
        return Ok(Vec::new());
    }
    if let Some(r) = &resume {
        info!(
            window = r.manifest.window,
            chunks = r.held.len(),
            of = r.manifest.chunks(),
            "resuming the fast-sync: verified chunks are kept"
        );
    }
    let cfg = Config {
        network_id: node.network_id,
        genesis_set: node.genesis.active_set(),
        quorum: node.genesis.quorum,
        above,
        in_flight_per_peer: IN_FLIGHT_PER_PEER,
        timeout: REQUEST_TIMEOUT,
        certify_budget: CERTIFY_BUDGET,
    };
    let started = Instant::now();
    let mut sync = FastSync::new(cfg, resume, started);
    state.lock().unwrap().phase = "syncing".into();
    info!(tip, "fast-sync: asking peers for their newest snapshot");
    let peers: Vec<u16> = (0..node.genesis.peers.len() as u16)
        .filter(|p| Some(*p) != node.me)
        .collect();
    // Over the network a peer is up once connected (it may still be
    // dialing: asking it now would only fail); in-process every peer is.
    let tracks_links = transport.link_events().is_some();
    let connected = |p: u16| !tracks_links || transport.link(p).is_some();
    // The member check of a resume first, before any peer is asked: a
    // snapshot refused here gets no chunk request.
    let mut actions = Vec::new();
    for a in sync.begin() {
        if let Action::CheckMembers { window } = a {
            let mut q = std::collections::VecDeque::new();
            refuse_untrusted(&mut staging, &mut sync, &mut q, window, Instant::now())?;
            actions.extend(q);
        }
    }
    for &p in &peers {
        if connected(p) {
            actions.extend(sync.peer_up(p, Instant::now()));
        }
    }
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let (mut fetched_chunks, mut fetched_bytes) = (0u64, 0u64);
    // Demotions are peers' doing: a line at most once a minute per peer
    // and reason (crate::lograte).
    let mut log_rate = crate::lograte::LogRate::per_minute();
    loop {
        let mut queue: std::collections::VecDeque<Action> = actions.drain(..).collect();
        while let Some(a) = queue.pop_front() {
            let now = Instant::now();
            match a {
                Action::Send { peer, msg } => {
                    if transport
                        .send(peer, msg.msg_type(), 0, msg.encode())
                        .is_err()
                    {
                        queue.extend(sync.peer_down(peer, now));
                    }
                }
                Action::RequestProposal { peer, window } => {
                    let m = Message::GetProposals {
                        from: window,
                        count: 1,
                    };
                    if transport
                        .send(peer, MSG_GET_PROPOSALS, 0, m.encode())
                        .is_err()
                    {
                        queue.extend(sync.peer_down(peer, now));
                    }
                }
                Action::Stage(m, trust) => {
                    info!(
                        window = m.window,
                        entries = m.entries,
                        chunks = m.chunks(),
                        members = trust.set.len(),
                        certificates = trust.certificates.len(),
                        "fast-sync: snapshot accepted"
                    );
                    staging.reset(&m, &trust).map_err(store_err)?;
                }
                Action::StoreChunk(c) => {
                    fetched_chunks += 1;
                    staging.put_chunk(&c).map_err(store_err)?;
                }
                Action::CheckMembers { window } => {
                    // The member entries are in, the rest need not be.
                    refuse_untrusted(&mut staging, &mut sync, &mut queue, window, now)?;
                }
                Action::StoreProposal(p) => staging.put_proposal(&p).map_err(store_err)?,
                Action::Install { window } => {
                    if refuse_untrusted(&mut staging, &mut sync, &mut queue, window, now)? {
                        continue;
                    }
                    let (held, all) = sync.progress();
                    info!(
                        window,
                        chunks = held,
                        of = all,
                        secs = started.elapsed().as_secs_f64(),
                        "fast-sync: every chunk verified"
                    );
                    publish_rejected(&sync, state);
                    let entries = staging.target().map_or(0, |m| m.entries);
                    install(&mut node.store, &mut staging, state)?;
                    let stats = FastSyncStats {
                        window,
                        entries,
                        chunks: all,
                        fetched_chunks,
                        fetched_bytes,
                        secs: started.elapsed().as_secs_f64(),
                    };
                    record(state, stats);
                    return Ok(Vec::new());
                }
                Action::Demote {
                    peer,
                    reason,
                    detail,
                } => {
                    if let Some(left_out) = log_rate.allow((peer, reason), now) {
                        warn!(peer, reason, left_out, "fast-sync: peer demoted: {detail}");
                    }
                }
                Action::Note(line) => info!("fast-sync: {line}"),
            }
        }
        publish_rejected(&sync, state);
        if sync.exhausted(Instant::now(), GIVE_UP_AFTER) {
            info!(
                tip,
                stale_answers = sync.stale_answers(),
                "fast-sync: no peer serves a snapshot above our tip; catching up by replay"
            );
            state.lock().unwrap().phase = "starting".into();
            return Ok(Vec::new());
        }
        tokio::select! {
            m = inbound.recv() => {
                let Some(m) = m else { return Ok(Vec::new()) };
                let now = Instant::now();
                if let Some(Ok(msg)) = SyncMessage::decode(m.msg_type, m.version, &m.payload) {
                    if matches!(msg, SyncMessage::Chunk(_)) {
                        fetched_bytes += m.payload.len() as u64;
                    }
                    actions = sync.on_message(m.peer, msg, now);
                } else if let Some(Ok(msg)) = Message::decode(m.msg_type, m.version, &m.payload) {
                    actions = sync.on_node_message(m.peer, &msg, now);
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                actions = sync.tick(now);
                for &p in &peers {
                    match (sync.is_up(p), connected(p)) {
                        (false, true) => actions.extend(sync.peer_up(p, now)),
                        (true, false) => actions.extend(sync.peer_down(p, now)),
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Records what the sync took and logs it: the line `scripts/bench-fastsync`
/// reads.
fn record(state: &Mutex<NodeState>, mut f: FastSyncStats) {
    f.secs = (f.secs * 1000.0).round() / 1000.0;
    info!(
        window = f.window,
        entries = f.entries,
        chunks = f.chunks,
        fetched_chunks = f.fetched_chunks,
        fetched_bytes = f.fetched_bytes,
        secs = f.secs,
        peak_rss_bytes = super::state::peak_rss_bytes(),
        "fast-sync done: first request to installed state"
    );
    state.lock().unwrap().fast_sync = Some(f);
}

fn publish_rejected(sync: &FastSync, state: &Mutex<NodeState>) {
    let mut s = state.lock().unwrap();
    for (k, v) in sync.rejected() {
        s.rejected.insert((*k).to_string(), *v);
    }
}

/// The serving side: snapshots on disk and the per-source chunk budget.
pub struct Serving {
    snapshots: Snapshots,
    dir: PathBuf,
    interval: u64,
    budget: Arc<Mutex<ChunkBudget>>,
    /// The node's limit on answers built at once ([`super::serve::Gate`]).
    gate: super::serve::Gate,
}

impl Serving {
    pub fn new(node: &Node, gate: super::serve::Gate) -> Self {
        let dir = snapshots_dir(node);
        let certify = disk::Certify {
            genesis_set: node.genesis.active_set(),
            quorum: node.genesis.quorum,
        };
        Serving {
            snapshots: Snapshots::serving(&dir, certify),
            dir,
            interval: node.fast_sync.snapshot_interval,
            budget: Arc::default(),
            gate,
        }
    }

    /// Answers a fast-sync request off the event loop (chunks within the
    /// peer's budget; over budget: dropped, the asker tries elsewhere).
    /// Returns false for messages that are not fast-sync requests.
    pub fn on_request(&self, m: &Incoming, transport: &Arc<dyn Transport>) -> bool {
        let Some(Ok(msg)) = SyncMessage::decode(m.msg_type, m.version, &m.payload) else {
            return false;
        };
        if !matches!(
            msg,
            SyncMessage::GetManifest { .. }
                | SyncMessage::GetChunk { .. }
                | SyncMessage::GetCertificates { .. }
        ) {
            return false;
        }
        let (peer, source, asker) = (m.peer, m.source(), m.asker());
        let ticket = self.gate.ticket(&source);
        if ticket.is_none()
            || transport.queued_bytes(peer) >= super::serve::MAX_BACKLOG
            || !self.budget.lock().unwrap().admit(source, Instant::now())
        {
            debug!(peer, "fast-sync request over budget; dropped");
            return true;
        }
        let Some(ticket) = ticket else { return true };
        let (snaps, budget, transport, id) = (
            self.snapshots.clone(),
            self.budget.clone(),
            transport.clone(),
            m.request_id,
        );
        self.gate.spawn(
            ticket,
            move || {
                let (reply, read) = snaps.answer_counted(&msg)?;
                let payload = reply.encode();
                let bytes = payload.len().max(read);
                if let Err(e) = transport.reply(asker, reply.msg_type(), id, payload) {
                    debug!(peer, error = %e, "fast-sync answer not sent");
                }
                Some(bytes)
            },
            move |built| {
                let bytes = built.unwrap_or_else(|panic| {
                    error!(peer, panic = %panic, "building a fast-sync answer panicked; nothing sent");
                    None
                });
                budget.lock().unwrap().done(source, bytes.unwrap_or(0));
            },
        );
        true
    }

    /// After cementing up to `window`: every `snapshot_interval` windows a
    /// checkpoint now (milliseconds), the snapshot built from it on a
    /// blocking thread.
    pub fn cemented(&self, store: &Store, window: u64) {
        if self.interval == 0 || window == 0 || !window.is_multiple_of(self.interval) {
            return;
        }
        let ckpt = self.dir.join(format!(".checkpoint-{window}"));
        let _ = std::fs::create_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&ckpt);
        if let Err(e) = store.checkpoint(&ckpt) {
            warn!(window, error = %e, "snapshot checkpoint failed");
            return;
        }
        let (dir, snaps) = (self.dir.clone(), self.snapshots.clone());
        tokio::task::spawn_blocking(move || match disk::build(&ckpt, &dir, SNAPSHOTS_KEPT) {
            Ok(info) => {
                info!(
                    window = info.window,
                    entries = info.entries,
                    "snapshot written"
                );
                // Loaded now rather than by the first request (and said
                // once in the log if it cannot be certified).
                snaps.refresh(info.window);
                snaps.load(info.window);
            }
            Err(e) => {
                warn!(window, error = %e, "snapshot not written");
                let _ = std::fs::remove_dir_all(&ckpt);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// The probe counts only genesis peers' Tips and keeps a bounded
    /// number of messages (a flood at start-up cannot grow memory, and a
    /// joiner cannot end the probe or claim a window).
    #[test]
    fn the_probe_hears_genesis_peers_only_and_keeps_a_bounded_backlog() {
        let tip = |peer: u16, window: u64| Incoming {
            peer,
            from: None,
            msg_type: crate::messages::MSG_TIP,
            version: 1,
            request_id: 0,
            payload: Message::Tip {
                cemented: crate::storage::Tip {
                    window,
                    t: montana_vdf::Hash32([1; 32]),
                    hash: [2; 32],
                },
                applied: window,
            }
            .encode(),
        };
        let mut h = Heard::new(4);
        h.take(tip(1, 5));
        h.take(tip(2, 7));
        // A joiner (index 4 and up) claims the moon: not heard.
        h.take(tip(4, u64::MAX));
        h.take(tip(9, u64::MAX));
        assert!(!h.all_heard(), "node3 has not spoken");
        h.take(tip(3, 6));
        assert!(h.all_heard());
        for _ in 0..10_000 {
            h.take(tip(5, 1));
        }
        assert_eq!(h.kept.len(), PROBE_KEPT);
        let (claimed, kept) = h.finish();
        assert_eq!((claimed, kept.len()), (7, PROBE_KEPT));
        // And by bytes: 1 MiB messages stop at PROBE_KEPT_BYTES.
        let mut h = Heard::new(4);
        for _ in 0..64 {
            h.take(Incoming {
                peer: 1,
                from: None,
                msg_type: 200,
                version: 1,
                request_id: 0,
                payload: vec![0; 1 << 20],
            });
        }
        assert_eq!(h.kept.len(), PROBE_KEPT_BYTES >> 20);
    }

    use montana_vdf::HashSuite;
    use tokio::sync::oneshot;

    /// A node whose staging area an older build left (its target in the
    /// old 226-byte header layout) starts: the staging area is discarded
    /// with one line and the node goes on. With an install of it pending
    /// at the last stop, the install is given up: the state of window 2
    /// kept when the install had not touched it, else (half replaced) the
    /// genesis state again; the cemented proposals are kept either way.
    /// Before: `before_run` failed (the staging area did not open), every
    /// start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_starts_over_a_staging_area_it_cannot_use() {
        let dir = tempfile::tempdir().unwrap();
        let (peers, keys) = crate::genesis::tests::peers(4);
        let g = Genesis::new(peers, HashSuite::Sha256, 40, 4, 1.0).unwrap();
        let genesis = dir.path().join("genesis.json");
        std::fs::write(&genesis, g.to_json()).unwrap();
        let (ws, after) = crate::testutil::cemented_chain(&g, &keys, 0, 2, |_, _| {});
        for pending in [None, Some(false), Some(true)] {
            let dd = dir.path().join(format!("node-{pending:?}"));
            keys[0].save(&dd.join("keys")).unwrap();
            {
                let mut s = Store::open(&dd, &g).unwrap();
                s.cement(&ws, &after).unwrap();
                if let Some(half) = pending {
                    s.interrupt_install(5, half).unwrap();
                }
            }
            crate::snapshot::staging::tests::stage_old_layout(&dd.join("staging"));
            let cfg = NodeConfig {
                data_dir: dd.clone(),
                genesis: genesis.clone(),
                keys_dir: None,
                backends: Default::default(),
                last_window: None,
                label: None,
                calibration: crate::backend_choice::Calibration::Skip,
            };
            let mut node = Node::open(&cfg).unwrap();
            node.fast_sync.threshold = u64::MAX;
            let hub = LocalHub::default();
            let (port, mut inbound) = hub.attach(0);
            let transport: Arc<dyn Transport> = Arc::new(port);
            let state = Arc::new(Mutex::new(node.initial_state()));
            let kept = before_run(&mut node, &transport, &mut inbound, &state)
                .await
                .unwrap_or_else(|e| panic!("{pending:?}: {e}"));
            assert!(kept.is_empty());
            let want = if pending == Some(true) { 0 } else { 2 };
            assert_eq!(node.store.tip().window, want, "{pending:?}");
            assert_eq!(node.store.pending_install().unwrap(), None);
            assert_eq!(node.store.snapshot_window().unwrap(), None);
            let (st, _, _) = node.store.consensus(&g).unwrap();
            let root = if want == 0 {
                g.initial_state().root()
            } else {
                after.root()
            };
            assert_eq!(st.root(), root, "{pending:?}");
            assert!(node.store.proposal(2).unwrap().is_some(), "{pending:?}");
            assert_eq!(state.lock().unwrap().snapshot_window, None);
            drop(node);
            let staged = Staging::open(&dd.join("staging")).unwrap();
            assert!(staged.target().is_none(), "{pending:?}");
        }
    }

    use super::*;
    use crate::genesis::{Genesis, GenesisPeer};
    use crate::keys::NodeKeys;
    use crate::node::{LocalHub, NodeConfig};

    /// Whole nodes over the in-process hub: three run and write snapshots
    /// every 3 windows; a fourth starts empty with `--fast-sync`, installs
    /// the newest snapshot, then follows to the same state.
    /// One whole-node cluster at a time (they share two cores in CI).
    static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_empty_node_fast_syncs_then_follows_to_the_same_state() {
        let _one = CLUSTER.lock().await;
        cluster_with_a_late_node(true, DEFAULT_FAST_SYNC_THRESHOLD).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_further_behind_than_the_threshold_fast_syncs_without_the_flag() {
        let _one = CLUSTER.lock().await;
        cluster_with_a_late_node(false, 2).await;
    }

    /// Three nodes run and write snapshots every 2 windows; a fourth starts
    /// empty once a snapshot of window 4 exists (with `--fast-sync` when
    /// `flag`, else with `--fast-sync-threshold threshold`), fast-syncs and
    /// follows to the same state.
    async fn cluster_with_a_late_node(flag: bool, threshold: u64) {
        // Enough windows after the snapshot for the synced node to join
        // the live agreement.
        const LAST: u64 = 16;
        let dir = tempfile::tempdir().unwrap();
        let ports = crate::devnet::free_ports(4).unwrap();
        let mut peers = Vec::new();
        let mut data: Vec<PathBuf> = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let dd = dir.path().join(format!("node{i}"));
            let keys = NodeKeys::generate().unwrap();
            keys.save(&dd.join("keys")).unwrap();
            let pk = keys.public_keys();
            peers.push(GenesisPeer {
                label: format!("node{i}"),
                address: format!("127.0.0.1:{port}").parse().unwrap(),
                noise_public_key: pk.noise_public_key,
                signing_public_key: pk.signing_public_key,
                bootstrap: i == 0,
                weight: 1,
            });
            data.push(dd);
        }
        let g = Genesis::new(peers, HashSuite::Sha256, 1_000_000, 100, 0.1).unwrap();
        let genesis = dir.path().join("genesis.json");
        std::fs::write(&genesis, g.to_json()).unwrap();
        let hub = LocalHub::default();
        let start = |i: usize, fast: bool, threshold: u64| {
            let cfg = NodeConfig {
                data_dir: data[i].clone(),
                genesis: genesis.clone(),
                keys_dir: None,
                backends: Default::default(),
                last_window: Some(LAST),
                label: None,
                calibration: crate::backend_choice::Calibration::Skip,
            };
            let mut node = Node::open(&cfg).unwrap();
            node.fast_sync.snapshot_interval = 2;
            node.fast_sync.enabled = fast;
            node.fast_sync.threshold = threshold;
            let (port, inbound) = hub.attach(i as u16);
            let state = Arc::new(Mutex::new(node.initial_state()));
            let (stop, rx) = oneshot::channel::<()>();
            let task = tokio::spawn(node.run(Arc::new(port), inbound, state, async {
                let _ = rx.await;
            }));
            (stop, task)
        };
        let cemented = |d: &Path| NodeState::read(d).map_or(0, |s| s.cemented);
        let mut running: Vec<_> = (0..3)
            .map(|i| start(i, false, DEFAULT_FAST_SYNC_THRESHOLD))
            .collect();
        let d0 = data[0].clone();
        tokio::task::spawn_blocking(move || {
            let ok = (0..2400).any(|_| {
                let snaps = Snapshots::new(&d0.join("snapshots")).windows();
                if snaps.last().is_some_and(|w| *w >= 4) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
                false
            });
            let seen = (
                NodeState::read(&d0).map(|s| (s.phase, s.cemented)),
                std::fs::read_dir(d0.join("snapshots"))
                    .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>()),
            );
            assert!(ok, "timed out waiting for a snapshot of window 4: {seen:?}");
        })
        .await
        .unwrap();
        running.push(start(3, flag, threshold));
        let ds = data.clone();
        tokio::task::spawn_blocking(move || {
            let ok = (0..2400).any(|_| {
                if ds.iter().all(|d| cemented(d) == LAST) {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
                false
            });
            let seen: Vec<_> = ds
                .iter()
                .map(|d| {
                    NodeState::read(d).map(|s| {
                        (
                            s.phase,
                            s.cemented,
                            s.snapshot_window,
                            s.lag,
                            s.rejected,
                            s.peer_tips,
                        )
                    })
                })
                .collect();
            assert!(
                ok,
                "timed out waiting for everyone at the last window: {seen:?}"
            );
        })
        .await
        .unwrap();
        let mut finals = Vec::new();
        for (i, (stop, task)) in running.into_iter().enumerate() {
            hub.detach(i as u16);
            let _ = stop.send(());
            finals.push(task.await.unwrap().unwrap());
        }
        let synced = &finals[3];
        let w = synced.snapshot_window.expect("node 3 fast-synced");
        assert!(
            w > threshold.min(u64::MAX - 1) || flag,
            "window {w} is beyond the threshold"
        );
        assert!(w >= 4 && w % 2 == 0, "snapshot window {w}");
        for f in &finals[..3] {
            assert_eq!(f.snapshot_window, None);
            assert_eq!(
                (f.cemented, &f.t, &f.state_root),
                (synced.cemented, &synced.t, &synced.state_root)
            );
        }
        // Its database starts at the snapshot: no history before it.
        let s = Store::open(&data[3], &g).unwrap();
        assert_eq!(s.snapshot_window().unwrap(), Some(w));
        assert!(s.proposal(w - 1).unwrap().is_none());
        assert!(s.proposal(w).unwrap().is_some());
        assert!(
            !data[3].join("staging").join("CURRENT").exists()
                || Staging::open(&data[3].join("staging"))
                    .unwrap()
                    .target()
                    .is_none()
        );
    }
}
