//! The files beside the database: the directory must take new ones, and
//! the lock file keeps a second process off the store.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use tasktape_core::store::{Result, StoreError};

/// Checks that the store's directory takes new files (SQLite makes its
/// `-wal` and `-shm` files there): a read-only or immutable directory is
/// [`StoreError::ReadOnly`], not a puzzling "unable to open".
pub(crate) fn probe_directory(db: &Path, path: &str) -> Result<()> {
    let probe = db.with_extension("db-probe");
    match File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::StorageFull => Err(StoreError::Full {
            path: path.to_owned(),
            message: format!("cannot create files next to it: {error}"),
        }),
        Err(error) => Err(StoreError::ReadOnly {
            path: path.to_owned(),
            message: format!(
                "cannot create files in its directory {}: {error}",
                db.parent()
                    .map_or_else(String::new, |dir| dir.display().to_string())
            ),
        }),
    }
}

pub(crate) fn lock_file(db: &Path) -> Result<File, String> {
    let mut lock_path = db.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|error| format!("cannot create lock file {}: {error}", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another process has this store open (lock file {})",
            lock_path.display()
        )),
        Err(std::fs::TryLockError::Error(error)) => {
            Err(format!("cannot lock {}: {error}", lock_path.display()))
        }
    }
}
