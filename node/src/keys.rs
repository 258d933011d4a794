//! The node's identity: a Noise static key and a signing key.
//!
//! - Noise static key (X25519): authenticates the transport handshake
//!   (`Noise_XXhfs_25519+Kyber1024_ChaChaPoly_BLAKE2s`).
//! - Signing key (ML-DSA-65, FIPS 204): signs the handshake hash (binding the
//!   session to the genesis identity) and proposal headers. Signatures carry a
//!   context string per [`Domain`] so one can never be replayed as the other.
//!
//! On disk, in a keys directory (mode 0700): `noise_secret.key` and
//! `signing_secret.key` (hex, mode 0600) and `public.json` (both public keys,
//! hex). Existing keys are never overwritten: losing a node's identity would
//! drop it from its network's genesis.
//!
//! In memory, both secrets (and the hex text they are read from or written
//! as) live in `zeroize` wrappers, wiped when dropped; the ML-DSA secret is
//! kept as bytes and expanded into the library's key type only for the
//! moment of signing.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pqcrypto_mldsa::mldsa65;
use pqcrypto_traits::sign::{DetachedSignature as _, PublicKey as _, SecretKey as _};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::{ZeroizeOnDrop, Zeroizing};

/// File names inside a keys directory.
pub const NOISE_SECRET_FILE: &str = "noise_secret.key";
pub const SIGNING_SECRET_FILE: &str = "signing_secret.key";
pub const PUBLIC_FILE: &str = "public.json";

/// Noise pattern used only to generate X25519 keys with `snow`.
const KEYGEN_PATTERN: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";

/// ML-DSA-65 public key length in bytes.
pub const SIGNING_PUBLIC_LEN: usize = 1952;
/// ML-DSA-65 signature length in bytes.
pub const SIGNATURE_LEN: usize = 3309;

/// Errors reading, writing or using keys; one line each.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("keys already exist in {0} (refusing to overwrite a node identity)")]
    AlreadyExists(PathBuf),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid key file: {why}")]
    Malformed { path: PathBuf, why: String },
    #[error("{path} is readable by other users (mode {mode:o}); run: chmod 600 {path}")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },
}

/// What a signature is for: its ML-DSA context string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// The Noise handshake hash, sent as the first transport message.
    Handshake,
    /// A proposal header.
    Proposal,
    /// A prevote (consensus::vote).
    Prevote,
    /// A precommit (consensus::vote); a Cement carries these.
    Precommit,
    /// A proposer's progress beacon.
    Beacon,
    /// A round's proposer putting a proposal into its round.
    Propose,
    /// A candidate's chain for one window (consensus::joining).
    Candidate,
    /// A candidate asking to become a member (consensus::joining).
    Registration,
}

impl Domain {
    fn context(self) -> &'static [u8] {
        match self {
            Domain::Handshake => b"montana/handshake/v1",
            Domain::Proposal => b"montana/proposal/v1",
            Domain::Prevote => b"montana/prevote/v1",
            Domain::Precommit => b"montana/precommit/v1",
            Domain::Beacon => b"montana/beacon/v1",
            Domain::Propose => b"montana/propose/v1",
            Domain::Candidate => b"montana/candidate/v1",
            Domain::Registration => b"montana/registration/v1",
        }
    }
}

/// The public half of a node identity, as listed in a genesis peers file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeys {
    /// X25519 public key, 32 bytes, hex.
    pub noise_public_key: String,
    /// ML-DSA-65 public key, 1952 bytes, hex.
    pub signing_public_key: String,
}

/// An ML-DSA-65 public key that verifies signatures.
#[derive(Clone)]
pub struct VerifyingKey(mldsa65::PublicKey);

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({}..)", hex::encode(&self.to_bytes()[..8]))
    }
}

impl PartialEq for VerifyingKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes() == other.0.as_bytes()
    }
}

impl Eq for VerifyingKey {}

impl VerifyingKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        mldsa65::PublicKey::from_bytes(bytes)
            .map(VerifyingKey)
            .map_err(|e| KeyError::Invalid {
                what: "ML-DSA-65 public key",
                why: e.to_string(),
            })
    }

    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(s).map_err(|e| KeyError::Invalid {
            what: "ML-DSA-65 public key",
            why: e.to_string(),
        })?;
        Self::from_bytes(&bytes)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.as_bytes().to_vec()
    }

    /// Whether `signature` is this key's signature of `msg` in `domain`.
    pub fn verify(&self, domain: Domain, msg: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = mldsa65::DetachedSignature::from_bytes(signature) else {
            return false;
        };
        mldsa65::verify_detached_signature_ctx(&sig, msg, domain.context(), &self.0).is_ok()
    }
}

