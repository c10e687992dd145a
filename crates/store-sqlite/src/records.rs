//! Records the engine keeps by kind and key (remote ops' declarations,
//! remote workers): a compare-and-swap through the writer, a read through
//! the readers; and the store's `Coordination` (with its wake hub).

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use tasktape_core::store::{Coordination, Result};
use tasktape_core::wake::WakeHub;

use crate::SqliteStore;
use crate::writer::{Command, Writer};

impl Writer {
    /// Writes `value` (or deletes, for `None`) when the record is
    /// `expected` now (`None`: absent); whether it was.
    pub(crate) fn swap_record(
        &mut self,
        kind: &str,
        key: &str,
        expected: Option<&str>,
        value: Option<&str>,
    ) -> rusqlite::Result<bool> {
        let current: Option<String> = self
            .conn
            .prepare_cached("SELECT value FROM records WHERE kind = ?1 AND key = ?2")?
            .query_row(params![kind, key], |row| row.get(0))
            .optional()?;
        if current.as_deref() != expected {
            return Ok(false);
        }
        match value {
            Some(value) => {
                self.conn
                    .prepare_cached(
                        "INSERT INTO records (kind, key, value) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value",
                    )?
                    .execute(params![kind, key, value])?;
            }
            None => {
                self.conn
                    .prepare_cached("DELETE FROM records WHERE kind = ?1 AND key = ?2")?
                    .execute(params![kind, key])?;
            }
        }
        Ok(true)
    }
}

/// Every record of `kind`, by key.
pub(crate) fn records(
    conn: &mut Connection,
    kind: &str,
) -> rusqlite::Result<Vec<(String, String)>> {
    let mut statement =
        conn.prepare_cached("SELECT key, value FROM records WHERE kind = ?1 ORDER BY key")?;
    statement
        .query_map([kind], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect()
}

#[async_trait]
impl Coordination for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn wake_hub(&self) -> &Arc<WakeHub> {
        &self.hub
    }

    async fn records(&self, kind: &str) -> Result<Vec<(String, String)>> {
        let kind = kind.to_owned();
        self.readers.with(move |conn| records(conn, &kind)).await
    }

    async fn swap_record(
        &self,
        kind: &str,
        key: &str,
        expected: Option<&str>,
        value: Option<&str>,
    ) -> Result<bool> {
        let (kind, key) = (kind.to_owned(), key.to_owned());
        let (expected, value) = (expected.map(str::to_owned), value.map(str::to_owned));
        self.call(|reply| Command::SwapRecord(kind, key, expected, value, reply))
            .await
    }
}
