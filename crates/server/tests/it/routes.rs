//! Every route of WIRE.md parts A and B, and every error, through the router.

use serde_json::{Value, json};
use tasktape_server::ServerConfig;

use crate::support::{app, app_with};

#[tokio::test]
async fn health_ready_and_info_answer() {
    let app = app().await;
    assert_eq!(app.get("/v1/healthz").await.text, r#"{"status":"ok"}"#);
    let ready = app.get("/v1/readyz").await;
    assert_eq!(
        (ready.status.as_u16(), ready.json()["status"].clone()),
        (200, json!("ready"))
    );
    let info = app.get("/v1/info").await.json();
    assert_eq!(info["tasktape_version"], env!("CARGO_PKG_VERSION"));
    // Left out unless configured: dikw-core's client refuses a mismatch.
    assert!(info.get("engine_version").is_none(), "{info}");
    assert_eq!(info["storage_backend"], "sqlite");
    assert_eq!(info["auth_required"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_submit_follow_row_and_result_match_the_wire() {
    let app = app().await;
    let answer = app.post("/v1/echo", r#"{"count":3,"delay_ms":200}"#).await;
    let handle = answer.json();
    let id = handle["task_id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);
    assert_eq!(handle["op"], "echo");
    assert_eq!(handle["status"], "pending");
    assert_eq!(handle["links"]["self"], format!("/v1/tasks/{id}"));
    assert_eq!(handle["links"]["events"], format!("/v1/tasks/{id}/events"));
    assert_eq!(handle["links"]["result"], format!("/v1/tasks/{id}/result"));
    assert_eq!(handle["links"]["cancel"], format!("/v1/tasks/{id}/cancel"));
    assert!(
        answer.text.starts_with(r#"{"task_id":"#),
        "field order: {}",
        answer.text
    );
    let early = app.get(&format!("/v1/tasks/{id}/result")).await;
    let error = early.error(400, "task_not_terminal");
    assert!(["pending", "running"].contains(&error["detail"]["current_status"].as_str().unwrap()));
    let tape = app.wait_final(&id).await;
    let kinds: Vec<&str> = tape
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "task_started",
            "progress",
            "progress",
            "progress",
            "partial",
            "final"
        ]
    );
    assert_eq!(
        tape[1],
        json!({"type":"progress","phase":"echo","current":1,"total":3,"detail":{"step":1},"seq":2,"ts":tape[1]["ts"]})
    );
    assert_eq!(tape[5]["result"], json!({"echoed": 3}));
    let row = app.get(&format!("/v1/tasks/{id}")).await.json();
    // Keyed (issue 27): 16 hex characters, not the plain SHA-256 a read
    // token could test guesses against; equal params give equal digests.
    let digest = row["params_digest"].as_str().unwrap().to_owned();
    assert_eq!(digest.len(), 16);
    assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()), "{digest}");
    assert_ne!(digest, "9fbc57e71c2c80a0");
    let again = app.echo(r#"{"count":3,"delay_ms":200}"#).await;
    assert_eq!(
        app.get(&format!("/v1/tasks/{again}")).await.json()["params_digest"],
        digest.as_str()
    );
    assert_eq!(row["status"], "succeeded");
    assert_eq!(row["result"], json!({"echoed": 3}));
    assert_eq!(row["error"], Value::Null);
    // WIRE.md's nine fields and the job fields (dikw-core's client reads
    // rows as plain objects, so new fields are safe).
    let mut keys: Vec<&str> = row
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut expected = [
        "task_id",
        "op",
        "status",
        "created_at",
        "started_at",
        "finished_at",
        "params_digest",
        "result",
        "error",
        "attempt",
        "max_attempts",
        "run_at",
        "priority",
        "retry_of",
        // echo has no secret: its params as submitted.
        "params",
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected);
    assert_eq!(
        (row["attempt"].clone(), row["max_attempts"].clone()),
        (json!(1), json!(1))
    );
    let result = app.get(&format!("/v1/tasks/{id}/result")).await.json();
    assert_eq!(result["status"], "succeeded");
    assert_eq!(result["result"], json!({"echoed": 3}));
    assert_eq!(result["started_at"], row["started_at"]);
    // Paging past the end, and a long-poll on a terminal task, answer at once.
    let started = std::time::Instant::now();
    let past = app
        .get(&format!("/v1/tasks/{id}/events?from_seq=99&wait=5"))
        .await
        .json();
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(
        past,
        json!({"task_id": id, "task_status": "succeeded", "events": [], "next_from_seq": 99, "has_more": false, "last_seq": 6})
    );
    let first_two = app
        .get(&format!("/v1/tasks/{id}/events?from_seq=0&limit=2"))
        .await
        .json();
    assert_eq!(
        (
            first_two["next_from_seq"].clone(),
            first_two["has_more"].clone()
        ),
        (json!(3), json!(true))
    );
}

#[tokio::test]
async fn echo_accepts_what_dikw_accepts_and_names_the_bad_field() {
    let app = app().await;
    for body in ["", "{}", r#"{"count":0}"#, r#"{"count":-5,"bogus":1}"#] {
        let answer = app.post("/v1/echo", body).await;
        assert_eq!(answer.status.as_u16(), 200, "{body:?}: {}", answer.text);
    }
    let id = app.echo("").await;
    let defaulted = app.get(&format!("/v1/tasks/{id}")).await.json()["params_digest"].clone();
    let explicit = app.echo(r#"{"count":5,"delay_ms":0}"#).await;
    assert_eq!(
        app.get(&format!("/v1/tasks/{explicit}")).await.json()["params_digest"],
        defaulted,
        "the digest is of the prepared params (defaults filled in)"
    );
    let error = app
        .post("/v1/echo", r#"{"count":1,"delay_ms":20000}"#)
        .await
        .error(422, "invalid_request");
    assert_eq!(error["detail"]["field"], "delay_ms");
    let error = app
        .post("/v1/echo", r#"{"count":"many"}"#)
        .await
        .error(422, "invalid_request");
    assert_eq!(error["detail"]["field"], "count");
    app.post("/v1/echo", r#"{"count":"#)
        .await
        .error(400, "invalid_json");
    app.post("/v1/echo", "[1,2]")
        .await
        .error(422, "invalid_request");
}

#[tokio::test]
async fn query_validation_names_the_parameter() {
    let app = app().await;
    let id = app.echo(r#"{"count":1}"#).await;
    for (uri, field) in [
        ("/v1/tasks?limit=0".to_owned(), "limit"),
        ("/v1/tasks?limit=1001".to_owned(), "limit"),
        ("/v1/tasks?limit=ten".to_owned(), "limit"),
        ("/v1/tasks?status=bogus".to_owned(), "status"),
        ("/v1/tasks?status=".to_owned(), "status"),
        (format!("/v1/tasks/{id}/events?wait=61"), "wait"),
        (format!("/v1/tasks/{id}/events?from_seq=-1"), "from_seq"),
        (format!("/v1/tasks/{id}/events?limit=0"), "limit"),
        (
            format!("/v1/tasks/{id}/events/stream?from_seq=x"),
            "from_seq",
        ),
    ] {
        let error = app.get(&uri).await.error(422, "invalid_request");
        assert_eq!(error["detail"]["field"], field, "{uri}");
    }
    let error = app
        .get("/v1/tasks?cursor=garbage")
        .await
        .error(400, "invalid_cursor");
    assert_eq!(error["detail"]["reason"], "decode_failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_pages_with_a_cursor_and_filters() {
    let app = app().await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.echo(r#"{"count":1}"#).await);
    }
    // A later millisecond, so that "newest first" does not fall to the id tie-break.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let running = app.post("/v1/tasks", r#"{"op":"forever"}"#).await.json()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for id in &ids {
        app.wait_final(id).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let uri = match &cursor {
            Some(cursor) => format!("/v1/tasks?limit=2&cursor={cursor}"),
            None => "/v1/tasks?limit=2".to_owned(),
        };
        let page = app.get(&uri).await.json();
        for task in page["tasks"].as_array().unwrap() {
            assert!(
                task.get("result").is_none() && task.get("error").is_none(),
                "summary rows only"
            );
            seen.push(task["task_id"].as_str().unwrap().to_owned());
        }
        assert_eq!(
            page["has_more"].as_bool().unwrap(),
            !page["next_cursor"].is_null()
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);
    assert_eq!(seen[0], running, "newest first");
    let succeeded = app
        .get("/v1/tasks?status=succeeded&op=echo&limit=100")
        .await
        .json();
    assert_eq!(succeeded["tasks"].as_array().unwrap().len(), 5);
    let forever = app.get("/v1/tasks?op=forever").await.json();
    assert_eq!(forever["tasks"][0]["status"], "running");
    assert_eq!(
        app.get("/v1/tasks?op=nothing").await.json(),
        json!({"tasks": [], "next_cursor": null, "has_more": false})
    );
}

#[tokio::test]
async fn unknown_tasks_are_404_everywhere() {
    let app = app().await;
    for id in ["no-such-task", "01a21f82-e031-7662-b1be-19881cd6b560"] {
        for (method, path) in [
            ("GET", format!("/v1/tasks/{id}")),
            ("GET", format!("/v1/tasks/{id}/events")),
            ("GET", format!("/v1/tasks/{id}/events/stream")),
            ("GET", format!("/v1/tasks/{id}/result")),
            ("POST", format!("/v1/tasks/{id}/cancel")),
            ("DELETE", format!("/v1/tasks/{id}")),
        ] {
            let error = app
                .call(method, &path, None, &[])
                .await
                .error(404, "not_found");
            assert_eq!(
                error["message"],
                format!("task_id '{id}' not found"),
                "{method} {path}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_is_idempotent_and_the_tape_ends_cancelled() {
    let app = app().await;
    let id = app.echo(r#"{"count":100000,"delay_ms":1}"#).await;
    let first = app.post(&format!("/v1/tasks/{id}/cancel"), "").await;
    assert_eq!(
        first.text,
        format!(r#"{{"task_id":"{id}","cancelled":true,"already_terminal":false}}"#)
    );
    let tape = app.wait_final(&id).await;
    assert_eq!(tape.last().unwrap()["status"], "cancelled");
    assert!(tape.last().unwrap().get("result").is_none());
    let again = app.post(&format!("/v1/tasks/{id}/cancel"), "").await.json();
    assert_eq!(
        (
            again["cancelled"].clone(),
            again["already_terminal"].clone()
        ),
        (json!(false), json!(true))
    );
    let result = app.get(&format!("/v1/tasks/{id}/result")).await.json();
    assert_eq!(
        (result["status"].clone(), result["result"].clone()),
        (json!("cancelled"), Value::Null)
    );
}

#[tokio::test]
async fn unknown_routes_methods_and_oversized_bodies_get_the_envelope() {
    let app = app_with(ServerConfig {
        body_limit: 1024,
        ..ServerConfig::default()
    })
    .await;
    app.get("/v1/no-such-route")
        .await
        .error(404, "route_not_found");
    app.get("/nothing/here").await.error(404, "route_not_found");
    app.call("PUT", "/v1/healthz", None, &[])
        .await
        .error(405, "method_not_allowed");
    app.call("DELETE", "/v1/tasks", None, &[])
        .await
        .error(405, "method_not_allowed");
    app.post(
        "/v1/echo",
        &format!(r#"{{"count":1,"pad":"{}"}}"#, "x".repeat(4096)),
    )
    .await
    .error(413, "payload_too_large");
    let error = app.post("/v1/nope", "{}").await.error(404, "op_not_found");
    assert_eq!(error["detail"]["known"], json!(["echo", "forever"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_submit_ops_and_idempotency_keys() {
    let app = app().await;
    let ops = app.get("/v1/ops").await.json();
    let echo = ops["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|op| op["name"] == "echo")
        .unwrap()
        .clone();
    assert_eq!(echo["params_schema"]["type"], "object");
    app.post("/v1/tasks", r#"{"params":{}}"#)
        .await
        .error(422, "invalid_request");
    app.post("/v1/tasks", r#"{"op":7}"#)
        .await
        .error(422, "invalid_request");
    app.post("/v1/tasks", r#"{"op":"nope"}"#)
        .await
        .error(404, "op_not_found");
    let first = app
        .post(
            "/v1/tasks",
            r#"{"op":"echo","params":{"count":2},"idempotency_key":"k1"}"#,
        )
        .await
        .json();
    let again = app
        .post(
            "/v1/tasks",
            r#"{"op":"echo","params":{"count":2},"idempotency_key":"k1"}"#,
        )
        .await
        .json();
    assert_eq!(first["task_id"], again["task_id"]);
    let conflict = app
        .post(
            "/v1/tasks",
            r#"{"op":"echo","params":{"count":3},"idempotency_key":"k1"}"#,
        )
        .await;
    assert_eq!(
        conflict.error(409, "idempotency_key_conflict")["detail"]["task_id"],
        first["task_id"]
    );
    let by_header = app
        .call(
            "POST",
            "/v1/echo",
            Some(r#"{"count":2}"#),
            &[("Idempotency-Key", "k1")],
        )
        .await
        .json();
    assert_eq!(
        by_header["task_id"], first["task_id"],
        "the header and the body key are one key space"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_only_finished_tasks() {
    let app = app().await;
    let running = app.post("/v1/tasks", r#"{"op":"forever"}"#).await.json()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let error = app
        .call("DELETE", &format!("/v1/tasks/{running}"), None, &[])
        .await
        .error(409, "task_not_terminal");
    assert!(["pending", "running"].contains(&error["detail"]["current_status"].as_str().unwrap()));
    let done = app.echo(r#"{"count":1}"#).await;
    app.wait_final(&done).await;
    let deleted = app
        .call("DELETE", &format!("/v1/tasks/{done}"), None, &[])
        .await;
    assert_eq!((deleted.status.as_u16(), deleted.text.as_str()), (204, ""));
    app.get(&format!("/v1/tasks/{done}"))
        .await
        .error(404, "not_found");
    app.post(&format!("/v1/tasks/{running}/cancel"), "").await;
}

#[tokio::test]
async fn a_token_guards_everything_but_the_probes() {
    let app = app_with(ServerConfig {
        token: Some("s3cret".into()),
        ..ServerConfig::default()
    })
    .await;
    assert_eq!(app.get("/v1/healthz").await.status.as_u16(), 200);
    assert_eq!(app.get("/v1/readyz").await.status.as_u16(), 200);
    app.get("/v1/tasks").await.error(401, "unauthorized");
    app.get("/v1/info").await.error(401, "unauthorized");
    app.call(
        "GET",
        "/v1/tasks",
        None,
        &[("Authorization", "Bearer wrong")],
    )
    .await
    .error(401, "unauthorized");
    app.call(
        "POST",
        "/v1/echo",
        Some("{}"),
        &[("Authorization", "Basic czNjcmV0")],
    )
    .await
    .error(401, "unauthorized");
    let ok = app
        .call(
            "GET",
            "/v1/info",
            None,
            &[("Authorization", "Bearer s3cret")],
        )
        .await;
    assert_eq!(ok.json()["auth_required"], true);
    // The scheme is case-insensitive; the token is not.
    for scheme in ["BEARER", "BeArEr", "bearer"] {
        let ok = app
            .call(
                "GET",
                "/v1/info",
                None,
                &[("Authorization", &format!("{scheme} s3cret"))],
            )
            .await;
        assert_eq!(ok.status.as_u16(), 200, "{scheme}");
    }
    app.call(
        "GET",
        "/v1/info",
        None,
        &[("Authorization", "Bearer S3CRET")],
    )
    .await
    .error(401, "unauthorized");
    // A key given twice in a body is refused, naming it (never last-wins).
    let twice = app
        .call(
            "POST",
            "/v1/tasks",
            Some(r#"{"op":"echo","op":"sleep"}"#),
            &[("Authorization", "Bearer s3cret")],
        )
        .await;
    twice.error(400, "invalid_json");
    assert!(
        twice.text.contains(r#"key \"op\" is given twice"#),
        "{}",
        twice.text
    );
    // An unknown route behind auth is still an envelope (401 first, never a bare 404).
    app.get("/v1/no-such-route")
        .await
        .error(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_streams_the_tape_resumes_and_closes_after_final() {
    let app = app().await;
    let id = app.echo(r#"{"count":3}"#).await;
    app.wait_final(&id).await;
    let whole = app.get(&format!("/v1/tasks/{id}/events/stream")).await;
    assert_eq!(whole.headers["content-type"], "text/event-stream");
    let events = parse_sse(&whole.text);
    assert_eq!(
        events.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6]
    );
    assert_eq!(events[0].1, "task_started");
    assert_eq!(events[5].1, "final");
    assert_eq!(
        serde_json::from_str::<Value>(&events[5].2).unwrap()["seq"],
        6
    );
    let resumed = app
        .call(
            "GET",
            &format!("/v1/tasks/{id}/events/stream"),
            None,
            &[("Last-Event-ID", "4")],
        )
        .await;
    assert_eq!(
        parse_sse(&resumed.text)
            .iter()
            .map(|e| e.0)
            .collect::<Vec<_>>(),
        vec![5, 6]
    );
    let from = app
        .get(&format!("/v1/tasks/{id}/events/stream?from_seq=6"))
        .await;
    assert_eq!(
        parse_sse(&from.text)
            .iter()
            .map(|e| e.0)
            .collect::<Vec<_>>(),
        vec![6]
    );
    let past = app
        .get(&format!("/v1/tasks/{id}/events/stream?from_seq=50"))
        .await;
    assert!(
        parse_sse(&past.text).is_empty(),
        "resuming past final closes at once"
    );
    app.call(
        "GET",
        &format!("/v1/tasks/{id}/events/stream"),
        None,
        &[("Last-Event-ID", "x")],
    )
    .await
    .error(422, "invalid_request");
}

/// (seq, event type, data) per SSE event; comments skipped.
pub fn parse_sse(text: &str) -> Vec<(u64, String, String)> {
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let (mut id, mut kind, mut data) = (None, String::new(), String::new());
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("id: ") {
                id = value.parse().ok();
            } else if let Some(value) = line.strip_prefix("event: ") {
                kind = value.to_owned();
            } else if let Some(value) = line.strip_prefix("data: ") {
                data = value.to_owned();
            }
        }
        if let Some(id) = id {
            events.push((id, kind, data));
        }
    }
    events
}

#[tokio::test]
async fn undecodable_path_segments_are_404_in_the_envelope() {
    let app = app().await;
    for (method, uri) in [
        ("GET", "/v1/tasks/%FF"),
        ("GET", "/v1/tasks/%FF/events"),
        ("GET", "/v1/tasks/%FF/events/stream"),
        ("POST", "/v1/tasks/%FF/cancel"),
        ("POST", "/v1/%FF"),
    ] {
        app.call(method, uri, Some("{}"), &[])
            .await
            .error(404, "not_found");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_or_stream_past_the_tape_returns_when_the_task_ends() {
    let app = app().await;
    let id = app.echo(r#"{"count":1,"delay_ms":300}"#).await;
    let asked = std::time::Instant::now();
    let page = app
        .get(&format!("/v1/tasks/{id}/events?from_seq=100&wait=20"))
        .await
        .json();
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(10),
        "held {:?}",
        asked.elapsed()
    );
    assert_eq!(page["task_status"], "succeeded", "{page}");
    assert_eq!(
        (page["next_from_seq"].clone(), page["last_seq"].clone()),
        (json!(100), json!(4))
    );
    let other = app.echo(r#"{"count":1,"delay_ms":300}"#).await;
    let asked = std::time::Instant::now();
    let stream = app
        .get(&format!("/v1/tasks/{other}/events/stream?from_seq=100"))
        .await;
    assert!(
        asked.elapsed() < std::time::Duration::from_secs(10),
        "stream stayed open {:?}",
        asked.elapsed()
    );
    assert!(parse_sse(&stream.text).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_statuses_and_finishes_per_minute() {
    let app = crate::support::app().await;
    let done = app.echo(r#"{"count":1}"#).await;
    app.wait_final(&done).await;
    let stats = app.get("/v1/stats").await;
    assert_eq!(stats.status.as_u16(), 200, "{}", stats.text);
    let body = stats.json();
    assert_eq!(body["window"], 3600);
    assert_eq!(body["bucket"], 60);
    for status in ["pending", "running", "succeeded", "failed", "cancelled"] {
        assert!(body["counts"][status].is_u64(), "{status}: {body}");
    }
    assert_eq!(body["counts"]["succeeded"], 1);
    let minutes = body["finished"].as_array().unwrap();
    assert_eq!(minutes.len(), 60);
    let ended: u64 = minutes
        .iter()
        .map(|m| m["succeeded"].as_u64().unwrap())
        .sum();
    assert_eq!(ended, 1);
    // Oldest first, a minute apart, each on a minute boundary.
    let first = minutes[0]["minute"].as_str().unwrap();
    assert!(first.ends_with(":00.000Z"), "{first}");
    let small = app.get("/v1/stats?window=600").await.json();
    assert_eq!(small["finished"].as_array().unwrap().len(), 10);
    app.get("/v1/stats?window=10")
        .await
        .error(422, "invalid_request");
    app.get("/v1/stats?window=86401")
        .await
        .error(422, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_pages_load_without_a_token_but_its_data_needs_one() {
    let config = tasktape_server::ServerConfig {
        token: Some("t0k".into()),
        ..tasktape_server::ServerConfig::default()
    };
    let app = crate::support::app_with(config).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/submit", "text/html"),
        ("/tasks/01a21fc1-a675-73b9-bbde-0881f151904e", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
        ("/favicon.svg", "image/svg+xml"),
    ] {
        let answer = app.get(path).await;
        assert_eq!(answer.status.as_u16(), 200, "{path}");
        let content_type = answer.headers["content-type"].to_str().unwrap();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(
            answer.headers.contains_key("content-security-policy"),
            "{path}"
        );
    }
    app.get("/v1/stats").await.error(401, "unauthorized");
    app.get("/v1/tasks").await.error(401, "unauthorized");
    app.post("/", "").await.error(405, "method_not_allowed");
}

/// Every route the OpenAPI description names is routed (never
/// `route_not_found` or 405), and `GET /openapi.json` serves the
/// description, open without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_described_route_is_routed_and_the_description_is_served() {
    let app = crate::support::app().await;
    let task = app.echo(r#"{"count": 1}"#).await;
    app.wait_final(&task).await;
    for (method, path) in tasktape_server::routes() {
        let uri = path.replace("{task_id}", &task).replace("{op}", "echo");
        if method == "DELETE" {
            continue; // checked last: it deletes the task the others read
        }
        let body = (method == "POST").then_some(r#"{"op": "echo", "params": {}}"#);
        let answer = app
            .call(method, &uri, body, &[("content-type", "application/json")])
            .await;
        assert_ne!(
            answer.status.as_u16(),
            405,
            "{method} {uri}: {}",
            answer.text
        );
        assert!(
            !answer.text.contains("route_not_found"),
            "{method} {uri}: {}",
            answer.text
        );
    }
    let answer = app
        .call("DELETE", &format!("/v1/tasks/{task}"), None, &[])
        .await;
    assert_eq!(answer.status.as_u16(), 204, "{}", answer.text);
    let doc = app.get("/openapi.json").await.json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/tasks/{task_id}/events"]["get"]["responses"]["422"].is_object());
    let secured = crate::support::app_with(tasktape_server::ServerConfig {
        token: Some("t0ken".into()),
        ..tasktape_server::ServerConfig::default()
    })
    .await;
    assert_eq!(secured.get("/openapi.json").await.status.as_u16(), 200);
}

/// Request bodies are read by the wire types' own rules: a body that is not
/// an object is refused (never read as a list of fields), a body with
/// several faults is refused for the first in the route's fixed order, and
/// the list query judges its cursor before its times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_and_queries_are_refused_for_their_first_fault() {
    let app = crate::support::app().await;
    let field = |error: Value| error["detail"]["field"].as_str().unwrap_or("").to_owned();
    for body in [r#"["echo"]"#, "[]", "null", "3"] {
        let error = app
            .post("/v1/tasks", body)
            .await
            .error(422, "invalid_request");
        assert_eq!(field(error.clone()), "op", "{body}");
        assert_eq!(error["detail"]["type"], "missing", "{body}");
    }
    for path in ["/v1/tasks/cancel", "/v1/tasks/retry"] {
        let error = app
            .post(path, r#"[null, "running"]"#)
            .await
            .error(422, "invalid_request");
        assert_eq!(error["detail"]["type"], "model_type", "{path}");
    }
    let first = |body: &'static str| {
        let app = &app;
        async move {
            let error = app
                .post("/v1/tasks", body)
                .await
                .error(422, "invalid_request");
            field(error)
        }
    };
    assert_eq!(first(r#"{"idempotency_key": 7, "op": 5}"#).await, "op");
    assert_eq!(
        first(r#"{"op": "echo", "priority": "x", "run_at": "soon"}"#).await,
        "run_at"
    );
    assert_eq!(first(r#"{"priority": "x"}"#).await, "op");
    // The query's options are judged before the body is read.
    let error = app
        .post("/v1/echo?priority=9999999", "{not json")
        .await
        .error(422, "invalid_request");
    assert_eq!(field(error), "priority");
    app.get("/v1/tasks?cursor=bad&created_after=bad")
        .await
        .error(400, "invalid_cursor");
    let error = app
        .get("/v1/tasks?limit=0&cursor=bad")
        .await
        .error(422, "invalid_request");
    assert_eq!(field(error), "limit");
}

/// A request refused before its body is read (no token, a foreign origin)
/// is answered with `Connection: close`, so a client does not reuse a
/// connection the server drops; a refused request without a body keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_with_an_unread_body_closes_the_connection() {
    let app = app_with(ServerConfig {
        token: Some("t0ken".into()),
        ..ServerConfig::default()
    })
    .await;
    let body = r#"{"count": 1}"#;
    let length = body.len().to_string();
    let with_body = [
        ("content-type", "application/json"),
        ("content-length", length.as_str()),
    ];
    let refused = app.call("POST", "/v1/echo", Some(body), &with_body).await;
    refused.error(401, "unauthorized");
    assert_eq!(refused.headers["connection"], "close");
    let foreign = [
        ("content-length", length.as_str()),
        ("origin", "https://evil.example"),
    ];
    let refused = app.call("POST", "/v1/echo", Some(body), &foreign).await;
    refused.error(403, "forbidden");
    assert_eq!(refused.headers["connection"], "close");
    let bodiless = app.call("GET", "/v1/tasks", None, &[]).await;
    bodiless.error(401, "unauthorized");
    assert!(!bodiless.headers.contains_key("connection"));
    let allowed = app
        .call(
            "POST",
            "/v1/echo",
            Some(body),
            &[
                ("authorization", "Bearer t0ken"),
                ("content-length", &length),
            ],
        )
        .await;
    assert_eq!(allowed.status.as_u16(), 200, "{}", allowed.text);
    assert!(!allowed.headers.contains_key("connection"));
}

/// Every time the API takes may carry any RFC 3339 offset (what generated
/// clients send); it is kept and answered in UTC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_with_any_offset_are_taken_and_answered_in_utc() {
    let app = crate::support::app().await;
    let body = r#"{"op": "echo", "params": {"count": 1}, "run_at": "2030-01-01T02:00:00.5+02:00"}"#;
    let submitted = app.post("/v1/tasks", body).await;
    assert_eq!(submitted.status.as_u16(), 200, "{}", submitted.text);
    let task_id = submitted.json()["task_id"].as_str().unwrap().to_owned();
    let row = app.get(&format!("/v1/tasks/{task_id}")).await.json();
    assert_eq!(row["status"], "pending");
    assert_eq!(row["run_at"], "2030-01-01T00:00:00.500Z", "{row}");
    let listed = app
        .get("/v1/tasks?created_after=2000-01-01T05:30:00%2B05:30&created_before=2099-12-31T19:00:00-05:00")
        .await;
    assert_eq!(listed.status.as_u16(), 200, "{}", listed.text);
    assert!(listed.text.contains(&task_id), "{}", listed.text);
    let error = app
        .get("/v1/tasks?created_after=2026-01-01T00:00:00%2B25:00")
        .await
        .error(422, "invalid_request");
    assert_eq!(error["detail"]["field"], "created_after");
}
