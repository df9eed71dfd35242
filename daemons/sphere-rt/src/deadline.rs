//! Deadline accounting for periodic real-time work: each job has a release instant and a
//! relative deadline; a job that finishes after `release + deadline`, or a release that was
//! skipped because the core was busy, is a miss.

use crate::time::Instant;

/// Counters for one periodic task.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeadlineMonitor {
    /// Relative deadline in microseconds.
    pub deadline_us: u32,
    /// Jobs completed.
    pub jobs: u32,
    /// Deadlines missed (late completions plus skipped releases).
    pub misses: u32,
    /// Worst release-to-completion time seen, in microseconds.
    pub worst_response_us: u32,
    /// Worst release-to-start time (scheduling latency) seen, in microseconds.
    pub worst_latency_us: u32,
}

/// How one job went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobOutcome {
    /// Release to completion, microseconds.
    pub response_us: u32,
    /// Whether it finished after its deadline.
    pub missed: bool,
}

impl DeadlineMonitor {
    /// A monitor for a task with this relative deadline.
    pub const fn new(deadline_us: u32) -> Self {
        Self { deadline_us, jobs: 0, misses: 0, worst_response_us: 0, worst_latency_us: 0 }
    }

    /// Records releases skipped entirely (each is a miss).
    pub fn skipped(&mut self, n: u32) {
        self.misses = self.misses.wrapping_add(n);
    }

    /// Records one job.
    pub fn record(&mut self, release: Instant, start: Instant, finish: Instant) -> JobOutcome {
        let response_us = finish.since(release).max(0) as u32;
        let latency_us = start.since(release).max(0) as u32;
        let missed = response_us > self.deadline_us;
        self.jobs = self.jobs.wrapping_add(1);
        if missed {
            self.misses = self.misses.wrapping_add(1);
        }
        self.worst_response_us = self.worst_response_us.max(response_us);
        self.worst_latency_us = self.worst_latency_us.max(latency_us);
        JobOutcome { response_us, missed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_misses_and_worst_times() {
        let mut m = DeadlineMonitor::new(2000);
        let r = Instant(10_000);
        assert!(!m.record(r, r.add_us(5), r.add_us(40)).missed);
        assert!(m.record(r, r.add_us(1990), r.add_us(2001)).missed);
        assert!(!m.record(r, r, r.add_us(2000)).missed, "finishing on the deadline is in time");
        m.skipped(2);
        assert_eq!(m.jobs, 3);
        assert_eq!(m.misses, 3);
        assert_eq!(m.worst_response_us, 2001);
        assert_eq!(m.worst_latency_us, 1990);
    }
}
