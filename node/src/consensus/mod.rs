//! Consensus: node ids and the active set ([`active`]), agreement on each
//! window by rounds with locks ([`agreement`]). Sans-IO: events in, outputs
//! out, rules in each module's docs and in docs/SPEC.md.

pub mod active;
pub mod agreement;
pub mod joining;
pub mod merkle;
pub mod propose;
pub mod state;
pub mod vote;
