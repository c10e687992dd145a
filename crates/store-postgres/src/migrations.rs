//! Applying `schema::MIGRATIONS`: creates the schema and brings it to this
//! build's version in one transaction under an advisory lock.

use deadpool_postgres::Pool;
use tasktape_core::StoreError;
use tasktape_core::store::Result;

use crate::rows::{self, driver};
use crate::schema;

/// Creates the schema and applies the missing migrations in one
/// transaction under an advisory lock.
pub(crate) async fn migrate(pool: &Pool, schema: &str, target: &str) -> Result<()> {
    let open = |message: String| StoreError::Open {
        path: target.to_owned(),
        message,
    };
    let mut client = pool.get().await.map_err(|error| match rows::pool(error) {
        StoreError::Unavailable { message } => open(message),
        other => other,
    })?;
    let context = "migrating the schema";
    let tx = client.transaction().await.map_err(driver(context))?;
    // Migrations may take long on a big store: no statement timeout here.
    tx.batch_execute("SET LOCAL statement_timeout = 0")
        .await
        .map_err(driver(context))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("tasktape.{schema}.migrate")],
    )
    .await
    .map_err(driver(context))?;
    let s = schema::quoted(schema);
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {s}; \
         CREATE TABLE IF NOT EXISTS {s}.migrations (version integer PRIMARY KEY, \
             applied_at timestamptz NOT NULL DEFAULT now());"
    ))
    .await
    .map_err(driver(context))?;
    let current: i32 = tx
        .query_one(
            &format!("SELECT coalesce(max(version), 0) FROM {s}.migrations"),
            &[],
        )
        .await
        .map_err(driver(context))?
        .get(0);
    if current > schema::latest() {
        return Err(StoreError::SchemaTooNew {
            path: format!("{target} (schema {schema})"),
            found: current.into(),
            known: schema::latest().into(),
        });
    }
    for (index, sql) in schema::MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(&schema::render(sql, schema))
            .await
            .map_err(driver(context))?;
        tx.execute(
            &format!("INSERT INTO {s}.migrations (version) VALUES ($1)"),
            &[&(index as i32 + 1)],
        )
        .await
        .map_err(driver(context))?;
    }
    tx.commit().await.map_err(driver(context))
}
