//! Output files that appear whole or not at all: written under a temporary name next to
//! the destination, fsynced, then renamed over it.

use std::path::{Path, PathBuf};

use super::Failure;

/// A destination being written through a temporary file in the same directory.
/// Dropped without [`Staged::commit`], the temporary file is removed.
pub struct Staged {
    temp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl Staged {
    /// Refuses an existing `dest` unless `force`.
    pub fn new(dest: &Path, force: bool) -> Result<Self, Failure> {
        if dest.is_dir() {
            return Err(Failure(format!("{} is a directory", dest.display())));
        }
        if dest.exists() && !force {
            return Err(Failure(format!(
                "{} already exists; pass --force to replace it",
                dest.display()
            )));
        }
        let Some(name) = dest.file_name() else {
            return Err(Failure(format!("{} is not a file name", dest.display())));
        };
        let temp = dest.with_file_name(format!(
            ".{}.tmp-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        // A leftover of an earlier run that had this process id.
        let _ = std::fs::remove_file(&temp);
        Ok(Self {
            temp,
            dest: dest.to_path_buf(),
            committed: false,
        })
    }

    pub fn temp(&self) -> &Path {
        &self.temp
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Create the temporary file for writing.
    pub async fn create(&self) -> Result<tokio::fs::File, Failure> {
        tokio::fs::File::create(&self.temp)
            .await
            .map_err(|e| Failure(format!("cannot create {}: {e}", self.temp.display())))
    }

    /// Make the temporary file durable and move it into place.
    pub fn commit(mut self) -> Result<(), Failure> {
        sync_file(&self.temp)?;
        std::fs::rename(&self.temp, &self.dest).map_err(|e| {
            Failure(format!(
                "cannot rename {} to {}: {e}",
                self.temp.display(),
                self.dest.display()
            ))
        })?;
        self.committed = true;
        sync_dir(parent_dir(&self.dest));
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// fsync a file's contents.
pub fn sync_file(path: &Path) -> Result<(), Failure> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| file.sync_all())
        .map_err(|e| Failure(format!("cannot sync {}: {e}", path.display())))
}

/// fsync a directory, so a rename in it survives a crash. Best effort: not every
/// platform can open a directory.
pub fn sync_dir(dir: &Path) {
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// The directory holding `path` ("." for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}
