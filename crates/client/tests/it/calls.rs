//! Every route of WIRE.md through the typed client, and its errors.

use std::time::Duration;

use serde_json::json;
use tasktape_client::{Client, ClientError, FollowMode, ListQuery, Submission};
use tasktape_core::{Status, TaskId};
use tasktape_server::ServerConfig;

use crate::support::{server, server_with};

/// Follows `task_id` to its end and returns the final status.
async fn finish(client: &Client, task_id: TaskId) -> Status {
    let mut tape = client.follow(task_id, 0, FollowMode::LongPoll);
    while tape.next().await.unwrap().is_some() {}
    tape.task_status().unwrap()
}

#[tokio::test]
async fn probes_info_and_ops() {
    let server = server().await;
    let client = server.client();
    assert_eq!(client.healthz().await.unwrap().status, "ok");
    assert_eq!(client.readyz().await.unwrap().status, "ready");
    let info = client.info().await.unwrap();
    assert_eq!(info.storage_backend, "sqlite");
    assert!(!info.auth_required);
    assert!(!info.tasktape_version.is_empty());
    assert_eq!(info.engine_version, None);
    let ops = client.ops().await.unwrap();
    let names: Vec<_> = ops.iter().map(|op| op.name.as_str()).collect();
    for name in ["echo", "forever", "ticks", "fails"] {
        assert!(names.contains(&name), "{names:?}");
    }
    assert!(ops.iter().all(|op| op.params_schema.is_object()));
}

#[tokio::test]
async fn submit_read_and_delete_a_task() {
    let server = server().await;
    let client = server.client();
    let handle = client.echo(3, 0).await.unwrap();
    assert_eq!(handle.op, "echo");
    assert_eq!(handle.links.this, format!("/v1/tasks/{}", handle.task_id));
    assert_eq!(finish(&client, handle.task_id).await, Status::Succeeded);

    let row = client.task(handle.task_id).await.unwrap();
    assert_eq!(row.status, Status::Succeeded);
    assert_eq!(row.result, Some(json!({"echoed": 3})));
    assert_eq!(row.params_digest.len(), 16);
    let result = client.result(handle.task_id).await.unwrap();
    assert_eq!(result.result, Some(json!({"echoed": 3})));

    let page = client
        .events(handle.task_id, 0, 2, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(page.events.len(), 2);
    assert_eq!(page.next_from_seq, 3);
    assert!(page.has_more);
    assert_eq!(page.last_seq, 6);

    client.delete(handle.task_id).await.unwrap();
    let gone = client.task(handle.task_id).await.unwrap_err();
    assert!(gone.has_code("not_found"), "{gone}");
    assert_eq!(gone.api().unwrap().status, 404);
}

#[tokio::test]
async fn a_failed_task_carries_its_error() {
    let server = server().await;
    let client = server.client();
    let handle = client
        .submit(&Submission::new("fails", json!({})))
        .await
        .unwrap();
    assert_eq!(finish(&client, handle.task_id).await, Status::Failed);
    let row = client.task(handle.task_id).await.unwrap();
    let error = row.error.unwrap();
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        ("boom", "it broke")
    );
}

#[tokio::test]
async fn cancel_a_running_task_then_again() {
    let server = server().await;
    let client = server.client();
    let handle = client
        .submit(&Submission::new("forever", json!({})))
        .await
        .unwrap();
    let not_yet = client.result(handle.task_id).await;
    // Pending or running: either way not terminal.
    assert!(not_yet.unwrap_err().has_code("task_not_terminal"));
    let refused = client.delete(handle.task_id).await.unwrap_err();
    assert!(refused.has_code("task_not_terminal"), "{refused}");

    let answer = client.cancel(handle.task_id).await.unwrap();
    assert!(answer.cancelled && !answer.already_terminal);
    assert_eq!(finish(&client, handle.task_id).await, Status::Cancelled);
    let again = client.cancel(handle.task_id).await.unwrap();
    assert!(!again.cancelled && again.already_terminal);
}

