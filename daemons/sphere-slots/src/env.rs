//! The U-Boot environment format, as U-Boot's `saveenv` and libubootenv's `fw_setenv` write it.
//!
//! One copy of the environment is `size` bytes:
//!
//! ```text
//! single copy:     | CRC32 (4, little endian) | data (size - 4)                 |
//! redundant copy:  | CRC32 (4, little endian) | flags (1) | data (size - 5)     |
//! data:            name=value\0name=value\0 ... \0  (then padding up to the end)
//! ```
//!
//! The CRC is the IEEE CRC-32 (zlib's) of the whole data area, padding included, and does not
//! cover the flags byte. With two copies (U-Boot's `CONFIG_SYS_REDUNDAND_ENVIRONMENT`,
//! libubootenv's two lines in `fw_env.config`), the copy with the higher flags value is the
//! current one, with wrap-around (255 is older than 0); a writer always writes the *other* copy
//! with `flags + 1`, so a power cut during a write leaves the previous copy intact and current.
//! That is the whole power-cut story, and why the single-copy layout is accepted only for
//! reading (see [`EnvStore::write`]).
//!
//! Padding: U-Boot and libubootenv fill unused data bytes with zeros; so do we.
//!
//! Parsing is strict: an entry without `=`, an empty name, bytes that are not UTF-8, or data
//! without the terminating empty entry make a copy invalid, exactly like a CRC mismatch. A boot
//! decision must never rest on a half-understood record.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// U-Boot's common `CONFIG_ENV_SIZE` on eMMC boards, and what the QEMU image uses.
pub const DEFAULT_ENV_SIZE: usize = 0x4000;
/// Offset of the second copy in the QEMU image's `bootenv` partition (one 64 KiB erase block
/// apart, so the copies never share an erase block on flash).
pub const DEFAULT_REDUNDANT_OFFSET: u64 = 0x1_0000;
/// Smallest environment we accept: header plus the two NULs of an empty environment.
const MIN_ENV_SIZE: usize = 16;
/// Write granularity of [`EnvStore::write`] (a disk sector).
const SECTOR: usize = 512;
/// Largest environment we accept (U-Boot boards use 8 KiB to 256 KiB).
pub const MAX_ENV_SIZE: usize = 1 << 20;

/// Why an environment copy or store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("environment size {0} is outside {MIN_ENV_SIZE}..={MAX_ENV_SIZE} bytes")]
    BadSize(usize),
    #[error("environment copy is {got} bytes, expected {expected}")]
    WrongLength { got: usize, expected: usize },
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("environment data has no terminating empty entry")]
    Unterminated,
    #[error("environment entry {index} is invalid: {why}")]
    BadEntry { index: usize, why: &'static str },
    #[error("variable name {0:?} is invalid (empty, or contains '=' or NUL)")]
    BadName(String),
    #[error("value of {0:?} contains a NUL byte")]
    BadValue(String),
    #[error("environment needs {needed} bytes of data but the copy holds {available}")]
    TooLarge { needed: usize, available: usize },
    #[error("no valid environment copy in {path}: {why}")]
    NoValidCopy { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing to write a single-copy environment: a power cut during the write would lose it")]
    SingleCopyWrite,
}

/// The variables of one environment, in name order (U-Boot exports them sorted too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// Sets `name` to `value`. Names may not be empty or contain `=` or NUL; values may not
    /// contain NUL (the format has no escaping).
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), EnvError> {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(EnvError::BadName(name.to_string()));
        }
        if value.contains('\0') {
            return Err(EnvError::BadValue(name.to_string()));
        }
        self.vars.insert(name.to_string(), value.to_string());
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.vars.remove(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.vars.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// Parses a data area (`name=value\0...\0` plus padding). A later duplicate of a name
    /// wins, as in U-Boot's import.
    pub fn parse_data(data: &[u8]) -> Result<Self, EnvError> {
        let mut env = Env::new();
        let mut rest = data;
        let mut index = 0;
        loop {
            let Some(nul) = rest.iter().position(|&b| b == 0) else {
                return Err(EnvError::Unterminated);
            };
            let entry = &rest[..nul];
            rest = &rest[nul + 1..];
            if entry.is_empty() {
                return Ok(env);
            }
            let text = std::str::from_utf8(entry).map_err(|_| EnvError::BadEntry { index, why: "not UTF-8" })?;
            let Some((name, value)) = text.split_once('=') else {
                return Err(EnvError::BadEntry { index, why: "no '='" });
            };
            if name.is_empty() {
                return Err(EnvError::BadEntry { index, why: "empty name" });
            }
            env.vars.insert(name.to_string(), value.to_string());
            index += 1;
        }
    }

    /// The data area of `len` bytes: entries, the terminating NUL, zero padding.
    pub fn encode_data(&self, len: usize) -> Result<Vec<u8>, EnvError> {
        let needed = self.vars.iter().map(|(k, v)| k.len() + 1 + v.len() + 1).sum::<usize>() + 1;
        if needed > len {
            return Err(EnvError::TooLarge { needed, available: len });
        }
        let mut data = Vec::with_capacity(len);
        for (name, value) in &self.vars {
            data.extend_from_slice(name.as_bytes());
            data.push(b'=');
            data.extend_from_slice(value.as_bytes());
            data.push(0);
        }
        data.resize(len, 0);
        Ok(data)
    }
}

