//! Metadata through every door of a real `tasktape serve`: the CLI's `-m`
//! and `--meta`, `POST /v1/{op}?meta.KEY=VALUE`, the bodies' refusals
//! naming the key, list and bulk filters, and `[schedules.NAME]`'s
//! `metadata` checked at start-up.

use serde_json::{Value, json};

use crate::jobs::serve_config;
use crate::support::{run, serve, tasktape};

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn get(base: &str, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{base}{path}")).await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_from_the_cli_and_the_http_api_is_kept_filtered_and_checked() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = serve(data.path(), &[]);
    let base = server.base.clone();

    // The CLI: -m on submit, --meta on list and on the bulk verbs.
    let submitted = run(
        &server,
        home.path(),
        &[
            "submit",
            "echo",
            "--in",
            "1h",
            "-m",
            "customer=42",
            "--meta",
            "region=eu",
        ],
    );
    assert_eq!(submitted.code, 0, "{submitted:?}");
    let first = submitted.stdout.trim().to_owned();
    // The query form of `POST /v1/{op}`.
    let (status, handle) = post(
        &base,
        "/v1/echo?meta.customer=42&run_at=2030-01-01T00:00:00Z",
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{handle}");
    let second = handle["task_id"].as_str().unwrap().to_owned();
    let (_, row) = get(&base, &format!("/v1/tasks/{second}")).await;
    assert_eq!(row["metadata"], json!({"customer": "42"}));
    let (_, row) = get(&base, &format!("/v1/tasks/{first}")).await;
    assert_eq!(row["metadata"], json!({"customer": "42", "region": "eu"}));
    // A task without metadata has no `metadata` field (rows stay as they were).
    let (_, plain) = post(&base, "/v1/tasks", json!({"op": "echo", "params": {}})).await;
    let (_, row) = get(
        &base,
        &format!("/v1/tasks/{}", plain["task_id"].as_str().unwrap()),
    )
    .await;
    assert!(row.get("metadata").is_none(), "{row}");

    let listed = run(
        &server,
        home.path(),
        &["tasks", "list", "--meta", "customer=42", "--json"],
    );
    assert_eq!(listed.code, 0, "{listed:?}");
    let rows: Vec<Value> = serde_json::from_str(&listed.stdout).unwrap();
    let ids: Vec<&str> = rows
        .iter()
        .map(|row| row["task_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second.as_str(), first.as_str()]);
    let table = run(
        &server,
        home.path(),
        &[
            "tasks",
            "list",
            "--meta",
            "customer=42",
            "--meta",
            "region=eu",
        ],
    );
    assert_eq!(table.code, 0, "{table:?}");
    let lines = table.lines();
    assert!(lines[0].ends_with("METADATA"), "{table:?}");
    assert_eq!(lines.len(), 2, "{table:?}");
    assert!(
        lines[1].starts_with(&first) && lines[1].ends_with("customer=42,region=eu"),
        "{table:?}"
    );
    let (status, page) = get(&base, "/v1/tasks?meta.customer=42&meta.region=us").await;
    assert_eq!(
        (status, page["tasks"].as_array().unwrap().len()),
        (200, 0),
        "{page}"
    );

    let cancelled = run(
        &server,
        home.path(),
        &["tasks", "cancel", "--meta", "region=eu", "--yes"],
    );
    assert_eq!(cancelled.code, 0, "{cancelled:?}");
    let (_, row) = get(&base, &format!("/v1/tasks/{first}")).await;
    assert_eq!(row["status"], "cancelled");
    let (_, row) = get(&base, &format!("/v1/tasks/{second}")).await;
    assert_eq!(row["status"], "pending");
    let (status, answer) = post(
        &base,
        "/v1/tasks/cancel",
        json!({"metadata": {"customer": "42"}}),
    )
    .await;
    assert_eq!((status, &answer["matched"]), (200, &json!(2)), "{answer}");

    // Refusals name the key, wherever it came from.
    for (path, body, field) in [
        (
            "/v1/tasks",
            json!({"op": "echo", "metadata": {"Customer": "1"}}),
            "metadata.Customer",
        ),
        (
            "/v1/tasks",
            json!({"op": "echo", "metadata": {"n": 1}}),
            "metadata.n",
        ),
        (
            "/v1/tasks",
            json!({"op": "echo", "metadata": "customer=1"}),
            "metadata",
        ),
        (
            "/v1/tasks",
            json!({"op": "echo", "metadata": {"k": "v".repeat(257)}}),
            "metadata.k",
        ),
        ("/v1/echo?meta.Bad=1", json!({}), "meta.Bad"),
        (
            "/v1/tasks/cancel",
            json!({"metadata": {"a b": "1"}}),
            "metadata.a b",
        ),
    ] {
        let (status, error) = post(&base, path, body.clone()).await;
        assert_eq!(status, 422, "{path} {body}: {error}");
        assert_eq!(error["error"]["code"], "invalid_request", "{error}");
        assert_eq!(
            error["error"]["detail"]["field"], field,
            "{path} {body}: {error}"
        );
    }
    let many: serde_json::Map<String, Value> =
        (0..33).map(|n| (format!("k{n}"), json!("v"))).collect();
    let (status, error) = post(&base, "/v1/tasks", json!({"op": "echo", "metadata": many})).await;
    assert_eq!(
        (status, &error["error"]["detail"]["field"]),
        (422, &json!("metadata")),
        "{error}"
    );
    let (status, error) = get(&base, "/v1/tasks?meta.X=1").await;
    assert_eq!(
        (status, &error["error"]["detail"]["field"]),
        (422, &json!("meta.X")),
        "{error}"
    );
    // In a batch, a bad entry fails alone.
    let (status, answer) = post(
        &base,
        "/v1/tasks/batch",
        json!({"tasks": [
            {"op": "echo", "metadata": {"batch": "b"}},
            {"op": "echo", "metadata": {"Batch": "b"}},
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["results"][0]["task_id"].is_string(), "{answer}");
    assert_eq!(
        answer["results"][1]["error"]["detail"]["field"], "metadata.Batch",
        "{answer}"
    );
    let (_, page) = get(&base, "/v1/tasks?meta.batch=b").await;
    assert_eq!(
        page["tasks"][0]["metadata"],
        json!({"batch": "b"}),
        "{page}"
    );
    // The CLI refuses a bad key before sending anything.
    let refused = run(&server, home.path(), &["submit", "echo", "-m", "Bad=1"]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("'Bad'"), "{refused:?}");
    let refused = run(
        &server,
        home.path(),
        &["tasks", "list", "--meta", "novalue"],
    );
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("KEY=VALUE"), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedules_metadata_is_checked_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tasktape.toml");
    std::fs::write(
        &config,
        "[schedules.nightly]\nop = \"echo\"\ncron = \"0 3 * * *\"\nmetadata = { Team = \"data\" }\n",
    )
    .unwrap();
    let out = tasktape()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("schedule \"nightly\"") && stderr.contains("metadata.Team"),
        "{stderr}"
    );
    // A good one starts.
    let server = serve_config(
        dir.path(),
        "[schedules.nightly]\nop = \"echo\"\ncron = \"0 3 * * *\"\nmetadata = { team = \"data\" }\n",
    );
    let (status, list) = get(&server.base, "/v1/schedules").await;
    assert_eq!(status, 200, "{list}");
}
