//! The state commitment: a Merkle tree over the consensus state's entries
//! sorted by key, checkable chunk by chunk.
//!
//! ```text
//! leaf(key, value) = SHA-256(0x00 || u32 len(key) || key || u32 len(value) || value)
//! node(l, r)       = SHA-256(0x01 || l || r)
//! mth([])          = SHA-256("")          (no entries)
//! mth([x])         = x
//! mth(D[0..n])     = node(mth(D[0..k]), mth(D[k..n])), k = largest power of 2 < n
//! state_root       = SHA-256(0x02 || u64 n || mth(leaves))
//! ```
//! (the tree shape of RFC 6962, lengths little-endian). Chunk i holds the
//! entries `[i*C, min(n, (i+1)*C))` for a power of two C; every such range
//! is one subtree of that shape, so a chunk is proved by the sibling hashes
//! on the path from its subtree to the top ([`chunk_proof`]), and checked on
//! its own against the root and n ([`verify_chunk`]): chunks from different
//! peers line up, and a node resuming a sync knows exactly which it has.

use montana_vdf::{Hash32, HashSuite};

fn sha(parts: &[&[u8]]) -> Hash32 {
    let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        buf.extend_from_slice(p);
    }
    HashSuite::Sha256.hash(&buf)
}

/// The hash of one entry.
pub fn leaf(key: &[u8], value: &[u8]) -> Hash32 {
    sha(&[
        &[0u8],
        &(key.len() as u32).to_le_bytes(),
        key,
        &(value.len() as u32).to_le_bytes(),
        value,
    ])
}

fn node(l: &Hash32, r: &Hash32) -> Hash32 {
    sha(&[&[1u8], &l.0, &r.0])
}