fn check_size(size: usize) -> Result<(), EnvError> {
    if (MIN_ENV_SIZE..=MAX_ENV_SIZE).contains(&size) { Ok(()) } else { Err(EnvError::BadSize(size)) }
}

fn header_len(redundant: bool) -> usize {
    if redundant { 5 } else { 4 }
}

/// One decoded copy: the variables and, for a redundant copy, its flags byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvCopy {
    pub env: Env,
    pub flags: Option<u8>,
}

/// Decodes one copy of exactly `buf.len()` bytes (the configured environment size).
pub fn decode_copy(buf: &[u8], redundant: bool) -> Result<EnvCopy, EnvError> {
    check_size(buf.len())?;
    let header = header_len(redundant);
    let stored = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let data = &buf[header..];
    let computed = crc32fast::hash(data);
    if stored != computed {
        return Err(EnvError::CrcMismatch { stored, computed });
    }
    let env = Env::parse_data(data)?;
    Ok(EnvCopy { env, flags: redundant.then(|| buf[4]) })
}

/// Encodes one copy of `size` bytes; `flags` is `Some` for a redundant copy.
pub fn encode_copy(env: &Env, size: usize, flags: Option<u8>) -> Result<Vec<u8>, EnvError> {
    check_size(size)?;
    let header = header_len(flags.is_some());
    let data = env.encode_data(size - header)?;
    let mut buf = Vec::with_capacity(size);
    buf.extend_from_slice(&crc32fast::hash(&data).to_le_bytes());
    if let Some(flags) = flags {
        buf.push(flags);
    }
    buf.extend_from_slice(&data);
    Ok(buf)
}

/// Of two valid redundant copies' flags, the index (0 or 1) of the current one. The same rule
/// as U-Boot's `env_import_redund` and libubootenv: higher wins, 0 after 255 counts as newer,
/// and a tie goes to the first copy.
pub fn newer_copy(flags0: u8, flags1: u8) -> usize {
    match (flags0, flags1) {
        (0xff, 0) => 1,
        (0, 0xff) => 0,
        (a, b) if b > a => 1,
        _ => 0,
    }
}

/// Where an environment lives: a file or block device, the offset of each copy and the size
/// of one copy (the same three numbers as a line of libubootenv's `fw_env.config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvLocation {
    pub path: PathBuf,
    /// One offset (single copy) or two (redundant copies).
    pub offsets: Vec<u64>,
    pub size: usize,
}

impl EnvLocation {
    /// Two copies in one device or file, at `0` and [`DEFAULT_REDUNDANT_OFFSET`], of
    /// [`DEFAULT_ENV_SIZE`] bytes each: the layout of the `bootenv` partition.
    pub fn redundant_default(path: impl Into<PathBuf>) -> Self {
        EnvLocation { path: path.into(), offsets: vec![0, DEFAULT_REDUNDANT_OFFSET], size: DEFAULT_ENV_SIZE }
    }

    pub fn is_redundant(&self) -> bool {
        self.offsets.len() == 2
    }

