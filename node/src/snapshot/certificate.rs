//! Membership certificates: how a syncing node learns the active set of the
//! snapshot window from the genesis alone (docs/SPEC.md 13.3).
//!
//! A snapshot's root is trusted because the window's Cement is signed by a
//! quorum of that window's active set, and that set must not come from the
//! snapshot (a liar would sign a consistent forgery with keys of its own).
//! The syncing node starts from the genesis set and follows one
//! certificate per window where the set changed, in window order:
//!
//! - certificate of window c: the proposal header of c, a Cement of it, and
//!   the member entries (tag `m`) of the state after c with a Merkle range
//!   proof against the header's state root (the range includes the entry
//!   just before and just after the members, when they exist, so that the
//!   range is provably all of them);
//! - it is accepted iff c is above the previous certificate's window and
//!   at most the snapshot window, the Cement verifies against the set in
//!   force (the previous one), names this header, the range proves, and
//!   the members form a valid set that differs from the previous one;
//! - the set it proves is the set of the windows after c.
//!
//! A node builds the certificate of each window after which the set
//! changed when it cements it (`chain.rs`, from the state after the
//! window), stores it with the window and serves it from its snapshots
//! (`disk.rs`); a syncing node follows them page by page (`sync.rs`) and
//! installs them with the snapshot, so it serves them on. With no change
//! the list is empty and the snapshot window's Cement is checked against
//! the genesis set itself.
//!
//! A list of valid certificates may still leave a change out (where the
//! old set is a quorum of itself), so the list runs through the snapshot
//! window w (its own certificate when the set changed at w) and the set it
//! leads to ([`Trust::state_set`]) must be the member set of the verified
//! state after w before the snapshot is installed (`staging.rs`).

use montana_vdf::{Hash32, HashSuite};

use crate::codec::{CodecError, Reader, Writer};
use crate::consensus::active::{ActiveSet, Member, NodeId, Quorum};
use crate::consensus::merkle::{self, verify_range};
use crate::consensus::vote::Cement;
use crate::keys::{VerifyingKey, SIGNING_PUBLIC_LEN};
use crate::proposal::{ProposalHeader, HEADER_LEN};

use super::format::{encode_entry, Entry, MAX_ENTRIES, MAX_KEY, MAX_VALUE};

const MAGIC: &[u8; 4] = b"MTMC";
const VERSION: u8 = 1;
/// Most entries a certificate's range holds (300 members and 2 neighbours).
pub const MAX_RANGE: usize = 302;
/// Most range-proof hashes (two per level of a tree of 2^64 leaves).
pub const MAX_RANGE_PROOF: usize = 128;

/// One change of the active set (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    pub header: ProposalHeader,
    pub cement: Cement,
    /// Entries n of the state after the window.
    pub entries: u64,
    /// Index of the first entry of `range`.
    pub first: u64,
    pub range: Vec<Entry>,
    pub proof: Vec<Hash32>,
}

fn invalid(why: String) -> CodecError {
    CodecError::Invalid {
        what: "membership certificate",
        why,
    }
}

impl Certificate {
    pub fn window(&self) -> u64 {
        self.header.window
    }

