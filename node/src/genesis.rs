//! The genesis manifest: a network's parameters, founding peers, consensus
//! rules and initial accounts, and its network id.
//!
//! The manifest is JSON (written by `montana genesis new`, read by every node
//! and by calibration). JSON text is not canonical (key order, spacing, number
//! forms), so the network id is SHA-256 of a canonical binary layout
//! (docs/SPEC.md section 6): two nodes agree on the id exactly when they agree
//! on every field that matters. The id is the Noise prologue, so a node with a
//! different genesis cannot even complete a handshake.
//!
//! Version 2 adds the consensus rules (docs/SPEC.md section 9): the quorum,
//! the proposer timeout, the emission, each peer's weight and the initial
//! accounts. A version-1 manifest is refused with one line saying so
//! ([`GenesisError::Version`]), never misread.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use montana_vdf::{ChainParams, HashSuite, TimeChain};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::codec::{CodecError, Reader, Writer};
use crate::consensus::active::{ActiveSet, Member, NodeId, Quorum, MAX_ACTIVE};
pub use crate::consensus::joining::JoinRules;
use crate::consensus::state::{Emission, State};
use crate::keys::{VerifyingKey, SIGNING_PUBLIC_LEN};

/// The only manifest version this build reads and writes.
pub const GENESIS_VERSION: u8 = 2;
/// The transport suite of version 1 and 2 networks.
pub const TRANSPORT: &str = "Noise_XXhfs_25519+Kyber1024_ChaChaPoly_BLAKE2s";
/// The checkpoint cap: a proposal with K checkpoints must fit one 1 MiB
/// message (32 bytes each plus header and signature).
pub const MAX_GENESIS_CHECKPOINTS: u64 = 32_000;
/// Defaults of `montana genesis new`: the Montana network's parameters.
pub const DEFAULT_D: u64 = 325_000_000;
pub const DEFAULT_CHECKPOINTS: u64 = 6_500;
pub const DEFAULT_WINDOW_SECS: f64 = 60.0;
/// The default proposer timeout is this many windows.
pub const DEFAULT_TIMEOUT_WINDOWS: f64 = 3.0;
/// Default emission: units minted per cemented window.
pub const DEFAULT_EMISSION_PER_WINDOW: u64 = 1_000_000_000;
/// Default emission: the proposer's share in basis points (half).
pub const DEFAULT_PROPOSER_BPS: u16 = 5_000;
/// Most peers a genesis may list: every genesis peer is a member of the
/// first active set, which holds at most [`MAX_ACTIVE`] (300).
pub const MAX_PEERS: usize = MAX_ACTIVE;
/// Longest label, in bytes.
pub const MAX_LABEL_LEN: usize = 64;
/// Most initial accounts (2^24; 40 bytes each in the canonical layout).
pub const MAX_ACCOUNTS: usize = 1 << 24;
/// Longest proposer timeout, in seconds (about 11.6 days).
pub const MAX_PROPOSER_TIMEOUT_SECS: f64 = 1_000_000.0;

const MAGIC: &[u8; 4] = b"MTGN";
const SYNTHETIC_ACCOUNT: &[u8] = b"montana/synthetic-account";

/// Why a genesis (or peers file) is unusable; one line each.
#[derive(Debug, Error)]
pub enum GenesisError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON for a {what}: {why}")]
    Json {
        path: String,
        what: &'static str,
        why: String,
    },
    /// A manifest of another version (version 1: written before consensus).
    #[error("{}", version_line(path, *found))]
    Version { path: String, found: u64 },
    #[error("invalid genesis: {0}")]
    Invalid(String),
    #[error("invalid canonical genesis bytes: {0}")]
    Codec(#[from] CodecError),
}

fn version_line(path: &str, found: u64) -> String {
    if found == 1 {
        format!(
            "genesis {path} is version 1; this montana needs version {GENESIS_VERSION} \
             (quorum, proposer timeout, emission, accounts): create a new one with `montana genesis new`"
        )
    } else {
        format!(
            "genesis {path} is version {found}; this montana reads version {GENESIS_VERSION} only: \
             use the montana that wrote it, or create a new one with `montana genesis new`"
        )
    }
}

fn invalid(why: impl Into<String>) -> GenesisError {
    GenesisError::Invalid(why.into())
}

fn one() -> u64 {
    1
}

fn is_one(w: &u64) -> bool {
    *w == 1
}

/// One founding peer, as in the peers file and the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisPeer {
    pub label: String,
    pub address: SocketAddr,
    /// X25519 public key, hex (32 bytes).
    pub noise_public_key: String,
    /// ML-DSA-65 public key, hex (1952 bytes).
    pub signing_public_key: String,
    /// The proposer of this network (exactly one peer).
    #[serde(default)]
    pub bootstrap: bool,
    /// Voting weight in the first active set, >= 1 (omitted from JSON
    /// when 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub weight: u64,
}

impl GenesisPeer {
    pub fn noise_public(&self) -> Result<[u8; 32], GenesisError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(&self.noise_public_key, &mut out).map_err(|_| {
            invalid(format!(
                "peer '{}': noise_public_key must be 64 hex digits",
                self.label
            ))
        })?;
        Ok(out)
    }

    pub fn signing_public(&self) -> Result<VerifyingKey, GenesisError> {
        VerifyingKey::from_hex(&self.signing_public_key)
            .map_err(|e| invalid(format!("peer '{}': {e}", self.label)))
    }
}

/// The consensus rules and initial accounts of a version-2 genesis, as
/// `montana genesis new` takes them.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsensusParams {
    pub quorum: Quorum,
    pub proposer_timeout_secs: f64,
    pub emission: Emission,
    /// Sorted by node id, each once.
    pub accounts: Vec<(NodeId, u64)>,
    /// Synthetic accounts (scale tests), kept as their count and seed.
    pub synthetic: Synthetic,
    /// The joining rules; `None`: [`JoinRules::defaults`] for D.
    pub joining: Option<JoinRules>,
}

impl ConsensusParams {
    /// Quorum 2/3, a proposer timeout of 3 windows, the default emission
    /// and no accounts.
    pub fn defaults(window_secs: f64) -> Self {
        ConsensusParams {
            quorum: Quorum::default(),
            proposer_timeout_secs: DEFAULT_TIMEOUT_WINDOWS * window_secs,
            emission: Emission {
                per_window: DEFAULT_EMISSION_PER_WINDOW,
                proposer_bps: DEFAULT_PROPOSER_BPS,
            },
            accounts: Vec::new(),
            synthetic: Synthetic::default(),
            joining: None,
        }
    }
}

/// The largest balance a synthetic account gets.
pub const MAX_SYNTHETIC_BALANCE: u64 = 1_000_000;

