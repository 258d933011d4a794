//! The genesis manifest: a network's parameters and founding peers, and its
//! network id.
//!
//! The manifest is JSON (written by `montana genesis new`, read by every node
//! and by calibration). JSON text is not canonical (key order, spacing, number
//! forms), so the network id is SHA-256 of a canonical binary layout
//! (docs/SPEC.md section 6): two nodes agree on the id exactly when they agree
//! on every field that matters. The id is the Noise prologue, so a node with a
//! different genesis cannot even complete a handshake.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use montana_vdf::{ChainParams, HashSuite, TimeChain};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::codec::{CodecError, Reader, Writer};
use crate::keys::{VerifyingKey, SIGNING_PUBLIC_LEN};

/// The only manifest version this build reads and writes.
pub const GENESIS_VERSION: u8 = 1;
/// The transport suite of version 1 networks.
pub const TRANSPORT: &str = "Noise_XXhfs_25519+Kyber1024_ChaChaPoly_BLAKE2s";
/// The checkpoint cap: a proposal with K checkpoints must fit one 1 MiB
/// message (32 bytes each plus header and signature).
pub const MAX_GENESIS_CHECKPOINTS: u64 = 32_000;
/// Defaults of `montana genesis new`: the Montana network's parameters.
pub const DEFAULT_D: u64 = 325_000_000;
pub const DEFAULT_CHECKPOINTS: u64 = 6_500;
pub const DEFAULT_WINDOW_SECS: f64 = 60.0;
/// Most peers a genesis may list (peer ids are u16).
pub const MAX_PEERS: usize = 1024;
/// Longest label, in bytes.
pub const MAX_LABEL_LEN: usize = 64;

const MAGIC: &[u8; 4] = b"MTGN";

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
    #[error("invalid genesis: {0}")]
    Invalid(String),
    #[error("invalid canonical genesis bytes: {0}")]
    Codec(#[from] CodecError),
}

fn invalid(why: impl Into<String>) -> GenesisError {
    GenesisError::Invalid(why.into())
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

/// The manifest. Field names are the JSON keys (CONTEXT.md conventions).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Genesis {
    pub version: u8,
    pub hash: HashSuite,
    pub d: u64,
    pub checkpoints: u64,
    pub window_secs: f64,
    pub transport: String,
    pub peers: Vec<GenesisPeer>,
}

impl Genesis {
    /// A manifest from peers and parameters, validated.
    pub fn new(
        peers: Vec<GenesisPeer>,
        hash: HashSuite,
        d: u64,
        checkpoints: u64,
        window_secs: f64,
    ) -> Result<Self, GenesisError> {
        let g = Genesis {
            version: GENESIS_VERSION,
            hash,
            d,
            checkpoints,
            window_secs,
            transport: TRANSPORT.to_string(),
            peers,
        };
        g.validate()?;
        Ok(g)
    }

    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Self, GenesisError> {
        let text = std::fs::read_to_string(path).map_err(|source| GenesisError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let g: Genesis = serde_json::from_str(&text).map_err(|e| GenesisError::Json {
            path: path.display().to_string(),
            what: "genesis manifest",
            why: e.to_string(),
        })?;
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
        if self.peers.is_empty() || self.peers.len() > MAX_PEERS {
            return Err(invalid(format!(
                "{} peers (1..={MAX_PEERS} allowed)",
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

    /// The canonical binary layout (docs/SPEC.md section 6).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64 + self.peers.len() * 2100);
        w.bytes(MAGIC)
            .u8(self.version)
            .u8(self.hash.id())
            .u64(self.d)
            .u32(self.checkpoints as u32)
            .u64(self.window_secs.to_bits())
            .str16(&self.transport)
            .u16(self.peers.len() as u16);
        for p in &self.peers {
            w.str16(&p.label)
                .str16(&p.address.to_string())
                .bytes(&p.noise_public().expect("validated"))
                .bytes(&p.signing_public().expect("validated").to_bytes())
                .u8(p.bootstrap as u8);
        }
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
            peers.push(GenesisPeer {
                label,
                address,
                noise_public_key: hex::encode(noise),
                signing_public_key: hex::encode(signing),
                bootstrap,
            });
        }
        r.end()?;
        let g = Genesis {
            version: GENESIS_VERSION,
            hash,
            d,
            checkpoints,
            window_secs,
            transport,
            peers,
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
                }
            })
            .collect();
        (peers, keys)
    }

    #[test]
    fn json_and_canonical_round_trip() {
        let (p, _) = peers(3);
        let g = Genesis::new(p, HashSuite::Blake3, 2_000, 100, 1.5).unwrap();
        let back: Genesis = serde_json::from_str(&g.to_json()).unwrap();
        assert_eq!(back, g);
        let bytes = g.canonical_bytes();
        assert_eq!(Genesis::from_canonical_bytes(&bytes).unwrap(), g);
        assert_eq!(back.network_id(), g.network_id());
        assert_eq!(g.proposer(), 0);
        // The manifest carries the conventions' top-level keys.
        let v: serde_json::Value = serde_json::from_str(&g.to_json()).unwrap();
        for k in [
            "version",
            "hash",
            "d",
            "checkpoints",
            "window_secs",
            "transport",
            "peers",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["hash"], "blake3");
    }

    #[test]
    fn every_field_changes_the_network_id() {
        let (p, _) = peers(2);
        let g = Genesis::new(p, HashSuite::Sha256, 1_000, 10, 1.0).unwrap();
        let id = g.network_id();
        let mut variants = Vec::new();
        let mut v = g.clone();
        v.hash = HashSuite::Blake3;
        variants.push(v);
        let mut v = g.clone();
        v.d = 2_000;
        variants.push(v);
        let mut v = g.clone();
        v.checkpoints = 20;
        variants.push(v);
        let mut v = g.clone();
        v.window_secs = 2.0;
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
    }

    #[test]
    fn rejects_bad_canonical_bytes() {
        let (p, _) = peers(2);
        let g = Genesis::new(p, HashSuite::Sha256, 1_000, 10, 1.0).unwrap();
        let bytes = g.canonical_bytes();
        for cut in [0, 4, 5, 20, bytes.len() - 1] {
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
        let mut b = bytes.clone();
        b[4] = 2; // version
        assert!(Genesis::from_canonical_bytes(&b).is_err());
        let mut b = bytes.clone();
        b[5] = 9; // suite
        assert!(Genesis::from_canonical_bytes(&b).is_err());
        let mut b = bytes.clone();
        *b.last_mut().unwrap() = 2; // bootstrap byte
        assert!(Genesis::from_canonical_bytes(&b).is_err());
    }

    #[test]
    fn json_errors_are_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("g.json");
        std::fs::write(&f, "{\"version\": 1,\n \"hash\": \"md5\"}").unwrap();
        let e = Genesis::load(&f).unwrap_err().to_string();
        assert_eq!(e.lines().count(), 1, "{e}");
        let e = Genesis::load(&dir.path().join("none")).unwrap_err();
        assert!(matches!(e, GenesisError::Read { .. }));
    }
}
