//! # montana-node: the Montana network node
//!
//! The library half of the `montana` binary. Today: the node's identity
//! ([`keys`]). The transport, windows, storage and status layers join here,
//! one module each.

pub mod keys;
pub mod net;
pub mod status;
