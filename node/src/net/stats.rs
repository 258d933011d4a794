//! Per-peer event counters over sliding windows (last 5 minutes, last hour).
//!
//! A ring of 60 per-minute buckets: recording touches one bucket, reading
//! sums at most 60. A bucket is reused when its minute comes round again, so
//! memory is constant however long the node runs.

use std::time::{Duration, Instant};

const BUCKETS: usize = 60;
const MINUTE: Duration = Duration::from_secs(60);

/// What can happen to a peer connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A Ping answered by its Pong.
    HeartbeatOk,
    /// A Ping not answered before the next one was due.
    HeartbeatError,
    /// A connection ended (for any reason).
    Closed,
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    minute: u64,
    ok: u64,
    errors: u64,
    closed: u64,
}

/// Totals over one window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub ok: u64,
    pub errors: u64,
    pub closed: u64,
}

/// Counters for one peer.
#[derive(Clone, Debug)]
pub struct Counters {
    origin: Instant,
    buckets: [Bucket; BUCKETS],
}

impl Default for Counters {
    fn default() -> Self {
        Counters::new(Instant::now())
    }
}

impl Counters {
    pub fn new(origin: Instant) -> Self {
        Counters {
            origin,
            // minute u64::MAX marks an unused bucket.
            buckets: [Bucket {
                minute: u64::MAX,
                ..Bucket::default()
            }; BUCKETS],
        }
    }

    fn minute(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_secs()) / MINUTE.as_secs()
    }

    pub fn record(&mut self, event: Event) {
        self.record_at(event, Instant::now());
    }

    pub fn record_at(&mut self, event: Event, now: Instant) {
        let minute = self.minute(now);
        let b = &mut self.buckets[(minute % BUCKETS as u64) as usize];
        if b.minute != minute {
            *b = Bucket {
                minute,
                ..Bucket::default()
            };
        }
        match event {
            Event::HeartbeatOk => b.ok += 1,
            Event::HeartbeatError => b.errors += 1,
            Event::Closed => b.closed += 1,
        }
    }

    /// Totals over the last `minutes` minutes (the current one included).
    pub fn window_at(&self, minutes: u64, now: Instant) -> Window {
        let current = self.minute(now);
        let mut w = Window::default();
        for b in &self.buckets {
            if b.minute <= current && current - b.minute < minutes {
                w.ok += b.ok;
                w.errors += b.errors;
                w.closed += b.closed;
            }
        }
        w
    }

    pub fn window(&self, minutes: u64) -> Window {
        self.window_at(minutes, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_slide_and_buckets_are_reused() {
        let t0 = Instant::now();
        let at = |m: u64, s: u64| t0 + Duration::from_secs(m * 60 + s);
        let mut c = Counters::new(t0);
        c.record_at(Event::HeartbeatOk, at(0, 1));
        c.record_at(Event::HeartbeatOk, at(0, 59));
        c.record_at(Event::HeartbeatError, at(3, 0));
        c.record_at(Event::Closed, at(6, 30));
        let w = |m, now| c.window_at(m, now);
        assert_eq!(
            w(5, at(4, 0)),
            Window {
                ok: 2,
                errors: 1,
                closed: 0
            }
        );
        // Minute 0 leaves the 5-minute window at minute 5, stays in the hour.
        assert_eq!(
            w(5, at(6, 40)),
            Window {
                ok: 0,
                errors: 1,
                closed: 1
            }
        );
        assert_eq!(
            w(60, at(6, 40)),
            Window {
                ok: 2,
                errors: 1,
                closed: 1
            }
        );
        assert_eq!(
            w(60, at(62, 0)),
            Window {
                ok: 0,
                errors: 1,
                closed: 1
            }
        );
        assert_eq!(w(60, at(200, 0)), Window::default());
        // Minute 60 reuses minute 0's bucket without inheriting its counts.
        c.record_at(Event::HeartbeatOk, at(60, 0));
        assert_eq!(
            c.window_at(1, at(60, 1)),
            Window {
                ok: 1,
                errors: 0,
                closed: 0
            }
        );
        assert_eq!(c.window_at(60, at(60, 1)).ok, 1);
    }
}