/// Largest power of two strictly below `n` (n >= 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The tree hash of `leaves` (RFC 6962 shape).
pub fn mth(leaves: &[Hash32]) -> Hash32 {
    match leaves.len() {
        0 => sha(&[]),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// The tree hash of leaves pushed one at a time, in order: a stack of
/// perfect subtrees (at most one per height, tallest first), folded from
/// the right at the end, which is the RFC 6962 shape of [`mth`]. Memory
/// O(log n) whatever the number of leaves.
#[derive(Debug, Default)]
pub struct Streaming {
    /// (height, hash), heights strictly decreasing.
    stack: Vec<(u32, Hash32)>,
    n: u64,
}

impl Streaming {
    pub fn push(&mut self, leaf: Hash32) {
        self.n += 1;
        let mut h = (0u32, leaf);
        while let Some(&(height, left)) = self.stack.last() {
            if height != h.0 {
                break;
            }
            self.stack.pop();
            h = (height + 1, node(&left, &h.1));
        }
        self.stack.push(h);
    }

    /// Leaves pushed so far.
    pub fn len(&self) -> u64 {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// [`mth`] of the leaves pushed.
    pub fn tree(&self) -> Hash32 {
        let mut it = self.stack.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return sha(&[]);
        };
        for (_, left) in it {
            acc = node(left, &acc);
        }
        acc
    }

    /// [`state_root`] of the leaves pushed.
    pub fn root(&self) -> Hash32 {
        root_of(self.n, &self.tree())
    }
}

/// The state root of `n` entries whose tree hash is `tree`.
pub fn root_of(n: u64, tree: &Hash32) -> Hash32 {
    sha(&[&[2u8], &n.to_le_bytes(), &tree.0])
}

/// The state root of these leaves (in key order).
pub fn state_root(leaves: &[Hash32]) -> Hash32 {
    root_of(leaves.len() as u64, &mth(leaves))
}

/// The hashes of the largest subtrees outside `[a, b)` of the `n`-leaf
/// tree, left to right (a range proof): with the leaves of `[a, b)` they
/// rebuild the tree ([`verify_range`]). `subtree(lo, hi)` gives the tree
/// hash of the leaves `[lo, hi)`; it is asked only for whole subtrees of
/// the tree's shape, O(log n) of them, so a caller with cached block
/// hashes need not produce every leaf. Empty when the range is empty or
/// past the end.
pub fn range_proof_with(
    n: u64,
    a: u64,
    b: u64,
    subtree: &mut dyn FnMut(u64, u64) -> Hash32,
) -> Vec<Hash32> {
    fn walk(
        lo: u64,
        hi: u64,
        a: u64,
        b: u64,
        subtree: &mut dyn FnMut(u64, u64) -> Hash32,
        out: &mut Vec<Hash32>,
    ) {
        if hi <= a || lo >= b {
            out.push(subtree(lo, hi));
        } else if !(a <= lo && hi <= b) {
            let k = split(hi - lo);
            walk(lo, lo + k, a, b, subtree, out);
            walk(lo + k, hi, a, b, subtree, out);
        }
    }
    let mut out = Vec::new();
    if n > 0 && a < b && b <= n {
        walk(0, n, a, b, subtree, &mut out);
    }
    out
}

/// [`range_proof_with`] over all the leaves.
pub fn range_proof(leaves: &[Hash32], a: u64, b: u64) -> Vec<Hash32> {
    range_proof_with(leaves.len() as u64, a, b, &mut |lo, hi| {
        mth(&leaves[lo as usize..hi as usize])
    })
}

/// Whether `range` are exactly the leaves `[a, a + len)` of the `n`-leaf
/// tree with state root `root`, given the proof of [`range_proof`].
pub fn verify_range(root: &Hash32, n: u64, a: u64, range: &[Hash32], proof: &[Hash32]) -> bool {
    let b = match a.checked_add(range.len() as u64) {
        Some(b) if !range.is_empty() && b <= n => b,
        _ => return false,
    };
    fn rebuild(
        lo: u64,
        hi: u64,
        a: u64,
        b: u64,
        range: &[Hash32],
        proof: &mut std::slice::Iter<'_, Hash32>,
    ) -> Option<Hash32> {
        if hi <= a || lo >= b {
            proof.next().copied()
        } else if a <= lo && hi <= b {
            Some(mth(&range[(lo - a) as usize..(hi - a) as usize]))
        } else {
            let k = split(hi - lo);
            let l = rebuild(lo, lo + k, a, b, range, proof)?;
            let r = rebuild(lo + k, hi, a, b, range, proof)?;
            Some(node(&l, &r))
        }
    }
    let mut it = proof.iter();
    match rebuild(0, n, a, b, range, &mut it) {
        Some(top) => it.next().is_none() && root_of(n, &top) == *root,
        None => false,
    }
}

/// Why a chunk does not check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk size {0} is not a power of two")]
    ChunkSize(u64),
    #[error("chunk {index} is past the last of {n} entries")]
    OutOfRange { index: u64, n: u64 },
    #[error("chunk {index} has {got} entries, expected {expected}")]
    WrongCount { index: u64, expected: u64, got: u64 },
    #[error("chunk {index} proof has {got} hashes, expected {expected}")]
    WrongProofLength {
        index: u64,
        expected: usize,
        got: usize,
    },
    #[error("chunk {index} does not match the state root")]
    Mismatch { index: u64 },
}

/// The path from the chunk's subtree to the top: for each level, bottom-up,
/// whether the sibling is on the right, plus the entries the chunk holds.
fn path(n: u64, index: u64, c: u64) -> Result<(Vec<bool>, u64), ChunkError> {
    if c == 0 || !c.is_power_of_two() {
        return Err(ChunkError::ChunkSize(c));
    }
    let a = index
        .checked_mul(c)
        .filter(|a| *a < n)
        .ok_or(ChunkError::OutOfRange { index, n })?;
    let b = (a + c).min(n);
    let (mut lo, mut hi) = (0u64, n);
    let mut sides = Vec::new();
    while (lo, hi) != (a, b) {
        let k = split(hi - lo);
        if b <= lo + k {
            sides.push(true); // sibling on the right
            hi = lo + k;
        } else {
            sides.push(false);
            lo += k;
        }
    }
    sides.reverse();
    Ok((sides, b - a))
}

/// The sibling hashes proving chunk `index` (size `c`) of `leaves`,
/// bottom-up.
pub fn chunk_proof(leaves: &[Hash32], index: u64, c: u64) -> Result<Vec<Hash32>, ChunkError> {
    let n = leaves.len() as u64;
    let (sides, _) = path(n, index, c)?;
    // Walk down again collecting siblings top-down.
    let a = index * c;
    let b = (a + c).min(n);
    let (mut lo, mut hi) = (0u64, n);
    let mut proof = Vec::with_capacity(sides.len());
    while (lo, hi) != (a, b) {
        let k = split(hi - lo);
        if b <= lo + k {
            proof.push(mth(&leaves[(lo + k) as usize..hi as usize]));
            hi = lo + k;
        } else {
            proof.push(mth(&leaves[lo as usize..(lo + k) as usize]));
            lo += k;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Checks that `chunk` (the leaf hashes of chunk `index`, in order) is
/// exactly that chunk of the state with `n` entries and root `root`.
pub fn verify_chunk(
    root: &Hash32,
    n: u64,
    index: u64,
    c: u64,
    chunk: &[Hash32],
    proof: &[Hash32],
) -> Result<(), ChunkError> {
    let (sides, count) = path(n, index, c)?;
    if chunk.len() as u64 != count {
        return Err(ChunkError::WrongCount {
            index,
            expected: count,
            got: chunk.len() as u64,
        });
    }
    if proof.len() != sides.len() {
        return Err(ChunkError::WrongProofLength {
            index,
            expected: sides.len(),
            got: proof.len(),
        });
    }
    let mut h = mth(chunk);
    for (sibling, right) in proof.iter().zip(sides) {
        h = if right {
            node(&h, sibling)
        } else {
            node(sibling, &h)
        };
    }
    if root_of(n, &h) == *root {
        Ok(())
    } else {
        Err(ChunkError::Mismatch { index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_proofs_verify_and_catch_changes() {
        for n in 1..40u64 {
            let leaves: Vec<Hash32> = (0..n).map(|i| leaf(&i.to_be_bytes(), b"v")).collect();
            let root = state_root(&leaves);
            for a in 0..n {
                for b in a + 1..=n {
                    let p = range_proof(&leaves, a, b);
                    let r = &leaves[a as usize..b as usize];
                    assert!(verify_range(&root, n, a, r, &p), "{n} {a} {b}");
                    assert!(!verify_range(&root, n + 1, a, r, &p));
                    if a > 0 {
                        assert!(!verify_range(&root, n, a - 1, r, &p));
                    }
                    if b - a > 1 {
                        assert!(!verify_range(&root, n, a, &r[1..], &p));
                    }
                    let mut bad = r.to_vec();
                    bad[0] = leaf(b"x", b"");
                    assert!(!verify_range(&root, n, a, &bad, &p));
                }
            }
        }
    }

    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash32> {
        (0..n as u32)
            .map(|i| leaf(&i.to_be_bytes(), b"v"))
            .collect()
    }

    #[test]
    fn streaming_matches_the_recursive_tree() {
        for n in 0..70 {
            let l = leaves(n);
            let mut s = Streaming::default();
            for x in &l {
                s.push(*x);
            }
            assert_eq!(s.len(), n as u64);
            assert_eq!(s.tree(), mth(&l), "{n} leaves");
            assert_eq!(s.root(), state_root(&l), "{n} leaves");
        }
    }

    #[test]
    fn known_shapes() {
        let l = leaves(3);
        assert_eq!(mth(&l), node(&node(&l[0], &l[1]), &l[2]));
        assert_eq!(mth(&l[..1]), l[0]);
        assert_eq!(mth(&[]), HashSuite::Sha256.hash(b""));
        // n is committed: the same tree hash with another count is another root.
        let t = mth(&l);
        assert_ne!(root_of(3, &t), root_of(4, &t));
        // Leaf encoding separates key from value.
        assert_ne!(leaf(b"ab", b"c"), leaf(b"a", b"bc"));
    }

    #[test]
    fn every_chunk_of_every_size_verifies() {
        for n in 1..70usize {
            let l = leaves(n);
            let root = state_root(&l);
            for c in [1u64, 2, 4, 8, 16, 64] {
                let chunks = (n as u64).div_ceil(c);
                for i in 0..chunks {
                    let p = chunk_proof(&l, i, c).unwrap();
                    let a = (i * c) as usize;
                    let b = ((i + 1) * c).min(n as u64) as usize;
                    verify_chunk(&root, n as u64, i, c, &l[a..b], &p).unwrap();
                }
                assert_eq!(
                    chunk_proof(&l, chunks, c),
                    Err(ChunkError::OutOfRange {
                        index: chunks,
                        n: n as u64
                    })
                );
            }
        }
    }

    #[test]
    fn chunk_rejections() {
        let l = leaves(40);
        let root = state_root(&l);
        let c = 16;
        let p = chunk_proof(&l, 1, c).unwrap();
        let chunk = &l[16..32];
        verify_chunk(&root, 40, 1, c, chunk, &p).unwrap();
        // A changed entry, a swapped pair, the chunk given as another index.
        let mut bad = chunk.to_vec();
        bad[3] = leaf(b"x", b"y");
        assert_eq!(
            verify_chunk(&root, 40, 1, c, &bad, &p),
            Err(ChunkError::Mismatch { index: 1 })
        );
        let mut swapped = chunk.to_vec();
        swapped.swap(0, 1);
        assert!(verify_chunk(&root, 40, 1, c, &swapped, &p).is_err());
        assert!(verify_chunk(&root, 40, 0, c, chunk, &p).is_err());
        // Another root, another n, a short or long chunk, a bad proof.
        assert!(verify_chunk(&leaf(b"r", b""), 40, 1, c, chunk, &p).is_err());
        assert!(verify_chunk(&root, 41, 1, c, chunk, &p).is_err());
        assert!(matches!(
            verify_chunk(&root, 40, 1, c, &chunk[1..], &p),
            Err(ChunkError::WrongCount { .. })
        ));
        assert!(matches!(
            verify_chunk(&root, 40, 1, c, chunk, &p[1..]),
            Err(ChunkError::WrongProofLength { .. })
        ));
        let mut q = p.clone();
        q[0] = leaf(b"z", b"");
        assert!(verify_chunk(&root, 40, 1, c, chunk, &q).is_err());
        assert_eq!(
            verify_chunk(&root, 40, 1, 3, chunk, &p),
            Err(ChunkError::ChunkSize(3))
        );
        assert!(matches!(
            verify_chunk(&root, 40, 3, c, chunk, &p),
            Err(ChunkError::OutOfRange { .. })
        ));
    }

    proptest! {
        #[test]
        fn random_sizes_verify_and_a_flipped_leaf_fails(n in 1usize..600, c_log in 0u32..7, pick in any::<u64>()) {
            let l = leaves(n);
            let root = state_root(&l);
            let c = 1u64 << c_log;
            let chunks = (n as u64).div_ceil(c);
            let i = pick % chunks;
            let p = chunk_proof(&l, i, c).unwrap();
            let a = (i * c) as usize;
            let b = ((i + 1) * c).min(n as u64) as usize;
            prop_assert!(verify_chunk(&root, n as u64, i, c, &l[a..b], &p).is_ok());
            let mut bad = l[a..b].to_vec();
            let j = (pick as usize / 7) % bad.len();
            bad[j] = leaf(b"forged", &pick.to_le_bytes());
            prop_assert!(verify_chunk(&root, n as u64, i, c, &bad, &p).is_err());
        }
    }
}
