//! The follow loop: whole tapes in order, exactly once, across dropped
//! connections, by long-poll and by SSE.

use std::time::Duration;

use serde_json::json;
use tasktape_client::{Client, ClientError, FollowMode, Submission};
use tasktape_core::{EventBody, Status, TaskId};

use crate::support::{Proxy, server};

const MODES: [FollowMode; 2] = [FollowMode::LongPoll, FollowMode::Sse];

/// Every event from `from_seq` to the end.
async fn collect(client: &Client, task_id: TaskId, from_seq: u64, mode: FollowMode) -> Vec<u64> {
    let mut tape = client.follow(task_id, from_seq, mode);
    let mut seqs = Vec::new();
    while let Some(event) = tape.next().await.unwrap() {
        if let EventBody::Final { .. } = event.body {
            assert_eq!(tape.task_status(), Some(Status::Succeeded));
        }
        seqs.push(event.seq);
    }
    // Stays ended.
    assert!(tape.next().await.unwrap().is_none());
    seqs
}

fn ticks(count: u64, delay_ms: u64) -> Submission {
    Submission::new("ticks", json!({"count": count, "delay_ms": delay_ms}))
}

#[tokio::test]
async fn a_live_tape_is_followed_whole_in_both_modes() {
    let server = server().await;
    let client = server.client();
    for mode in MODES {
        let handle = client.submit(&ticks(100, 1)).await.unwrap();
        let seqs = collect(&client, handle.task_id, 0, mode).await;
        // task_started, log, 100 progress, partial, final.
        assert_eq!(seqs, (1..=104).collect::<Vec<_>>(), "{mode:?}");
    }
}

#[tokio::test]
async fn following_from_a_seq_starts_there_and_past_the_end_ends_at_once() {
    let server = server().await;
    let client = server.client();
    let handle = client.submit(&ticks(5, 0)).await.unwrap();
    collect(&client, handle.task_id, 0, FollowMode::LongPoll).await;
    for mode in MODES {
        assert_eq!(
            collect(&client, handle.task_id, 6, mode).await,
            vec![6, 7, 8, 9]
        );
        assert!(collect(&client, handle.task_id, 50, mode).await.is_empty());
    }
}

#[tokio::test]
async fn dropped_connections_neither_skip_nor_repeat_events() {
    let server = server().await;
    let proxy = Proxy::start(&server.base).await;
    let direct = server.client();
    let through_proxy = Client::new(&proxy.base, None).unwrap();
    for mode in MODES {
        let handle = direct.submit(&ticks(300, 2)).await.unwrap();
        let follow = collect(&through_proxy, handle.task_id, 0, mode);
        tokio::pin!(follow);
        let mut cuts = 0;
        let seqs = loop {
            tokio::select! {
                seqs = &mut follow => break seqs,
                _ = tokio::time::sleep(Duration::from_millis(40)) => {
                    proxy.cut();
                    cuts += 1;
                }
            }
        };
        assert!(cuts >= 5, "{mode:?}: only {cuts} cuts happened");
        assert_eq!(seqs, (1..=304).collect::<Vec<_>>(), "{mode:?}");
    }
}

#[tokio::test]
async fn an_unknown_task_fails_at_once_and_a_dead_server_after_the_patience() {
    let server = server().await;
    let client = server.client();
    for mode in MODES {
        let error = client
            .follow(TaskId::new(), 0, mode)
            .next()
            .await
            .unwrap_err();
        assert!(error.has_code("not_found"), "{mode:?}: {error}");
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
    for mode in MODES {
        let started = std::time::Instant::now();
        let error = dead
            .follow(TaskId::new(), 0, mode)
            .reconnect_for(Duration::from_millis(300))
            .next()
            .await
            .unwrap_err();
        assert!(matches!(error, ClientError::Connect { .. }), "{error:?}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
    }
}

#[tokio::test]
async fn a_follower_sees_the_final_of_a_task_cancelled_meanwhile() {
    let server = server().await;
    let client = server.client();
    for mode in MODES {
        let handle = client
            .submit(&Submission::new("forever", json!({})))
            .await
            .unwrap();
        let mut tape = client.follow(handle.task_id, 0, mode);
        let first = tape.next().await.unwrap().unwrap();
        assert!(matches!(first.body, EventBody::TaskStarted { .. }));
        client.cancel(handle.task_id).await.unwrap();
        let last = tape.next().await.unwrap().unwrap();
        assert!(
            matches!(
                last.body,
                EventBody::Final {
                    status: Status::Cancelled,
                    ..
                }
            ),
            "{last:?}"
        );
        assert!(tape.next().await.unwrap().is_none());
    }
}
