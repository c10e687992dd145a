//! Reads: rows, list pages, counts, tape pages (one statement, one
//! snapshot) and the lease bookkeeping's queries.

use tasktape_core::StoredEvent;
use tasktape_core::model::{Status, Task, TaskId};
use tasktape_core::store::{
    ListPage, ListQuery, MinuteCount, Result, StatusCounts, StoreError, TapePage,
};
use tasktape_core::time::Timestamp;

use crate::PostgresStore;
use crate::rows::{self, driver, task_from_row, uuid};

impl PostgresStore {
    pub(crate) async fn read_task(&self, task_id: TaskId) -> Result<Option<Task>> {
        let rows = self
            .query("reading a task", &self.shared.sql.get, &[&uuid(task_id)])
            .await?;
        rows.first().map(task_from_row).transpose()
    }

    pub(crate) async fn list_tasks(&self, query: ListQuery) -> Result<ListPage> {
        let mut sql = self.shared.sql.list.clone();
        let statuses: Vec<String> = query
            .status_filter()
            .iter()
            .map(|status| status.as_str().to_owned())
            .collect();
        let created_after = query.created_after.map(Timestamp::as_millis);
        let created_before = query.created_before.map(Timestamp::as_millis);
        let limit = i64::try_from(query.fetch_limit()).unwrap_or(i64::MAX);
        let after = query
            .after
            .map(|cursor| (cursor.created_at.as_millis(), uuid(cursor.task_id)));
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
        // A metadata filter walks its first key's entries, newest first (by
        // their `at` and `task`, equal to the row's `created_at` and
        // `task_id`); every other key is a lookup of its entry.
        let mut entries = query.metadata.iter();
        let (at, id) = match entries.next() {
            None => ("created_at", "task_id"),
            Some((key, value)) => {
                params.push(key);
                params.push(value);
                sql = self.shared.sql.list_by_metadata.clone();
                ("at", "task")
            }
        };
        for (key, value) in entries {
            params.push(key);
            params.push(value);
            let (k, v) = (params.len() - 1, params.len());
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM {s}.task_metadata m WHERE m.key = ${k} AND m.value = ${v} \
                 AND m.at = t.created_at AND m.task = t.task_id)",
                s = self.shared.sql.schema
            ));
        }
        if !statuses.is_empty() {
            params.push(&statuses);
            sql.push_str(&format!(" AND status = ANY (${})", params.len()));
        }
        if let Some(after) = &created_after {
            params.push(after);
            sql.push_str(&format!(" AND {at} >= ${}", params.len()));
        }
        if let Some(before) = &created_before {
            params.push(before);
            sql.push_str(&format!(" AND {at} < ${}", params.len()));
        }
        if let Some(op) = &query.op {
            params.push(op);
            sql.push_str(&format!(" AND op = ${}", params.len()));
        }
        if let Some((created_at, task_id)) = &after {
            params.push(created_at);
            params.push(task_id);
            let (at_value, id_value) = (params.len() - 1, params.len());
            // `created_at <= at` first: an index range from the cursor on,
            // not a walk from the newest row (the OR alone cannot be a range).
            sql.push_str(&format!(
                " AND {at} <= ${at_value} AND ({at} < ${at_value} OR {id} > ${id_value})"
            ));
        }
        params.push(&limit);
        sql.push_str(&format!(
            " ORDER BY {at} DESC, {id} ASC LIMIT ${}",
            params.len()
        ));
        let rows = self.query("listing tasks", &sql, &params).await?;
        let tasks = rows.iter().map(task_from_row).collect::<Result<Vec<_>>>()?;
        Ok(ListPage::from_rows(tasks, &query))
    }

    pub(crate) async fn count_tasks(&self) -> Result<StatusCounts> {
        let rows = self
            .query("counting tasks", &self.shared.sql.counts, &[])
            .await?;
        let mut counts: StatusCounts = Status::ALL.into_iter().map(|status| (status, 0)).collect();
        for row in rows {
            let status = rows::status(row.try_get(0).map_err(driver("counting tasks"))?)?;
            let count: i64 = row.try_get(1).map_err(driver("counting tasks"))?;
            counts.insert(status, count.max(0) as u64);
        }
        Ok(counts)
    }

    pub(crate) async fn finished_minutes(&self, since: Timestamp) -> Result<Vec<MinuteCount>> {
        let context = "counting finished tasks";
        let first = since.as_millis().div_euclid(60_000)
            + i64::from(since.as_millis().rem_euclid(60_000) > 0);
        let rows = self
            .query(context, &self.shared.sql.finished_per_minute, &[&first])
            .await?;
        rows.iter()
            .map(|row| {
                let minute: i64 = row.try_get(0).map_err(driver(context))?;
                let count: i64 = row.try_get(2).map_err(driver(context))?;
                Ok(MinuteCount {
                    minute: Timestamp::from_millis(minute * 60_000),
                    status: rows::status(row.try_get(1).map_err(driver(context))?)?,
                    count: count.max(0) as u64,
                })
            })
            .collect()
    }

    pub(crate) async fn read_events(
        &self,
        task_id: TaskId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Option<TapePage>> {
        let context = "reading a tape";
        let from = i64::try_from(from_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                context,
                &self.shared.sql.events,
                &[&uuid(task_id), &from, &limit],
            )
            .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let status = rows::status(first.try_get(0).map_err(driver(context))?)?;
        let last_seq: i64 = first.try_get(1).map_err(driver(context))?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: Option<i64> = row.try_get(2).map_err(driver(context))?;
            if let Some(seq) = seq {
                events.push(StoredEvent {
                    seq: seq as u64,
                    json: row.try_get(3).map_err(driver(context))?,
                });
            }
        }
        Ok(Some(TapePage {
            status,
            events,
            last_seq: last_seq as u64,
        }))
    }

    /// Bytes of the tape's events' JSON (`Reads::tape_bytes`).
    pub(crate) async fn read_tape_bytes(&self, task_id: TaskId) -> Result<u64> {
        let row = self
            .query_one(
                "reading a tape's size",
                &self.shared.sql.tape_bytes,
                &[&uuid(task_id)],
            )
            .await?;
        let bytes: i64 = row.try_get(0).map_err(driver("reading a tape's size"))?;
        Ok(bytes.max(0) as u64)
    }

    pub(crate) async fn read_last_seq(&self, task_id: TaskId) -> Result<Option<u64>> {
        let rows = self
            .query(
                "reading a tape",
                &self.shared.sql.last_seq,
                &[&uuid(task_id)],
            )
            .await?;
        rows.first()
            .map(|row| {
                row.try_get::<_, i64>(0)
                    .map(|seq| seq as u64)
                    .map_err(driver("reading a tape"))
            })
            .transpose()
    }

    /// Judged by the database's clock: `_now` (an instance's) is not used.
    pub(crate) async fn expired_tasks(
        &self,
        _now: Timestamp,
        exclude_owner: &str,
    ) -> Result<Vec<TaskId>> {
        let rows = self
            .query(
                "finding expired leases",
                &self.shared.sql.expired,
                &[&exclude_owner],
            )
            .await?;
        Self::task_ids(&rows, "finding expired leases")
    }

    pub(crate) async fn leftover_tasks(&self, owner: &str) -> Result<Vec<TaskId>> {
        let rows = self
            .query("finding leftovers", &self.shared.sql.leftovers, &[&owner])
            .await?;
        Self::task_ids(&rows, "finding leftovers")
    }

    pub(crate) async fn next_due_at(
        &self,
        op: &str,
        after: Timestamp,
    ) -> Result<Option<Timestamp>> {
        let row = self
            .query_one(
                "finding the next due task",
                &self.shared.sql.next_due,
                &[&op, &after.as_millis()],
            )
            .await?;
        let at: Option<i64> = row
            .try_get(0)
            .map_err(driver("finding the next due task"))?;
        Ok(at.map(Timestamp::from_millis))
    }

    pub(crate) async fn latest_key_with(&self, prefix: &str) -> Result<Option<String>> {
        let upper = format!("{prefix}\u{10FFFF}");
        let rows = self
            .query(
                "finding the latest key",
                &self.shared.sql.latest_key,
                &[&prefix, &upper],
            )
            .await?;
        rows.first()
            .map(|row| row.try_get(0).map_err(driver("finding the latest key")))
            .transpose()
    }

    /// [`StoreError::SchemaTooNew`] once a newer build migrated the schema.
    pub(crate) async fn schema_is_known(&self) -> Result<()> {
        let row = self
            .query_one(
                "checking the schema version",
                &self.shared.sql.schema_version,
                &[],
            )
            .await?;
        let found: i32 = row
            .try_get(0)
            .map_err(driver("checking the schema version"))?;
        if found > crate::schema::latest() {
            return Err(StoreError::SchemaTooNew {
                path: format!("{} (schema {})", self.target, self.schema),
                found: found.into(),
                known: crate::schema::latest().into(),
            });
        }
        Ok(())
    }

    pub(crate) async fn pending_op_counts(&self) -> Result<Vec<(String, u64)>> {
        let context = "counting pending tasks";
        let rows = self.query(context, &self.shared.sql.pending, &[]).await?;
        rows.iter()
            .map(|row| {
                let op: String = row.try_get(0).map_err(driver(context))?;
                let count: i64 = row.try_get(1).map_err(driver(context))?;
                Ok((op, count as u64))
            })
            .collect()
    }

    pub(crate) async fn records_of(&self, kind: &str) -> Result<Vec<(String, String)>> {
        let context = "reading records";
        let rows = self
            .query(context, &self.shared.sql.records, &[&kind])
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0).map_err(driver(context))?,
                    row.try_get(1).map_err(driver(context))?,
                ))
            })
            .collect()
    }

    pub(crate) async fn swap_record_with(
        &self,
        kind: &str,
        key: &str,
        expected: Option<&str>,
        value: Option<&str>,
    ) -> Result<bool> {
        let context = "writing a record";
        let sql = &self.shared.sql;
        let by = self.shared.owner.get().map_or("", String::as_str);
        let rows = match (expected, value) {
            (None, None) => {
                let all = self.records_of(kind).await?;
                return Ok(!all.iter().any(|(k, _)| k == key));
            }
            (None, Some(value)) => {
                self.query(context, &sql.record_insert, &[&kind, &key, &value, &by])
                    .await?
            }
            (Some(expected), Some(value)) => {
                self.query(
                    context,
                    &sql.record_update,
                    &[&kind, &key, &expected, &value, &by],
                )
                .await?
            }
            (Some(expected), None) => {
                self.query(context, &sql.record_delete, &[&kind, &key, &expected, &by])
                    .await?
            }
        };
        Ok(!rows.is_empty())
    }
}