    /// The `fw_env.config` text for libubootenv's `fw_printenv`/`fw_setenv` (and U-Boot's
    /// tools) describing this location.
    pub fn fw_env_config(&self) -> String {
        self.offsets.iter().map(|off| format!("{} {:#x} {:#x}\n", self.path.display(), off, self.size)).collect()
    }
}

/// The environment as read from a store: the variables, which copy they came from, and the
/// state of every copy (for status output and tests).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub env: Env,
    /// Index of the copy in use.
    pub current: usize,
    /// Its flags byte (redundant layout).
    pub flags: Option<u8>,
    /// Per copy: `Ok(flags)` when valid, or why it is not.
    pub copies: Vec<Result<Option<u8>, String>>,
}

/// Reads and writes an environment at an [`EnvLocation`].
#[derive(Debug, Clone)]
pub struct EnvStore {
    location: EnvLocation,
    sync_each_sector: bool,
}

impl EnvStore {
    pub fn new(location: EnvLocation) -> Result<Self, EnvError> {
        check_size(location.size)?;
        if location.offsets.is_empty() || location.offsets.len() > 2 {
            return Err(EnvError::NoValidCopy {
                path: location.path.clone(),
                why: format!("{} copies configured (1 or 2 allowed)", location.offsets.len()),
            });
        }
        Ok(EnvStore { location, sync_each_sector: false })
    }

    /// Sync after every sector instead of once per copy: far slower, so that a kill lands in
    /// the middle of a copy most of the time (the host power-cut test uses it; devices do not).
    pub fn sync_each_sector(mut self, on: bool) -> Self {
        self.sync_each_sector = on;
        self
    }

    pub fn location(&self) -> &EnvLocation {
        &self.location
    }

    fn io(&self, source: std::io::Error) -> EnvError {
        EnvError::Io { path: self.location.path.clone(), source }
    }

