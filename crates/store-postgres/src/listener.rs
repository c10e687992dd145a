//! LISTEN on the schema's channel over a dedicated connection (not pooled:
//! notifications arrive on the connection that listens), turning NOTIFYs
//! into wake-ups and signals. When the connection drops (a database
//! restart) it reconnects with backoff, LISTENs again, and catches up: every
//! watched task is announced at its current last seq (so followers re-read
//! the tape and miss nothing) and a `Resync` signal tells the manager to
//! claim and poll cancels.

use std::sync::Arc;
use std::time::Duration;

use futures::future::poll_fn;
use tasktape_core::model::TaskId;
use tasktape_core::store::StoreSignal;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use crate::Shared;
use crate::rows::{task_id, uuid};

const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// How often the listening connection is checked, and how long a check may take.
const PING_EVERY: Duration = Duration::from_secs(15);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Listens until the store is dropped (the task is aborted then).
pub(crate) async fn run(shared: Arc<Shared>, mut config: tokio_postgres::Config, schema: String) {
    // Named so an operator can tell it in pg_stat_activity.
    config.application_name(format!("tasktape listener {schema}"));
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    let channel = crate::schema::channel(&schema);
    let mut backoff = BACKOFF_FIRST;
    let mut first = true;
    loop {
        match listen_once(&shared, &config, &channel, &mut first).await {
            Ok(()) => backoff = BACKOFF_FIRST,
            Err(error) => {
                tracing::warn!(%error, "postgres listener lost its connection; reconnecting");
            }
        }
        shared
            .listening
            .store(false, std::sync::atomic::Ordering::Release);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn listen_once(
    shared: &Shared,
    config: &tokio_postgres::Config,
    channel: &str,
    first: &mut bool,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(shared.tls.clone()).await?;
    let (tx, mut notifications) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(notification)) => {
                    if tx.send(notification.payload().to_owned()).is_err() {
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    let listening = async {
        client
            .batch_execute(&format!("LISTEN \"{channel}\""))
            .await?;
        shared
            .listening
            .store(true, std::sync::atomic::Ordering::Release);
        if !std::mem::take(first) {
            tracing::info!("postgres listener reconnected; catching up");
        }
        catch_up(shared, &client).await?;
        // A connection cut without a word (a NAT, a failover) would leave
        // us deaf: ping it, and reconnect when the ping fails.
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                payload = notifications.recv() => match payload {
                    Some(payload) => dispatch(shared, &payload),
                    None => return Ok(()),
                },
                _ = ping.tick() => {
                    match tokio::time::timeout(PING_TIMEOUT, client.simple_query("SELECT 1")).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => return Err(error),
                        Err(_) => {
                            tracing::warn!("postgres listener: ping timed out; reconnecting");
                            return Ok(());
                        }
                    }
                }
            }
        }
    };
    let outcome: Result<(), tokio_postgres::Error> = listening.await;
    driver.abort();
    outcome
}

/// Announces every watched task at its last seq, and asks for a resync.
async fn catch_up(
    shared: &Shared,
    client: &tokio_postgres::Client,
) -> Result<(), tokio_postgres::Error> {
    let watched: Vec<uuid::Uuid> = shared.hub.watched().into_iter().map(uuid).collect();
    if !watched.is_empty() {
        let rows = client.query(&shared.sql.last_seqs, &[&watched]).await?;
        for row in rows {
            let id: uuid::Uuid = row.try_get(0)?;
            let seq: i64 = row.try_get(1)?;
            shared.hub.notify(task_id(id), seq as u64);
        }
    }
    let _ = shared.signals.send(StoreSignal::Resync);
    Ok(())
}

/// Acts on one NOTIFY payload (see `schema.rs` for the forms).
fn dispatch(shared: &Shared, payload: &str) {
    let mut parts = payload.splitn(4, ' ');
    let kind = parts.next().unwrap_or("");
    let first = parts.next().unwrap_or("");
    let parse_id = |text: &str| text.parse::<TaskId>().ok();
    match kind {
        "e" => {
            if let (Some(id), Some(seq)) =
                (parse_id(first), parts.next().and_then(|s| s.parse().ok()))
            {
                shared.hub.notify(id, seq);
            }
        }
        "f" => {
            let seq = parts.next().and_then(|s| s.parse().ok());
            if let (Some(id), Some(seq)) = (parse_id(first), seq) {
                shared.hub.notify(id, seq);
            }
            if let Some(op) = parts.next() {
                let _ = shared
                    .signals
                    .send(StoreSignal::Finished { op: op.to_owned() });
            }
        }
        "p" => {
            // The op may hold spaces: it is everything after "p ".
            let op = payload.get(2..).unwrap_or("");
            let _ = shared
                .signals
                .send(StoreSignal::Pending { op: op.to_owned() });
        }
        "d" => {
            // "d <run_at> <op>": the op may hold spaces.
            let mut rest = payload.splitn(3, ' ').skip(1);
            let at = rest.next().and_then(|text| text.parse::<i64>().ok());
            if let (Some(at), Some(op)) = (at, rest.next()) {
                let _ = shared.signals.send(StoreSignal::Due {
                    op: op.to_owned(),
                    at: tasktape_core::Timestamp::from_millis(at),
                });
            }
        }
        "c" => {
            let owner = payload.splitn(3, ' ').nth(2).unwrap_or("");
            if let Some(task_id) = parse_id(first) {
                let _ = shared.signals.send(StoreSignal::CancelRequested {
                    task_id,
                    owner: owner.to_owned(),
                });
            }
        }
        "r" => {
            // "r KIND\tWRITER\tKEY": the key may hold anything but a tab.
            let mut fields = payload.get(2..).unwrap_or("").splitn(3, '\t');
            if let (Some(kind), Some(by), Some(key)) = (fields.next(), fields.next(), fields.next())
            {
                let _ = shared.signals.send(StoreSignal::RecordChanged {
                    kind: kind.to_owned(),
                    key: key.to_owned(),
                    by: by.to_owned(),
                });
            }
        }
        _ => tracing::debug!(payload, "unknown notification"),
    }
}
