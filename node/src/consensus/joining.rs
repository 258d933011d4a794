//! Joining: candidates prove their speed on chains of their own, register,
//! and become members; members that stop signing leave (docs/SPEC.md 9.9).
//!
//! - A candidate's chain for window w starts at
//!   `H("mt-candidate" || T(w) || node id)` (the suite's hash) and runs
//!   `candidate_d` steps with `candidate_k` checkpoints. Its
//!   [`CandidateProof`] counts only when the proposal of window w+1 or w+2
//!   carries it: a late proof proves nothing about speed.
//! - A proposal carries at most `max_candidates_per_proposal` proofs and at
//!   most D/10 candidate steps in all, sorted by (node id, window), each
//!   candidate's windows above the last one counted for it, and at most one
//!   [`Registration`] of a candidate whose count reached
//!   `candidate_windows`. These travel in the proposal's [`Extras`], which
//!   the signed header commits to by hash.
//! - The state changes only when the window that carries them is settled
//!   (paid), so every node derives the same candidates and members from the
//!   cemented windows whatever order messages arrived in
//!   ([`super::state::Overlay::settle`]).

use montana_vdf::{ChainParams, Hash32, HashSuite, Proof};
use serde::{Deserialize, Serialize};

use std::cmp::Reverse;
use std::collections::BTreeMap;

use super::active::{draw, NodeId, MAX_TENURE};
use crate::codec::{CodecError, Reader, Writer};
use crate::keys::{Domain, NodeKeys, VerifyingKey, SIGNATURE_LEN, SIGNING_PUBLIC_LEN};

/// Most checkpoints of a candidate's chain.
pub const MAX_CANDIDATE_K: u32 = 64;
/// Most proofs one proposal may carry, whatever the genesis says.
pub const MAX_CANDIDATES_PER_PROPOSAL: u16 = 256;
/// The domain string of a candidate chain's start.
pub const CANDIDATE_START: &[u8] = b"mt-candidate";

const PROOF_MAGIC: &[u8; 4] = b"MTCP";
const REGISTRATION_MAGIC: &[u8; 4] = b"MTRG";
const VERSION: u8 = 1;
/// A registration's length in bytes.
pub const REGISTRATION_LEN: usize = 4 + 1 + 32 + 32 + 8 + SIGNATURE_LEN;

/// The joining rules of a network (the genesis `joining` object).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRules {
    /// Consecutive counted windows before a candidate may register.
    pub candidate_windows: u32,
    /// Steps of a candidate's chain (at most D/10: one proof must fit a
    /// proposal's candidate budget).
    pub candidate_d: u64,
    /// Checkpoints of a candidate's chain (1..=64).
    pub candidate_k: u32,
    /// Most candidate proofs one proposal carries.
    pub max_candidates_per_proposal: u16,
    /// A registration carried in window r makes a member in the state the
    /// proposal of window r + activation_delay commits to (>= 1).
    pub activation_delay: u32,
    /// A member absent from the canonical bundles for this many windows in
    /// a row leaves the active set; a candidate not counted for this many
    /// windows is forgotten (>= 2).
    pub inactive_windows: u32,
}

impl JoinRules {
    /// Three candidate windows, chains of about D/100 steps with 16
    /// checkpoints, 64 proofs per proposal, activation after 2 windows,
    /// members gone after 1,000 windows outside every canonical bundle (a
    /// bundle holds a quorum's precommits, not always everyone's: a slow
    /// member that is alive can miss many in a row).
    pub fn defaults(d: u64) -> Self {
        let k = 16u64.min((d / 100).max(1));
        let steps = ((d / 100).max(k) / k) * k;
        JoinRules {
            candidate_windows: 3,
            candidate_d: steps,
            candidate_k: k as u32,
            max_candidates_per_proposal: 64,
            activation_delay: 2,
            inactive_windows: 1_000,
        }
    }

