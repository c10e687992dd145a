//! A fresh schema per test on the test database.

use std::sync::Arc;

use tasktape_core::testkit::Harness;
use tasktape_store_postgres::{PostgresConfig, PostgresStore};

/// The test database's URL; panics with how to get one when it is missing.
pub fn test_url() -> String {
    match std::env::var("TASKTAPE_TEST_PG") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "TASKTAPE_TEST_PG is not set: run the tests through scripts/with-postgres, which \
             starts a throwaway PostgreSQL (e.g. `scripts/with-postgres cargo nextest run -p \
             tasktape-store-postgres`)"
        ),
    }
}

/// A schema name no other test uses.
pub fn unique_schema() -> String {
    format!("t_{}", uuid::Uuid::new_v4().simple())
}

/// Drops its schema when the test ends.
pub struct SchemaGuard {
    url: String,
    schema: String,
}

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // Drop runs inside the test's runtime: clean up on a thread of our own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A store on a new schema, and the guard that drops it.
pub async fn open_schema(schema: &str) -> (Arc<PostgresStore>, SchemaGuard) {
    let url = test_url();
    let mut config = PostgresConfig::new(&url);
    config.schema = schema.to_owned();
    let store = PostgresStore::open(config)
        .await
        .expect("open the test schema");
    (
        Arc::new(store),
        SchemaGuard {
            url,
            schema: schema.to_owned(),
        },
    )
}

/// A fresh store for one contract check.
pub async fn fresh() -> Harness {
    let (store, guard) = open_schema(&unique_schema()).await;
    Harness::new(store, guard)
}

/// Waits until every store's listener is connected (10 s at most).
pub async fn wait_listening(stores: &[&PostgresStore]) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !stores.iter().all(|store| store.listening()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a listener did not connect"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Makes the schema's `tasks` table refuse some rows (a `BEFORE {event}`
/// trigger raising "refused by the test" `WHEN ({when})`): a row the
/// store's statements cannot write.
pub async fn refuse_rows(schema: &str, event: &str, when: &str) {
    let (client, connection) = tokio_postgres::connect(&test_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "CREATE FUNCTION \"{schema}\".refuse() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
             CREATE TRIGGER refuse BEFORE {event} ON \"{schema}\".tasks FOR EACH ROW \
             WHEN ({when}) EXECUTE FUNCTION \"{schema}\".refuse();"
        ))
        .await
        .unwrap();
}
