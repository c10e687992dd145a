//! The instance-id guard: a session advisory lock keyed by the schema and
//! the instance id, held on a connection of its own for as long as the
//! instance lives, so a second live instance with the same id is refused
//! (two of them would finish each other's tasks as their own leftovers).
//!
//! A restart right after `kill -9` waits a few seconds for the dead session
//! to go. When the connection drops (a database restart) the lock goes with
//! it: the guard reconnects and takes it again; the instance does not exit.

use std::time::Duration;

use tasktape_core::StoreError;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How long a start waits for the id's lock (a killed predecessor's session
/// may take a moment to end).
const PATIENCE: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The advisory-lock key: 64 bits of the MD5 of schema and id (schema
/// names hold no `.`), so two ids in use collide with odds of about 2^-64.
const TRY_LOCK: &str = "SELECT pg_try_advisory_lock(\
     ('x' || left(md5('tasktape.instance.' || $1 || '.' || $2), 16))::bit(64)::bigint)";

/// Takes the id's lock (waiting up to [`PATIENCE`]) and spawns the task
/// that holds it, retaking it after reconnects.
pub(crate) async fn take(
    mut config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    schema: String,
    instance_id: String,
    target: &str,
) -> Result<tokio::task::JoinHandle<()>, StoreError> {
    config.application_name(format!("tasktape guard {instance_id}"));
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let held = loop {
        let (client, connection) = config
            .connect(tls.clone())
            .await
            .map_err(|error| crate::rows::classify("taking the instance id's lock", error))?;
        let driver = tokio::spawn(connection);
        if try_lock(&client, &schema, &instance_id).await? {
            break (client, driver);
        }
        driver.abort();
        if tokio::time::Instant::now() >= deadline {
            return Err(StoreError::InstanceIdInUse {
                id: instance_id,
                store: format!("{target} (schema {schema})"),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    Ok(tokio::spawn(hold(config, tls, schema, instance_id, held)))
}

async fn try_lock(
    client: &tokio_postgres::Client,
    schema: &str,
    instance_id: &str,
) -> Result<bool, StoreError> {
    let row = client
        .query_one(TRY_LOCK, &[&schema, &instance_id])
        .await
        .map_err(|error| crate::rows::classify("taking the instance id's lock", error))?;
    row.try_get(0)
        .map_err(|error| crate::rows::classify("taking the instance id's lock", error))
}

/// Holds the lock; after the connection drops, takes it again.
async fn hold(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    schema: String,
    instance_id: String,
    held: (
        tokio_postgres::Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ),
) {
    let (mut _client, mut driver) = held;
    loop {
        // The connection's future ends when the connection does.
        let ended = (&mut driver).await;
        tracing::warn!(?ended, instance = %instance_id, "the instance id's lock was lost with its connection; taking it again");
        let mut backoff = Duration::from_millis(50);
        loop {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            let Ok((client, connection)) = config.connect(tls.clone()).await else {
                continue;
            };
            let next = tokio::spawn(connection);
            match try_lock(&client, &schema, &instance_id).await {
                Ok(true) => {
                    tracing::info!(instance = %instance_id, "instance id's lock taken again");
                    (_client, driver) = (client, next);
                    break;
                }
                Ok(false) => {
                    tracing::error!(
                        instance = %instance_id,
                        "another live instance took this instance's id while the database was away: give each instance its own instance_id; retrying"
                    );
                    next.abort();
                }
                Err(_) => next.abort(),
            }
        }
    }
}
