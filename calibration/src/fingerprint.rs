//! The host fingerprint: what a calibration's numbers depend on.
//!
//! A calibration stays valid while the CPU (model, hashing-related feature
//! flags, logical CPU count), the usable GPUs (adapter, driver) and the
//! program version stay the same. Memory is recorded for the operator's
//! benefit but not compared: it does not change hash rates, and the kernel's
//! reservations make `MemTotal` move between boots.

use montana_backends::Registry;
use montana_vdf::BackendKind;
use serde::{Deserialize, Serialize};

/// CPU feature flags that a backend of this project may use (x86 names from
/// `/proc/cpuinfo` "flags", Arm names from "Features"). Flags unrelated to
/// hashing (mitigations, virtualisation) would force needless re-calibrations.
const HASH_FEATURES: &[&str] = &[
    // x86
    "sse2", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "bmi2", "sha_ni", "aes", "vaes", "avx512f",
    "avx512vl", "avx512bw", "avx512dq", // Arm
    "asimd", "sha1", "sha2", "sha3", "sha512", "sve", "sve2",
];

/// One usable GPU adapter, as its backend reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuFingerprint {
    pub backend: String,
    pub adapter: String,
    pub api: String,
    pub driver: String,
    pub device_type: String,
}

/// What a calibration was measured on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostFingerprint {
    pub cpu_model: String,
    /// Hashing-related feature flags, sorted.
    pub cpu_features: Vec<String>,
    pub logical_cpus: usize,
    pub memory_bytes: u64,
    pub program_version: String,
    #[serde(default)]
    pub gpus: Vec<GpuFingerprint>,
}

/// (CPU model, hashing features, logical CPUs) of this host, without
/// probing any GPU: the key of the per-host rate cache.
pub fn cpu_identity() -> (String, Vec<String>, usize) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let (model, features, listed) = parse_cpuinfo(&cpuinfo);
    let cpus = if listed > 0 {
        listed
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    (model, features, cpus)
}

impl HostFingerprint {
    /// This host now: `/proc/cpuinfo`, `/proc/meminfo`, and the adapters of
    /// the registry's available GPU backends.
    pub fn detect(registry: &Registry, program_version: &str) -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let (cpu_model, cpu_features, logical_cpus) = cpu_identity();
        let gpus = registry
            .all()
            .iter()
            .filter(|b| b.kind() == BackendKind::Gpu)
            .filter(|b| registry.availability(b.as_ref()).is_available())
            .filter_map(|b| {
                b.adapter().map(|a| GpuFingerprint {
                    backend: b.name().to_string(),
                    adapter: a.name,
                    api: a.api,
                    driver: a.driver,
                    device_type: a.device_type,
                })
            })
            .collect();
        HostFingerprint {
            cpu_model,
            cpu_features,
            logical_cpus,
            memory_bytes: parse_mem_total(&meminfo),
            program_version: program_version.to_string(),
            gpus,
        }
    }

    /// Why a calibration made on `self` does not apply to `now`, or `None`.
    pub fn mismatch(&self, now: &HostFingerprint) -> Option<String> {
        if self.program_version != now.program_version {
            return Some(format!(
                "program version changed ({} -> {})",
                self.program_version, now.program_version
            ));
        }
        if self.cpu_model != now.cpu_model {
            return Some(format!(
                "CPU changed ({} -> {})",
                self.cpu_model, now.cpu_model
            ));
        }
        if self.cpu_features != now.cpu_features {
            return Some(format!(
                "CPU features changed ({} -> {})",
                self.cpu_features.join(" "),
                now.cpu_features.join(" ")
            ));
        }
        if self.logical_cpus != now.logical_cpus {
            return Some(format!(
                "logical CPU count changed ({} -> {})",
                self.logical_cpus, now.logical_cpus
            ));
        }
        if self.gpus != now.gpus {
            let names = |g: &[GpuFingerprint]| {
                if g.is_empty() {
                    "none".to_string()
                } else {
                    g.iter()
                        .map(|g| format!("{} driver {}", g.adapter, g.driver))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            return Some(format!(
                "GPU changed ({} -> {})",
                names(&self.gpus),
                names(&now.gpus)
            ));
        }
        None
    }
}

/// (model name, hashing features, processor count) from `/proc/cpuinfo`.
fn parse_cpuinfo(text: &str) -> (String, Vec<String>, usize) {
    let mut model = None;
    let mut features = std::collections::BTreeSet::new();
    let mut processors = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "processor" => processors += 1,
            // x86 says "model name"; Arm kernels say "CPU part"/"Hardware"
            // at best, so the first of these that appears names the CPU.
            "model name" | "Hardware" | "Model" => {
                model.get_or_insert_with(|| value.trim().to_string());
            }
            "flags" | "Features" => {
                for f in value.split_whitespace() {
                    if HASH_FEATURES.contains(&f) {
                        features.insert(f.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    (
        model.unwrap_or_else(|| std::env::consts::ARCH.to_string()),
        features.into_iter().collect(),
        processors,
    )
}

/// `MemTotal` in bytes (0 when unknown).
fn parse_mem_total(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\n\
        model name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 ssse3 sha_ni avx2 hypervisor\n\n\
        processor\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 ssse3 sha_ni avx2 hypervisor\n";

    #[test]
    fn parses_cpuinfo_and_meminfo() {
        let (model, features, n) = parse_cpuinfo(CPUINFO);
        assert_eq!(model, "AMD EPYC 7B13");
        assert_eq!(features, ["avx2", "sha_ni", "sse2", "ssse3"]);
        assert_eq!(n, 2);
        assert_eq!(
            parse_mem_total("MemTotal:       24567012 kB\nMemFree: 1 kB\n"),
            24_567_012 * 1024
        );
        assert_eq!(parse_mem_total(""), 0);
    }

    #[test]
    fn mismatch_names_the_change_and_ignores_memory() {
        let reg = Registry::new(montana_backends::registry::compiled());
        let a = HostFingerprint::detect(&reg, "montana 0.1.0");
        assert!(a.logical_cpus >= 1);
        assert_eq!(a.mismatch(&a.clone()), None);
        let more_memory = HostFingerprint {
            memory_bytes: a.memory_bytes + 1,
            ..a.clone()
        };
        assert_eq!(a.mismatch(&more_memory), None);
        let newer = HostFingerprint {
            program_version: "montana 9.9.9".into(),
            ..a.clone()
        };
        assert!(a.mismatch(&newer).unwrap().contains("program version"));
        let gpu = HostFingerprint {
            gpus: vec![GpuFingerprint {
                backend: "gpu".into(),
                adapter: "Some GPU".into(),
                api: "Vulkan".into(),
                driver: "1.0".into(),
                device_type: "DiscreteGpu".into(),
            }],
            ..a.clone()
        };
        assert!(a.mismatch(&gpu).unwrap().starts_with("GPU changed"));
        let other_cpu = HostFingerprint {
            cpu_model: "Other".into(),
            ..a.clone()
        };
        assert!(a.mismatch(&other_cpu).unwrap().starts_with("CPU changed"));
    }
}
