//! Boot milestones and facts: one console line each, in a fixed machine-parseable format.
//!
//! ```text
//! sphere-init: milestone NAME [KEY=VALUE]... t=SECONDS.MICROS
//! sphere-init: fact KEY=VALUE
//! ```
//!
//! `t` is CLOCK_MONOTONIC, which starts near zero when the kernel boots, so it lines up with the
//! kernel's own `[    1.234567]` printk stamps. Values never contain spaces or `=` (they are
//! replaced by `_`), so a line splits on spaces, then each field on its first `=`.
//! Host tools (scripts/console-milestones.py) parse exactly this format; change both together.

use std::time::Duration;

/// Prefix of every line init itself writes to the console.
pub const PREFIX: &str = "sphere-init:";

/// CLOCK_MONOTONIC now, as a duration since boot. Never fails on Linux; zero if it somehow does.
pub fn now() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the pointer we pass, which is valid.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(u64::try_from(ts.tv_sec).unwrap_or(0), u32::try_from(ts.tv_nsec).unwrap_or(0))
}

/// Replaces characters that would break `KEY=VALUE` splitting.
fn sanitize(value: &str) -> String {
    let cleaned: String =
        value.chars().map(|c| if c.is_whitespace() || c == '=' || c.is_control() { '_' } else { c }).collect();
    if cleaned.is_empty() { "-".to_string() } else { cleaned }
}

/// Sleeps with poll(2)'s millisecond timeout instead of `std::thread::sleep`.
///
/// Why: std sleeps with glibc's clock_nanosleep, and Debian 12's glibc 2.36 on armhf issues the
/// 32-bit-time syscall when the value fits. Our kernel is built without COMPAT_32BIT_TIME
/// (y2038 hardening), so that syscall fails with ENOSYS and std's sleep panics. poll(2) takes a
/// plain int timeout and exists on every kernel.
pub fn sleep(duration: Duration) {
    let deadline = std::time::Instant::now() + duration;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: poll with no descriptors only waits.
        unsafe { libc::poll(std::ptr::null_mut(), 0, ms) };
    }
}

/// `sphere-init: milestone NAME k=v ... t=S.UUUUUU`
pub fn format_milestone(name: &str, fields: &[(&str, &str)], t: Duration) -> String {
    let mut line = format!("{PREFIX} milestone {}", sanitize(name));
    for (key, value) in fields {
        line.push(' ');
        line.push_str(&sanitize(key));
        line.push('=');
        line.push_str(&sanitize(value));
    }
    line.push_str(&format!(" t={}.{:06}", t.as_secs(), t.subsec_micros()));
    line
}

/// `sphere-init: fact KEY=VALUE` — VALUE is the rest of the line and may contain spaces.
pub fn format_fact(key: &str, value: &str) -> String {
    let value: String = value.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    format!("{PREFIX} fact {}={}", sanitize(key), value.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milestone_has_fixed_shape() {
        let line = format_milestone("init-start", &[], Duration::new(1, 234_567_000));
        assert_eq!(line, "sphere-init: milestone init-start t=1.234567");
    }

    #[test]
    fn milestone_fields_are_sanitized() {
        let line = format_milestone(
            "daemon-ready",
            &[("name", "my daemon"), ("why", "a=b"), ("empty", "")],
            Duration::from_micros(5),
        );
        assert_eq!(line, "sphere-init: milestone daemon-ready name=my_daemon why=a_b empty=- t=0.000005");
    }

    #[test]
    fn milestone_pads_micros() {
        let line = format_milestone("x", &[], Duration::from_millis(12_003));
        assert!(line.ends_with(" t=12.003000"), "{line}");
    }

    #[test]
    fn fact_keeps_spaces_in_value() {
        assert_eq!(
            format_fact("kernel-version", "#1 SMP\tPREEMPT\n"),
            "sphere-init: fact kernel-version=#1 SMP PREEMPT"
        );
    }

    #[test]
    fn sleep_waits_at_least_the_duration() {
        let start = std::time::Instant::now();
        sleep(Duration::from_millis(30));
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn now_is_monotonic() {
        let a = now();
        let b = now();
        assert!(b >= a);
    }
}
