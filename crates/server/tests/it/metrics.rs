//! `GET /metrics` read back with a real Prometheus text-format parser.

use std::time::Duration;

use crate::support::app;
use crate::support::followers;

/// Every sample, as (name, labels, value), from a parser of the Prometheus
/// text format (`nom-openmetrics`); the whole text must parse.
struct Scrape(Vec<Sample>);

/// A sample's name, labels and value.
type Sample = (String, Vec<(String, String)>, f64);

fn scrape(text: &str) -> Scrape {
    let (rest, families) = nom_openmetrics::parser::prometheus(text)
        .unwrap_or_else(|error| panic!("not Prometheus text ({error:?}):\n{text}"));
    assert!(rest.trim().is_empty(), "unparsed: {rest}");
    Scrape(
        families
            .into_iter()
            .flat_map(|family| family.samples)
            .map(|sample| {
                let labels = sample
                    .labels()
                    .iter()
                    .map(|label| (label.name.to_owned(), label.value.clone()))
                    .collect();
                (sample.name().to_owned(), labels, sample.number())
            })
            .collect(),
    )
}

/// The value of the sample `metric` whose labels include `labels`.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .0
        .iter()
        .find(|(name, have, _)| {
            name == metric
                && labels
                    .iter()
                    .all(|(label, want)| have.iter().any(|(n, v)| n == label && v == want))
        })
        .map(|(_, _, value)| *value)
        .unwrap_or_else(|| panic!("no {metric} {labels:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scrape_cleanly_and_count_what_happened() {
    let app = app().await;
    for _ in 0..2 {
        let task_id = app.echo(r#"{"count":3}"#).await;
        app.wait_final(&task_id).await;
    }
    let forever = app
        .post("/v1/tasks", r#"{"op":"forever","params":{}}"#)
        .await
        .json()["task_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_status(&forever, "running").await;
    assert_eq!(app.get("/nothing/here").await.status.as_u16(), 404);
    // A long-poll and a stream stay open while we scrape.
    let poll = {
        let router = app.router.clone();
        let uri = format!("/v1/tasks/{forever}/events?from_seq=5&wait=5");
        tokio::spawn(async move {
            use tower::ServiceExt;
            let request = axum::http::Request::get(uri)
                .body(axum::body::Body::empty())
                .unwrap();
            router.oneshot(request).await.unwrap()
        })
    };
    let stream = app
        .open(&format!("/v1/tasks/{forever}/events/stream?from_seq=5"))
        .await;
    assert_eq!(stream.status().as_u16(), 200);
    // Scrape once both followers are counted.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let answer = app.get("/metrics").await;
        if followers(&answer.text, "long_poll") >= 1 && followers(&answer.text, "sse") >= 1 {
            break answer;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the followers never connected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(answer.status.as_u16(), 200);
    assert!(
        answer.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        answer.headers
    );
    let metrics = scrape(&answer.text);
    assert_eq!(
        value(
            &metrics,
            "tasktape_tasks_submitted_total",
            &[("op", "echo")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &metrics,
            "tasktape_tasks_finished_total",
            &[("op", "echo"), ("status", "succeeded")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &metrics,
            "tasktape_task_duration_seconds_count",
            &[("op", "echo"), ("status", "succeeded")]
        ),
        2.0
    );
    // Each echo(count=3) appends 3 progress events and a partial.
    assert!(value(&metrics, "tasktape_events_appended_total", &[]) >= 8.0);
    assert_eq!(value(&metrics, "tasktape_tasks_running", &[]), 1.0);
    assert_eq!(value(&metrics, "tasktape_tasks_pending", &[]), 0.0);
    assert_eq!(
        value(&metrics, "tasktape_followers", &[("kind", "long_poll")]),
        1.0
    );
    assert_eq!(
        value(&metrics, "tasktape_followers", &[("kind", "sse")]),
        1.0
    );
    assert!(
        value(
            &metrics,
            "tasktape_http_requests_total",
            &[("route", "/v1/{op}"), ("status", "200")]
        ) >= 2.0
    );
    assert_eq!(
        value(
            &metrics,
            "tasktape_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
    assert!(
        value(
            &metrics,
            "tasktape_store_operation_duration_seconds_count",
            &[("operation", "create")]
        ) >= 3.0
    );
    assert!(
        value(
            &metrics,
            "tasktape_http_request_duration_seconds_count",
            &[("route", "/v1/tasks/{task_id}")]
        ) >= 1.0
    );

    // Followers leave the gauge when they go.
    drop(stream);
    app.post(&format!("/v1/tasks/{forever}/cancel"), "").await;
    poll.await.unwrap();
    app.wait_final(&forever).await;
    let metrics = scrape(&app.get("/metrics").await.text);
    assert_eq!(
        value(&metrics, "tasktape_followers", &[("kind", "long_poll")]),
        0.0
    );
    assert_eq!(
        value(&metrics, "tasktape_followers", &[("kind", "sse")]),
        0.0
    );
    assert_eq!(
        value(
            &metrics,
            "tasktape_tasks_finished_total",
            &[("op", "forever"), ("status", "cancelled")]
        ),
        1.0
    );
}
