//! The store's coordination with its peers: readiness, the instance
//! guard, the schema check, the records the engine keeps, and the signals
//! other instances send through NOTIFY.

use std::sync::Arc;

use async_trait::async_trait;
use tasktape_core::store::{Coordination, Result, StoreSignal};
use tasktape_core::wake::WakeHub;
use tokio::sync::broadcast;

use crate::{PostgresStore, guard};

#[async_trait]
impl Coordination for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ready(&self) -> Result<()> {
        self.query("checking the database", "SELECT 1", &[])
            .await
            .map(|_| ())
    }

    fn wake_hub(&self) -> &Arc<WakeHub> {
        &self.shared.hub
    }

    async fn guard_instance(&self, instance_id: &str) -> Result<()> {
        let held = guard::take(
            self.connect.clone(),
            self.shared.tls.clone(),
            self.schema.clone(),
            instance_id.to_owned(),
            &self.target,
        )
        .await?;
        let previous = self
            .guard
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .replace(held);
        if let Some(previous) = previous {
            previous.abort();
        }
        let _ = self.shared.owner.set(instance_id.to_owned());
        Ok(())
    }

    async fn check_schema(&self) -> Result<()> {
        self.schema_is_known().await
    }

    async fn records(&self, kind: &str) -> Result<Vec<(String, String)>> {
        self.records_of(kind).await
    }

    async fn swap_record(
        &self,
        kind: &str,
        key: &str,
        expected: Option<&str>,
        value: Option<&str>,
    ) -> Result<bool> {
        self.swap_record_with(kind, key, expected, value).await
    }

    fn shared(&self) -> bool {
        true
    }

    fn signals(&self) -> Option<broadcast::Receiver<StoreSignal>> {
        Some(self.shared.signals.subscribe())
    }
}
