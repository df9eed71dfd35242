//! The canonical content listing: the exact bytes a package signature covers.
//!
//! ```text
//! opensphere-app-package 1
//! f 0644 312 5d41402abc4b2a76b9719d911017c592...  app_manifest.json
//! d 0755 0 - bin
//! f 0755 1048576 9e107d9d372bb6826bd81d3542a419d6...  bin/app
//! l 0777 0 - lib/libfoo.so libfoo.so.1
//! ```
//!
//! One line per entry, sorted by path bytes, single spaces, LF endings. A listing is accepted only
//! if re-rendering what was parsed gives back the same bytes, so there is exactly one encoding of
//! any package content and no room for parser differentials.

use super::paths::{check_link_target, check_package_path, resolve_link_target};
use super::{Limits, MANIFEST_PATH, PackageError};
use serde::Serialize;
use std::collections::BTreeMap;

const HEADER: &str = "opensphere-app-package 1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
}

impl EntryKind {
    fn letter(self) -> char {
        match self {
            EntryKind::File => 'f',
            EntryKind::Directory => 'd',
            EntryKind::Symlink => 'l',
        }
    }
}

/// One listed entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListingEntry {
    pub kind: EntryKind,
    /// Permission bits only (at most 0o777).
    pub mode: u32,
    pub size: u64,
    /// SHA-256 of the contents, for files.
    #[serde(skip_serializing_if = "Option::is_none", with = "hex_digest")]
    pub sha256: Option<[u8; 32]>,
    pub path: String,
    /// Where a symlink points.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl ListingEntry {
    pub fn is_executable_file(&self) -> bool {
        self.kind == EntryKind::File && self.mode & 0o111 != 0
    }

    fn render(&self) -> String {
        let digest = self.sha256.map_or_else(|| "-".to_owned(), hex::encode);
        let mut line = format!("{} {:04o} {} {} {}", self.kind.letter(), self.mode, self.size, digest, self.path);
        if let Some(target) = &self.target {
            line.push(' ');
            line.push_str(target);
        }
        line
    }
}

/// A validated listing: sorted, unique, parents before children, symlinks contained.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Listing {
    pub entries: Vec<ListingEntry>,
}

impl Listing {
    /// Validate entries (in any order) built from a source directory.
    pub fn from_entries(mut entries: Vec<ListingEntry>, limits: &Limits) -> Result<Self, PackageError> {
        entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        let listing = Listing { entries };
        listing.validate(limits)?;
        Ok(listing)
    }

    /// Parse and validate listing bytes from an untrusted package.
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Self, PackageError> {
        let text = std::str::from_utf8(bytes).map_err(|_| malformed(0, "not UTF-8 text"))?;
        let body = text.strip_prefix(HEADER).and_then(|rest| rest.strip_prefix('\n'));
        let body = body.ok_or_else(|| malformed(1, &format!("must start with \"{HEADER}\"")))?;
        let lines: Vec<&str> = body.lines().collect();
        if lines.len() > limits.max_entries {
            return Err(PackageError::TooManyEntries { count: lines.len(), limit: limits.max_entries });
        }
        let entries =
            lines.iter().enumerate().map(|(index, line)| parse_line(line, index + 2)).collect::<Result<_, _>>()?;
        let listing = Listing { entries };
        if listing.render().as_bytes() != bytes {
            return Err(malformed(0, "not in canonical form (sorted paths, single spaces, one final newline)"));
        }
        listing.validate(limits)?;
        Ok(listing)
    }

    /// The canonical bytes that are hashed and signed.
    pub fn render(&self) -> String {
        let mut text = String::from(HEADER);
        text.push('\n');
        for entry in &self.entries {
            text.push_str(&entry.render());
            text.push('\n');
        }
        text
    }

    pub fn get(&self, path: &str) -> Option<&ListingEntry> {
        self.entries.binary_search_by(|entry| entry.path.as_bytes().cmp(path.as_bytes())).ok().map(|i| &self.entries[i])
    }

    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|entry| entry.size).sum()
    }

    fn validate(&self, limits: &Limits) -> Result<(), PackageError> {
        if self.entries.len() > limits.max_entries {
            return Err(PackageError::TooManyEntries { count: self.entries.len(), limit: limits.max_entries });
        }
        let mut kinds: BTreeMap<&str, EntryKind> = BTreeMap::new();
        let mut total: u64 = 0;
        for entry in &self.entries {
            check_entry(entry, limits)?;
            check_parent_listed(entry, &kinds)?;
            if kinds.insert(&entry.path, entry.kind).is_some() {
                return Err(PackageError::DuplicateEntry { path: entry.path.clone() });
            }
            total = total.saturating_add(entry.size);
        }
        if total > limits.max_total_bytes {
            return Err(PackageError::TotalTooLarge { size: total, limit: limits.max_total_bytes });
        }
        if self.entries.windows(2).any(|pair| pair[0].path.as_bytes() >= pair[1].path.as_bytes()) {
            return Err(malformed(0, "paths are not in strictly increasing byte order"));
        }
        self.entries.iter().filter(|e| e.kind == EntryKind::Symlink).try_for_each(|e| check_symlink(e, &kinds))?;
        match self.get(MANIFEST_PATH) {
            Some(entry) if entry.kind == EntryKind::File => Ok(()),
            _ => Err(PackageError::ManifestMissing),
        }
    }
}