/// `count` synthetic initial accounts derived from `seed` (scale tests):
/// a million accounts are 2 numbers in the manifest, not 80 MB of JSON,
/// and the network id commits to both. Account i (0-based) has id
/// `SHA-256("montana/synthetic-account" || seed u64 LE || i u64 LE)` and
/// balance `1 + (the id's first 8 bytes as a u64 LE) mod 1,000,000`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Synthetic {
    pub count: u64,
    pub seed: u64,
}

impl Synthetic {
    pub fn is_none(&self) -> bool {
        *self == Synthetic::default()
    }

    /// Account `i`.
    pub fn account(&self, i: u64) -> (NodeId, u64) {
        let mut buf = [0u8; SYNTHETIC_ACCOUNT.len() + 16];
        buf[..SYNTHETIC_ACCOUNT.len()].copy_from_slice(SYNTHETIC_ACCOUNT);
        buf[SYNTHETIC_ACCOUNT.len()..][..8].copy_from_slice(&self.seed.to_le_bytes());
        buf[SYNTHETIC_ACCOUNT.len() + 8..].copy_from_slice(&i.to_le_bytes());
        let id = HashSuite::Sha256.hash(&buf).0;
        let first = u64::from_le_bytes(id[..8].try_into().expect("8 bytes"));
        (NodeId(id), 1 + first % MAX_SYNTHETIC_BALANCE)
    }

    /// Every account, sorted by id.
    pub fn accounts(&self) -> Vec<(NodeId, u64)> {
        let mut out: Vec<(NodeId, u64)> = (0..self.count).map(|i| self.account(i)).collect();
        out.sort_unstable_by_key(|a| a.0);
        out
    }
}

/// `n` synthetic accounts of seed 0 ([`Synthetic`]), sorted by id, as an
/// explicit list (tests).
pub fn synthetic_accounts(n: u64) -> Vec<(NodeId, u64)> {
    Synthetic { count: n, seed: 0 }.accounts()
}

/// The decoded keys and node ids of the peers, computed once. Each entry
/// remembers the hex it came from, so a manifest whose peers were changed
/// after the first use is never answered from a stale entry.
#[derive(Clone, Default)]
struct KeyCache(OnceLock<Vec<CachedKey>>);

#[derive(Clone)]
struct CachedKey {
    hex: String,
    key: VerifyingKey,
    id: NodeId,
}

impl PartialEq for KeyCache {
    fn eq(&self, _: &Self) -> bool {
        true // derived from the peers, which are compared
    }
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyCache")
    }
}

/// The manifest. Field names are the JSON keys (CONTEXT.md conventions).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub version: u8,
    pub hash: HashSuite,
    pub d: u64,
    pub checkpoints: u64,
    pub window_secs: f64,
    pub transport: String,
    /// `{"num": 2, "den": 3}`: a window is cemented iff
    /// `den * confirmed_weight > num * total_weight`.
    #[serde(with = "quorum_json")]
    pub quorum: Quorum,
    /// Seconds without a proposal (or a beacon) before a round change.
    pub proposer_timeout_secs: f64,
    /// `{"per_window": units, "proposer_bps": 0..=10000}`.
    #[serde(with = "emission_json")]
    pub emission: Emission,
    pub peers: Vec<GenesisPeer>,
    /// Initial balances `[{"node_id": "<64 hex>", "balance": units}]`,
    /// sorted by node id, each once, balances >= 1.
    #[serde(default, with = "accounts_json")]
    pub accounts: Vec<(NodeId, u64)>,
    /// `{"count": N, "seed": S}` ([`Synthetic`]); left out when none.
    #[serde(default, skip_serializing_if = "Synthetic::is_none")]
    pub synthetic_accounts: Synthetic,
    /// How outsiders join ([`JoinRules`], docs/SPEC.md 9.9); left out:
    /// the defaults for D.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joining: Option<JoinRules>,
    #[serde(skip)]
    keys: KeyCache,
}

/// Only the version of a manifest, to name it when the rest does not parse.
#[derive(Deserialize)]
struct VersionProbe {
    version: Option<u64>,
}

impl Genesis {
    /// A manifest from peers and parameters with the default consensus
    /// rules ([`ConsensusParams::defaults`]), validated.
    pub fn new(
        peers: Vec<GenesisPeer>,
        hash: HashSuite,
        d: u64,
        checkpoints: u64,
        window_secs: f64,
    ) -> Result<Self, GenesisError> {
        let consensus = ConsensusParams::defaults(window_secs);
        Self::new_with(peers, hash, d, checkpoints, window_secs, consensus)
    }

    /// A manifest from peers, parameters and consensus rules, validated.
    pub fn new_with(
        peers: Vec<GenesisPeer>,
        hash: HashSuite,
        d: u64,
        checkpoints: u64,
        window_secs: f64,
        consensus: ConsensusParams,
    ) -> Result<Self, GenesisError> {
        let g = Genesis {
            version: GENESIS_VERSION,
            hash,
            d,
            checkpoints,
            window_secs,
            transport: TRANSPORT.to_string(),
            quorum: consensus.quorum,
            proposer_timeout_secs: consensus.proposer_timeout_secs,
            emission: consensus.emission,
            peers,
            accounts: consensus.accounts,
            synthetic_accounts: consensus.synthetic,
            joining: consensus.joining,
            keys: KeyCache::default(),
        };
        g.validate()?;
        Ok(g)
    }

