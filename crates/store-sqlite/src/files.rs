//! The files beside the database: the directory must take new ones, and
//! the lock file keeps a second process off the store.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use tasktape_core::store::{Result, StoreError};

/// Checks that the store's directory takes new files with some room (SQLite
/// makes its `-wal` and `-shm` files there and grows the log): a read-only
/// or immutable directory is [`StoreError::ReadOnly`], not a puzzling
/// "unable to open"; a disk with under 256 KiB free is [`StoreError::Full`].
pub(crate) fn probe_directory(db: &Path, path: &str) -> Result<()> {
    let probe = db.with_extension("db-probe");
    // Room for the log to grow at start (an empty file fits on a full disk).
    let written = File::create(&probe).and_then(|mut file| {
        std::io::Write::write_all(&mut file, &[0u8; 256 * 1024])?;
        file.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    match written {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::StorageFull => Err(StoreError::Full {
            path: path.to_owned(),
            message: format!("no room left next to it: {error}"),
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
