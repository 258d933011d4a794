//! The order in which `auto` prefers backends for one (suite, operation).
//!
//! - [`Ranking::Static`]: each backend's [`Backend::auto_rank`], written
//!   from the figures of docs/BENCHMARKS.md for the CPU classes measured
//!   (Intel with AVX-512: `avx512` leads SHA-256 and BLAKE3 verification;
//!   Zen 3 with SHA-NI and AVX2: `sha-ni` for SHA-256, `avx2` for BLAKE3
//!   verification, `sse41` for BLAKE3 evaluation). Used when this host has
//!   no measurements.
//! - [`Ranking::Measured`]: this host's own rates (the node's calibration
//!   file, or the per-host cache `montana bench` and `montana calibrate`
//!   write). The fastest measured backend leads, except that backends
//!   within [`TIE_SHARE`] (10 %) of the fastest count as tied and the
//!   static rank breaks the tie: rates on a shared host swing by more than
//!   that between runs, so a 3 % lead is noise, and a tie broken the same
//!   way every time keeps the choice stable. The pick is thus never more
//!   than 10 % slower than the fastest measured. Backends without a rate
//!   for the pair follow the measured ones, in static order.
//!
//! Either way only backends `auto` may choose take part: available here,
//! supporting the pair, with an `auto_rank` (a software GPU adapter has
//! none unless allowed).

use std::cmp::Reverse;
use std::sync::Arc;

use montana_vdf::{Backend, HashSuite, Operation};

/// Rates within this share of the fastest are a tie (see the module docs).
pub const TIE_SHARE: f64 = 0.10;

/// One measured rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Rate {
    pub backend: String,
    pub suite: HashSuite,
    pub op: Operation,
    /// Threads it was measured with (evaluation: 1).
    pub threads: usize,
    pub hashes_per_sec: f64,
}

/// Where `auto`'s order comes from; see the module docs.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Ranking {
    #[default]
    Static,
    Measured(Vec<Rate>),
}

/// A candidate in order, with its measured rate when the ranking has one.
#[derive(Clone)]
pub struct Ranked {
    pub backend: Arc<dyn Backend>,
    pub hashes_per_sec: Option<f64>,
}

impl Ranking {
    /// The rates this ranking compares for the pair: one thread count only
    /// (one thread when measured, else the fewest measured), so no backend
    /// wins by having been measured on more threads.
    pub fn rates_for(&self, suite: HashSuite, op: Operation) -> Vec<&Rate> {
        let Ranking::Measured(rates) = self else {
            return Vec::new();
        };
        let pair: Vec<&Rate> = rates
            .iter()
            .filter(|r| {
                r.suite == suite
                    && r.op == op
                    && r.hashes_per_sec.is_finite()
                    && r.hashes_per_sec > 0.0
            })
            .collect();
        let Some(threads) = pair.iter().map(|r| r.threads).min() else {
            return Vec::new();
        };
        pair.into_iter().filter(|r| r.threads == threads).collect()
    }

    /// The measured rate of `backend` for the pair, if any.
    pub fn rate(&self, backend: &str, suite: HashSuite, op: Operation) -> Option<f64> {
        self.rates_for(suite, op)
            .into_iter()
            .filter(|r| r.backend == backend)
            .map(|r| r.hashes_per_sec)
            .max_by(f64::total_cmp)
    }