    /// Reads and validates a manifest file. A manifest of another version
    /// is [`GenesisError::Version`], whatever else it holds.
    pub fn load(path: &Path) -> Result<Self, GenesisError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| GenesisError::Read {
            path: shown.clone(),
            source,
        })?;
        let version_error = || match serde_json::from_str::<VersionProbe>(&text) {
            Ok(VersionProbe {
                version: Some(found),
            }) if found != GENESIS_VERSION as u64 => Some(GenesisError::Version {
                path: shown.clone(),
                found,
            }),
            _ => None,
        };
        let g: Genesis = match serde_json::from_str(&text) {
            Ok(g) => g,
            Err(e) => {
                return Err(version_error().unwrap_or(GenesisError::Json {
                    path: shown.clone(),
                    what: "genesis manifest",
                    why: e.to_string(),
                }))
            }
        };
        if g.version != GENESIS_VERSION {
            return Err(GenesisError::Version {
                path: shown,
                found: g.version as u64,
            });
        }
        g.validate()?;
        Ok(g)
    }

    /// Reads a peers file: a JSON list of [`GenesisPeer`].
    pub fn load_peers(path: &Path) -> Result<Vec<GenesisPeer>, GenesisError> {
        let text = std::fs::read_to_string(path).map_err(|source| GenesisError::Read {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| GenesisError::Json {
            path: path.display().to_string(),
            what: "peers file",
            why: e.to_string(),
        })
    }

    /// Pretty JSON, newline-terminated.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data") + "\n"
    }

    /// Checks every rule of docs/SPEC.md section 6.
    pub fn validate(&self) -> Result<(), GenesisError> {
        if self.version != GENESIS_VERSION {
            return Err(invalid(format!(
                "version {} (this build reads version {GENESIS_VERSION})",
                self.version
            )));
        }
        if self.transport != TRANSPORT {
            return Err(invalid(format!(
                "transport '{}' (this build speaks {TRANSPORT})",
                self.transport
            )));
        }
        if self.checkpoints == 0 || self.checkpoints > MAX_GENESIS_CHECKPOINTS {
            return Err(invalid(format!(
                "checkpoints {} outside 1..={MAX_GENESIS_CHECKPOINTS}",
                self.checkpoints
            )));
        }
        if self.d == 0 || !self.d.is_multiple_of(self.checkpoints) {
            return Err(invalid(format!(
                "d {} must be a positive multiple of checkpoints {}",
                self.d, self.checkpoints
            )));
        }
        ChainParams::new(self.d, self.checkpoints).map_err(|e| invalid(e.to_string()))?;
        if !(self.window_secs.is_finite() && self.window_secs > 0.0) {
            return Err(invalid(format!(
                "window_secs {} must be a positive number",
                self.window_secs
            )));
        }
        Quorum::new(self.quorum.num, self.quorum.den).map_err(invalid)?;
        let t = self.proposer_timeout_secs;
        if !(t.is_finite() && t > 0.0 && t <= MAX_PROPOSER_TIMEOUT_SECS) {
            return Err(invalid(format!(
                "proposer_timeout_secs {t} must be a number above 0 and at most {MAX_PROPOSER_TIMEOUT_SECS}"
            )));
        }
        Emission::new(self.emission.per_window, self.emission.proposer_bps)
            .map_err(|e| invalid(format!("emission: {e}")))?;
        self.joining().validate(self.d).map_err(invalid)?;
        if self.peers.is_empty() || self.peers.len() > MAX_PEERS {
            return Err(invalid(format!(
                "{} peers (1..={MAX_PEERS} allowed: every genesis peer is a member of the first active set, which holds at most {MAX_ACTIVE})",
                self.peers.len()
            )));
        }
        let bootstraps = self.peers.iter().filter(|p| p.bootstrap).count();
        if bootstraps != 1 {
            return Err(invalid(format!(
                "{bootstraps} bootstrap peers (exactly one proposer is required)"
            )));
        }
        let (mut labels, mut addrs, mut noise, mut signing) = (
            HashSet::new(),
            HashSet::new(),
            HashSet::new(),
            HashSet::new(),
        );
        let mut decoded = Vec::with_capacity(self.peers.len());
        let mut total_weight = 0u64;
        for p in &self.peers {
            if p.label.is_empty() || p.label.len() > MAX_LABEL_LEN {
                return Err(invalid(format!(
                    "peer label '{}' must be 1..={MAX_LABEL_LEN} bytes",
                    p.label
                )));
            }
            p.noise_public()?;
            let sk = p.signing_public()?;
            let dup = |what: &str| invalid(format!("duplicate {what} (peer '{}')", p.label));
            if !labels.insert(p.label.clone()) {
                return Err(dup("label"));
            }
            if !addrs.insert(p.address) {
                return Err(dup("address"));
            }
            if !noise.insert(p.noise_public_key.to_lowercase()) {
                return Err(dup("noise_public_key"));
            }
            if !signing.insert(sk.to_bytes()) {
                return Err(dup("signing_public_key"));
            }
            if p.weight == 0 {
                return Err(invalid(format!(
                    "peer '{}': weight 0 (at least 1)",
                    p.label
                )));
            }
            total_weight = total_weight
                .checked_add(p.weight)
                .ok_or_else(|| invalid("the peers' total weight overflows a u64"))?;
            decoded.push(CachedKey {
                hex: p.signing_public_key.clone(),
                id: NodeId::of(&sk),
                key: sk,
            });
        }
        self.validate_accounts()?;
        // The keys were decoded anyway: keep them for the accessors.
        let _ = self.keys.0.set(decoded);
        Ok(())
    }

    /// Accounts: at most [`MAX_ACCOUNTS`] with the synthetic ones, node
    /// ids strictly ascending, balances >= 1, their sum (counting every
    /// synthetic account at its largest balance) within a u64; synthetic
    /// accounts with count 0 have seed 0. One pass; the synthetic ids are
    /// not computed here.
    fn validate_accounts(&self) -> Result<(), GenesisError> {
        if self.accounts.len() > MAX_ACCOUNTS {
            return Err(invalid(format!(
                "{} accounts (at most {MAX_ACCOUNTS})",
                self.accounts.len()
            )));
        }
        let Synthetic { count, seed } = self.synthetic_accounts;
        if count == 0 && seed != 0 {
            return Err(invalid(format!(
                "synthetic_accounts has seed {seed} but count 0 (no synthetic accounts: leave it out)"
            )));
        }
        if (self.accounts.len() as u64).saturating_add(count) > MAX_ACCOUNTS as u64 {
            return Err(invalid(format!(
                "{} accounts and {count} synthetic ones (at most {MAX_ACCOUNTS} in all)",
                self.accounts.len()
            )));
        }
        // Synthetic balances are at most MAX_SYNTHETIC_BALANCE each.
        let mut supply = count * MAX_SYNTHETIC_BALANCE;
        for (i, (id, balance)) in self.accounts.iter().enumerate() {
            if i > 0 {
                let prev = &self.accounts[i - 1].0;
                if prev == id {
                    return Err(invalid(format!("account {id} is listed twice")));
                }
                if prev > id {
                    return Err(invalid(format!(
                        "account {id} comes after {prev}: accounts must be sorted by node_id, ascending"
                    )));
                }
            }
            if *balance == 0 {
                return Err(invalid(format!(
                    "account {id} has balance 0 (at least 1; an account with nothing is left out)"
                )));
            }
            supply = supply
                .checked_add(*balance)
                .ok_or_else(|| invalid("the accounts' total balance overflows a u64"))?;
        }
        Ok(())
    }

    /// The chain parameters (validated on load).
    pub fn params(&self) -> ChainParams {
        ChainParams::new(self.d, self.checkpoints).expect("validated genesis")
    }

    pub fn timechain(&self) -> TimeChain {
        TimeChain::new(self.hash, self.d)
    }

    /// The proposer's peer index.
    pub fn proposer(&self) -> u16 {
        self.peers
            .iter()
            .position(|p| p.bootstrap)
            .expect("validated genesis has one bootstrap peer") as u16
    }

    /// The cached key of peer `i`, if it is current.
    fn cached(&self, i: usize) -> Option<&CachedKey> {
        let c = self.keys.0.get()?.get(i)?;
        (c.hex == self.peers[i].signing_public_key).then_some(c)
    }

    /// Peer `peer`'s ML-DSA-65 key, decoded once (on validation). Panics
    /// if `peer` is not an index of `peers`, or on an unvalidated genesis
    /// with a bad key.
    pub fn verifying_key(&self, peer: u16) -> VerifyingKey {
        let i = peer as usize;
        match self.cached(i) {
            Some(c) => c.key.clone(),
            None => self.peers[i].signing_public().expect("validated genesis"),
        }
    }

    /// Peer `peer`'s node id: SHA-256 of its ML-DSA-65 key ([`NodeId::of`]).
    pub fn node_id(&self, peer: u16) -> NodeId {
        match self.cached(peer as usize) {
            Some(c) => c.id,
            None => NodeId::of(&self.verifying_key(peer)),
        }
    }

    /// Every peer's node id, in the order of `peers`.
    pub fn node_ids(&self) -> Vec<NodeId> {
        (0..self.peers.len() as u16)
            .map(|i| self.node_id(i))
            .collect()
    }

    /// The first active set: every genesis peer with its weight.
    pub fn active_set(&self) -> ActiveSet {
        let members = (0..self.peers.len())
            .map(|i| {
                let key = self.verifying_key(i as u16);
                Member {
                    id: self.node_id(i as u16),
                    key,
                    weight: self.peers[i].weight,
                }
            })
            .collect();
        ActiveSet::new(members).expect("validated genesis: 1 to 300 distinct peers, weights >= 1")
    }

    /// The consensus state before window 1: the active set and the
    /// initial accounts, explicit and synthetic (an id in both gets the
    /// sum of its balances).
    pub fn initial_state(&self) -> State {
        let mut accounts: BTreeMap<NodeId, u64> = self.accounts.iter().copied().collect();
        for i in 0..self.synthetic_accounts.count {
            let (id, balance) = self.synthetic_accounts.account(i);
            let b = accounts.entry(id).or_default();
            // Validation bounds the sum within a u64.
            *b += balance;
        }
        State::new(self.active_set(), accounts)
    }

    /// The joining rules (the defaults for D when the manifest has none).
    pub fn joining(&self) -> JoinRules {
        self.joining.unwrap_or_else(|| JoinRules::defaults(self.d))
    }

    /// `proposer_timeout_secs` as a duration.
    pub fn proposer_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.proposer_timeout_secs)
    }

    /// The canonical binary layout (docs/SPEC.md section 6).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(96 + self.peers.len() * 2100 + self.accounts.len() * 40);
        w.bytes(MAGIC)
            .u8(self.version)
            .u8(self.hash.id())
            .u64(self.d)
            .u32(self.checkpoints as u32)
            .u64(self.window_secs.to_bits())
            .str16(&self.transport)
            .u16(self.quorum.num)
            .u16(self.quorum.den)
            .u64(self.proposer_timeout_secs.to_bits())
            .u64(self.emission.per_window)
            .u16(self.emission.proposer_bps)
            .u16(self.peers.len() as u16);
        for (i, p) in self.peers.iter().enumerate() {
            w.str16(&p.label)
                .str16(&p.address.to_string())
                .bytes(&p.noise_public().expect("validated"))
                .bytes(&self.verifying_key(i as u16).to_bytes())
                .u8(p.bootstrap as u8)
                .u64(p.weight);
        }
        w.u32(self.accounts.len() as u32);
        for (id, balance) in &self.accounts {
            w.bytes(&id.0).u64(*balance);
        }
        w.u32(self.synthetic_accounts.count as u32)
            .u64(self.synthetic_accounts.seed);
        let j = self.joining();
        w.u32(j.candidate_windows)
            .u64(j.candidate_d)
            .u32(j.candidate_k)
            .u16(j.max_candidates_per_proposal)
            .u32(j.activation_delay)
            .u32(j.inactive_windows);
        w.finish()
    }

    /// Parses the canonical layout back (and validates it).
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Self, GenesisError> {
        let mut r = Reader::new("genesis", bytes);
        r.header(MAGIC, GENESIS_VERSION)?;
        let suite_id = r.u8()?;
        let hash = HashSuite::from_id(suite_id)
            .ok_or_else(|| invalid(format!("unknown hash suite byte {suite_id}")))?;
        let d = r.u64()?;
        let checkpoints = r.u32()? as u64;
        let window_secs = f64::from_bits(r.u64()?);
        let transport = r.str16()?.to_string();
        let quorum = Quorum {
            num: r.u16()?,
            den: r.u16()?,
        };
        let proposer_timeout_secs = f64::from_bits(r.u64()?);
        let emission = Emission {
            per_window: r.u64()?,
            proposer_bps: r.u16()?,
        };
        let n = r.u16()? as usize;
        if n > MAX_PEERS {
            return Err(invalid(format!("{n} peers (at most {MAX_PEERS})")));
        }
        let mut peers = Vec::with_capacity(n);
        for _ in 0..n {
            let label = r.str16()?.to_string();
            let address = r
                .str16()?
                .parse()
                .map_err(|_| invalid(format!("peer '{label}': bad address")))?;
            let noise = r.array::<32>()?;
            let signing = r.take(SIGNING_PUBLIC_LEN)?;
            let bootstrap = match r.u8()? {
                0 => false,
                1 => true,
                b => return Err(invalid(format!("bootstrap byte {b} (0 or 1)"))),
            };
            let weight = r.u64()?;
            peers.push(GenesisPeer {
                label,
                address,
                noise_public_key: hex::encode(noise),
                signing_public_key: hex::encode(signing),
                bootstrap,
                weight,
            });
        }
        let count = r.u32()? as usize;
        if count > MAX_ACCOUNTS {
            return Err(invalid(format!(
                "{count} accounts (at most {MAX_ACCOUNTS})"
            )));
        }
        // The count is checked against the bytes left before allocating.
        if r.left() < count * 40 {
            return Err(CodecError::Truncated {
                what: "genesis",
                needed: count * 40,
                left: r.left(),
            }
            .into());
        }
        let mut accounts = Vec::with_capacity(count);
        for _ in 0..count {
            let id = NodeId(r.array()?);
            accounts.push((id, r.u64()?));
        }
        let synthetic_accounts = Synthetic {
            count: r.u32()? as u64,
            seed: r.u64()?,
        };
        let joining = JoinRules {
            candidate_windows: r.u32()?,
            candidate_d: r.u64()?,
            candidate_k: r.u32()?,
            max_candidates_per_proposal: r.u16()?,
            activation_delay: r.u32()?,
            inactive_windows: r.u32()?,
        };
        let joining = (joining != JoinRules::defaults(d)).then_some(joining);
        r.end()?;
        let g = Genesis {
            version: GENESIS_VERSION,
            hash,
            d,
            checkpoints,
            window_secs,
            transport,
            quorum,
            proposer_timeout_secs,
            emission,
            peers,
            accounts,
            synthetic_accounts,
            joining,
            keys: KeyCache::default(),
        };
        g.validate()?;
        // Canonical means one encoding per genesis (e.g. no "127.000.0.1").
        if g.canonical_bytes() != bytes {
            return Err(invalid("bytes are not in canonical form"));
        }
        Ok(g)
    }

    /// SHA-256 of the canonical layout.
    pub fn network_id(&self) -> [u8; 32] {
        HashSuite::Sha256.hash(&self.canonical_bytes()).0
    }
}

