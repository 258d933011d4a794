//! The step budget of one dispatch.
//!
//! Drivers kill a dispatch that runs too long (a watchdog of a second or two
//! on many systems), so no dispatch may run past about 100 ms. How many steps
//! fit depends on the device, the suite and how many segments run side by
//! side, so the budget is learnt: the first dispatch runs a few steps, and
//! each measured dispatch sets the next budget, growing at most fourfold at a
//! time so one noisy measurement cannot overshoot.
//!
//! Time per dispatch is not proportional to steps: each dispatch also costs
//! a fixed overhead (launch, reading and writing every lane's state), which
//! on a software adapter is most of the target. A rate model alone then
//! stalls at a step or two (1.25 steps' worth rounds down to 1), so while
//! dispatches run well under the target the budget also grows by a quarter.
//!
//! The rate comes from the last few dispatches together, not the latest
//! alone: with two dispatches in flight, a driver that signals completions
//! late (lavapipe does) charges one dispatch's time to its neighbour, and a
//! per-dispatch rate then swings between far too slow and far too fast.
//!
//! The model is deliberately pessimistic about lane counts: a dispatch with
//! fewer lanes than the one measured is assumed no faster per step (it is
//! faster once the device is not full), and one with more lanes is assumed to
//! take proportionally longer (it takes no longer until the device is full).

use std::collections::VecDeque;
use std::time::Duration;

/// Most a budget may grow from one measured dispatch to the next.
const MAX_GROWTH: f64 = 4.0;

/// Dispatches running under this fraction of the target grow regardless.
const UNDER: f64 = 0.8;

/// Dispatches whose times are pooled into one rate.
const WINDOW: usize = 4;

/// Lane-steps of the very first dispatch at most: a few milliseconds even on
/// a software adapter, whatever the lane count (2^17 lanes start at 8 steps).
const FIRST_WORK: usize = 1 << 20;

/// Learns steps per dispatch from measured dispatch times.
#[derive(Clone, Debug)]
pub struct StepTuner {
    target: Duration,
    initial: u32,
    max_steps: u32,
    /// Seconds per step and the lane count they were measured at.
    reference: Option<(f64, usize)>,
    /// The last few (lanes, steps, seconds) measured at one lane count.
    recent: VecDeque<(usize, u32, f64)>,
    /// The least next budget while recent dispatches run well under target.
    probe: Option<u32>,
}

impl StepTuner {
    /// Aims for dispatches of `target`, starting at `initial` steps and
    /// never exceeding `max_steps`.
    pub fn new(target: Duration, initial: u32, max_steps: u32) -> Self {
        let max_steps = max_steps.max(1);
        StepTuner {
            target,
            initial: initial.clamp(1, max_steps),
            max_steps,
            reference: None,
            recent: VecDeque::with_capacity(WINDOW),
            probe: None,
        }
    }

    /// Steps for the next dispatch of `lanes` segments.
    pub fn budget(&self, lanes: usize) -> u32 {
        let Some((secs_per_step, measured_lanes)) = self.reference else {
            let fit = (FIRST_WORK / lanes.max(1)).max(1);
            return self.initial.min(u32::try_from(fit).unwrap_or(u32::MAX));
        };
        let scale = (lanes as f64 / measured_lanes.max(1) as f64).max(1.0);
        let mut steps = self.target.as_secs_f64() / (secs_per_step * scale);
        if let Some(probe) = self.probe.filter(|_| lanes == measured_lanes) {
            steps = steps.max(f64::from(probe));
        }
        if steps.is_finite() {
            steps.clamp(1.0, self.max_steps as f64) as u32
        } else {
            self.max_steps
        }
    }