/// A node's full identity. The secrets are wiped from memory on drop.
pub struct NodeKeys {
    noise_secret: Zeroizing<[u8; 32]>,
    noise_public: [u8; 32],
    /// ML-DSA-65 secret key bytes.
    signing_secret: Zeroizing<Vec<u8>>,
    signing_public: VerifyingKey,
}

/// Every secret field is a [`Zeroizing`] wrapper.
impl ZeroizeOnDrop for NodeKeys {}

impl std::fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("NodeKeys")
            .field("noise_public", &hex::encode(self.noise_public))
            .field("signing_public", &self.signing_public)
            .finish_non_exhaustive()
    }
}

impl NodeKeys {
    /// Fresh random keys.
    pub fn generate() -> Result<Self, KeyError> {
        let params = KEYGEN_PATTERN.parse().expect("static Noise pattern");
        let kp = snow::Builder::new(params)
            .generate_keypair()
            .map_err(|e| KeyError::Invalid {
                what: "X25519 key generation",
                why: e.to_string(),
            })?;
        let private = Zeroizing::new(kp.private);
        let (pk, sk) = mldsa65::keypair();
        Ok(NodeKeys {
            noise_secret: Zeroizing::new(to32(&private, "X25519 secret key")?),
            noise_public: to32(&kp.public, "X25519 public key")?,
            signing_secret: Zeroizing::new(sk.as_bytes().to_vec()),
            signing_public: VerifyingKey(pk),
        })
    }

    /// The X25519 secret key, for the Noise handshake.
    pub fn noise_secret(&self) -> &[u8; 32] {
        &self.noise_secret
    }

    pub fn noise_public(&self) -> &[u8; 32] {
        &self.noise_public
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.signing_public
    }

    pub fn public_keys(&self) -> PublicKeys {
        PublicKeys {
            noise_public_key: hex::encode(self.noise_public),
            signing_public_key: hex::encode(self.signing_public.to_bytes()),
        }
    }

    /// Signs `msg` in `domain` (a detached ML-DSA-65 signature).
    pub fn sign(&self, domain: Domain, msg: &[u8]) -> Vec<u8> {
        let sk = mldsa65::SecretKey::from_bytes(&self.signing_secret)
            .expect("length checked when loaded or generated");
        mldsa65::detached_sign_ctx(msg, domain.context(), &sk)
            .as_bytes()
            .to_vec()
    }

    /// Writes the keys into `dir` (created with mode 0700 if absent). Fails
    /// if keys are already there.
    pub fn save(&self, dir: &Path) -> Result<(), KeyError> {
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| KeyError::Io {
                action,
                path,
                source,
            }
        };
        if dir.join(NOISE_SECRET_FILE).exists() || dir.join(SIGNING_SECRET_FILE).exists() {
            return Err(KeyError::AlreadyExists(dir.to_path_buf()));
        }
        fs::create_dir_all(dir).map_err(io("create", dir))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io("chmod", dir))?;
        write_secret(
            &dir.join(NOISE_SECRET_FILE),
            &Zeroizing::new(hex::encode(self.noise_secret.as_slice())),
        )?;
        write_secret(
            &dir.join(SIGNING_SECRET_FILE),
            &Zeroizing::new(hex::encode(self.signing_secret.as_slice())),
        )?;
        let public = serde_json::to_string_pretty(&self.public_keys()).expect("plain data");
        let p = dir.join(PUBLIC_FILE);
        fs::write(&p, public + "\n").map_err(io("write", &p))?;
        Ok(())
    }

    /// Reads keys written by [`NodeKeys::save`], refusing secret files that
    /// other users can read.
    pub fn load(dir: &Path) -> Result<Self, KeyError> {
        let noise_secret = read_secret(&dir.join(NOISE_SECRET_FILE))?;
        let signing_secret = read_secret(&dir.join(SIGNING_SECRET_FILE))?;
        let noise_path = dir.join(NOISE_SECRET_FILE);
        let noise_secret =
            Zeroizing::new(to32(&noise_secret, "X25519 secret key").map_err(|e| {
                KeyError::Malformed {
                    path: noise_path,
                    why: e.to_string(),
                }
            })?);
        let signing_path = dir.join(SIGNING_SECRET_FILE);
        mldsa65::SecretKey::from_bytes(&signing_secret).map_err(|e| KeyError::Malformed {
            path: signing_path.clone(),
            why: e.to_string(),
        })?;
        let public = fs::read_to_string(dir.join(PUBLIC_FILE)).map_err(|source| KeyError::Io {
            action: "read",
            path: dir.join(PUBLIC_FILE),
            source,
        })?;
        let public: PublicKeys =
            serde_json::from_str(&public).map_err(|e| KeyError::Malformed {
                path: dir.join(PUBLIC_FILE),
                why: e.to_string(),
            })?;
        let keys = NodeKeys {
            noise_public: x25519_public(&noise_secret)?,
            noise_secret,
            signing_public: VerifyingKey::from_hex(&public.signing_public_key)?,
            signing_secret,
        };
        // The public file must belong to these secrets.
        if keys.public_keys() != public {
            return Err(KeyError::Malformed {
                path: dir.join(PUBLIC_FILE),
                why: "public keys do not match the secret keys".into(),
            });
        }
        let probe = keys.sign(Domain::Handshake, b"probe");
        if !keys
            .signing_public
            .verify(Domain::Handshake, b"probe", &probe)
        {
            return Err(KeyError::Malformed {
                path: signing_path,
                why: "signing key does not match its public key".into(),
            });
        }
        Ok(keys)
    }
}

