//! A timer queue for a handful of periodic tasks: which are due, and when the next one is (so
//! the main loop knows it may sleep on WFI until the next tick).

use crate::time::Instant;

/// A periodic timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Periodic {
    /// Period in microseconds.
    pub period_us: u32,
    /// The next release.
    pub next: Instant,
}

impl Periodic {
    /// A timer first due at `first`.
    pub const fn new(first: Instant, period_us: u32) -> Self {
        Self { period_us, next: first }
    }

    /// If due at `now`, returns the release instant it was due at and schedules the next one.
    /// Releases missed entirely (the core was busy for more than a period) are skipped and
    /// counted in the second value, so a late core does not run a burst of stale jobs.
    pub fn poll(&mut self, now: Instant) -> Option<(Instant, u32)> {
        if !now.reached(self.next) {
            return None;
        }
        let release = self.next;
        let late = now.since(release) as u32;
        let skipped = late / self.period_us;
        let release = release.add_us(skipped * self.period_us);
        self.next = release.add_us(self.period_us);
        Some((release, skipped))
    }
}

/// Up to `N` periodic timers, identified by index.
pub struct TimerQueue<const N: usize> {
    timers: [Option<Periodic>; N],
}

impl<const N: usize> Default for TimerQueue<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> TimerQueue<N> {
    /// No timers.
    pub const fn new() -> Self {
        Self { timers: [None; N] }
    }

    /// Sets timer `id` (an index below `N`).
    pub fn set(&mut self, id: usize, timer: Periodic) {
        self.timers[id] = Some(timer);
    }

    /// The first due timer at `now`: its id, release instant and skipped releases.
    pub fn poll(&mut self, now: Instant) -> Option<(usize, Instant, u32)> {
        self.timers.iter_mut().enumerate().find_map(|(id, t)| {
            let (release, skipped) = t.as_mut()?.poll(now)?;
            Some((id, release, skipped))
        })
    }

    /// The earliest next release, if any timer is set.
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        self.timers.iter().flatten().map(|t| t.next).min_by_key(|next| next.since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_releases_and_skips() {
        let mut t = Periodic::new(Instant(1000), 1000);
        assert_eq!(t.poll(Instant(999)), None);
        assert_eq!(t.poll(Instant(1003)), Some((Instant(1000), 0)));
        assert_eq!(t.poll(Instant(1500)), None);
        // 3.2 periods late: releases 2000, 3000 are skipped, 4000 runs.
        assert_eq!(t.poll(Instant(4200)), Some((Instant(4000), 2)));
        assert_eq!(t.next, Instant(5000));
    }

    #[test]
    fn queue_picks_due_and_next() {
        let mut q: TimerQueue<3> = TimerQueue::new();
        q.set(0, Periodic::new(Instant(10_000), 10_000));
        q.set(2, Periodic::new(Instant(1_000), 1_000_000));
        assert_eq!(q.next_due(Instant(0)), Some(Instant(1_000)));
        assert_eq!(q.poll(Instant(500)), None);
        assert_eq!(q.poll(Instant(1_000)), Some((2, Instant(1_000), 0)));
        assert_eq!(q.next_due(Instant(1_000)), Some(Instant(10_000)));
        assert_eq!(q.poll(Instant(10_001)), Some((0, Instant(10_000), 0)));
        assert_eq!(q.poll(Instant(10_001)), None);
    }
}
