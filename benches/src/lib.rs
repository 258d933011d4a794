//! Criterion benchmarks for the montana backends live in `benches/kernels.rs`;
//! run them with `cargo bench -p montana-benches`. This library is empty: the
//! crate exists so the benchmarks have a home outside the shipped crates.