fn to32(bytes: &[u8], what: &'static str) -> Result<[u8; 32], KeyError> {
    bytes.try_into().map_err(|_| KeyError::Invalid {
        what,
        why: format!("expected 32 bytes, found {}", bytes.len()),
    })
}

/// The X25519 public key of a secret (clamped scalar times the base point).
fn x25519_public(secret: &[u8; 32]) -> Result<[u8; 32], KeyError> {
    Ok(curve25519_dalek::MontgomeryPoint::mul_base_clamped(*secret).to_bytes())
}

fn write_secret(path: &Path, hex_text: &str) -> Result<(), KeyError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| KeyError::Io {
            action: "create",
            path: path.to_path_buf(),
            source,
        })?;
    f.write_all(hex_text.as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .and_then(|_| f.sync_all())
        .map_err(|source| KeyError::Io {
            action: "write",
            path: path.to_path_buf(),
            source,
        })
}

fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let meta = fs::metadata(path).map_err(|source| KeyError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(|source| KeyError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?);
    hex::decode(text.trim())
        .map(Zeroizing::new)
        .map_err(|e| KeyError::Malformed {
            path: path.to_path_buf(),
            why: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_wiped_on_drop() {
        fn wiped_on_drop<T: ZeroizeOnDrop>(_: &T) {}
        let keys = NodeKeys::generate().unwrap();
        wiped_on_drop(&keys);
        wiped_on_drop(&keys.noise_secret);
        wiped_on_drop(&keys.signing_secret);
        // Signing from the wiped-on-drop bytes still works.
        let sig = keys.sign(Domain::Proposal, b"m");
        assert!(keys.verifying_key().verify(Domain::Proposal, b"m", &sig));
    }

    #[test]
    fn save_load_round_trip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let kd = dir.path().join("keys");
        let keys = NodeKeys::generate().unwrap();
        keys.save(&kd).unwrap();
        for f in [NOISE_SECRET_FILE, SIGNING_SECRET_FILE] {
            let mode = fs::metadata(kd.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let loaded = NodeKeys::load(&kd).unwrap();
        assert_eq!(loaded.public_keys(), keys.public_keys());
        assert_eq!(loaded.noise_secret(), keys.noise_secret());
        // Never overwrite.
        assert!(matches!(keys.save(&kd), Err(KeyError::AlreadyExists(_))));
    }

    #[test]
    fn signatures_are_bound_to_their_domain_and_key() {
        let a = NodeKeys::generate().unwrap();
        let b = NodeKeys::generate().unwrap();
        let sig = a.sign(Domain::Proposal, b"header");
        assert_eq!(sig.len(), SIGNATURE_LEN);
        assert_eq!(a.verifying_key().to_bytes().len(), SIGNING_PUBLIC_LEN);
        assert!(a.verifying_key().verify(Domain::Proposal, b"header", &sig));
        assert!(!a.verifying_key().verify(Domain::Handshake, b"header", &sig));
        assert!(!a.verifying_key().verify(Domain::Proposal, b"headeR", &sig));
        assert!(!b.verifying_key().verify(Domain::Proposal, b"header", &sig));
        assert!(!a
            .verifying_key()
            .verify(Domain::Proposal, b"header", &sig[1..]));
    }

    #[test]
    fn rejects_loose_permissions_and_mismatched_files() {
        let dir = tempfile::tempdir().unwrap();
        let kd = dir.path().join("k");
        NodeKeys::generate().unwrap().save(&kd).unwrap();
        let p = kd.join(SIGNING_SECRET_FILE);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = NodeKeys::load(&kd).unwrap_err();
        assert!(matches!(e, KeyError::Permissions { .. }));
        assert!(e.to_string().contains("chmod 600"));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();

        let other = NodeKeys::generate().unwrap();
        fs::write(
            kd.join(PUBLIC_FILE),
            serde_json::to_string(&other.public_keys()).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            NodeKeys::load(&kd),
            Err(KeyError::Malformed { .. })
        ));
        assert!(matches!(
            NodeKeys::load(&dir.path().join("missing")),
            Err(KeyError::Io { .. })
        ));
    }
}
