//! Files densam reads whole and files it creates.
//!
//! Reading an input file whole (prompts, HD-EPIC `assoc_info` / `mask_info`, plan lists, eval's
//! JSON files): regular files only, at most [`MAX_INPUT_BYTES`]. A FIFO would block the reader
//! forever and a device (`/dev/zero`) would never end: both are refused at once, before a byte is
//! read; so is a file larger than the cap, before it is read into memory.
//!
//! Creating a file densam writes (partial outputs, the spool, checkpoint and manifest
//! temporaries, the write test): [`create_new`], `O_CREAT | O_EXCL | O_NOFOLLOW`, so that a
//! symlink planted under that name is never followed (it is removed, not written through) and
//! a file that appears in between is an error, never truncated.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest input file read whole: 1 GiB.
pub const MAX_INPUT_BYTES: u64 = 1 << 30;

/// The bytes of the regular file `path` (at most [`MAX_INPUT_BYTES`]); the error says why not.
pub fn read_input(path: &Path) -> std::io::Result<Vec<u8>> {
    read_capped(path, MAX_INPUT_BYTES)
}

/// [`read_input`] with another cap.
pub fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    // O_NONBLOCK: opening a FIFO without a writer returns at once (regular files ignore it).
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(
            "not a regular file (FIFOs, devices, sockets and folders are refused)",
        ));
    }
    let too_big = || {
        std::io::Error::other(format!(
            "the file is larger than {cap} bytes ({} MiB): refused before reading it",
            cap >> 20
        ))
    };
    if meta.len() > cap {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // A file that grows while read stops at the cap too.
    f.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(too_big());
    }
    Ok(bytes)
}

/// Creates `path` as a new file for reading and writing (mode 0644 before the umask): whatever is at that
/// name (a stale temporary, a planted symlink: the link itself, not its target) is removed first,
/// then the file is created with `O_CREAT | O_EXCL | O_NOFOLLOW`: one that appears in between is
/// an error, and no symlink is ever followed.
pub fn create_new(path: &Path) -> std::io::Result<std::fs::File> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            return Err(std::io::Error::other("a folder is in the way"));
        }
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}