#[tokio::test]
async fn idempotency_keys_return_the_first_task_or_conflict() {
    let server = server().await;
    let client = server.client();
    let submission = Submission::new("echo", json!({"count": 2})).idempotency_key("k-1");
    let first = client.submit(&submission).await.unwrap();
    let second = client.submit(&submission).await.unwrap();
    assert_eq!(first.task_id, second.task_id);
    let other = Submission::new("echo", json!({"count": 3})).idempotency_key("k-1");
    let conflict = client.submit(&other).await.unwrap_err();
    assert!(conflict.has_code("idempotency_key_conflict"), "{conflict}");
    assert_eq!(conflict.api().unwrap().status, 409);
}

#[tokio::test]
async fn list_pages_and_filters() {
    let server = server().await;
    let client = server.client();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let handle = client.echo(1, 0).await.unwrap();
        finish(&client, handle.task_id).await;
        ids.push(handle.task_id);
    }
    let forever = client
        .submit(&Submission::new("forever", json!({})))
        .await
        .unwrap();

    let mut query = ListQuery {
        op: Some("echo".to_owned()),
        limit: Some(2),
        ..ListQuery::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = client.list(&query).await.unwrap();
        assert!(page.tasks.len() <= 2);
        seen.extend(page.tasks.iter().map(|task| task.task_id));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    ids.reverse(); // newest first
    assert_eq!(seen, ids);

    let succeeded = client
        .list(&ListQuery {
            status: Some(Status::Succeeded),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(succeeded.tasks.len(), 5);
    assert!(
        !succeeded
            .tasks
            .iter()
            .any(|task| task.task_id == forever.task_id)
    );

    let bad = client
        .list(&ListQuery {
            cursor: Some("not a cursor".to_owned()),
            ..ListQuery::default()
        })
        .await
        .unwrap_err();
    assert!(bad.has_code("invalid_cursor"), "{bad}");
    client.cancel(forever.task_id).await.unwrap();
}

#[tokio::test]
async fn bad_submissions_map_to_typed_errors() {
    let server = server().await;
    let client = server.client();
    let unknown = client
        .submit(&Submission::new("nope", json!({})))
        .await
        .unwrap_err();
    let api = unknown.api().unwrap();
    assert_eq!((api.status, api.code.as_str()), (404, "op_not_found"));
    assert!(
        api.detail.as_ref().unwrap()["known"]
            .as_array()
            .unwrap()
            .contains(&json!("echo"))
    );
    assert!(!unknown.is_retryable());

    let invalid = client.echo(1, 999_999).await.unwrap_err();
    assert_eq!(invalid.api().unwrap().status, 422);
    assert!(invalid.has_code("invalid_request"));
}

#[tokio::test]
async fn tokens_are_sent_and_a_missing_one_is_unauthorized() {
    let server = server_with(ServerConfig {
        token: Some("s3cret".to_owned()),
        ..ServerConfig::default()
    })
    .await;
    let anonymous = Client::new(&server.base, None).unwrap();
    let refused = anonymous.ops().await.unwrap_err();
    assert!(refused.has_code("unauthorized"), "{refused}");
    assert_eq!(refused.api().unwrap().status, 401);
    // The probes stay open.
    anonymous.healthz().await.unwrap();

    let wrong = Client::new(&server.base, Some("nope")).unwrap();
    assert!(wrong.ops().await.unwrap_err().has_code("unauthorized"));
    let right = Client::new(&server.base, Some("s3cret")).unwrap();
    assert!(right.info().await.unwrap().auth_required);
}

#[tokio::test]
async fn unreachable_servers_and_bad_urls_are_told_apart() {
    // A port nobody listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::new(&format!("http://127.0.0.1:{port}/"), None).unwrap();
    assert_eq!(client.base_url(), format!("http://127.0.0.1:{port}"));
    let error = client.healthz().await.unwrap_err();
    assert!(matches!(error, ClientError::Connect { .. }), "{error:?}");
    assert!(error.is_retryable());
    assert!(error.to_string().contains(&port.to_string()), "{error}");

    for bad in ["127.0.0.1:8765", "ftp://host", "http://"] {
        let error = Client::new(bad, None).unwrap_err();
        assert!(
            matches!(error, ClientError::InvalidUrl { .. }),
            "{bad}: {error:?}"
        );
    }
    // https is fine; a CA file that holds no certificate is not.
    assert!(Client::new("https://example.com", None).is_ok());
    let error = Client::with_ca_cert("https://example.com", None, Some(b"not a pem")).unwrap_err();
    assert!(error.to_string().contains("no PEM certificate"), "{error}");
}
