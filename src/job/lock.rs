//! The output folder's advisory lock: one `annotate` run per `--out` at a time. The lock is an
//! exclusive `flock` on the folder itself (no lock file: a folder is left as it was), taken before
//! anything in it is read or written and held for the run's life; the kernel releases it when
//! the process ends, however it ends (kill -9 included), so a stale lock cannot exist. A second
//! run into a locked folder is refused at once with [`crate::exit::EXIT_BUSY`], touching nothing.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::JobError;

/// The held lock of an output folder; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct OutLock {
    _dir: File,
}

/// Creates the output folder `dir` if needed and locks it, or refuses with
/// [`JobError::Busy`] when another run holds it.
pub fn acquire(dir: &Path) -> Result<OutLock, JobError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        JobError::Output(format!(
            "{}: cannot create the output folder: {e}",
            dir.display()
        ))
    })?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| {
            JobError::Output(format!(
                "{}: cannot open the output folder: {e}",
                dir.display()
            ))
        })?;
    // SAFETY: flock on a file descriptor this function owns.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            JobError::Busy(format!(
                "{}: another densam run is using this output folder (it holds the folder's \
                 lock); nothing was changed: wait for it to end, or choose another --out",
                dir.display()
            ))
        } else {
            JobError::Output(format!(
                "{}: cannot lock the output folder: {e}",
                dir.display()
            ))
        });
    }
    Ok(OutLock { _dir: f })
}