    /// Checks the rules against D (docs/SPEC.md 6).
    pub fn validate(&self, d: u64) -> Result<(), String> {
        if self.candidate_windows == 0 {
            return Err("joining.candidate_windows must be at least 1".into());
        }
        if self.candidate_k == 0 || self.candidate_k > MAX_CANDIDATE_K {
            return Err(format!(
                "joining.candidate_k {} outside 1..={MAX_CANDIDATE_K}",
                self.candidate_k
            ));
        }
        if self.candidate_d == 0 || !self.candidate_d.is_multiple_of(self.candidate_k as u64) {
            return Err(format!(
                "joining.candidate_d {} must be a positive multiple of candidate_k {}",
                self.candidate_d, self.candidate_k
            ));
        }
        if self.candidate_d > d / 10 {
            return Err(format!(
                "joining.candidate_d {} is over D/10 = {} (a proposal carries at most D/10 candidate steps)",
                self.candidate_d,
                d / 10
            ));
        }
        ChainParams::new(self.candidate_d, self.candidate_k as u64).map_err(|e| e.to_string())?;
        if self.max_candidates_per_proposal == 0
            || self.max_candidates_per_proposal > MAX_CANDIDATES_PER_PROPOSAL
        {
            return Err(format!(
                "joining.max_candidates_per_proposal {} outside 1..={MAX_CANDIDATES_PER_PROPOSAL}",
                self.max_candidates_per_proposal
            ));
        }
        if self.activation_delay == 0 {
            return Err("joining.activation_delay must be at least 1".into());
        }
        if self.inactive_windows < 2 {
            return Err("joining.inactive_windows must be at least 2".into());
        }
        Ok(())
    }

    /// Most windows in a row one maker keeps rank 0 (docs/SPEC.md 9.1):
    /// a quarter of `inactive_windows`, 1 to [`MAX_TENURE`]. A maker that
    /// leaves members out of its bundles then leads for at most a quarter
    /// of the time they need to miss before they leave, and rank 0 goes to
    /// the first by hash at least four times meanwhile (from
    /// `inactive_windows` 8 up; below that, every window hands over).
    pub fn tenure(&self) -> u64 {
        (self.inactive_windows as u64 / 4).clamp(1, MAX_TENURE)
    }

    /// Most proofs one proposal of a network with D = `d` carries: the
    /// genesis cap, and no more than D/10 steps in all.
    pub fn proofs_per_proposal(&self, d: u64) -> usize {
        let by_steps = (d / 10) / self.candidate_d.max(1);
        (self.max_candidates_per_proposal as u64).min(by_steps) as usize
    }

    pub fn params(&self) -> ChainParams {
        ChainParams::new(self.candidate_d, self.candidate_k as u64)
            .expect("validated with the genesis")
    }
}

/// The first value of candidate `id`'s chain for window `window` with
/// T(window) = `t`.
pub fn candidate_start(suite: HashSuite, t: &Hash32, id: &NodeId) -> Hash32 {
    let mut buf = Vec::with_capacity(CANDIDATE_START.len() + 64);
    buf.extend_from_slice(CANDIDATE_START);
    buf.extend_from_slice(&t.0);
    buf.extend_from_slice(&id.0);
    suite.hash(&buf)
}

/// A candidate's chain for one window, signed.
///
/// ```text
/// "MTCP" | version 1 | network id [32] | suite u8 | window u64 | node id [32]
/// | ML-DSA-65 key [1952] | k u16 | k checkpoints [32 each] | signature [3309]
/// ```
/// The signature (context `montana/candidate/v1`) covers every byte before
/// it; the node id is SHA-256 of the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CandidateProof {
    pub network_id: [u8; 32],
    pub suite: HashSuite,
    pub window: u64,
    pub id: NodeId,
    pub key: VerifyingKey,
    pub checkpoints: Vec<Hash32>,
    pub signature: Vec<u8>,
}