    /// `magic "MTMC" | version 1 | header [226] | cement length u32 | Cement
    /// | entries u64 | first u64 | count u16 (1..=302) | entries (chunk
    /// layout) | proof length u8 (<= 128) | proof`.
    pub fn encode(&self) -> Vec<u8> {
        let cement = self.cement.encode();
        let mut w = Writer::default();
        w.bytes(MAGIC).u8(VERSION).bytes(&self.header.to_bytes());
        w.u32(cement.len() as u32).bytes(&cement);
        w.u64(self.entries)
            .u64(self.first)
            .u16(self.range.len() as u16);
        for (k, v) in &self.range {
            encode_entry(&mut w, k, v);
        }
        w.u8(self.proof.len() as u8);
        for h in &self.proof {
            w.bytes(&h.0);
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new("membership certificate", bytes);
        r.header(MAGIC, VERSION)?;
        let header = ProposalHeader::from_bytes(r.take(HEADER_LEN)?)?;
        let cl = r.u32()? as usize;
        let cement = Cement::decode(r.take(cl)?)?;
        let entries = r.u64()?;
        if entries == 0 || entries > MAX_ENTRIES {
            return Err(invalid(format!("{entries} entries")));
        }
        let first = r.u64()?;
        let count = r.u16()? as usize;
        if count == 0 || count > MAX_RANGE {
            return Err(invalid(format!(
                "{count} entries in the range (1 to {MAX_RANGE})"
            )));
        }
        let mut range = Vec::with_capacity(count);
        for _ in 0..count {
            let kl = r.u16()? as usize;
            if kl == 0 || kl > MAX_KEY {
                return Err(invalid(format!("key of {kl} bytes")));
            }
            let k = r.take(kl)?.to_vec();
            let vl = r.u32()? as usize;
            if vl > MAX_VALUE {
                return Err(invalid(format!("value of {vl} bytes")));
            }
            range.push((k, r.take(vl)?.to_vec()));
        }
        let p = r.u8()? as usize;
        if p > MAX_RANGE_PROOF {
            return Err(invalid(format!("{p} proof hashes")));
        }
        let proof = (0..p)
            .map(|_| r.array().map(Hash32))
            .collect::<Result<_, _>>()?;
        r.end()?;
        Ok(Certificate {
            header,
            cement,
            entries,
            first,
            range,
            proof,
        })
    }

    /// The active set this certificate proves, checked against `current`
    /// (the set in force at its window).
    fn next_set(
        &self,
        network_id: &[u8; 32],
        current: &ActiveSet,
        quorum: Quorum,
    ) -> Result<ActiveSet, String> {
        let c = self.window();
        self.cement
            .verify(network_id, c, current, quorum)
            .map_err(|e| format!("window {c}: {e}"))?;
        if self.cement.proposal.0 != self.header.hash() {
            return Err(format!("window {c}: the cement names another proposal"));
        }
        let leaves: Vec<Hash32> = self.range.iter().map(|(k, v)| merkle::leaf(k, v)).collect();
        if !verify_range(
            &self.header.state_root,
            self.entries,
            self.first,
            &leaves,
            &self.proof,
        ) {
            return Err(format!(
                "window {c}: the member entries do not prove against the state root"
            ));
        }
        if self.range.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(format!("window {c}: entries out of order"));
        }
        let is_member = |e: &Entry| e.0.first() == Some(&b'm');
        let last = self.first + self.range.len() as u64;
        let bounded_left = self.first == 0 || !is_member(&self.range[0]);
        let bounded_right = last == self.entries || !is_member(&self.range[self.range.len() - 1]);
        if !bounded_left || !bounded_right {
            return Err(format!("window {c}: the range may leave members out"));
        }
        let set = self.members()?;
        if set == *current {
            return Err(format!("window {c}: the set does not change"));
        }
        Ok(set)
    }

    /// The members its range holds, as a set (trusted only once the
    /// certificate was followed, [`follow`]).
    pub fn members(&self) -> Result<ActiveSet, String> {
        let c = self.window();
        let is_member = |e: &Entry| e.0.first() == Some(&b'm');
        let mut members = Vec::new();
        for (k, v) in self.range.iter().filter(|e| is_member(e)) {
            let id: [u8; 32] = k[1..]
                .try_into()
                .map_err(|_| format!("window {c}: a member key is not 33 bytes"))?;
            if v.len() != 8 + SIGNING_PUBLIC_LEN {
                return Err(format!("window {c}: a member value is {} bytes", v.len()));
            }
            let weight = u64::from_le_bytes(v[..8].try_into().expect("8 bytes"));
            let key = VerifyingKey::from_bytes(&v[8..]).map_err(|e| format!("window {c}: {e}"))?;
            if NodeId(HashSuite::Sha256.hash(&v[8..]).0) != NodeId(id) {
                return Err(format!("window {c}: a member id is not its key's hash"));
            }
            members.push(Member {
                id: NodeId(id),
                key,
                weight,
            });
        }
        ActiveSet::new(members).map_err(|e| format!("window {c}: {e}"))
    }
}