    fn read_copy(&self, file: &mut File, offset: u64) -> Result<Vec<u8>, std::io::Error> {
        let mut buf = vec![0u8; self.location.size];
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// Reads every copy and returns the current valid one; `NoValidCopy` when none is valid
    /// (a blank device, or both copies corrupted): the caller then starts from defaults, as
    /// U-Boot does with its built-in default environment.
    pub fn read(&self) -> Result<Loaded, EnvError> {
        let mut file = File::open(&self.location.path).map_err(|e| self.io(e))?;
        let redundant = self.location.is_redundant();
        let mut decoded = Vec::new();
        for &offset in &self.location.offsets {
            let copy = self
                .read_copy(&mut file, offset)
                .map_err(|e| format!("read at {offset:#x}: {e}"))
                .and_then(|buf| decode_copy(&buf, redundant).map_err(|e| e.to_string()));
            decoded.push(copy);
        }
        let copies: Vec<Result<Option<u8>, String>> =
            decoded.iter().map(|c| c.as_ref().map(|c| c.flags).map_err(Clone::clone)).collect();
        let current = match (decoded.first(), decoded.get(1)) {
            (Some(Ok(a)), Some(Ok(b))) => newer_copy(a.flags.unwrap_or(0), b.flags.unwrap_or(0)),
            (Some(Ok(_)), _) => 0,
            (_, Some(Ok(_))) => 1,
            _ => {
                let why = copies.iter().filter_map(|c| c.as_ref().err().cloned()).collect::<Vec<_>>().join("; ");
                return Err(EnvError::NoValidCopy { path: self.location.path.clone(), why });
            }
        };
        let Some(Ok(copy)) = decoded.into_iter().nth(current) else {
            return Err(EnvError::NoValidCopy { path: self.location.path.clone(), why: "internal".into() });
        };
        Ok(Loaded { env: copy.env, current, flags: copy.flags, copies })
    }

    /// Writes `env` as the new current environment: into the copy that is *not* current, with
    /// the next flags value, then `fdatasync`. Until the sync returns the old copy stays the
    /// current one, so a power cut at any moment leaves either the old or the new environment,
    /// never neither. Only the redundant layout can promise that, so a single-copy store
    /// refuses to write ([`EnvError::SingleCopyWrite`]).
    pub fn write(&self, env: &Env) -> Result<(), EnvError> {
        if !self.location.is_redundant() {
            return Err(EnvError::SingleCopyWrite);
        }
        let (target, flags) = match self.read() {
            Ok(loaded) => (1 - loaded.current, loaded.flags.unwrap_or(0).wrapping_add(1)),
            // Nothing valid yet: either copy will do; start the sequence at 1.
            Err(EnvError::NoValidCopy { .. }) => (0, 1),
            Err(err) => return Err(err),
        };
        let buf = encode_copy(env, self.location.size, Some(flags))?;
        let mut file = OpenOptions::new().write(true).open(&self.location.path).map_err(|e| self.io(e))?;
        file.seek(SeekFrom::Start(self.location.offsets[target])).map_err(|e| self.io(e))?;
        // Sector by sector, as a disk commits it: a kill or power cut can land between any
        // two sectors, and the host power-cut test (tests/record-powercut.sh) exercises that.
        for sector in buf.chunks(SECTOR) {
            file.write_all(sector).map_err(|e| self.io(e))?;
            if self.sync_each_sector {
                file.sync_data().map_err(|e| self.io(e))?;
            }
        }
        file.sync_data().map_err(|e| self.io(e))?;
        Ok(())
    }

    /// Creates a zero-filled file big enough for every copy (host tools and tests; a real
    /// device has the partition already).
    pub fn create_file(location: &EnvLocation) -> Result<(), EnvError> {
        let end = location.offsets.iter().max().copied().unwrap_or(0) + location.size as u64;
        let io = |source| EnvError::Io { path: location.path.clone(), source };
        let file = File::create(&location.path).map_err(io)?;
        file.set_len(end).map_err(io)?;
        file.sync_all().map_err(io)
    }
}

/// Reads an environment copy from any path (helper for tools: `sphere-slots env print`).
pub fn read_location(path: &Path, offsets: &[u64], size: usize) -> Result<Loaded, EnvError> {
    EnvStore::new(EnvLocation { path: path.to_path_buf(), offsets: offsets.to_vec(), size })?.read()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Env {
        let mut env = Env::new();
        env.set("bootcount", "1").unwrap();
        env.set("bootcmd", "run sphere_boot").unwrap();
        env.set("empty", "").unwrap();
        env
    }

    #[test]
    fn copy_round_trips_both_layouts() {
        for flags in [None, Some(7u8)] {
            let buf = encode_copy(&sample(), 0x2000, flags).unwrap();
            assert_eq!(buf.len(), 0x2000);
            let copy = decode_copy(&buf, flags.is_some()).unwrap();
            assert_eq!(copy.env, sample());
            assert_eq!(copy.flags, flags);
        }
    }

    #[test]
    fn crc_covers_data_but_not_flags() {
        let mut buf = encode_copy(&sample(), 0x1000, Some(1)).unwrap();
        buf[4] = 9; // flags byte: not under the CRC, as in U-Boot
        assert_eq!(decode_copy(&buf, true).unwrap().flags, Some(9));
        buf[0x800] ^= 1; // a padding byte: under the CRC
        assert!(matches!(decode_copy(&buf, true), Err(EnvError::CrcMismatch { .. })));
    }

    #[test]
    fn known_crc_matches_zlib() {
        // An empty environment of 32 bytes: data = 28 zero bytes.
        let buf = encode_copy(&Env::new(), 32, None).unwrap();
        let crc = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        assert_eq!(crc, 0x8070_77e9, "zlib.crc32(bytes(28)) in Python");
    }

    #[test]
    fn strict_parsing() {
        assert!(matches!(Env::parse_data(b"a=1\0b=2\0"), Err(EnvError::Unterminated)));
        assert!(matches!(Env::parse_data(b"a=1\0novalue\0\0"), Err(EnvError::BadEntry { index: 1, .. })));
        assert!(matches!(Env::parse_data(b"=x\0\0"), Err(EnvError::BadEntry { .. })));
        assert!(matches!(Env::parse_data(b"a=\xff\0\0"), Err(EnvError::BadEntry { .. })));
        let env = Env::parse_data(b"a=1\0a=2\0b=x=y\0\0garbage after the end").unwrap();
        assert_eq!(env.get("a"), Some("2"));
        assert_eq!(env.get("b"), Some("x=y"));
    }

    #[test]
    fn names_and_values_are_checked_and_size_is_enforced() {
        let mut env = Env::new();
        assert!(env.set("", "x").is_err());
        assert!(env.set("a=b", "x").is_err());
        assert!(env.set("a", "x\0y").is_err());
        env.set("big", &"x".repeat(100)).unwrap();
        assert!(matches!(encode_copy(&env, 64, Some(0)), Err(EnvError::TooLarge { .. })));
        assert!(matches!(encode_copy(&env, 8, None), Err(EnvError::BadSize(8))));
    }

    #[test]
    fn flags_pick_the_newer_copy_with_wraparound() {
        assert_eq!(newer_copy(1, 2), 1);
        assert_eq!(newer_copy(2, 1), 0);
        assert_eq!(newer_copy(255, 0), 1);
        assert_eq!(newer_copy(0, 255), 0);
        assert_eq!(newer_copy(5, 5), 0);
    }

    fn store(dir: &tempfile::TempDir) -> EnvStore {
        let location = EnvLocation { path: dir.path().join("env.img"), offsets: vec![0, 0x4000], size: 0x2000 };
        EnvStore::create_file(&location).unwrap();
        EnvStore::new(location).unwrap()
    }

    #[test]
    fn store_alternates_copies_and_survives_one_corrupt_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        assert!(matches!(store.read(), Err(EnvError::NoValidCopy { .. })));
        let mut env = sample();
        for round in 1..=300u32 {
            env.set("round", &round.to_string()).unwrap();
            store.write(&env).unwrap();
            let loaded = store.read().unwrap();
            assert_eq!(loaded.env.get("round"), Some(round.to_string().as_str()));
            assert_eq!(loaded.flags, Some((round % 256) as u8), "flags wrap through 255 -> 0");
        }
        // Both copies valid now; the older one holds round 299.
        let loaded = store.read().unwrap();
        assert!(loaded.copies.iter().all(Result::is_ok));
        // Corrupt the current copy: the other (previous) one takes over.
        let path = store.location().path.clone();
        let offset = store.location().offsets[loaded.current];
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offset as usize + 100] ^= 0x55;
        std::fs::write(&path, &bytes).unwrap();
        let fallback = store.read().unwrap();
        assert_eq!(fallback.env.get("round"), Some("299"));
        assert_ne!(fallback.current, loaded.current);
    }

    #[test]
    fn torn_write_keeps_the_previous_environment() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let mut env = sample();
        env.set("round", "1").unwrap();
        store.write(&env).unwrap();
        env.set("round", "2").unwrap();
        store.write(&env).unwrap();
        // Simulate a power cut in the middle of the third write: the target copy (the older,
        // round 1) gets the first half of the new bytes, the rest stays as it was.
        let before = store.read().unwrap();
        let target = 1 - before.current;
        env.set("round", "3").unwrap();
        let new = encode_copy(&env, 0x2000, Some(before.flags.unwrap().wrapping_add(1))).unwrap();
        let path = store.location().path.clone();
        let mut bytes = std::fs::read(&path).unwrap();
        let off = store.location().offsets[target] as usize;
        for cut in [1usize, 4, 5, 37, 0x1000, 0x1fff] {
            let mut torn = bytes.clone();
            torn[off..off + cut].copy_from_slice(&new[..cut]);
            // Make the old tail differ from the new tail so the CRC cannot accidentally match.
            torn[off + 0x1fff] ^= 0xa5;
            std::fs::write(&path, &torn).unwrap();
            let after = store.read().unwrap();
            assert_eq!(after.env.get("round"), Some("2"), "cut after {cut} bytes");
            assert!(after.copies[target].is_err());
        }
        // A complete write then wins.
        bytes[off..off + 0x2000].copy_from_slice(&new);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(store.read().unwrap().env.get("round"), Some("3"));
    }

    #[test]
    fn single_copy_is_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let location = EnvLocation { path: dir.path().join("single.img"), offsets: vec![0], size: 0x1000 };
        std::fs::write(&location.path, encode_copy(&sample(), 0x1000, None).unwrap()).unwrap();
        let store = EnvStore::new(location).unwrap();
        assert_eq!(store.read().unwrap().env, sample());
        assert!(matches!(store.write(&sample()), Err(EnvError::SingleCopyWrite)));
    }
}
