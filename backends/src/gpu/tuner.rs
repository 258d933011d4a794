//! The step budget of one dispatch.
//!
//! Drivers kill a dispatch that runs too long (a watchdog of a second or two
//! on many systems), so no dispatch may run past about 100 ms. How many steps
//! fit depends on the device, the suite and how many segments run side by
//! side, so the budget is learnt: the first dispatch runs a few steps, and
//! each measured dispatch sets the next budget, growing at most fourfold at a
//! time so one noisy measurement cannot overshoot.
//!
//! The model is deliberately pessimistic about lane counts: a dispatch with
//! fewer lanes than the one measured is assumed no faster per step (it is
//! faster once the device is not full), and one with more lanes is assumed to
//! take proportionally longer (it takes no longer until the device is full).

use std::time::Duration;

/// Most a budget may grow from one measured dispatch to the next.
const MAX_GROWTH: f64 = 4.0;

/// Learns steps per dispatch from measured dispatch times.
#[derive(Clone, Debug)]
pub struct StepTuner {
    target: Duration,
    initial: u32,
    max_steps: u32,
    /// Seconds per step and the lane count they were measured at.
    reference: Option<(f64, usize)>,
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
        }
    }

    /// Steps for the next dispatch of `lanes` segments.
    pub fn budget(&self, lanes: usize) -> u32 {
        let Some((secs_per_step, measured_lanes)) = self.reference else {
            return self.initial;
        };
        let scale = (lanes as f64 / measured_lanes.max(1) as f64).max(1.0);
        let steps = self.target.as_secs_f64() / (secs_per_step * scale);
        if steps.is_finite() {
            steps.clamp(1.0, self.max_steps as f64) as u32
        } else {
            self.max_steps
        }
    }

    /// Records that a dispatch of `steps` steps over `lanes` segments took
    /// `elapsed`.
    pub fn record(&mut self, lanes: usize, steps: u32, elapsed: Duration) {
        let steps = f64::from(steps.max(1));
        let measured = elapsed.as_secs_f64() / steps;
        // Cap the implied next budget at MAX_GROWTH times this one.
        let floor = self.target.as_secs_f64() / (MAX_GROWTH * steps);
        self.reference = Some((measured.max(floor).max(f64::MIN_POSITIVE), lanes.max(1)));
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
    fn respects_the_maximum() {
        let mut t = StepTuner::new(100 * MS, 50, 7);
        assert_eq!(t.budget(1), 7);
        t.record(1, 7, Duration::ZERO);
        assert_eq!(t.budget(1), 7);
    }
}