/// What an accepted manifest's trust rests on: the active set of its
/// window w (its Cement verified against it) and the certificates that led
/// from the genesis through w, ascending (the last one is w's own when the
/// set changed at w). Staged with the manifest; installed as the tip's set
/// and the certificates a fast-synced node serves on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trust {
    pub set: ActiveSet,
    pub certificates: Vec<Certificate>,
}

impl Trust {
    /// The active set of the state after `window` that the certificates
    /// say: the one window's own certificate proves, else the set that
    /// cemented it. The snapshot's state must hold exactly these members
    /// (a certificate left out shows there, see `sync.rs`).
    pub fn state_set(&self, window: u64) -> Result<ActiveSet, String> {
        match self.certificates.last() {
            Some(c) if c.window() == window => c.members(),
            _ => Ok(self.set.clone()),
        }
    }

    /// `set length (u32) | set (storage's tip_set layout) | n (u32) | n x
    /// (length u32 | certificate)`: local (the staging area), not sent.
    pub fn encode(&self) -> Vec<u8> {
        let set = crate::storage::encode_set(&self.set);
        let mut w = Writer::default();
        w.u32(set.len() as u32).bytes(&set);
        w.u32(self.certificates.len() as u32);
        for c in &self.certificates {
            let b = c.encode();
            w.u32(b.len() as u32).bytes(&b);
        }
        w.finish()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new("staged trust", bytes);
        let sl = r.u32()? as usize;
        let set = crate::storage::decode_set(r.take(sl)?).ok_or_else(|| CodecError::Invalid {
            what: "staged trust",
            why: "the active set does not decode".into(),
        })?;
        let n = r.u32()? as usize;
        let mut certificates = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            let l = r.u32()? as usize;
            certificates.push(Certificate::decode(r.take(l)?)?);
        }
        r.end()?;
        Ok(Trust { set, certificates })
    }
}

/// Follows `certificates` (ascending, each above `after`) from `set`, the
/// set in force after window `after`: the set they lead to and the window
/// of the last one. Each must be at most `through` (the snapshot's window:
/// its own certificate, if the set changed at it, is followed too).
pub fn follow(
    network_id: &[u8; 32],
    mut set: ActiveSet,
    quorum: Quorum,
    mut after: u64,
    certificates: &[Certificate],
    through: u64,
) -> Result<(ActiveSet, u64), String> {
    for cert in certificates {
        let c = cert.window();
        if c <= after {
            return Err(format!(
                "certificate of window {c} is not after window {after}"
            ));
        }
        if c > through {
            return Err(format!(
                "certificate of window {c} is after window {through}"
            ));
        }
        set = cert.next_set(network_id, &set, quorum)?;
        after = c;
    }
    Ok((set, after))
}

