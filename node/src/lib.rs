//! # montana-node: the Montana network node
//!
//! The library half of the `montana` binary: the node's identity
//! ([`keys`]), the genesis manifest ([`genesis`]), proposals ([`proposal`])
//! and messages ([`messages`]), storage ([`storage`]), the window state
//! machine ([`chain`]), the running node ([`node`]), the local devnet
//! ([`devnet`]) and the operator's soak and report tools ([`ops`]).

pub mod backend_choice;
pub mod chain;
pub mod codec;
pub mod consensus;
pub mod devnet;
pub mod genesis;
pub mod keys;
pub mod lograte;
pub mod messages;
pub mod net;
pub mod node;
pub mod ops;
pub mod proposal;
pub mod snapshot;
pub mod status;
pub mod storage;

#[cfg(test)]
mod testutil;