impl CandidateProof {
    fn signed_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(2100 + 32 * self.checkpoints.len());
        w.bytes(PROOF_MAGIC)
            .u8(VERSION)
            .bytes(&self.network_id)
            .u8(self.suite.id())
            .u64(self.window)
            .bytes(&self.id.0)
            .bytes(&self.key.to_bytes())
            .u16(self.checkpoints.len() as u16);
        for c in &self.checkpoints {
            w.bytes(&c.0);
        }
        w.finish()
    }

    /// Signs the chain for `window` whose checkpoints are `checkpoints`.
    pub fn sign(
        keys: &NodeKeys,
        network_id: [u8; 32],
        suite: HashSuite,
        window: u64,
        checkpoints: Vec<Hash32>,
    ) -> Self {
        let key = keys.verifying_key().clone();
        let mut p = CandidateProof {
            network_id,
            suite,
            window,
            id: NodeId::of(&key),
            key,
            checkpoints,
            signature: Vec::new(),
        };
        p.signature = keys.sign(Domain::Candidate, &p.signed_bytes());
        p
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.signed_bytes();
        b.extend_from_slice(&self.signature);
        b
    }

    /// Decodes and checks the structure (the key names the id, 1..=64
    /// checkpoints); the signature is [`CandidateProof::signed`].
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let bad = |why: String| CodecError::Invalid {
            what: "candidate proof",
            why,
        };
        let mut r = Reader::new("candidate proof", bytes);
        r.header(PROOF_MAGIC, VERSION)?;
        let network_id = r.array()?;
        let suite_id = r.u8()?;
        let suite = HashSuite::from_id(suite_id)
            .ok_or_else(|| bad(format!("unknown hash suite byte {suite_id}")))?;
        let window = r.u64()?;
        let id = NodeId(r.array()?);
        let key = VerifyingKey::from_bytes(r.take(SIGNING_PUBLIC_LEN)?)
            .map_err(|e| bad(format!("key: {e}")))?;
        if NodeId::of(&key) != id {
            return Err(bad("the node id is not the hash of the key".into()));
        }
        let k = r.u16()? as u32;
        if k == 0 || k > MAX_CANDIDATE_K {
            return Err(bad(format!("{k} checkpoints (1..={MAX_CANDIDATE_K})")));
        }
        if r.left() != 32 * k as usize + SIGNATURE_LEN {
            return Err(bad(format!(
                "{} bytes after the header, {k} checkpoints and a signature are {}",
                r.left(),
                32 * k as usize + SIGNATURE_LEN
            )));
        }
        let checkpoints = (0..k)
            .map(|_| r.array().map(Hash32))
            .collect::<Result<Vec<_>, _>>()?;
        let signature = r.take(SIGNATURE_LEN)?.to_vec();
        r.end()?;
        Ok(CandidateProof {
            network_id,
            suite,
            window,
            id,
            key,
            checkpoints,
            signature,
        })
    }

    /// Whether the key it carries signed it.
    pub fn signed(&self) -> bool {
        self.key
            .verify(Domain::Candidate, &self.signed_bytes(), &self.signature)
    }

    /// The chain to verify, from T(window) = `t`; `None` when the proof's
    /// shape does not fit `rules` (suite, checkpoint count).
    pub fn proof(&self, suite: HashSuite, rules: &JoinRules, t: &Hash32) -> Option<Proof> {
        if self.suite != suite || self.checkpoints.len() != rules.candidate_k as usize {
            return None;
        }
        Proof::new(
            suite,
            candidate_start(suite, t, &self.id),
            rules.params(),
            self.checkpoints.clone(),
        )
        .ok()
    }

    /// Identity for deduplication (the signature is randomised).
    pub fn key(&self) -> (NodeId, u64) {
        (self.id, self.window)
    }
}

/// A candidate asking to become a member.
///
/// ```text
/// "MTRG" | version 1 | network id [32] | node id [32] | window u64 | signature [3309]
/// ```
/// `window` is the candidate's cemented tip when it signed (carried only
/// in later windows); the signature (context `montana/registration/v1`) is
/// checked with the key the candidate's state entry holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub network_id: [u8; 32],
    pub id: NodeId,
    pub window: u64,
    pub signature: Vec<u8>,
}

impl Registration {
    fn signed_bytes(network_id: &[u8; 32], id: &NodeId, window: u64) -> Vec<u8> {
        let mut w = Writer::with_capacity(REGISTRATION_LEN - SIGNATURE_LEN);
        w.bytes(REGISTRATION_MAGIC)
            .u8(VERSION)
            .bytes(network_id)
            .bytes(&id.0)
            .u64(window);
        w.finish()
    }

