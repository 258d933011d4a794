//! The operator's tools behind `montana soak` and `montana report`: a soak
//! watchdog that records every node's `/status` to a bounded JSON-lines
//! file, and a retrospective that turns such a file into a markdown report
//! with plots and a verdict per component; and `montana accounts`, a
//! node's balances read from its database while it runs.

pub mod accounts;
mod plot;
pub mod report;
pub mod soak;
