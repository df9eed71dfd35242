//! Write-then-rename file output: a crash or power cut leaves the old file or the new one,
//! never a torn mix. Used for packages, keys and any state file.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Either the filesystem failed or the caller's writer did.
#[derive(Debug)]
pub enum WriteError<E> {
    Io(io::Error),
    Inner(E),
}

/// Write `path` atomically with permission bits `mode`: `fill` writes into a temporary file in
/// the same directory, which is synced and renamed over `path`; the directory is synced too so
/// the rename itself survives a power cut. Returns the file's size.
pub fn write<E>(path: &Path, mode: u32, fill: impl FnOnce(&mut File) -> Result<(), E>) -> Result<u64, WriteError<E>> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    // tempfile creates the file 0600, so a secret is never readable by others, even briefly.
    let mut temporary =
        tempfile::Builder::new().prefix(".sphere-tmp-").tempfile_in(directory).map_err(WriteError::Io)?;
    fill(temporary.as_file_mut()).map_err(WriteError::Inner)?;
    let file = temporary.as_file();
    file.set_permissions(fs::Permissions::from_mode(mode)).map_err(WriteError::Io)?;
    file.sync_all().map_err(WriteError::Io)?;
    let size = file.metadata().map_err(WriteError::Io)?.len();
    temporary.persist(path).map_err(|error| WriteError::Io(error.error))?;
    File::open(directory).and_then(|dir| dir.sync_all()).map_err(WriteError::Io)?;
    Ok(size)
}

/// Atomically write bytes.
pub fn write_bytes(path: &Path, mode: u32, bytes: &[u8]) -> io::Result<u64> {
    use std::io::Write;
    write(path, mode, |file| file.write_all(bytes)).map_err(|error| match error {
        WriteError::Io(error) | WriteError::Inner(error) => error,
    })
}