    pub fn sign(keys: &NodeKeys, network_id: [u8; 32], window: u64) -> Self {
        let id = NodeId::of(keys.verifying_key());
        Registration {
            network_id,
            id,
            window,
            signature: keys.sign(
                Domain::Registration,
                &Self::signed_bytes(&network_id, &id, window),
            ),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Self::signed_bytes(&self.network_id, &self.id, self.window);
        b.extend_from_slice(&self.signature);
        b
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        if bytes.len() != REGISTRATION_LEN {
            return Err(CodecError::Invalid {
                what: "registration",
                why: format!(
                    "{} bytes (a registration is {REGISTRATION_LEN})",
                    bytes.len()
                ),
            });
        }
        let mut r = Reader::new("registration", bytes);
        r.header(REGISTRATION_MAGIC, VERSION)?;
        let g = Registration {
            network_id: r.array()?,
            id: NodeId(r.array()?),
            window: r.u64()?,
            signature: r.take(SIGNATURE_LEN)?.to_vec(),
        };
        r.end()?;
        Ok(g)
    }

    /// Whether `key` (the candidate's, with this id) signed it.
    pub fn signed_by(&self, key: &VerifyingKey) -> bool {
        NodeId::of(key) == self.id
            && key.verify(
                Domain::Registration,
                &Self::signed_bytes(&self.network_id, &self.id, self.window),
                &self.signature,
            )
    }
}

/// What a proposal carries beside the VDF output.
///
/// ```text
/// n u16 | n x (len u32 | CandidateProof) | has_registration u8 (0 or 1)
/// | [len u32 | Registration]
/// ```
/// The header's `extras_hash` is SHA-256 of these bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extras {
    /// Sorted by (node id, window), no two alike.
    pub proofs: Vec<CandidateProof>,
    pub registration: Option<Registration>,
}

/// Most bytes of one encoded candidate proof (64 checkpoints).
pub const MAX_PROOF_LEN: usize = 4
    + 1
    + 32
    + 1
    + 8
    + 32
    + SIGNING_PUBLIC_LEN
    + 2
    + 32 * MAX_CANDIDATE_K as usize
    + SIGNATURE_LEN;

impl Extras {
    pub fn is_empty(&self) -> bool {
        self.proofs.is_empty() && self.registration.is_none()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(3 + self.proofs.len() * 7400);
        w.u16(self.proofs.len() as u16);
        for p in &self.proofs {
            let b = p.encode();
            w.u32(b.len() as u32).bytes(&b);
        }
        match &self.registration {
            Some(r) => {
                let b = r.encode();
                w.u8(1).u32(b.len() as u32).bytes(&b);
            }
            None => {
                w.u8(0);
            }
        }
        w.finish()
    }

    /// SHA-256 of [`Extras::encode`].
    pub fn hash(&self) -> [u8; 32] {
        HashSuite::Sha256.hash(&self.encode()).0
    }

    /// Reads the extras from `r` (the rest of a proposal); lengths are
    /// checked before anything is copied.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let bad = |why: String| CodecError::Invalid {
            what: "proposal extras",
            why,
        };
        let n = r.u16()?;
        if n > MAX_CANDIDATES_PER_PROPOSAL {
            return Err(bad(format!(
                "{n} candidate proofs (at most {MAX_CANDIDATES_PER_PROPOSAL})"
            )));
        }
        let mut proofs: Vec<CandidateProof> = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let len = r.u32()? as usize;
            if len > MAX_PROOF_LEN {
                return Err(bad(format!("a candidate proof of {len} bytes")));
            }
            let p = CandidateProof::decode(r.take(len)?)?;
            if let Some(prev) = proofs.last() {
                if prev.key() >= p.key() {
                    return Err(bad(
                        "candidate proofs not sorted by (node id, window) or listed twice".into(),
                    ));
                }
            }
            proofs.push(p);
        }
        let registration = match r.u8()? {
            0 => None,
            1 => {
                let len = r.u32()? as usize;
                if len != REGISTRATION_LEN {
                    return Err(bad(format!("a registration of {len} bytes")));
                }
                Some(Registration::decode(r.take(len)?)?)
            }
            b => return Err(bad(format!("registration flag {b} (0 or 1)"))),
        };
        Ok(Extras {
            proofs,
            registration,
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new("proposal extras", bytes);
        let e = Self::read(&mut r)?;
        r.end()?;
        Ok(e)
    }
}

