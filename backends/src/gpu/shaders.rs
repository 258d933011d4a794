//! The WGSL kernels (in the workspace's `shaders/` folder) and the layout of
//! the data they share with the host.
//!
//! A kernel is a suite file defining `chain_step` followed by `verify.wgsl`,
//! the per-segment walk. Chain values travel as eight 32-bit words in the
//! suite's own word order (big-endian for SHA-256, little-endian for BLAKE3),
//! so a step's output is the next step's input with no byte swapping on the
//! device.

use montana_vdf::{Hash32, HashSuite, Segment};

const SHA256: &str = include_str!("../../../shaders/sha256.wgsl");
const BLAKE3: &str = include_str!("../../../shaders/blake3.wgsl");
const VERIFY: &str = include_str!("../../../shaders/verify.wgsl");

/// The kernel's entry point.
pub const ENTRY_POINT: &str = "verify";

/// Invocations per workgroup (`@workgroup_size` in verify.wgsl).
pub const WORKGROUP_SIZE: u32 = 64;

/// Bytes per lane record: value (8 words), claimed end (8), steps left (2).
pub const LANE_BYTES: usize = 18 * 4;

/// Bytes of the uniform parameters (lanes, steps, padding to 16).
pub const PARAMS_BYTES: usize = 16;

/// The pass flags the kernel writes per segment.
pub const FLAG_MATCH: u32 = 1;
pub const FLAG_MISMATCH: u32 = 2;
/// The driver ended the kernel's step loop before its count (see
/// [`super::MAX_STEPS_PER_DISPATCH`]): a device failure, not a verdict.
pub const FLAG_CUT: u32 = 3;

/// The complete WGSL source of `suite`'s verification kernel.
pub fn source(suite: HashSuite) -> String {
    let step = match suite {
        HashSuite::Sha256 => SHA256,
        HashSuite::Blake3 => BLAKE3,
    };
    format!("{step}\n{VERIFY}")
}

/// A chain value as the kernel's eight words.
pub fn to_words(suite: HashSuite, h: &Hash32) -> [u32; 8] {
    let mut w = [0u32; 8];
    for (word, bytes) in w.iter_mut().zip(h.0.chunks_exact(4)) {
        let b: [u8; 4] = bytes.try_into().expect("4 bytes");
        *word = match suite {
            HashSuite::Sha256 => u32::from_be_bytes(b),
            HashSuite::Blake3 => u32::from_le_bytes(b),
        };
    }
    w
}

/// The inverse of [`to_words`].
pub fn from_words(suite: HashSuite, w: &[u32]) -> Hash32 {
    let mut h = Hash32::ZERO;
    for (bytes, word) in h.0.chunks_exact_mut(4).zip(w) {
        bytes.copy_from_slice(&match suite {
            HashSuite::Sha256 => word.to_be_bytes(),
            HashSuite::Blake3 => word.to_le_bytes(),
        });
    }
    h
}

/// Appends one segment's lane record to `out`.
pub fn push_lane(out: &mut Vec<u8>, suite: HashSuite, seg: &Segment) {
    let words = to_words(suite, &seg.start)
        .into_iter()
        .chain(to_words(suite, &seg.end))
        .chain([seg.steps as u32, (seg.steps >> 32) as u32]);
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

/// The chain value held in a lane record read back from the device.
pub fn lane_value(suite: HashSuite, record: &[u8]) -> Hash32 {
    let words: Vec<u32> = record[..32]
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    from_words(suite, &words)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses and validates a kernel the way wgpu does before compiling it.
    fn validate(src: &str) -> Result<naga::valid::ModuleInfo, String> {
        let module = naga::front::wgsl::parse_str(src).map_err(|e| e.emit_to_string(src))?;
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
        .validate(&module)
        .map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn every_kernel_is_valid_wgsl() {
        for suite in HashSuite::ALL {
            let src = source(suite);
            validate(&src).unwrap_or_else(|e| panic!("{suite} kernel: {e}"));
            let module = naga::front::wgsl::parse_str(&src).unwrap();
            assert!(
                module.entry_points.iter().any(|e| e.name == ENTRY_POINT
                    && e.stage == naga::ShaderStage::Compute
                    && e.workgroup_size == [WORKGROUP_SIZE, 1, 1]),
                "{suite}: no compute entry point '{ENTRY_POINT}' of size {WORKGROUP_SIZE}"
            );
        }
    }

    #[test]
    fn the_validator_rejects_a_broken_kernel() {
        // The test above must be able to fail.
        let broken = source(HashSuite::Blake3).replace("fn chain_step", "fn not_the_step");
        assert!(validate(&broken).is_err());
    }

    #[test]
    fn the_lane_record_matches_the_wgsl_struct() {
        // array<u32, 8>, array<u32, 8>, vec2<u32>: 72 bytes, 8-byte aligned.
        let module = naga::front::wgsl::parse_str(&source(HashSuite::Sha256)).unwrap();
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).unwrap();
        let (handle, _) = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some("Lane"))
            .expect("struct Lane");
        assert_eq!(layouter[handle].size as usize, LANE_BYTES);
    }

    #[test]
    fn words_round_trip_in_each_suites_order() {
        let h = Hash32(std::array::from_fn(|i| i as u8));
        assert_eq!(to_words(HashSuite::Sha256, &h)[0], 0x00010203);
        assert_eq!(to_words(HashSuite::Blake3, &h)[0], 0x03020100);
        for suite in HashSuite::ALL {
            assert_eq!(from_words(suite, &to_words(suite, &h)), h);
            let seg = Segment {
                start: h,
                end: Hash32::ZERO,
                steps: (7 << 32) | 9,
            };
            let mut rec = Vec::new();
            push_lane(&mut rec, suite, &seg);
            assert_eq!(rec.len(), LANE_BYTES);
            assert_eq!(lane_value(suite, &rec), h);
            assert_eq!(&rec[64..72], &[9, 0, 0, 0, 7, 0, 0, 0]);
        }
    }
}
