//! Cross-site requests and DNS rebinding are refused before anything else.

use serde_json::Value;

use crate::support::Running;

async fn call(app: &Running, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = app
        .http
        .request(method.parse().unwrap(), format!("{}{path}", app.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if method == "POST" {
        request = request
            .header("content-type", "text/plain")
            .body(r#"{"count":1}"#);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origins_get_403_and_foreign_hosts_421_on_loopback() {
    let app = Running::start("allowed_origins = [\"https://ops.example.com\"]\nallowed_hosts = [\"tasks.internal\"]\ntoken = \"t0k\"").await;
    let port = app.base.rsplit(':').next().unwrap().to_owned();
    let own = format!("http://127.0.0.1:{port}");
    let auth = ("authorization", "Bearer t0k");

    // A cross-site simple POST (text/plain, no preflight): refused before auth.
    let (status, body) = call(
        &app,
        "POST",
        "/v1/echo",
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, _) = call(
        &app,
        "GET",
        "/v1/tasks",
        &[auth, ("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(&app, "GET", "/v1/tasks", &[auth, ("origin", "null")]).await;
    assert_eq!(status, 403);
    // Same origin, a listed origin, and no origin at all (curl, the CLI) pass.
    let (status, body) = call(
        &app,
        "POST",
        "/v1/echo",
        &[auth, ("origin", &own), ("sec-fetch-site", "same-origin")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(
        &app,
        "GET",
        "/v1/tasks",
        &[auth, ("origin", "https://ops.example.com")],
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(&app, "POST", "/v1/echo", &[auth]).await;
    assert_eq!(status, 200);
    // localhost is same-origin when the page was opened at localhost.
    let (status, _) = call(
        &app,
        "GET",
        "/v1/tasks",
        &[
            auth,
            ("host", &format!("localhost:{port}")),
            ("origin", &format!("http://localhost:{port}")),
        ],
    )
    .await;
    assert_eq!(status, 200);

    // DNS rebinding: the page's own name in Host.
    let (status, body) = call(
        &app,
        "GET",
        "/v1/tasks",
        &[auth, ("host", &format!("evil.example:{port}"))],
    )
    .await;
    assert_eq!(status, 421, "{body}");
    assert_eq!(body["error"]["code"], "misdirected_request");
    let (status, _) = call(
        &app,
        "GET",
        "/v1/tasks",
        &[auth, ("host", &format!("tasks.internal:{port}"))],
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &app,
        "GET",
        "/v1/tasks",
        &[auth, ("host", &format!("[::1]:{port}"))],
    )
    .await;
    assert_eq!(status, 200);
    // Probes answer whatever the Host.
    let (status, _) = call(&app, "GET", "/v1/healthz", &[("host", "lb.example")]).await;
    assert_eq!(status, 200);
    let (status, _) = call(&app, "GET", "/v1/readyz", &[("host", "lb.example")]).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_curl_tour_still_works() {
    let app = Running::start("").await;
    let curl = |args: &[&str]| {
        let output = std::process::Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .expect("curl runs");
        let text = String::from_utf8(output.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_owned(), body.to_owned())
    };
    let base = app.base.clone();
    let (code, body) = tokio::task::spawn_blocking({
        let base = base.clone();
        move || curl(&["-XPOST", &format!("{base}/v1/echo"), "-d", r#"{"count":2}"#])
    })
    .await
    .unwrap();
    assert_eq!(code, "200", "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [
        format!("/v1/tasks/{id}/events?from_seq=0&wait=5"),
        format!("/v1/tasks/{id}"),
        "/v1/tasks?limit=10".to_owned(),
        "/v1/ops".to_owned(),
    ] {
        let url = format!("{base}{path}");
        let (code, body) = tokio::task::spawn_blocking(move || curl(&[&url]))
            .await
            .unwrap();
        assert_eq!(code, "200", "{path}: {body}");
    }
    let url = format!("{base}/v1/tasks");
    let (code, body) = tokio::task::spawn_blocking(move || {
        curl(&[
            "-XPOST",
            &url,
            "-d",
            r#"{"op":"echo","params":{"count":3},"idempotency_key":"nightly-1"}"#,
        ])
    })
    .await
    .unwrap();
    assert_eq!(code, "200", "{body}");
}
