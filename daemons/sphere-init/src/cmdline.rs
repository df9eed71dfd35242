//! The kernel command line (/proc/cmdline): `key=value` and bare `flag` words.
//!
//! Parameters init reads (all optional):
//! - `sphere.selftest=1`            print diagnostic facts and enable selftest-only services
//! - `sphere.selftest.config=A,B`   config symbols to look up in /proc/config.gz (self-test)
//! - `sphere.after_boot=poweroff|reboot`  do that once boot is complete (tests, benchmarks)
//! - `sphere.root=serial:NAME|/dev/X`     root filesystem device (initramfs stage)
//! - `sphere.rootfstype=erofs`            root filesystem type (initramfs stage)

#[derive(Debug, Default, Clone)]
pub struct Cmdline {
    words: Vec<(String, Option<String>)>,
}

impl Cmdline {
    pub fn parse(text: &str) -> Self {
        let words = text
            .split_whitespace()
            .map(|word| match word.split_once('=') {
                Some((key, value)) => (key.to_string(), Some(value.trim_matches('"').to_string())),
                None => (word.to_string(), None),
            })
            .collect();
        Cmdline { words }
    }

    /// Reads /proc/cmdline; empty if it cannot be read.
    pub fn from_proc() -> Self {
        Self::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default())
    }

    /// The value of the last `key=value` (the kernel's own rule: later words win).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.words.iter().rev().find(|(k, _)| k == key).and_then(|(_, v)| v.as_deref())
    }

    /// True for a bare `key`, or `key=1|y|yes|true|on`.
    pub fn flag(&self, key: &str) -> bool {
        match self.words.iter().rev().find(|(k, _)| k == key) {
            Some((_, None)) => true,
            Some((_, Some(v))) => matches!(v.as_str(), "1" | "y" | "yes" | "true" | "on"),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values_and_flags() {
        let c = Cmdline::parse("console=ttyAMA0 panic=-1 sphere.selftest=1 quiet sphere.root=serial:sphere-root\n");
        assert_eq!(c.get("console"), Some("ttyAMA0"));
        assert_eq!(c.get("sphere.root"), Some("serial:sphere-root"));
        assert!(c.flag("sphere.selftest"));
        assert!(c.flag("quiet"));
        assert!(!c.flag("sphere.other"));
        assert_eq!(c.get("quiet"), None);
    }

    #[test]
    fn later_words_win_and_false_values_are_false() {
        let c = Cmdline::parse("a=1 a=2 f=1 f=0");
        assert_eq!(c.get("a"), Some("2"));
        assert!(!c.flag("f"));
    }
}
