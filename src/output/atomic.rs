//! Outputs that appear whole or not at all, as the annotate job's `.partial` result: an export
//! or render writes its file or folder under a temporary name next to the final one
//! (`.<stem>.partial.<ext>`, the extension kept because the MP4 muxer picks its format from
//! it) and renames it into place once complete. A failure (or a kill) leaves no partial file
//! under the final name, and an earlier output of that name stays as it was; the temporary is
//! removed when the writer is dropped unfinished.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::output::jsonl::OutputError;

/// The temporary name of `path`: `.<stem>.partial.<ext>` in the same folder (`.<name>.partial`
/// without an extension).
pub fn partial_path(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!(".{stem}.partial.{}", ext.to_string_lossy()),
        None => format!(".{stem}.partial"),
    };
    path.with_file_name(name)
}

/// Creates the folder that will hold `path`, if any.
fn create_parent(path: &Path) -> Result<(), OutputError> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|e| OutputError::io(dir, e)),
        None => Ok(()),
    }
}

/// A file being written under its temporary name; [`PartialFile::commit`] renames it to its
/// final name, dropping it unfinished removes it.
#[derive(Debug)]
pub struct PartialFile {
    tmp: PathBuf,
    target: PathBuf,
    done: bool,
}

impl PartialFile {
    /// Prepares to write `target` (its folder is created; a stale temporary is replaced).
    pub fn new(target: &Path) -> Result<Self, OutputError> {
        create_parent(target)?;
        Ok(Self {
            tmp: partial_path(target),
            target: target.to_path_buf(),
            done: false,
        })
    }

    /// The temporary name to write to.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Creates (truncates) the temporary file.
    pub fn create(&self) -> Result<File, OutputError> {
        crate::files::create_new(&self.tmp).map_err(|e| OutputError::io(&self.target, e))
    }

    /// Syncs the complete temporary file to disk and renames it to the final name.
    pub fn commit(mut self) -> Result<(), OutputError> {
        File::open(&self.tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| OutputError::io(&self.target, e))?;
        std::fs::rename(&self.tmp, &self.target).map_err(|e| OutputError::io(&self.target, e))?;
        self.done = true;
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// A folder being filled under its temporary name; [`PartialDir::commit`] renames it to its
/// final name (or, when that folder exists, moves the files into it, replacing those of the
/// same name as an export into an existing folder always did); dropping it unfinished removes
/// it.
#[derive(Debug)]
pub struct PartialDir {
    tmp: PathBuf,
    target: PathBuf,
    done: bool,
}

impl PartialDir {
    /// Creates the empty temporary folder of `target` (a stale one is removed first).
    pub fn new(target: &Path) -> Result<Self, OutputError> {
        create_parent(target)?;
        let tmp = partial_path(target);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| OutputError::io(&tmp, e))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| OutputError::io(target, e))?;
        Ok(Self {
            tmp,
            target: target.to_path_buf(),
            done: false,
        })
    }

    /// The temporary folder to write into.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Puts the complete folder in place.
    pub fn commit(mut self) -> Result<(), OutputError> {
        let io = |p: &Path, e| OutputError::io(p, e);
        if !self.target.exists() {
            std::fs::rename(&self.tmp, &self.target).map_err(|e| io(&self.target, e))?;
        } else if !self.target.is_dir() {
            return Err(OutputError::other(
                &self.target,
                "exists and is not a folder",
            ));
        } else {
            for entry in std::fs::read_dir(&self.tmp).map_err(|e| io(&self.tmp, e))? {
                let from = entry.map_err(|e| io(&self.tmp, e))?.path();
                let to = self.target.join(from.file_name().unwrap_or_default());
                std::fs::rename(&from, &to).map_err(|e| io(&to, e))?;
            }
            std::fs::remove_dir(&self.tmp).map_err(|e| io(&self.tmp, e))?;
        }
        self.done = true;
        Ok(())
    }
}

impl Drop for PartialDir {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names_keep_the_extension() {
        assert_eq!(
            partial_path(Path::new("out/overlay.mp4")),
            Path::new("out/.overlay.partial.mp4")
        );
        assert_eq!(
            partial_path(Path::new("b.csv")),
            Path::new(".b.partial.csv")
        );
        assert_eq!(
            partial_path(Path::new("d/clip")),
            Path::new("d/.clip.partial")
        );
    }

    #[test]
    fn whole_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub/x.csv");
        // Dropped unfinished: nothing left.
        let p = PartialFile::new(&target).unwrap();
        std::fs::write(p.path(), b"half").unwrap();
        drop(p);
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            0
        );
        // Committed: the file under its name, nothing else.
        let p = PartialFile::new(&target).unwrap();
        std::fs::write(p.path(), b"whole").unwrap();
        p.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"whole");
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );
        // Folders: a new one is renamed into place; into an existing one, files are moved and
        // replace those of the same name.
        let d = dir.path().join("pngs");
        let p = PartialDir::new(&d).unwrap();
        std::fs::write(p.path().join("a"), b"1").unwrap();
        p.commit().unwrap();
        std::fs::write(d.join("keep"), b"k").unwrap();
        let p = PartialDir::new(&d).unwrap();
        std::fs::write(p.path().join("a"), b"2").unwrap();
        std::fs::write(p.path().join("b"), b"3").unwrap();
        p.commit().unwrap();
        assert_eq!(std::fs::read(d.join("a")).unwrap(), b"2");
        assert_eq!(std::fs::read(d.join("keep")).unwrap(), b"k");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 3);
        let p = PartialDir::new(&d).unwrap();
        std::fs::write(p.path().join("c"), b"4").unwrap();
        drop(p);
        assert!(!d.join("c").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
