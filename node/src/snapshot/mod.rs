//! Fast-sync: a new or far-behind node starts from a verified snapshot of
//! the consensus state instead of replaying history (docs/SPEC.md section
//! 13).
//!
//! - [`format`]: the manifest and chunk bytes, and their checks.
//! - [`certificate`]: membership certificates, the way from the genesis's
//!   active set to the active set of the snapshot window.
//! - [`messages`]: the request and answer messages (types 26 to 31).
//! - [`sync`]: the syncing side, sans-IO (events in, actions out).
//! - [`staging`]: where verified chunks go on disk, resumable.
//! - [`disk`]: the serving side's snapshots on disk (written from a RocksDB
//!   checkpoint off the event loop, the newest two kept) and chunk serving.

pub mod certificate;
pub mod disk;
pub mod format;
pub mod messages;
pub mod staging;
pub mod sync;

/// Cemented windows between two snapshots unless configured otherwise.
pub const DEFAULT_SNAPSHOT_INTERVAL: u64 = 100;
/// Snapshots a node keeps (older ones are pruned).
pub const SNAPSHOTS_KEPT: usize = 2;
/// A node this many windows behind a verified tip fast-syncs unless
/// configured otherwise (`--fast-sync-threshold`).
pub const DEFAULT_FAST_SYNC_THRESHOLD: u64 = 1_000;

#[cfg(test)]
mod tests;