    /// `candidates` (registry order, each with its static rank) best first.
    pub fn order(
        &self,
        suite: HashSuite,
        op: Operation,
        candidates: Vec<(Arc<dyn Backend>, u32)>,
    ) -> Vec<Ranked> {
        // Static order: rank, then registry order (a stable sort).
        let mut by_rank: Vec<(Arc<dyn Backend>, u32)> = candidates;
        by_rank.sort_by_key(|(_, r)| Reverse(*r));
        let rated: Vec<(Ranked, u32)> = by_rank
            .into_iter()
            .map(|(backend, rank)| {
                let hashes_per_sec = self.rate(backend.name(), suite, op);
                (
                    Ranked {
                        backend,
                        hashes_per_sec,
                    },
                    rank,
                )
            })
            .collect();
        let (mut measured, unmeasured): (Vec<_>, Vec<_>) = rated
            .into_iter()
            .partition(|(r, _)| r.hashes_per_sec.is_some());
        let rate = |r: &Ranked| r.hashes_per_sec.unwrap_or(0.0);
        measured.sort_by(|a, b| rate(&b.0).total_cmp(&rate(&a.0)));
        if let Some(best) = measured.first().map(|(r, _)| rate(r)) {
            // The tie: the best static rank among those within TIE_SHARE
            // leads (the first such in rate order when ranks are equal).
            let floor = best * (1.0 - TIE_SHARE);
            let lead = (0..measured.len())
                .filter(|&i| rate(&measured[i].0) >= floor)
                .max_by_key(|&i| (measured[i].1, Reverse(i)))
                .unwrap_or(0);
            let leader = measured.remove(lead);
            measured.insert(0, leader);
        }
        measured
            .into_iter()
            .chain(unmeasured)
            .map(|(r, _)| r)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use montana_vdf::{
        Availability, BackendError, BackendKind, Segment, VerifyOptions, VerifyOutcome,
    };

    struct Named(&'static str);
    impl Backend for Named {
        fn name(&self) -> &'static str {
            self.0
        }
        fn kind(&self) -> BackendKind {
            BackendKind::Simd
        }
        fn availability(&self) -> Availability {
            Availability::Available
        }
        fn lanes(&self) -> usize {
            1
        }
        fn supports(&self, _: HashSuite, _: Operation) -> bool {
            true
        }
        fn verify(
            &self,
            _: HashSuite,
            _: &[Segment],
            _: &VerifyOptions,
        ) -> Result<VerifyOutcome, BackendError> {
            Ok(VerifyOutcome::Valid)
        }
    }

    fn candidates(ranks: &[(&'static str, u32)]) -> Vec<(Arc<dyn Backend>, u32)> {
        ranks
            .iter()
            .map(|(n, r)| (Arc::new(Named(n)) as Arc<dyn Backend>, *r))
            .collect()
    }

    fn rate(backend: &str, threads: usize, hps: f64) -> Rate {
        Rate {
            backend: backend.into(),
            suite: HashSuite::Sha256,
            op: Operation::Verify,
            threads,
            hashes_per_sec: hps,
        }
    }

    fn names(ranking: &Ranking, ranks: &[(&'static str, u32)]) -> Vec<&'static str> {
        ranking
            .order(HashSuite::Sha256, Operation::Verify, candidates(ranks))
            .iter()
            .map(|r| r.backend.name())
            .collect()
    }

    const RANKS: [(&str, u32); 3] = [("a", 10), ("b", 30), ("c", 20)];

    #[test]
    fn static_order_is_the_rank_then_the_registry_order() {
        assert_eq!(names(&Ranking::Static, &RANKS), ["b", "c", "a"]);
        assert_eq!(
            names(&Ranking::Static, &[("x", 5), ("y", 5), ("z", 9)]),
            ["z", "x", "y"]
        );
    }

    #[test]
    fn the_fastest_measured_leads_and_unmeasured_follow_in_static_order() {
        let m = Ranking::Measured(vec![rate("a", 1, 300.0), rate("c", 1, 100.0)]);
        assert_eq!(names(&m, &RANKS), ["a", "c", "b"]);
        assert_eq!(
            m.rate("a", HashSuite::Sha256, Operation::Verify),
            Some(300.0)
        );
        assert_eq!(m.rate("b", HashSuite::Sha256, Operation::Verify), None);
        // Another pair has no rates: static order.
        assert_eq!(
            m.order(HashSuite::Blake3, Operation::Verify, candidates(&RANKS))[0]
                .backend
                .name(),
            "b"
        );
    }

    #[test]
    fn within_ten_percent_the_static_rank_breaks_the_tie() {
        // b (rank 30) is 8 % slower than a: a tie, b leads.
        let m = Ranking::Measured(vec![rate("a", 1, 100.0), rate("b", 1, 92.0)]);
        assert_eq!(names(&m, &RANKS)[0], "b");
        // 12 % slower: a real difference, a leads.
        let m = Ranking::Measured(vec![rate("a", 1, 100.0), rate("b", 1, 88.0)]);
        assert_eq!(names(&m, &RANKS), ["a", "b", "c"]);
    }

    #[test]
    fn one_thread_count_is_compared() {
        // b measured only on 8 threads: it is not compared with a's one-thread rate.
        let m = Ranking::Measured(vec![rate("a", 1, 100.0), rate("b", 8, 700.0)]);
        assert_eq!(names(&m, &RANKS), ["a", "b", "c"]);
        let m = Ranking::Measured(vec![rate("a", 4, 100.0), rate("c", 4, 500.0)]);
        assert_eq!(names(&m, &RANKS), ["c", "a", "b"]);
        // Nonsense rates count as unmeasured.
        let m = Ranking::Measured(vec![rate("a", 1, f64::NAN), rate("c", 1, 0.0)]);
        assert_eq!(names(&m, &RANKS), ["b", "c", "a"]);
    }
}