/// A candidate's state entry (key `c` || node id).
///
/// ```text
/// count u32 | last u64 | effective u64 (0: not registered) | ML-DSA-65 key [1952]
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub key: VerifyingKey,
    /// Consecutive windows counted.
    pub count: u32,
    /// The last window counted.
    pub last: u64,
    /// The window whose state makes it a member, once registered.
    pub effective: Option<u64>,
}

impl Candidate {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(20 + SIGNING_PUBLIC_LEN);
        w.u32(self.count)
            .u64(self.last)
            .u64(self.effective.unwrap_or(0))
            .bytes(&self.key.to_bytes());
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new("candidate entry", bytes);
        let count = r.u32()?;
        let last = r.u64()?;
        let effective = r.u64()?;
        let key = VerifyingKey::from_bytes(r.take(SIGNING_PUBLIC_LEN)?).map_err(|e| {
            CodecError::Invalid {
                what: "candidate entry",
                why: format!("key: {e}"),
            }
        })?;
        r.end()?;
        Ok(Candidate {
            key,
            count,
            last,
            effective: (effective != 0).then_some(effective),
        })
    }
}

/// Which of the verified candidate proofs at hand (`proofs`, each valid
/// for the proposal of window `h`) that proposal carries: at most `cap`,
/// sorted by (node id, window) as the format wants (docs/SPEC.md 9.9).
/// Candidates are served in this order, all of one candidate's proofs
/// together:
/// 1. those part-way through their run (counted, below `candidate_windows`,
///    and a proof at hand continues the run), the longest run first: left
///    out, a run that cost the candidate windows of work starts again;
/// 2. the others by [`draw`] of `t` (the tip's proposal hash: new every
///    window, and unknown before its maker proposed, whereas T can be
///    computed ahead by anyone faster than the network);
/// 3. those whose count is already reached (they should register) last,
///    and only where the proof continues their run: one that does not
///    would make them count again from 1 and fail their registration.
///
/// Not by id: ids can be ground, and a few low ids proving every window
/// would otherwise keep everyone else out for good. This is the honest
/// proposer's choice, not a validity rule: any valid set may be carried.
pub fn carry(
    proofs: Vec<CandidateProof>,
    candidates: &BTreeMap<NodeId, Candidate>,
    rules: &JoinRules,
    t: &Hash32,
    cap: usize,
) -> Vec<CandidateProof> {
    let mut by_id: BTreeMap<NodeId, Vec<CandidateProof>> = BTreeMap::new();
    for p in proofs {
        by_id.entry(p.id).or_default().push(p);
    }
    let mut order: Vec<_> = by_id
        .into_iter()
        .filter_map(|(id, mut ps)| {
            ps.sort_by_key(|p| p.window);
            let c = candidates.get(&id);
            let continues = c.is_some_and(|c| c.count > 0 && c.last + 1 == ps[0].window);
            let done = c.is_some_and(|c| c.count >= rules.candidate_windows);
            if done && !continues {
                // It would count again from 1, and its registration fail.
                return None;
            }
            let run = c.filter(|_| !done && continues).map_or(0, |c| c.count);
            Some(((done, Reverse(run), draw(t, &id)), ps))
        })
        .collect();
    order.sort_by_key(|(rank, _)| *rank);
    let mut out: Vec<CandidateProof> = order.into_iter().flat_map(|(_, ps)| ps).take(cap).collect();
    out.sort_by_key(|p| p.key());
    out
}

