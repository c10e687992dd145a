//! WAL checkpoints on their own thread, so commits never pay for them.
//!
//! The writer runs with `wal_autocheckpoint = 0`; this thread runs a PASSIVE
//! checkpoint (it never blocks the writer or readers) every
//! [`INTERVAL`], and a TRUNCATE checkpoint when the store closes.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;

/// How often the WAL is checkpointed.
const INTERVAL: Duration = Duration::from_millis(100);

/// Keeps the checkpointer running; dropping it stops the thread.
pub(crate) struct Handle {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Handle {
    /// Stops the thread after its final checkpoint and waits for it.
    pub(crate) fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

pub(crate) fn start(db: &Path, display: &str) -> rusqlite::Result<Handle> {
    let conn = Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(1))?;
    let (stop, stopped) = mpsc::channel::<()>();
    let path = display.to_owned();
    let spawned = std::thread::Builder::new()
        .name("tasktape-sqlite-checkpoint".into())
        .spawn(move || {
            loop {
                match stopped.recv_timeout(INTERVAL) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if let Err(error) =
                            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                        {
                            tracing::warn!(%path, %error, "wal checkpoint failed");
                        }
                    }
                    Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                        // The store closed: fold the WAL back into the file. Fails
                        // harmlessly (busy) while another handle still reads.
                        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
                        return;
                    }
                }
            }
        });
    let thread = spawned.map_err(|error| {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!("cannot start the checkpoint thread: {error}")),
        )
    })?;
    Ok(Handle { stop, thread })
}
