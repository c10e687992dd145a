//! What other instances sharing the store did, as the store signals it:
//! work to claim, timers to arm, cancels of runs held here, and a resync
//! after signals may have been missed.

use std::sync::Arc;

use tokio::sync::broadcast::{Receiver, error::RecvError};

use super::leases::Leases;
use crate::store::StoreSignal;

/// Reacts to the store's signals until shutdown ends.
pub(crate) async fn follow(leases: Arc<Leases>, mut signals: Receiver<StoreSignal>) {
    let claimer = &leases.claimer;
    loop {
        let signal = tokio::select! {
            signal = signals.recv() => signal,
            () = leases.life.background.cancelled() => return,
        };
        match signal {
            Ok(StoreSignal::Pending { op } | StoreSignal::Finished { op }) => claimer.kick(&op),
            Ok(StoreSignal::Due { op, at }) => claimer.arm_due(&op, at),
            Ok(StoreSignal::CancelRequested { task_id, owner }) => {
                if owner == leases.settings.instance_id {
                    leases.runs.cancel(task_id, true);
                }
            }
            Ok(StoreSignal::RecordChanged { kind, key, by }) => {
                if by != leases.settings.instance_id {
                    let remote = Arc::clone(claimer.remote());
                    tokio::spawn(async move { remote.record_changed(&kind, &key).await });
                }
            }
            Ok(StoreSignal::Resync) | Err(RecvError::Lagged(_)) => {
                claimer.kick_all();
                claimer.rearm_all();
                let remote = Arc::clone(claimer.remote());
                tokio::spawn(async move { remote.resync().await });
                // Polled aside, so signals keep flowing meanwhile.
                Arc::clone(&leases).spawn_cancel_poll();
            }
            Err(RecvError::Closed) => return,
        }
    }
}
