//! Scoped tokens (`[[tokens]]`): read, submit, admin; 401 for no or an
//! unknown token, 403 `forbidden` outside a token's scope; one audit line
//! per state-changing request, naming the token (never showing it).

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::serve;

const CONFIG: &str = r#"
token = "root-secret-0"
[[tokens]]
name = "dashboard"
token = "read-secret-1"
scope = "read"
[[tokens]]
name = "ci"
token = "submit-secret-2"
scope = "submit"
[[tokens]]
name = "ops-team"
token = "admin-secret-3"
scope = "admin"
"#;

async fn call(method: &str, url: String, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method.parse().unwrap(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_tokens_allow_by_scope_and_every_change_is_audited_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasktape.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let mut server = serve(dir.path(), &["--config", path.to_str().unwrap()]);
    let base = server.base.clone();
    let tasks = format!("{base}/v1/tasks");
    let echo = format!("{base}/v1/echo");

    // No token or an unknown one: 401.
    let (status, body) = call("GET", tasks.clone(), None, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = call("GET", tasks.clone(), Some("nope"), None).await;
    assert_eq!(status, 401);

    // read: GET only.
    assert_eq!(
        call("GET", tasks.clone(), Some("read-secret-1"), None)
            .await
            .0,
        200
    );
    let (status, body) = call("POST", echo.clone(), Some("read-secret-1"), Some(json!({}))).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("dashboard") && message.contains("read") && message.contains("submit"),
        "{message}"
    );

    // submit: submit and cancel, not delete.
    let (status, handle) = call(
        "POST",
        echo.clone(),
        Some("submit-secret-2"),
        Some(json!({"count": 1000, "delay_ms": 10})),
    )
    .await;
    assert!(status < 300, "{status} {handle}");
    let id = handle["task_id"].as_str().unwrap().to_owned();
    let (status, _) = call(
        "POST",
        format!("{tasks}/{id}/cancel"),
        Some("submit-secret-2"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200);
    let since = std::time::Instant::now();
    while call("GET", format!("{tasks}/{id}"), Some("read-secret-1"), None)
        .await
        .1["status"]
        != "cancelled"
    {
        assert!(since.elapsed() < Duration::from_secs(10), "never cancelled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = call(
        "DELETE",
        format!("{tasks}/{id}"),
        Some("submit-secret-2"),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );

    // admin (and the plain `token`): everything.
    let (status, _) = call(
        "DELETE",
        format!("{tasks}/{id}"),
        Some("admin-secret-3"),
        None,
    )
    .await;
    assert!(status < 300, "{status}");
    let (status, _) = call(
        "POST",
        echo.clone(),
        Some("root-secret-0"),
        Some(json!({"count": 1})),
    )
    .await;
    assert!(status < 300, "{status}");

    // The audit lines: one per change, with the token's name, never a secret.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = server.log_lines();
    let audit: Vec<&String> = lines.iter().filter(|line| line.contains("audit")).collect();
    let find = |token: &str, method: &str, route: &str| {
        audit.iter().any(|line| {
            line.contains(&format!("token={token}"))
                && line.contains(&format!("method={method}"))
                && line.contains(route)
                && line.contains(&format!("task_id={id}"))
        })
    };
    assert!(find("ci", "POST", "route=/v1/{op}"), "{audit:#?}");
    assert!(
        find("ci", "POST", "route=/v1/tasks/{task_id}/cancel"),
        "{audit:#?}"
    );
    assert!(
        find("ops-team", "DELETE", "route=/v1/tasks/{task_id}"),
        "{audit:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|line| line.contains("token=dashboard") && line.contains("refused")),
        "{audit:#?}"
    );
    assert!(
        !audit.iter().any(|line| line.contains("method=GET")),
        "reads are not audited"
    );
    for line in &lines {
        assert!(
            !line.contains("secret-"),
            "a token leaked into the log: {line}"
        );
    }
}

#[test]
fn duplicate_token_names_or_values_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasktape.toml");
    for (config, expected) in [
        (
            "[[tokens]]\nname = \"a\"\ntoken = \"x1\"\nscope = \"read\"\n[[tokens]]\nname = \"a\"\ntoken = \"x2\"\nscope = \"read\"\n",
            "used twice",
        ),
        (
            "[[tokens]]\nname = \"a\"\ntoken = \"x1\"\nscope = \"read\"\n[[tokens]]\nname = \"b\"\ntoken = \"x1\"\nscope = \"admin\"\n",
            "distinct",
        ),
        (
            "[[tokens]]\nname = \"a\"\ntoken = \"x1\"\nscope = \"owner\"\n",
            "expected one of `read`, `submit`, `admin`",
        ),
    ] {
        std::fs::write(&path, config).unwrap();
        let output = crate::support::tasktape()
            .args(["serve", "--config", path.to_str().unwrap(), "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
}

/// A POST refused 401 before its body arrived is answered with
/// `Connection: close`, and the server then closes the connection: a
/// client never sends its next request into a socket that silently goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_refused_before_its_body_says_the_connection_closes() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasktape.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let server = serve(dir.path(), &["--config", path.to_str().unwrap()]);
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut socket = std::net::TcpStream::connect(&address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Headers only: the 12-byte body never comes.
    socket
        .write_all(
            b"POST /v1/echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n",
        )
        .unwrap();
    let mut answer = Vec::new();
    // Read to the end: the server closes the connection after its answer.
    socket.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 401"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(answer.contains("unauthorized"), "{answer}");
}

/// Refused changes are on the record: a POST refused 401 (no token, a
/// wrong one), 403 (a foreign `Origin`) or 421 (a foreign `Host`) logs one
/// `audit: refused` line with the peer, method, path, status and why, at
/// most 20 a minute per peer (the rest counted, then said); every refusal
/// is counted in `tasktape_http_requests_total` with its status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_changes_are_logged_per_peer_within_a_rate_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasktape.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let mut server = serve(dir.path(), &["--config", path.to_str().unwrap()]);
    let base = server.base.clone();
    let client = reqwest::Client::new();
    let post = |headers: &[(&str, &str)]| {
        let mut request = client.post(format!("{base}/v1/echo")).body("{}");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    assert_eq!(post(&[]).await.unwrap().status(), 401);
    assert_eq!(
        post(&[("authorization", "Bearer guess-1")])
            .await
            .unwrap()
            .status(),
        401
    );
    let port = base.rsplit(':').next().unwrap().to_owned();
    let origin = post(&[
        ("authorization", "Bearer root-secret-0"),
        ("origin", "http://evil.test"),
    ])
    .await
    .unwrap();
    assert_eq!(origin.status(), 403);
    let host = post(&[
        ("authorization", "Bearer root-secret-0"),
        ("host", &format!("rebound.test:{port}")),
    ])
    .await
    .unwrap();
    assert_eq!(host.status(), 421);
    // A flood of guesses: 30 more from the same peer.
    for n in 0..30 {
        let guess = format!("Bearer guess-{n}");
        assert_eq!(
            post(&[("authorization", &guess)]).await.unwrap().status(),
            401
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = server.log_lines();
    let refused: Vec<&String> = lines
        .iter()
        .filter(|line| line.contains("audit: refused"))
        .collect();
    assert_eq!(
        refused.len(),
        20,
        "20 lines a minute for one peer: {refused:#?}"
    );
    for (status, why) in [
        ("401", "missing bearer token"),
        ("401", "invalid bearer token"),
        ("403", "evil.test"),
        ("421", "rebound.test"),
    ] {
        assert!(
            refused
                .iter()
                .any(|line| line.contains(&format!("status={status}"))
                    && line.contains(why)
                    && line.contains("peer=127.0.0.1")),
            "{status} {why}: {refused:#?}"
        );
    }
    for line in &lines {
        assert!(
            !line.contains("guess-") && !line.contains("secret-"),
            "a token in the log: {line}"
        );
    }
    // Counted, every one, with its status.
    let metrics = client
        .get(format!("{base}/metrics"))
        .bearer_auth("root-secret-0")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |status: &str| -> f64 {
        metrics
            .lines()
            .filter(|line| {
                line.starts_with("tasktape_http_requests_total")
                    && line.contains(&format!("status=\"{status}\""))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(count("401"), 32.0, "{metrics}");
    assert_eq!(count("403"), 1.0, "{metrics}");
    assert_eq!(count("421"), 1.0, "{metrics}");
}
