//! Restart delays: exponential backoff with a cap, forgiven after a stable run.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// A child that ran at least this long before exiting counts as healthy: the next delay
    /// starts again from `initial`.
    reset_after: Duration,
    /// Consecutive quick failures so far.
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, reset_after: Duration) -> Self {
        Backoff { initial, max: max.max(initial), reset_after, failures: 0 }
    }

    /// Delay before the `n`th consecutive restart (n ≥ 1): initial · 2^(n-1), capped at max.
    pub fn delay_for(&self, n: u32) -> Duration {
        let exponent = n.saturating_sub(1).min(31);
        let factor = 1u32 << exponent;
        self.initial.checked_mul(factor).map_or(self.max, |d| d.min(self.max))
    }

    /// Records an exit after `ran_for` and returns how long to wait before restarting.
    pub fn on_exit(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.reset_after {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.delay_for(self.failures)
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn doubles_then_caps() {
        let b = Backoff::new(ms(100), ms(1000), ms(10_000));
        let delays: Vec<_> = (1..=6).map(|n| b.delay_for(n)).collect();
        assert_eq!(delays, vec![ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]);
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let b = Backoff::new(ms(250), ms(30_000), ms(10_000));
        assert_eq!(b.delay_for(u32::MAX), ms(30_000));
        assert_eq!(b.delay_for(0), ms(250));
    }

    #[test]
    fn quick_failures_grow_and_stable_runs_reset() {
        let mut b = Backoff::new(ms(100), ms(5000), ms(10_000));
        assert_eq!(b.on_exit(ms(10)), ms(100));
        assert_eq!(b.on_exit(ms(10)), ms(200));
        assert_eq!(b.on_exit(ms(10)), ms(400));
        assert_eq!(b.failures(), 3);
        assert_eq!(b.on_exit(ms(60_000)), ms(100));
        assert_eq!(b.failures(), 1);
    }

    #[test]
    fn max_below_initial_is_raised() {
        let b = Backoff::new(ms(500), ms(100), ms(1));
        assert_eq!(b.delay_for(3), ms(500));
    }
}
