//! Component ids: the 16-byte app identities (UUIDs, as in an app manifest's `ComponentId`) that
//! address frames.

use core::fmt;

/// An app's component id, in the byte order of its textual UUID form
/// (`00112233-4455-6677-8899-aabbccddeeff` is bytes `00 11 22 ... ff`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ComponentId(pub [u8; 16]);

impl ComponentId {
    /// The id from its 16 bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// Parses the textual UUID form (hyphens optional, either case). Usable in `const` items, so
    /// firmware can spell its ids as in its manifest.
    pub const fn parse(text: &str) -> Option<Self> {
        let text = text.as_bytes();
        let mut out = [0u8; 16];
        let mut nibbles = 0usize;
        let mut i = 0usize;
        while i < text.len() {
            let c = text[i];
            i += 1;
            if c == b'-' {
                continue;
            }
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return None,
            };
            if nibbles == 32 {
                return None;
            }
            out[nibbles / 2] |= if nibbles % 2 == 0 { v << 4 } else { v };
            nibbles += 1;
        }
        if nibbles == 32 { Some(Self(out)) } else { None }
    }

    /// The 16 bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ComponentId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    #[test]
    fn parse_and_display_round_trip() {
        let text = "7f0c2e5a-61d4-4b8e-9a3f-2c51d7e80b14";
        let id = ComponentId::parse(text).unwrap();
        assert_eq!(id.0[0], 0x7f);
        assert_eq!(id.0[15], 0x14);
        assert_eq!(id.to_string(), text);
        assert_eq!(ComponentId::parse("7F0C2E5A61D44B8E9A3F2C51D7E80B14"), Some(id));
    }

    #[test]
    fn parse_rejects_bad_text() {
        assert_eq!(ComponentId::parse(""), None);
        assert_eq!(ComponentId::parse("7f0c2e5a-61d4-4b8e-9a3f-2c51d7e80b1"), None);
        assert_eq!(ComponentId::parse("7f0c2e5a-61d4-4b8e-9a3f-2c51d7e80b145"), None);
        assert_eq!(ComponentId::parse("7f0c2e5a-61d4-4b8e-9a3f-2c51d7e80b1g"), None);
    }
}
