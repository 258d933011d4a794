//! Log lines that others can cause, rate-limited per source.
//!
//! A hostile peer must not be able to fill the disk through the log (the
//! first deployment lost a disk to a log flood): every event it causes is
//! counted where it is counted (metrics, `rejected`), but a line is written
//! at most once per [`LogRate::every`] per key (a peer and a reason, a
//! source IP), carrying how many were left out since the line before.
//! Memory is bounded: at most `cap` keys are remembered; beyond that,
//! after forgetting the stale ones, events are counted but not logged.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The period of the node's rate-limited lines: one a minute per key.
pub const LOG_EVERY: Duration = Duration::from_secs(60);
/// Keys remembered by the node's limiters.
pub const MAX_LOG_KEYS: usize = 4096;

/// Per-key log rate limiter.
#[derive(Debug)]
pub struct LogRate<K> {
    every: Duration,
    cap: usize,
    /// Per key: when a line was last written, and events left out since.
    last: HashMap<K, (Instant, u64)>,
}

impl<K: Hash + Eq> LogRate<K> {
    pub fn new(every: Duration, cap: usize) -> Self {
        LogRate {
            every,
            cap,
            last: HashMap::new(),
        }
    }

    /// The node's default: [`LOG_EVERY`], [`MAX_LOG_KEYS`].
    pub fn per_minute() -> Self {
        Self::new(LOG_EVERY, MAX_LOG_KEYS)
    }

    /// An event for `key` at `now`: `Some(left_out)` if a line should be
    /// written now (`left_out` events of this key since the last line were
    /// not), `None` if it is only to be counted.
    pub fn allow(&mut self, key: K, now: Instant) -> Option<u64> {
        if let Some((at, left_out)) = self.last.get_mut(&key) {
            if now.saturating_duration_since(*at) < self.every {
                *left_out += 1;
                return None;
            }
            let n = *left_out;
            *at = now;
            *left_out = 0;
            return Some(n);
        }
        if self.last.len() >= self.cap {
            let every = self.every;
            self.last
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < every);
            if self.last.len() >= self.cap {
                return None;
            }
        }
        self.last.insert(key, (now, 0));
        Some(0)
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_and_period_with_the_count_left_out() {
        let mut r = LogRate::new(Duration::from_secs(60), 16);
        let t0 = Instant::now();
        assert_eq!(r.allow((1, "a"), t0), Some(0));
        for s in 1..=59 {
            assert_eq!(r.allow((1, "a"), t0 + Duration::from_secs(s)), None);
        }
        // Other keys are not held back by this one.
        assert_eq!(r.allow((1, "b"), t0), Some(0));
        assert_eq!(r.allow((2, "a"), t0), Some(0));
        assert_eq!(r.allow((1, "a"), t0 + Duration::from_secs(60)), Some(59));
        assert_eq!(r.allow((1, "a"), t0 + Duration::from_secs(61)), None);
        assert_eq!(r.allow((1, "a"), t0 + Duration::from_secs(200)), Some(1));
    }

    #[test]
    fn memory_is_bounded_and_stale_keys_are_forgotten() {
        let mut r = LogRate::new(Duration::from_secs(60), 8);
        let t0 = Instant::now();
        for k in 0..8u32 {
            assert_eq!(r.allow(k, t0), Some(0));
        }
        assert_eq!(r.allow(100, t0 + Duration::from_secs(1)), None, "full");
        assert_eq!(r.len(), 8);
        assert_eq!(r.allow(100, t0 + Duration::from_secs(61)), Some(0));
        assert_eq!(r.len(), 1, "the stale ones forgotten");
    }
}
