//! WAL checkpoints on their own thread, so commits never pay for them.
//!
//! The writer runs with `wal_autocheckpoint = 0`. Every [`INTERVAL`] this
//! thread runs a PASSIVE checkpoint, which never blocks anyone and copies
//! the bulk of the log into the file. Under a steady write load it never
//! catches up with the writer, so the log could only restart from its
//! beginning when the writer pauses; the writer therefore finishes the job
//! itself between two transactions once the log is longer than
//! [`RESTART_BYTES`] (see `writer.rs`). At close this thread runs a
//! TRUNCATE checkpoint.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;

/// How often the WAL is checkpointed.
const INTERVAL: Duration = Duration::from_millis(100);

/// Log length past which the writer checkpoints between two transactions
/// so that the next one restarts the log (in frames: this over the page size).
pub(crate) const RESTART_BYTES: i64 = 64 << 20;

/// Keeps the checkpointer running; [`Handle::stop`] ends it.
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

/// Runs `PRAGMA wal_checkpoint(mode)`; returns the log's length in frames.
pub(crate) fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        row.get(1)
    })
}

pub(crate) fn start(db: &Path, display: &str) -> rusqlite::Result<Handle> {
    let conn = Connection::open(db)?;
    conn.busy_timeout(Duration::from_millis(200))?;
    let (stop, stopped) = mpsc::channel::<()>();
    let path = display.to_owned();
    let spawned = std::thread::Builder::new()
        .name("tasktape-sqlite-checkpoint".into())
        .spawn(move || {
            loop {
                match stopped.recv_timeout(INTERVAL) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if let Err(error) = checkpoint(&conn, "PASSIVE") {
                            tracing::warn!(%path, %error, "wal checkpoint failed");
                        }
                    }
                    Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                        // The store closed: fold the WAL back into the file.
                        let _ = checkpoint(&conn, "TRUNCATE");
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