fn malformed(line: usize, reason: &str) -> PackageError {
    PackageError::MalformedListing { line, reason: reason.to_owned() }
}

fn parse_line(line: &str, number: usize) -> Result<ListingEntry, PackageError> {
    let fields: Vec<&str> = line.split(' ').collect();
    let (kind, expected_fields) = match fields.first() {
        Some(&"f") => (EntryKind::File, 5),
        Some(&"d") => (EntryKind::Directory, 5),
        Some(&"l") => (EntryKind::Symlink, 6),
        _ => return Err(malformed(number, "entries start with f, d or l")),
    };
    if fields.len() != expected_fields {
        return Err(malformed(number, &format!("expected {expected_fields} space-separated fields")));
    }
    let mode = u32::from_str_radix(fields[1], 8).map_err(|_| malformed(number, "mode is not octal"))?;
    let size = fields[2].parse::<u64>().map_err(|_| malformed(number, "size is not a number"))?;
    let sha256 = match (kind, fields[3]) {
        (EntryKind::File, digest) => Some(parse_digest(digest).ok_or_else(|| malformed(number, "bad SHA-256"))?),
        (_, "-") => None,
        _ => return Err(malformed(number, "only files carry a digest")),
    };
    let target = fields.get(5).map(|target| (*target).to_owned());
    Ok(ListingEntry { kind, mode, size, sha256, path: fields[4].to_owned(), target })
}

fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let mut digest = [0u8; 32];
    let lowercase = text.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
    (lowercase && hex::decode_to_slice(text, &mut digest).is_ok()).then_some(digest)
}

fn check_entry(entry: &ListingEntry, limits: &Limits) -> Result<(), PackageError> {
    check_package_path(&entry.path)
        .map_err(|reason| PackageError::PathNotAllowed { path: entry.path.clone(), reason })?;
    if entry.mode & !0o777 != 0 {
        return Err(PackageError::SetIdBits { path: entry.path.clone(), mode: entry.mode });
    }
    if entry.kind != EntryKind::File && entry.size != 0 {
        return Err(PackageError::EntryMismatch {
            path: entry.path.clone(),
            reason: "only files have a size".to_owned(),
        });
    }
    if entry.size > limits.max_file_bytes {
        return Err(PackageError::Oversized {
            path: entry.path.clone(),
            size: entry.size,
            limit: limits.max_file_bytes,
        });
    }
    match (&entry.target, entry.kind) {
        (Some(target), EntryKind::Symlink) => check_link_target(target).map_err(|reason| {
            PackageError::SymlinkEscapes { path: entry.path.clone(), target: format!("{target} ({reason})") }
        }),
        (None, EntryKind::Symlink) => Err(malformed(0, "a symlink needs a target")),
        (Some(_), _) => Err(malformed(0, "only symlinks have a target")),
        (None, _) => Ok(()),
    }
}

/// Every parent must be a listed directory, so no entry can sit "below" a symlink.
fn check_parent_listed(entry: &ListingEntry, kinds: &BTreeMap<&str, EntryKind>) -> Result<(), PackageError> {
    let Some((parent, _)) = entry.path.rsplit_once('/') else { return Ok(()) };
    match kinds.get(parent) {
        Some(EntryKind::Directory) => Ok(()),
        _ => Err(PackageError::PathNotAllowed {
            path: entry.path.clone(),
            reason: format!("its parent \"{parent}\" is not a directory listed before it"),
        }),
    }
}

/// A symlink must resolve inside the package without passing through another symlink.
fn check_symlink(entry: &ListingEntry, kinds: &BTreeMap<&str, EntryKind>) -> Result<(), PackageError> {
    let target = entry.target.as_deref().unwrap_or_default();
    let escapes = || PackageError::SymlinkEscapes { path: entry.path.clone(), target: target.to_owned() };
    resolve_link_target(&entry.path, target).ok_or_else(escapes)?;
    // Walk the target one component at a time; a component before the last that is itself a
    // symlink could redirect the walk, so it is refused rather than followed.
    let mut walked: Vec<&str> = entry.path.split('/').collect();
    walked.pop();
    let components: Vec<&str> = target.split('/').collect();
    for (index, component) in components.iter().enumerate() {
        if *component == ".." {
            walked.pop().ok_or_else(escapes)?;
        } else {
            walked.push(component);
        }
        let is_last = index + 1 == components.len();
        if !is_last && kinds.get(walked.join("/").as_str()) == Some(&EntryKind::Symlink) {
            return Err(escapes());
        }
    }
    Ok(())
}

mod hex_digest {
    use serde::Serializer;

    pub fn serialize<S: Serializer>(digest: &Option<[u8; 32]>, serializer: S) -> Result<S::Ok, S::Error> {
        match digest {
            Some(bytes) => serializer.serialize_str(&hex::encode(bytes)),
            None => serializer.serialize_none(),
        }
    }
}