/// The active set of `window`: from the genesis set, through each
/// certificate in order (see the module docs). An empty list is the genesis
/// set; any broken certificate refuses the whole list.
pub fn active_set_at(
    network_id: &[u8; 32],
    genesis_set: &ActiveSet,
    quorum: Quorum,
    certificates: &[Certificate],
    window: u64,
) -> Result<ActiveSet, String> {
    follow(
        network_id,
        genesis_set.clone(),
        quorum,
        0,
        certificates,
        window.saturating_sub(1),
    )
    .map(|(s, _)| s)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::consensus::active::tests::set_of;
    use crate::consensus::merkle::range_proof;
    use crate::consensus::state::State;
    use crate::snapshot::format::tests::{cement, proposal, NET};
    use std::collections::BTreeMap;

    /// A state whose member entries are `set`'s, a certificate of `window`
    /// moving to it, cemented by `signers`.
    pub(crate) fn certificate(
        set: &ActiveSet,
        window: u64,
        signers: &[&crate::keys::NodeKeys],
    ) -> Certificate {
        let mut accounts = BTreeMap::new();
        for i in 0..50u8 {
            accounts.insert(NodeId([i.wrapping_mul(5); 32]), 1);
            accounts.insert(NodeId([0xff - i; 32]), 1);
        }
        let state = State::new(set.clone(), accounts);
        let es = state.entries();
        let leaves: Vec<Hash32> = es.iter().map(|(k, v)| merkle::leaf(k, v)).collect();
        let a = es.iter().position(|e| e.0[0] == b'm').unwrap() - 1;
        let b = es.iter().rposition(|e| e.0[0] == b'm').unwrap() + 2;
        let b = b.min(es.len());
        let p = proposal(signers[0], window, merkle::state_root(&leaves));
        Certificate {
            header: p.header.clone(),
            cement: cement(&p, signers),
            entries: es.len() as u64,
            first: a as u64,
            range: es[a..b].to_vec(),
            proof: range_proof(&leaves, a as u64, b as u64),
        }
    }

    #[test]
    fn the_chain_of_sets_is_followed_from_the_genesis() {
        let q = Quorum::default();
        let (g, gk) = set_of(4);
        // No change: the genesis set.
        assert_eq!(active_set_at(&NET, &g, q, &[], 50).unwrap(), g);
        let (s2, k2) = set_of(3);
        let c1 = certificate(&s2, 10, &[&gk[0], &gk[1], &gk[2]]);
        let back = Certificate::decode(&c1.encode()).unwrap();
        assert_eq!(back, c1);
        assert_eq!(
            active_set_at(&NET, &g, q, std::slice::from_ref(&c1), 50).unwrap(),
            s2
        );
        let (s3, _) = set_of(2);
        let c2 = certificate(&s3, 20, &[&k2[0], &k2[1], &k2[2]]);
        assert_eq!(
            active_set_at(&NET, &g, q, &[c1.clone(), c2.clone()], 50).unwrap(),
            s3
        );
        // Out of order, at or past the snapshot window.
        assert!(active_set_at(&NET, &g, q, &[c2.clone(), c1.clone()], 50).is_err());
        assert!(active_set_at(&NET, &g, q, std::slice::from_ref(&c1), 10).is_err());
        // A forged set: the change cemented by keys that were never members.
        let (_, stranger) = set_of(3);
        let forged = certificate(&s2, 10, &[&stranger[0], &stranger[1], &stranger[2]]);
        let e = active_set_at(&NET, &g, q, &[forged], 50).unwrap_err();
        assert!(e.contains("not a member"), "{e}");
        // Short of quorum.
        let short = certificate(&s2, 10, &[&gk[0], &gk[1]]);
        let e = active_set_at(&NET, &g, q, &[short], 50).unwrap_err();
        assert!(e.contains("short of the quorum"), "{e}");
        // Skipping a certificate: c2 signed by s2 checked against g.
        assert!(active_set_at(&NET, &g, q, &[c2], 50).is_err());
        // A member dropped from the range, a range cut short, a changed weight.
        let mut cut = c1.clone();
        cut.range.remove(2);
        assert!(active_set_at(&NET, &g, q, &[cut], 50).is_err());
        let mut short_range = c1.clone();
        short_range.range.pop();
        short_range.range.pop();
        short_range.proof = vec![];
        assert!(active_set_at(&NET, &g, q, &[short_range], 50).is_err());
        let mut heavier = c1.clone();
        heavier.range[1].1[0] = 9;
        assert!(active_set_at(&NET, &g, q, &[heavier], 50).is_err());
        // Truncated bytes never decode.
        let b = c1.encode();
        for cut in [0, 10, 300, b.len() / 2, b.len() - 1] {
            assert!(Certificate::decode(&b[..cut]).is_err());
        }
    }
}
