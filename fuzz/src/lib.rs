//! The targets' list, shared by the seed writer and scripts/fuzz.

/// Every fuzz target (one per decoder).
pub const TARGETS: &[&str] = &[
    "frame",
    "envelope",
    "message",
    "proposal",
    "proof_mtvp",
    "proof_json",
    "genesis_json",
    "vote",
    "cement",
    "handshake",
    "status_http",
];