/// The candidate a proposal registers, of those whose registration is
/// valid: the first by [`draw`] of `t` (the tip's proposal hash; not the
/// lowest id, which can be ground).
pub fn first_by_draw<'a, I>(ids: I, t: &Hash32) -> Option<NodeId>
where
    I: IntoIterator<Item = &'a NodeId>,
{
    ids.into_iter().min_by_key(|id| draw(t, id)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> NodeKeys {
        NodeKeys::generate().unwrap()
    }

    fn proof(k: &NodeKeys, window: u64, n: usize) -> CandidateProof {
        let cps = (0..n).map(|i| Hash32([i as u8; 32])).collect();
        CandidateProof::sign(k, [7; 32], HashSuite::Sha256, window, cps)
    }

    /// `n` fresh keys, sorted by id.
    fn keys_by_id(n: usize) -> Vec<NodeKeys> {
        let mut v: Vec<NodeKeys> = (0..n).map(|_| NodeKeys::generate().unwrap()).collect();
        v.sort_by_key(|k| NodeId::of(k.verifying_key()));
        v
    }

    fn candidate(k: &NodeKeys, count: u32, last: u64) -> Candidate {
        Candidate {
            key: k.verifying_key().clone(),
            count,
            last,
            effective: None,
        }
    }

    /// A proposal serves candidates by a draw of T, not by id: ids can be
    /// ground, and the lowest ids used to be carried every window, so a
    /// few ground keys proving every window kept everyone else out (found
    /// by review; fails before: the four lowest ids were carried).
    #[test]
    fn carried_proofs_follow_the_draw_not_the_ids() {
        let keys = keys_by_id(12);
        let rules = JoinRules::defaults(100_000);
        let proofs: Vec<CandidateProof> = keys.iter().map(|k| proof(k, 9, 2)).collect();
        let none = BTreeMap::new();
        let mut picks = std::collections::BTreeSet::new();
        for salt in 0..8u8 {
            let t = Hash32([salt; 32]);
            let got = carry(proofs.clone(), &none, &rules, &t, 4);
            let mut want: Vec<NodeId> = proofs.iter().map(|p| p.id).collect();
            want.sort_by_key(|id| draw(&t, id));
            want.truncate(4);
            want.sort();
            assert_eq!(got.iter().map(|p| p.id).collect::<Vec<_>>(), want);
            picks.insert(want);
        }
        // Another T, another pick: nobody holds the places for good.
        assert!(picks.len() > 1);
    }

    /// A candidate part-way through its run is carried ahead of new ones,
    /// the longest run first; one whose count is reached comes last; the
    /// result is in (id, window) order with a candidate's proofs together.
    #[test]
    fn runs_in_progress_come_first_and_finished_ones_last() {
        let keys = keys_by_id(6);
        let rules = JoinRules::defaults(100_000);
        assert_eq!(rules.candidate_windows, 3);
        let id = |i: usize| NodeId::of(keys[i].verifying_key());
        let mut cands = BTreeMap::new();
        // keys[5]: counted twice up to window 8, proofs for 9 and 10 at hand.
        cands.insert(id(5), candidate(&keys[5], 2, 8));
        // keys[4]: counted once up to 9: its proof for 10 continues the run.
        cands.insert(id(4), candidate(&keys[4], 1, 9));
        // keys[3]: counted once, at 5: its run is broken, it starts again.
        cands.insert(id(3), candidate(&keys[3], 1, 5));
        // keys[0]: its count is reached, it should register.
        cands.insert(id(0), candidate(&keys[0], 3, 9));
        let mut proofs = vec![
            proof(&keys[5], 10, 2),
            proof(&keys[5], 9, 2),
            proof(&keys[4], 10, 2),
        ];
        for i in [0, 1, 2, 3] {
            proofs.push(proof(&keys[i], 10, 2));
        }
        let t = Hash32([3; 32]);
        // Room for 3: both of keys[5]'s proofs, then keys[4]'s.
        let got = carry(proofs.clone(), &cands, &rules, &t, 3);
        let keys_got: Vec<(NodeId, u64)> = got.iter().map(|p| p.key()).collect();
        let mut want = vec![(id(4), 10), (id(5), 9), (id(5), 10)];
        want.sort();
        assert_eq!(keys_got, want);
        // Room for all but one: the finished candidate is left out.
        let got = carry(proofs.clone(), &cands, &rules, &t, proofs.len() - 1);
        assert!(got.iter().all(|p| p.id != id(0)));
        // With room for all it comes last, its proof continuing its run;
        // one that would not continue it is never carried (it would count
        // from 1 again and its registration fail).
        let got = carry(proofs.clone(), &cands, &rules, &t, proofs.len());
        assert!(got.iter().any(|p| p.id == id(0)));
        cands.insert(id(0), candidate(&keys[0], 3, 7));
        let got = carry(proofs.clone(), &cands, &rules, &t, proofs.len());
        assert!(got.iter().all(|p| p.id != id(0)));
        assert!(got.windows(2).all(|w| w[0].key() < w[1].key()));
        // A broken run ranks with the new ones, by the draw.
        let rest: Vec<NodeId> = [1, 2, 3].iter().map(|i| id(*i)).collect();
        let first = first_by_draw(&rest, &t).unwrap();
        let got = carry(proofs, &cands, &rules, &t, 4);
        assert!(got.iter().any(|p| p.id == first));
    }

    /// The registration carried is the first by the draw of T, not the
    /// lowest id (fails before: the lowest id every time).
    #[test]
    fn the_registration_carried_follows_the_draw() {
        let ids: Vec<NodeId> = (0..16u8).map(|i| NodeId([i; 32])).collect();
        let firsts: std::collections::BTreeSet<NodeId> = (0..16u8)
            .map(|s| first_by_draw(&ids, &Hash32([s; 32])).unwrap())
            .collect();
        assert!(firsts.len() > 1, "always {:?}", firsts);
        let t = Hash32([1; 32]);
        let best = ids.iter().min_by_key(|id| draw(&t, id)).unwrap();
        assert_eq!(first_by_draw(&ids, &t), Some(*best));
        assert_eq!(first_by_draw(&[], &t), None);
    }

    #[test]
    fn defaults_are_valid_for_every_d_that_has_room() {
        for d in [1_000u64, 100_000, 2_000_000, 325_000_000] {
            let r = JoinRules::defaults(d);
            r.validate(d).unwrap();
            assert!(r.candidate_d <= d / 10);
            assert!(r.proofs_per_proposal(d) >= 1);
        }
    }

    #[test]
    fn bad_rules_are_refused_naming_the_field() {
        let d = 100_000;
        let ok = JoinRules::defaults(d);
        let cases: Vec<(JoinRules, &str)> = vec![
            (
                JoinRules {
                    candidate_windows: 0,
                    ..ok
                },
                "candidate_windows",
            ),
            (
                JoinRules {
                    candidate_k: 65,
                    ..ok
                },
                "candidate_k",
            ),
            (
                JoinRules {
                    candidate_d: ok.candidate_d + 1,
                    ..ok
                },
                "candidate_d",
            ),
            (
                JoinRules {
                    candidate_d: d,
                    candidate_k: 16,
                    ..ok
                },
                "D/10",
            ),
            (
                JoinRules {
                    max_candidates_per_proposal: 0,
                    ..ok
                },
                "max_candidates",
            ),
            (
                JoinRules {
                    activation_delay: 0,
                    ..ok
                },
                "activation_delay",
            ),
            (
                JoinRules {
                    inactive_windows: 1,
                    ..ok
                },
                "inactive_windows",
            ),
        ];
        for (r, what) in cases {
            let e = r.validate(d).unwrap_err();
            assert!(e.contains(what), "{e}");
        }
    }

    #[test]
    fn a_proof_round_trips_and_its_signature_binds_every_field() {
        let k = keys();
        let p = proof(&k, 5, 16);
        let b = p.encode();
        let q = CandidateProof::decode(&b).unwrap();
        assert_eq!(p, q);
        assert!(q.signed());
        let mut other = q.clone();
        other.window = 6;
        assert!(!other.signed());
        let mut other = q.clone();
        other.checkpoints[3].0[0] ^= 1;
        assert!(!other.signed());
    }

    #[test]
    fn malformed_proofs_are_refused() {
        let k = keys();
        let p = proof(&k, 5, 4);
        let b = p.encode();
        // Truncated, extended.
        assert!(CandidateProof::decode(&b[..b.len() - 1]).is_err());
        let mut longer = b.clone();
        longer.push(0);
        assert!(CandidateProof::decode(&longer).is_err());
        // An id that is not the key's hash.
        let mut wrong_id = b.clone();
        wrong_id[4 + 1 + 32 + 1 + 8] ^= 1;
        assert!(CandidateProof::decode(&wrong_id).is_err());
        // Zero or too many checkpoints.
        let at_k = 4 + 1 + 32 + 1 + 8 + 32 + SIGNING_PUBLIC_LEN;
        let mut zero = b.clone();
        zero[at_k..at_k + 2].copy_from_slice(&0u16.to_le_bytes());
        assert!(CandidateProof::decode(&zero).is_err());
        let mut many = b.clone();
        many[at_k..at_k + 2].copy_from_slice(&65u16.to_le_bytes());
        assert!(CandidateProof::decode(&many).is_err());
        // Wrong magic.
        let mut magic = b;
        magic[0] = b'X';
        assert!(CandidateProof::decode(&magic).is_err());
    }

    #[test]
    fn a_registration_round_trips_and_is_checked_with_the_candidates_key() {
        let k = keys();
        let other = keys();
        let r = Registration::sign(&k, [1; 32], 9);
        let b = r.encode();
        assert_eq!(b.len(), REGISTRATION_LEN);
        let q = Registration::decode(&b).unwrap();
        assert_eq!(q, r);
        assert!(q.signed_by(k.verifying_key()));
        assert!(!q.signed_by(other.verifying_key()));
        let mut changed = q.clone();
        changed.window = 10;
        assert!(!changed.signed_by(k.verifying_key()));
        assert!(Registration::decode(&b[..b.len() - 1]).is_err());
        let mut magic = b.clone();
        magic[3] = b'X';
        assert!(Registration::decode(&magic).is_err());
    }

    #[test]
    fn extras_round_trip_and_refuse_disorder_and_bad_flags() {
        let a = keys();
        let b = keys();
        let mut proofs = vec![proof(&a, 3, 2), proof(&a, 4, 2), proof(&b, 4, 2)];
        proofs.sort_by_key(|p| p.key());
        let e = Extras {
            proofs: proofs.clone(),
            registration: Some(Registration::sign(&a, [7; 32], 4)),
        };
        let bytes = e.encode();
        assert_eq!(Extras::decode(&bytes).unwrap(), e);
        assert_eq!(Extras::default().encode(), vec![0, 0, 0]);
        assert_eq!(Extras::decode(&[0, 0, 0]).unwrap(), Extras::default());
        // Out of order, or the same (id, window) twice.
        let mut swapped = proofs.clone();
        swapped.swap(0, 1);
        let bad = Extras {
            proofs: swapped,
            registration: None,
        };
        assert!(Extras::decode(&bad.encode()).is_err());
        let twice = Extras {
            proofs: vec![proofs[0].clone(), proofs[0].clone()],
            registration: None,
        };
        assert!(Extras::decode(&twice.encode()).is_err());
        // A registration flag other than 0 or 1, trailing bytes.
        assert!(Extras::decode(&[0, 0, 2]).is_err());
        assert!(Extras::decode(&[0, 0, 0, 0]).is_err());
        // A count far above what follows is refused before allocating.
        assert!(Extras::decode(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn a_candidate_entry_round_trips() {
        let k = keys();
        for effective in [None, Some(12)] {
            let c = Candidate {
                key: k.verifying_key().clone(),
                count: 3,
                last: 11,
                effective,
            };
            assert_eq!(Candidate::decode(&c.encode()).unwrap(), c);
        }
        let c = Candidate {
            key: k.verifying_key().clone(),
            count: 1,
            last: 1,
            effective: None,
        };
        let b = c.encode();
        assert!(Candidate::decode(&b[..b.len() - 1]).is_err());
    }

    #[test]
    fn the_start_depends_on_window_and_id() {
        let s = HashSuite::Sha256;
        let a = candidate_start(s, &Hash32([1; 32]), &NodeId([2; 32]));
        assert_ne!(a, candidate_start(s, &Hash32([1; 32]), &NodeId([3; 32])));
        assert_ne!(a, candidate_start(s, &Hash32([4; 32]), &NodeId([2; 32])));
        let mut buf = b"mt-candidate".to_vec();
        buf.extend_from_slice(&[1; 32]);
        buf.extend_from_slice(&[2; 32]);
        assert_eq!(a, s.hash(&buf));
    }
}
