//! Time: microseconds since boot in a wrapping `u32` (wraps after 71 minutes; every comparison
//! is wrapping, so only intervals under 35 minutes are meaningful, far above any period here).

/// An instant, in microseconds since boot (wrapping).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Instant(pub u32);

impl Instant {
    /// `self + us`.
    pub const fn add_us(self, us: u32) -> Instant {
        Instant(self.0.wrapping_add(us))
    }

    /// Microseconds from `earlier` to `self` (negative if `self` is before it).
    pub const fn since(self, earlier: Instant) -> i32 {
        self.0.wrapping_sub(earlier.0) as i32
    }

    /// Whether `self` is at or after `other`.
    pub const fn reached(self, other: Instant) -> bool {
        self.since(other) >= 0
    }
}

/// Converts a tick count plus a SysTick reading to an instant: `ticks` whole ticks of
/// `tick_us` microseconds, plus the elapsed part of the current one (SysTick counts down from
/// `reload` to 0).
pub const fn from_systick(ticks: u32, tick_us: u32, reload: u32, current: u32) -> Instant {
    let elapsed = reload.saturating_sub(current) as u64;
    let part = (elapsed * tick_us as u64 / (reload as u64 + 1)) as u32;
    Instant(ticks.wrapping_mul(tick_us).wrapping_add(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_comparisons() {
        let a = Instant(u32::MAX - 5);
        let b = a.add_us(10);
        assert_eq!(b.0, 4);
        assert_eq!(b.since(a), 10);
        assert!(b.reached(a));
        assert!(!a.reached(b));
    }

    #[test]
    fn systick_conversion() {
        // 25 MHz, 1 ms ticks: reload 24_999.
        assert_eq!(from_systick(3, 1000, 24_999, 24_999), Instant(3000));
        assert_eq!(from_systick(3, 1000, 24_999, 12_499), Instant(3500));
        assert_eq!(from_systick(3, 1000, 24_999, 0), Instant(3999));
    }
}
