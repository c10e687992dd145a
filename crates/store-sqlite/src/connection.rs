//! Opening a connection (the query-planner stability guarantee, the
//! statement cache, memory-mapped reads) and the writer's pragmas (WAL,
//! durability, checkpoints on their own thread, statement journals in
//! memory, the size cap).

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::{Durability, SqliteConfig};

/// How much of the file connections map into memory: reads of a
/// memory-mapped page need no copy and survive the writer's commits.
const MMAP_BYTES: i64 = 1 << 30;

pub(crate) fn open_connection(path: &Path, create: bool) -> rusqlite::Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_READ_WRITE;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    // Plans must not depend on bound values: otherwise (bundled SQLite has
    // STAT4) every reuse of a cached statement is re-prepared.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
    Ok(conn)
}

pub(crate) fn configure_writer(conn: &Connection, config: &SqliteConfig) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // A new file takes the configured page size; it must be set before
    // the first write (WAL mode fixes it from then on).
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |row| row.get(0))?;
    if pages == 0 {
        conn.pragma_update(None, "page_size", config.page_size)?;
    }
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!("cannot switch to WAL mode (got {mode})")),
        ));
    }
    let sync = match config.durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    // Checkpoints run on their own thread (see `checkpointer`), not in commits.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    // Statement journals in memory: in a file they were a `pwrite` per
    // page, a sixth of the writer's time in starting a task (with the
    // status triggers schema 7 dropped). They hold one statement's pages.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    if let Some(max_bytes) = config.max_size_bytes {
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
        let pages = (max_bytes as i64 / page_size.max(512)).max(1);
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))?;
    }
    Ok(())
}