/// `quorum` in JSON: `{"num": u16, "den": u16}` (checked by validation).
mod quorum_json {
    use super::*;
    use serde::{Deserializer, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Json {
        num: u16,
        den: u16,
    }

    pub fn serialize<S: Serializer>(q: &Quorum, s: S) -> Result<S::Ok, S::Error> {
        Json {
            num: q.num,
            den: q.den,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Quorum, D::Error> {
        let j = Json::deserialize(d)?;
        Ok(Quorum {
            num: j.num,
            den: j.den,
        })
    }
}

/// `emission` in JSON: `{"per_window": u64, "proposer_bps": u16}`.
mod emission_json {
    use super::*;
    use serde::{Deserializer, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Json {
        per_window: u64,
        proposer_bps: u16,
    }

    pub fn serialize<S: Serializer>(e: &Emission, s: S) -> Result<S::Ok, S::Error> {
        Json {
            per_window: e.per_window,
            proposer_bps: e.proposer_bps,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Emission, D::Error> {
        let j = Json::deserialize(d)?;
        Ok(Emission {
            per_window: j.per_window,
            proposer_bps: j.proposer_bps,
        })
    }
}

/// `accounts` in JSON: `[{"node_id": "<64 hex>", "balance": u64}]`. Each
/// id is decoded straight from the text (no string per account), so a
/// million accounts parse in one linear pass.
mod accounts_json {
    use super::*;
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    struct IdHex(NodeId);

    impl Serialize for IdHex {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut buf = [0u8; 64];
            hex::encode_to_slice(self.0 .0, &mut buf).expect("64 digits for 32 bytes");
            s.serialize_str(std::str::from_utf8(&buf).expect("hex is ASCII"))
        }
    }

    impl<'de> Deserialize<'de> for IdHex {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = IdHex;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a node id of 64 hex digits")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<IdHex, E> {
                    let mut id = [0u8; 32];
                    hex::decode_to_slice(v, &mut id)
                        .map_err(|_| E::custom(format!("node_id {v:?} is not 64 hex digits")))?;
                    Ok(IdHex(NodeId(id)))
                }
            }
            d.deserialize_str(V)
        }
    }

    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Account {
        node_id: IdHex,
        balance: u64,
    }

    pub fn serialize<S: Serializer>(accounts: &[(NodeId, u64)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(accounts.iter().map(|(id, balance)| Account {
            node_id: IdHex(*id),
            balance: *balance,
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(NodeId, u64)>, D::Error> {
        let list = Vec::<Account>::deserialize(d)?;
        Ok(list.into_iter().map(|a| (a.node_id.0, a.balance)).collect())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::NodeKeys;

    pub(crate) fn peers(n: usize) -> (Vec<GenesisPeer>, Vec<NodeKeys>) {
        let keys: Vec<NodeKeys> = (0..n).map(|_| NodeKeys::generate().unwrap()).collect();
        let peers = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let pk = k.public_keys();
                GenesisPeer {
                    label: format!("node{i}"),
                    address: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
                    noise_public_key: pk.noise_public_key,
                    signing_public_key: pk.signing_public_key,
                    bootstrap: i == 0,
                    weight: 1,
                }
            })
            .collect();
        (peers, keys)
    }

    /// A genesis using every version-2 field away from its default.
    fn full() -> (Genesis, Vec<NodeKeys>) {
        let (mut p, k) = peers(3);
        p[1].weight = 5;
        let consensus = ConsensusParams {
            quorum: Quorum::new(3, 4).unwrap(),
            proposer_timeout_secs: 2.25,
            emission: Emission::new(777, 1_234).unwrap(),
            accounts: synthetic_accounts(4),
            synthetic: Synthetic { count: 5, seed: 9 },
            joining: Some(JoinRules {
                candidate_windows: 7,
                candidate_d: 100,
                candidate_k: 4,
                max_candidates_per_proposal: 9,
                activation_delay: 3,
                inactive_windows: 50,
            }),
        };
        let g = Genesis::new_with(p, HashSuite::Blake3, 2_000, 100, 1.5, consensus).unwrap();
        (g, k)
    }

    #[test]
    fn json_and_canonical_round_trip() {
        let (g, k) = full();
        let back: Genesis = serde_json::from_str(&g.to_json()).unwrap();
        back.validate().unwrap();
        assert_eq!(back, g);
        assert_eq!(back.to_json(), g.to_json());
        let bytes = g.canonical_bytes();
        let decoded = Genesis::from_canonical_bytes(&bytes).unwrap();
        assert_eq!(decoded, g);
        assert_eq!(decoded.canonical_bytes(), bytes, "re-encodes identically");
        assert_eq!(back.network_id(), g.network_id());
        assert_eq!(g.proposer(), 0);
        // The manifest carries the conventions' top-level keys.
        let v: serde_json::Value = serde_json::from_str(&g.to_json()).unwrap();
        for key in [
            "version",
            "hash",
            "d",
            "checkpoints",
            "window_secs",
            "transport",
            "quorum",
            "proposer_timeout_secs",
            "emission",
            "peers",
            "accounts",
            "synthetic_accounts",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
        assert_eq!(
            v["synthetic_accounts"],
            serde_json::json!({"count": 5, "seed": 9})
        );
        assert_eq!(v["version"], 2);
        assert_eq!(v["hash"], "blake3");
        assert_eq!(v["quorum"], serde_json::json!({"num": 3, "den": 4}));
        assert_eq!(
            v["emission"],
            serde_json::json!({"per_window": 777, "proposer_bps": 1234})
        );
        assert_eq!(v["proposer_timeout_secs"], 2.25);
        // Weight 1 is left out of the JSON, other weights are written.
        assert!(v["peers"][0].get("weight").is_none());
        assert_eq!(v["peers"][1]["weight"], 5);
        let a = &v["accounts"][0];
        assert_eq!(a["node_id"], g.accounts[0].0.to_hex());
        assert_eq!(a["balance"], g.accounts[0].1);
        // Node ids are SHA-256 of the ML-DSA keys.
        for (i, key) in k.iter().enumerate() {
            assert_eq!(g.node_id(i as u16), NodeId::of(key.verifying_key()));
            assert_eq!(g.verifying_key(i as u16), *key.verifying_key());
        }
        assert_eq!(g.node_ids().len(), 3);
        assert_eq!(g.proposer_timeout(), Duration::from_millis(2250));
    }

    #[test]
    fn defaults_and_the_initial_state() {
        let (p, k) = peers(4);
        let g = Genesis::new(p, HashSuite::Sha256, 1_000, 10, 2.0).unwrap();
        assert_eq!(g.quorum, Quorum { num: 2, den: 3 });
        assert_eq!(g.proposer_timeout_secs, 6.0);
        assert_eq!(g.emission.per_window, DEFAULT_EMISSION_PER_WINDOW);
        assert_eq!(g.emission.proposer_bps, DEFAULT_PROPOSER_BPS);
        assert!(g.accounts.is_empty());
        let set = g.active_set();
        assert_eq!(set.len(), 4);
        assert_eq!(set.total(), 4);
        for key in &k {
            let id = NodeId::of(key.verifying_key());
            assert_eq!(set.get(&id).unwrap().key, *key.verifying_key());
        }

        let (g, _) = full();
        let set = g.active_set();
        assert_eq!(set.total(), 7, "weights 1 + 5 + 1");
        assert_eq!(set.weight(&g.node_id(1)), 5);
        let s = g.initial_state();
        assert_eq!(s.active(), &set);
        assert_eq!(s.accounts().len(), 4 + 5, "explicit and synthetic");
        for (id, b) in g.accounts.iter().chain(&g.synthetic_accounts.accounts()) {
            assert_eq!(s.balance(id), *b);
        }
        // The synthetic ids and balances are the documented hashes, sorted.
        let mut pre = b"montana/synthetic-account".to_vec();
        pre.extend_from_slice(&9u64.to_le_bytes());
        pre.extend_from_slice(&1u64.to_le_bytes());
        let id1 = HashSuite::Sha256.hash(&pre).0;
        let b1 = 1 + u64::from_le_bytes(id1[..8].try_into().unwrap()) % 1_000_000;
        let all = g.synthetic_accounts.accounts();
        assert_eq!(all.len(), 5);
        assert!(all.contains(&(NodeId(id1), b1)));
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(all.iter().any(|a| a.1 > 1), "balances vary");
        // Another seed, other accounts.
        let other = Synthetic { count: 5, seed: 10 }.accounts();
        assert!(other.iter().all(|a| !all.contains(a)));
    }

    #[test]
    fn a_million_synthetic_accounts_are_two_numbers_in_the_manifest() {
        let (p, _) = peers(2);
        let mut c = ConsensusParams::defaults(1.0);
        c.synthetic = Synthetic {
            count: 1_000_000,
            seed: 3,
        };
        let g = Genesis::new_with(p.clone(), HashSuite::Sha256, 1_000, 10, 1.0, c.clone()).unwrap();
        assert!(g.to_json().len() < 20_000, "{} bytes", g.to_json().len());
        // The network id commits to the count and the seed.
        let mut other = c.clone();
        other.synthetic.seed = 4;
        let h = Genesis::new_with(p.clone(), HashSuite::Sha256, 1_000, 10, 1.0, other).unwrap();
        assert_ne!(h.network_id(), g.network_id());
        let mut other = c;
        other.synthetic.count -= 1;
        let h = Genesis::new_with(p, HashSuite::Sha256, 1_000, 10, 1.0, other).unwrap();
        assert_ne!(h.network_id(), g.network_id());
    }

    #[test]
    fn the_key_cache_never_answers_for_changed_peers() {
        let (g, _) = full();
        let id1 = g.node_id(1);
        let mut h = g.clone();
        h.peers.swap(0, 1);
        assert_eq!(h.node_id(0), id1);
        assert_eq!(h.verifying_key(0), g.verifying_key(1));
        assert_eq!(h.canonical_bytes()[..], h.canonical_bytes()[..]);
        assert_ne!(h.network_id(), g.network_id());
    }

    #[test]
    fn every_field_changes_the_network_id() {
        let (g, _) = full();
        let id = g.network_id();
        let mut variants = Vec::new();
        let mut v = g.clone();
        v.hash = HashSuite::Sha256;
        variants.push(v);
        let mut v = g.clone();
        v.d = 4_000;
        variants.push(v);
        let mut v = g.clone();
        v.checkpoints = 20;
        variants.push(v);
        let mut v = g.clone();
        v.window_secs = 2.0;
        variants.push(v);
        let mut v = g.clone();
        v.quorum = Quorum { num: 2, den: 3 };
        variants.push(v);
        let mut v = g.clone();
        v.proposer_timeout_secs = 9.0;
        variants.push(v);
        let mut v = g.clone();
        v.emission.per_window += 1;
        variants.push(v);
        let mut v = g.clone();
        v.emission.proposer_bps = 0;
        variants.push(v);
        let mut v = g.clone();
        v.peers[1].label = "other".into();
        variants.push(v);
        let mut v = g.clone();
        v.peers[1].address = "127.0.0.1:9999".parse().unwrap();
        variants.push(v);
        let mut v = g.clone();
        v.peers[0].bootstrap = false;
        v.peers[1].bootstrap = true;
        variants.push(v);
        let mut v = g.clone();
        v.peers.swap(0, 1);
        variants.push(v);
        let mut v = g.clone();
        v.peers[2].weight = 2;
        variants.push(v);
        let mut v = g.clone();
        v.accounts[0].1 = 2;
        variants.push(v);
        let mut v = g.clone();
        v.accounts.pop();
        variants.push(v);
        for v in variants {
            v.validate().unwrap();
            assert_ne!(v.network_id(), id, "{v:?}");
        }
    }

    #[test]
    fn rejects_bad_parameters_and_peers() {
        let (p, _) = peers(2);
        let ok = |d, k, s| Genesis::new(p.clone(), HashSuite::Sha256, d, k, s);
        assert!(ok(1_000, 10, 1.0).is_ok());
        assert!(ok(1_000, 0, 1.0).is_err());
        assert!(ok(1_005, 10, 1.0).is_err()); // D not a multiple of K
        assert!(ok(64_000, 32_001, 1.0).is_err()); // K over the cap
        assert!(ok(32_000, 32_000, 1.0).is_ok());
        assert!(ok(1_000, 10, 0.0).is_err());
        assert!(ok(1_000, 10, f64::NAN).is_err());

        let mut two = p.clone();
        two[1].bootstrap = true;
        assert!(Genesis::new(two, HashSuite::Sha256, 10, 1, 1.0).is_err());
        let mut none = p.clone();
        none[0].bootstrap = false;
        assert!(Genesis::new(none, HashSuite::Sha256, 10, 1, 1.0).is_err());
        let mut dup = p.clone();
        dup[1].label = dup[0].label.clone();
        assert!(Genesis::new(dup, HashSuite::Sha256, 10, 1, 1.0).is_err());
        let mut dup = p.clone();
        dup[1].signing_public_key = dup[0].signing_public_key.clone();
        assert!(Genesis::new(dup, HashSuite::Sha256, 10, 1, 1.0).is_err());
        let mut bad = p.clone();
        bad[0].noise_public_key = "zz".into();
        assert!(Genesis::new(bad, HashSuite::Sha256, 10, 1, 1.0).is_err());
        let mut bad = p.clone();
        bad[0].signing_public_key.truncate(100);
        assert!(Genesis::new(bad, HashSuite::Sha256, 10, 1, 1.0).is_err());
        assert!(Genesis::new(vec![], HashSuite::Sha256, 10, 1, 1.0).is_err());
        let mut zero = p.clone();
        zero[1].weight = 0;
        let e = Genesis::new(zero, HashSuite::Sha256, 10, 1, 1.0).unwrap_err();
        assert!(e.to_string().contains("weight 0"), "{e}");
        let mut huge = p.clone();
        huge[0].weight = u64::MAX;
        huge[1].weight = 1;
        let e = Genesis::new(huge, HashSuite::Sha256, 10, 1, 1.0).unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
    }

    #[test]
    fn rejects_bad_consensus_rules_and_accounts() {
        let (p, _) = peers(2);
        let with = |f: &dyn Fn(&mut ConsensusParams)| {
            let mut c = ConsensusParams::defaults(1.0);
            f(&mut c);
            Genesis::new_with(p.clone(), HashSuite::Sha256, 10, 1, 1.0, c)
        };
        let err = |f: &dyn Fn(&mut ConsensusParams)| with(f).unwrap_err().to_string();
        assert!(with(&|_| {}).is_ok());
        assert!(err(&|c| c.quorum = Quorum { num: 1, den: 3 }).contains("at least 1/2"));
        assert!(err(&|c| c.quorum = Quorum { num: 3, den: 3 }).contains("below 1"));
        assert!(err(&|c| c.quorum = Quorum { num: 0, den: 0 }).contains("below 1"));
        for t in [0.0, -1.0, f64::NAN, f64::INFINITY, 2e6] {
            let e = err(&|c| c.proposer_timeout_secs = t);
            assert!(e.contains("proposer_timeout_secs"), "{e}");
        }
        assert!(with(&|c| c.proposer_timeout_secs = 1e-3).is_ok());
        let e = err(&|c| c.emission.proposer_bps = 10_001);
        assert!(e.contains("emission"), "{e}");
        assert!(with(&|c| c.emission = Emission::new(0, 10_000).unwrap()).is_ok());
        let accs = synthetic_accounts(3);
        let e = err(&|c| c.accounts = vec![accs[0], accs[0]]);
        assert!(e.contains("listed twice"), "{e}");
        let e = err(&|c| c.accounts = vec![accs[1], accs[0]]);
        assert!(e.contains("sorted"), "{e}");
        let e = err(&|c| c.accounts = vec![(accs[0].0, 0)]);
        assert!(e.contains("balance 0"), "{e}");
        let e = err(&|c| c.accounts = vec![(accs[0].0, u64::MAX), accs[1]]);
        assert!(e.contains("overflows"), "{e}");
        assert!(with(&|c| c.accounts = vec![(accs[0].0, u64::MAX)]).is_ok());
    }

    #[test]
    fn more_peers_than_the_active_set_holds_are_refused() {
        // Validation stops at the count, before it looks at any key.
        let (p, _) = peers(1);
        let mut many = Vec::new();
        for i in 0..=MAX_ACTIVE {
            let mut q = p[0].clone();
            q.label = format!("n{i}");
            q.bootstrap = i == 0;
            many.push(q);
        }
        let e = Genesis::new(many, HashSuite::Sha256, 10, 1, 1.0).unwrap_err();
        assert!(e.to_string().contains("301 peers"), "{e}");
        assert!(e.to_string().contains("active set"), "{e}");
    }

    #[test]
    fn rejects_bad_canonical_bytes() {
        let (g, _) = full();
        let bytes = g.canonical_bytes();
        for cut in [0, 4, 5, 20, 60, bytes.len() - 41, bytes.len() - 1] {
            assert!(
                Genesis::from_canonical_bytes(&bytes[..cut]).is_err(),
                "{cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(Genesis::from_canonical_bytes(&long).is_err());
        let mut b = bytes.clone();
        b[0] ^= 1; // magic
        assert!(Genesis::from_canonical_bytes(&b).is_err());
        for version in [0, 1, 3] {
            let mut b = bytes.clone();
            b[4] = version;
            let e = Genesis::from_canonical_bytes(&b).unwrap_err();
            assert!(
                matches!(
                    e,
                    GenesisError::Codec(CodecError::UnsupportedVersion { .. })
                ),
                "{e}"
            );
        }
        let mut b = bytes.clone();
        b[5] = 9; // suite
        assert!(Genesis::from_canonical_bytes(&b).is_err());
        // Offsets after the transport string (46 bytes).
        let after = 4 + 1 + 1 + 8 + 4 + 8 + 2 + TRANSPORT.len();
        let edit = |at: usize, v: &[u8]| {
            let mut b = bytes.clone();
            b[at..at + v.len()].copy_from_slice(v);
            Genesis::from_canonical_bytes(&b).unwrap_err().to_string()
        };
        assert!(edit(after, &1u16.to_le_bytes()).contains("1/2")); // quorum 1/4
        assert!(edit(after + 2, &3u16.to_le_bytes()).contains("below 1")); // 3/3
        assert!(edit(after + 4, &0f64.to_bits().to_le_bytes()).contains("proposer_timeout"));
        assert!(edit(after + 4, &f64::NAN.to_bits().to_le_bytes()).contains("proposer_timeout"));
        assert!(edit(after + 20, &10_001u16.to_le_bytes()).contains("emission"));
        // The joining rules end the layout (26 bytes), each checked.
        let j = bytes.len() - 26;
        assert_eq!(bytes[j..j + 4], 7u32.to_le_bytes());
        assert!(edit(j, &0u32.to_le_bytes()).contains("candidate_windows"));
        assert!(edit(j + 4, &101u64.to_le_bytes()).contains("candidate_d"));
        assert!(edit(j + 12, &65u32.to_le_bytes()).contains("candidate_k"));
        assert!(edit(j + 16, &0u16.to_le_bytes()).contains("max_candidates"));
        assert!(edit(j + 18, &0u32.to_le_bytes()).contains("activation_delay"));
        assert!(edit(j + 22, &1u32.to_le_bytes()).contains("inactive_windows"));
        // The synthetic count and seed come before them: seed 9 with count
        // 0 is refused, and so is a count over the cap.
        let synth = bytes.len() - 26 - 12;
        assert_eq!(
            bytes[synth..j],
            [&5u32.to_le_bytes()[..], &9u64.to_le_bytes()].concat()
        );
        assert!(edit(synth, &0u32.to_le_bytes()).contains("seed 9 but count 0"));
        assert!(edit(synth, &u32::MAX.to_le_bytes()).contains("synthetic"));
        // The last peer's bootstrap byte and weight sit before the accounts.
        let peer_end = bytes.len() - 26 - 12 - 4 - 40 * g.accounts.len();
        assert!(edit(peer_end - 9, &[2]).contains("bootstrap byte"));
        assert!(edit(peer_end - 8, &0u64.to_le_bytes()).contains("weight 0"));
        // Accounts: a duplicate, a zero balance, a count past the bytes.
        let first = peer_end + 4;
        let a0 = bytes[first..first + 32].to_vec();
        assert!(edit(first + 40, &a0).contains("listed twice"));
        assert!(edit(first + 32, &0u64.to_le_bytes()).contains("balance 0"));
        let e = edit(peer_end, &5u32.to_le_bytes());
        assert!(e.contains("truncated"), "{e}");
        let e = edit(peer_end, &u32::MAX.to_le_bytes());
        assert!(e.contains("accounts"), "{e}");
    }

    fn write_genesis(dir: &Path, text: &str) -> std::path::PathBuf {
        let f = dir.join("g.json");
        std::fs::write(&f, text).unwrap();
        f
    }

    #[test]
    fn json_errors_are_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = write_genesis(dir.path(), "{\"version\": 2,\n \"hash\": \"md5\"}");
        let e = Genesis::load(&f).unwrap_err();
        assert!(matches!(e, GenesisError::Json { .. }), "{e}");
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
        let e = Genesis::load(&dir.path().join("none")).unwrap_err();
        assert!(matches!(e, GenesisError::Read { .. }));
    }

    #[test]
    fn a_version_1_manifest_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = peers(2);
        let g = Genesis::new(p, HashSuite::Sha256, 1_000, 10, 1.0).unwrap();
        // What a version-1 node wrote: no consensus fields.
        let mut v: serde_json::Value = serde_json::from_str(&g.to_json()).unwrap();
        let o = v.as_object_mut().unwrap();
        for k in ["quorum", "proposer_timeout_secs", "emission", "accounts"] {
            o.remove(k);
        }
        o.insert("version".into(), 1.into());
        let f = write_genesis(dir.path(), &v.to_string());
        let e = Genesis::load(&f).unwrap_err();
        assert!(matches!(e, GenesisError::Version { found: 1, .. }), "{e}");
        let line = e.to_string();
        assert_eq!(line.lines().count(), 1);
        assert!(line.contains("is version 1"), "{line}");
        assert!(line.contains("montana genesis new"), "{line}");
        assert!(line.contains(&f.display().to_string()), "{line}");
        // Version 1 with every version-2 field: still refused by version.
        let mut v: serde_json::Value = serde_json::from_str(&g.to_json()).unwrap();
        v["version"] = 1.into();
        let f = write_genesis(dir.path(), &v.to_string());
        let e = Genesis::load(&f).unwrap_err();
        assert!(matches!(e, GenesisError::Version { found: 1, .. }), "{e}");
        // A later version is named too.
        v["version"] = 7.into();
        let f = write_genesis(dir.path(), &v.to_string());
        let e = Genesis::load(&f).unwrap_err();
        assert!(matches!(e, GenesisError::Version { found: 7, .. }), "{e}");
        // The real thing loads.
        let f = write_genesis(dir.path(), &g.to_json());
        assert_eq!(Genesis::load(&f).unwrap(), g);
    }

    #[test]
    fn rejects_bad_json_fields() {
        let dir = tempfile::tempdir().unwrap();
        let (g, _) = full();
        let good: serde_json::Value = serde_json::from_str(&g.to_json()).unwrap();
        let load = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = good.clone();
            f(&mut v);
            let path = write_genesis(dir.path(), &v.to_string());
            Genesis::load(&path).map_err(|e| e.to_string())
        };
        assert!(load(&|_| {}).is_ok());
        type Edit = Box<dyn Fn(&mut serde_json::Value)>;
        let cases: Vec<(&str, Edit)> = vec![
            (
                "1/2",
                Box::new(|v| v["quorum"] = serde_json::json!({"num": 1, "den": 3})),
            ),
            (
                "below 1",
                Box::new(|v| v["quorum"] = serde_json::json!({"num": 3, "den": 3})),
            ),
            (
                "unknown field",
                Box::new(|v| v["quorum"]["extra"] = 1.into()),
            ),
            (
                "proposer_timeout_secs",
                Box::new(|v| v["proposer_timeout_secs"] = 0.into()),
            ),
            (
                "proposer_timeout_secs",
                Box::new(|v| v["proposer_timeout_secs"] = (-1.5).into()),
            ),
            (
                "missing field",
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("emission");
                }),
            ),
            (
                "emission",
                Box::new(|v| v["emission"]["proposer_bps"] = 10_001.into()),
            ),
            (
                "listed twice",
                Box::new(|v| {
                    let a = v["accounts"][0].clone();
                    v["accounts"][1] = a;
                }),
            ),
            (
                "hex",
                Box::new(|v| v["accounts"][0]["node_id"] = "zz".into()),
            ),
            (
                "hex",
                Box::new(|v| v["accounts"][0]["node_id"] = "ab".repeat(33).into()),
            ),
            (
                "balance 0",
                Box::new(|v| v["accounts"][0]["balance"] = 0.into()),
            ),
            ("weight 0", Box::new(|v| v["peers"][1]["weight"] = 0.into())),
            (
                "unknown field",
                Box::new(|v| v["acounts"] = serde_json::json!([])),
            ),
        ];
        for (want, f) in cases {
            let e = load(&*f).unwrap_err();
            assert!(e.contains(want), "want {want:?}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        // accounts may be left out (none); weight 1 may be written.
        let g2 = load(&|v| {
            v.as_object_mut().unwrap().remove("accounts");
            v["peers"][0]["weight"] = 1.into();
        })
        .unwrap();
        assert!(g2.accounts.is_empty());
        assert_eq!(g2.peers[0].weight, 1);
    }
}
