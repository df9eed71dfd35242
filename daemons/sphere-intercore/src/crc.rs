//! The two checksums, table-driven with 16-entry (nibble) tables: 96 bytes of flash on the M4
//! instead of 1.5 KiB for byte tables, and still fast enough for a UART-rate link.
//!
//! * CRC-32 (IEEE 802.3, reflected, polynomial 0x04C11DB7, init and final xor 0xFFFFFFFF; the
//!   zlib / Ethernet CRC): Hamming distance 4 up to 91,607 bits, so any 1–3 bit errors in a
//!   maximum frame (8,720 bits) are always caught, and other corruption passes with probability
//!   2^-32. Python's `zlib.crc32` computes it, so host tools need no library.
//! * CRC-16/CCITT-FALSE (polynomial 0x1021, init 0xFFFF, not reflected; Python's
//!   `binascii.crc_hqx(data, 0xFFFF)`) over the header alone, so a corrupted length is rejected
//!   at once instead of making the decoder wait for bytes that belong to the next frame.
//! * CRC-8/SMBUS over a compact frame's 7-byte header, for the same reason at a seventh of the
//!   cost: a compact frame's bytes are its latency on a UART.

const CRC32_TABLE: [u32; 16] = {
    let mut table = [0u32; 16];
    let mut i = 0;
    while i < 16 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 4 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

const CRC16_TABLE: [u16; 16] = {
    let mut table = [0u16; 16];
    let mut i = 0;
    while i < 16 {
        let mut c = (i as u16) << 12;
        let mut k = 0;
        while k < 4 {
            c = if c & 0x8000 != 0 { (c << 1) ^ 0x1021 } else { c << 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// A running CRC-32 (IEEE).
#[derive(Clone, Copy, Debug)]
pub struct Crc32(u32);

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32 {
    /// A fresh CRC.
    pub const fn new() -> Self {
        Self(0xFFFF_FFFF)
    }

    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        let mut c = self.0;
        for &b in data {
            c ^= u32::from(b);
            c = (c >> 4) ^ CRC32_TABLE[(c & 0xF) as usize];
            c = (c >> 4) ^ CRC32_TABLE[(c & 0xF) as usize];
        }
        self.0 = c;
    }

    /// The checksum so far.
    pub const fn finish(&self) -> u32 {
        !self.0
    }
}

/// CRC-32 (IEEE) of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(data);
    c.finish()
}

/// CRC-16/CCITT-FALSE of `data`.
pub fn crc16(data: &[u8]) -> u16 {
    let mut c: u16 = 0xFFFF;
    for &b in data {
        c = (c << 4) ^ CRC16_TABLE[usize::from((c >> 12) ^ u16::from(b >> 4))];
        c = (c << 4) ^ CRC16_TABLE[usize::from((c >> 12) ^ u16::from(b & 0xF))];
    }
    c
}

/// CRC-8/SMBUS (polynomial 0x07, init 0, not reflected) of `data`: the header check of a
/// compact frame (7 bytes, so bitwise is fast enough and costs no table). Python: see
/// `scripts/intercore.py`.
pub fn crc8(data: &[u8]) -> u8 {
    let mut c: u8 = 0;
    for &b in data {
        c ^= b;
        for _ in 0..8 {
            c = if c & 0x80 != 0 { (c << 1) ^ 0x07 } else { c << 1 };
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values() {
        // The standard "123456789" check values of both catalogued CRCs.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc16(b"123456789"), 0x29B1);
        assert_eq!(crc8(b"123456789"), 0xF4);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn incremental_equals_one_shot() {
        let mut c = Crc32::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.finish(), 0xCBF4_3926);
    }
}