    /// Records that a dispatch of `steps` steps over `lanes` segments took
    /// `elapsed`.
    pub fn record(&mut self, lanes: usize, steps: u32, elapsed: Duration) {
        let lanes = lanes.max(1);
        if self.recent.back().is_some_and(|&(l, _, _)| l != lanes) {
            self.recent.clear();
        }
        if self.recent.len() == WINDOW {
            self.recent.pop_front();
        }
        self.recent
            .push_back((lanes, steps.max(1), elapsed.as_secs_f64()));
        let steps: f64 = self.recent.iter().map(|&(_, s, _)| f64::from(s)).sum();
        let secs: f64 = self.recent.iter().map(|&(_, _, t)| t).sum();
        let largest = self.recent.iter().map(|&(_, s, _)| s).max().unwrap_or(1);
        // Cap the implied next budget at MAX_GROWTH times the largest measured.
        let floor = self.target.as_secs_f64() / (MAX_GROWTH * f64::from(largest));
        self.reference = Some(((secs / steps).max(floor).max(f64::MIN_POSITIVE), lanes));
        let mean = secs / self.recent.len() as f64;
        let last = self.recent.back().map_or(1, |&(_, s, _)| s);
        self.probe = (mean < UNDER * self.target.as_secs_f64())
            .then(|| last.saturating_add((last / 4).max(1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn starts_small_and_grows_at_most_fourfold() {
        let mut t = StepTuner::new(100 * MS, 16, u32::MAX);
        assert_eq!(t.budget(1000), 16);
        // A very fast dispatch: growth is capped.
        t.record(1000, 16, Duration::from_micros(1));
        assert_eq!(t.budget(1000), 64);
        t.record(1000, 64, Duration::from_micros(1));
        assert_eq!(t.budget(1000), 256);
    }

    #[test]
    fn converges_on_the_target_time() {
        // A device doing 1,000 steps per ms at 1,000 lanes.
        let mut t = StepTuner::new(100 * MS, 1, u32::MAX);
        for _ in 0..20 {
            let steps = t.budget(1000);
            t.record(1000, steps, Duration::from_secs_f64(steps as f64 / 1e6));
        }
        let steps = t.budget(1000);
        assert!((99_000..=100_000).contains(&steps), "{steps}");
    }

    #[test]
    fn more_lanes_shrink_the_budget_fewer_do_not_grow_it() {
        let mut t = StepTuner::new(100 * MS, 1, u32::MAX);
        t.record(1000, 1000, 10 * MS);
        // 10 us per step at 1000 lanes: 10,000 steps fit in 100 ms.
        assert_eq!(t.budget(1000), 4000); // capped growth from 1000
        t.record(1000, 4000, 40 * MS);
        assert_eq!(t.budget(1000), 10_000);
        assert_eq!(t.budget(10), 10_000);
        assert_eq!(t.budget(4000), 2_500);
    }

    #[test]
    fn the_first_budget_shrinks_with_the_lanes() {
        let t = StepTuner::new(100 * MS, 64, u32::MAX);
        assert_eq!(t.budget(1), 64);
        assert_eq!(t.budget(1 << 14), 64);
        assert_eq!(t.budget(1 << 17), 8);
        assert_eq!(t.budget(1 << 22), 1);
    }

    #[test]
    fn completions_charged_to_the_wrong_dispatch_average_out() {
        // 6 ms per step in truth, but each wait returns one dispatch late:
        // a 1-step dispatch "takes" its 100-step neighbour's 600 ms and the
        // neighbour then "takes" 6 ms.
        let mut t = StepTuner::new(50 * MS, 1, u32::MAX);
        let truth = |steps: u32| steps as f64 * 0.006;
        let mut prev = 1u32;
        t.record(1000, 1, Duration::from_secs_f64(truth(1)));
        for i in 0..60 {
            let steps = t.budget(1000);
            // This dispatch is charged with the time of the one before.
            t.record(1000, steps, Duration::from_secs_f64(truth(prev)));
            prev = steps;
            // Settled, every dispatch runs close to the 50 ms target (a
            // per-dispatch rate swings between 12 and 200 ms here).
            if i >= 20 {
                let ms = truth(steps) * 1e3;
                assert!(
                    (25.0..=75.0).contains(&ms),
                    "dispatch {i}: {steps} steps, {ms} ms"
                );
            }
        }
    }

    #[test]
    fn a_large_fixed_overhead_does_not_stall_the_budget() {
        // lavapipe at 2^17 lanes: ~35 ms per dispatch plus 3 ms per step.
        let mut t = StepTuner::new(50 * MS, 1, u32::MAX);
        let time = |steps: u32| Duration::from_secs_f64(0.035 + 0.003 * steps as f64);
        for i in 0..40 {
            let steps = t.budget(1 << 17);
            t.record(1 << 17, steps, time(steps));
            if i >= 20 {
                let ms = time(steps).as_secs_f64() * 1e3;
                assert!(
                    (40.0..=60.0).contains(&ms),
                    "dispatch {i}: {steps} steps, {ms} ms"
                );
            }
        }
    }

    #[test]
    fn respects_the_maximum() {
        let mut t = StepTuner::new(100 * MS, 50, 7);
        assert_eq!(t.budget(1), 7);
        t.record(1, 7, Duration::ZERO);
        assert_eq!(t.budget(1), 7);
    }
}
