//! What this CPU can run, detected once.
//!
//! One binary runs everywhere (no `-C target-cpu=native`): each SIMD backend
//! asks [`Platform::get`] before calling a `#[target_feature]` kernel, and a
//! backend whose features are missing reports
//! [`Availability::Unavailable`] naming them. Detection uses `cpufeatures`
//! (CPUID plus the OS's XSAVE state for the wide registers), the same tokens
//! RustCrypto's hashes use.

use std::sync::OnceLock;

use montana_vdf::{Availability, Backend, BackendError, HashSuite, Operation};

// One token module per backend feature set (cpufeatures caches each check).
#[cfg(target_arch = "x86_64")]
cpufeatures::new!(cpu_sha_ni, "sha", "sse2", "ssse3", "sse4.1");
#[cfg(target_arch = "x86_64")]
cpufeatures::new!(cpu_sse41, "sse2", "ssse3", "sse4.1");
#[cfg(target_arch = "x86_64")]
cpufeatures::new!(cpu_avx2, "avx2");
#[cfg(target_arch = "x86_64")]
cpufeatures::new!(cpu_avx512, "avx512f", "avx512vl");

/// An instruction-set extension a backend needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// SHA extensions (`sha256rnds2`, `sha256msg1/2`), with SSE4.1 for the shuffles.
    ShaNi,
    /// SSE4.1 (with SSSE3's byte shuffles).
    Sse41,
    /// AVX2: 8 x 32-bit lanes.
    Avx2,
    /// AVX-512 F and VL: 16 x 32-bit lanes and native rotates on every width.
    Avx512,
}

impl Feature {
    pub const ALL: [Feature; 4] = [
        Feature::ShaNi,
        Feature::Sse41,
        Feature::Avx2,
        Feature::Avx512,
    ];

    /// The CPU flag names, as `/proc/cpuinfo` and CPUID documentation spell them.
    pub fn cpu_flags(self) -> &'static str {
        match self {
            Feature::ShaNi => "sha_ni+sse4.1",
            Feature::Sse41 => "sse4.1",
            Feature::Avx2 => "avx2",
            Feature::Avx512 => "avx512f+avx512vl",
        }
    }
}

/// The detected features of this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Platform {
    pub sha_ni: bool,
    pub sse41: bool,
    pub avx2: bool,
    pub avx512: bool,
}

impl Platform {
    /// This host's features, detected on first use.
    pub fn get() -> &'static Platform {
        static PLATFORM: OnceLock<Platform> = OnceLock::new();
        PLATFORM.get_or_init(Platform::detect)
    }

    #[cfg(target_arch = "x86_64")]
    fn detect() -> Platform {
        Platform {
            sha_ni: cpu_sha_ni::get(),
            sse41: cpu_sse41::get(),
            avx2: cpu_avx2::get(),
            avx512: cpu_avx512::get(),
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn detect() -> Platform {
        Platform::default()
    }

    pub fn has(&self, f: Feature) -> bool {
        match f {
            Feature::ShaNi => self.sha_ni,
            Feature::Sse41 => self.sse41,
            Feature::Avx2 => self.avx2,
            Feature::Avx512 => self.avx512,
        }
    }

    /// Available, or unavailable naming the missing feature.
    pub fn availability(&self, f: Feature) -> Availability {
        if self.has(f) {
            Availability::Available
        } else if cfg!(target_arch = "x86_64") {
            Availability::Unavailable(format!("this CPU lacks {}", f.cpu_flags()))
        } else {
            Availability::Unavailable(format!("{} needs an x86-64 CPU", f.cpu_flags()))
        }
    }

    /// The detected CPU flags (each once), for benchmark reports.
    pub fn feature_names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        for f in Feature::ALL.into_iter().filter(|f| self.has(*f)) {
            for flag in f.cpu_flags().split('+') {
                if !names.contains(&flag) {
                    names.push(flag);
                }
            }
        }
        names
    }
}

/// The check in front of every kernel call: `backend` implements the pair and
/// this CPU has `feature`. A `#[target_feature]` kernel must never run
/// without it.
pub fn require<B: Backend + ?Sized>(
    backend: &B,
    feature: Feature,
    suite: HashSuite,
    op: Operation,
) -> Result<(), BackendError> {
    backend.check_supported(suite, op)?;
    match Platform::get().availability(feature) {
        Availability::Available => Ok(()),
        Availability::Unavailable(reason) => Err(BackendError::Unavailable {
            backend: backend.name().to_string(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_is_consistent() {
        let p = Platform::get();
        for f in Feature::ALL {
            let a = p.availability(f);
            assert_eq!(a.is_available(), p.has(f));
            if let Some(r) = a.reason() {
                assert!(r.contains(f.cpu_flags()), "{r}");
            }
        }
        // Every x86-64 CPU with AVX2 has SSE4.1; AVX-512 implies AVX2.
        assert!(!p.avx2 || p.sse41);
        assert!(!p.avx512 || p.avx2);
    }
}
