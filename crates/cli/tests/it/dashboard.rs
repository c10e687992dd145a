//! The dashboard in a real browser (headless Chromium through chromedriver)
//! against a real `tasktape serve`: live list, detail, cancel, submit with
//! typed params and the server's 422, the token prompt, the activity chart,
//! no console errors, and 400 px wide. Screenshots go to
//! `target/dashboard-screenshots/` (one set is committed under `docs/`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::browser::Browser;
use crate::support::{Server, serve, submit_echo_http, wait_status};

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots")
}

async fn row(server: &Server, task_id: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{}/v1/tasks/{task_id}", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_moves_bars_and_statuses_live_and_the_chart_draws_finished_tasks() {
    let data = tempfile::tempdir().unwrap();
    let server = serve(data.path(), &[]);
    // Finished tasks for the chart, then one that runs a few seconds.
    for _ in 0..3 {
        submit_echo_http(&server, None, json!({"count": 1})).await;
    }
    let long = submit_echo_http(&server, None, json!({"count": 60, "delay_ms": 150})).await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", server.base)).await;
    let row_status = format!(
        "(() => {{ const row = document.querySelector('tr[data-task=\"{long}\"]'); return row && row.querySelector('[data-status]').dataset.status; }})()"
    );
    browser
        .wait_for(
            &format!("return {row_status} === 'running';"),
            "the task listed as running",
        )
        .await;
    let progress = format!(
        "const bar = document.querySelector('tr[data-task=\"{long}\"] progress'); return bar ? bar.value : 0;"
    );
    let first = browser
        .wait_for(&progress, "a progress bar")
        .await
        .as_f64()
        .unwrap();
    // The bar advances without a reload.
    let mut later = first;
    for _ in 0..100 {
        later = browser.eval(&progress).await.as_f64().unwrap_or(0.0);
        if later > first {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        later > first,
        "the bar went from {first} to {later} (0: gone)"
    );
    // A task submitted now appears, and the long one turns succeeded, without a reload.
    let fresh = submit_echo_http(&server, None, json!({"count": 1})).await;
    browser
        .wait_for(
            &format!("return !!document.querySelector('tr[data-task=\"{fresh}\"]');"),
            "the new row",
        )
        .await;
    browser
        .wait_for(
            &format!("return {row_status} === 'succeeded';"),
            "the task turning succeeded",
        )
        .await;
    // The counts and the chart come from /v1/stats.
    let succeeded = browser
        .wait_for(
            "const c = document.querySelector('[data-count=succeeded] b'); return c && Number(c.textContent) >= 5 ? Number(c.textContent) : null;",
            "the succeeded count",
        )
        .await;
    assert!(succeeded.as_u64().unwrap() >= 5);
    let drawn = browser
        .wait_for(
            "const bars = [...document.querySelectorAll('#activity rect[data-status=succeeded]')]; const n = bars.reduce((s, r) => s + Number(r.dataset.count), 0); return n >= 5 ? n : null;",
            "the chart's bars",
        )
        .await;
    assert!(drawn.as_u64().unwrap() >= 5, "{drawn}");
    browser.screenshot(&screenshots().join("list.png")).await;
    browser.assert_no_console_errors(&[]).await;
    // Keyboard focus on a row's link survives the live refreshes.
    browser
        .eval(&format!(
            "document.querySelector('tr[data-task=\"{fresh}\"] a').focus();"
        ))
        .await;
    tokio::time::sleep(Duration::from_millis(3500)).await; // two refreshes
    let focused = browser
        .eval("return document.activeElement && document.activeElement.closest('tr') ? document.activeElement.closest('tr').dataset.task : null;")
        .await;
    assert_eq!(focused, json!(fresh), "focus was lost by a refresh");
    // 400 px wide: the page itself does not scroll sideways.
    browser.resize(400, 800).await;
    let overflow = browser
        .eval("return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
        .await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "overflows by {overflow} px at 400 px"
    );
    browser
        .screenshot(&screenshots().join("list-400.png"))
        .await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detail_page_follows_the_tape_to_final_and_cancel_ends_a_task_cancelled() {
    let data = tempfile::tempdir().unwrap();
    let server = serve(data.path(), &[]);
    let task = submit_echo_http(&server, None, json!({"count": 8, "delay_ms": 150})).await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/tasks/{task}", server.base)).await;
    browser
        .wait_for(
            "const last = [...document.querySelectorAll('#timeline li')].pop(); return last && last.dataset.type === 'final';",
            "the final event in the timeline",
        )
        .await;
    let kinds = browser
        .eval("return [...document.querySelectorAll('#timeline li')].map(li => li.dataset.type);")
        .await;
    let kinds: Vec<&str> = kinds
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(kinds.len(), 11, "{kinds:?}");
    assert_eq!(kinds[0], "task_started");
    assert_eq!(kinds.iter().filter(|kind| **kind == "progress").count(), 8);
    let bar = browser
        .eval("const p = document.querySelector('#phases progress'); return [p.value, p.max];")
        .await;
    assert_eq!(bar, json!([8, 8]));
    let result = browser
        .wait_for(
            "const r = document.querySelector('#result-json'); return r && r.textContent;",
            "the result",
        )
        .await;
    assert!(
        result.as_str().unwrap().contains("\"echoed\": 8"),
        "{result}"
    );
    let command = browser
        .eval("return document.querySelector('#follow-command').textContent;")
        .await;
    assert_eq!(
        command,
        json!(format!("tasktape tasks events {task} --follow"))
    );
    browser.screenshot(&screenshots().join("detail.png")).await;
    browser.assert_no_console_errors(&[]).await;

    // Cancel, with its confirmation, on a long task.
    let long = submit_echo_http(&server, None, json!({"count": 1000, "delay_ms": 100})).await;
    wait_status(&server.base, &long, |status| status == "running").await;
    browser.goto(&format!("{}/tasks/{long}", server.base)).await;
    browser
        .wait_for(
            "return !!document.querySelector('#cancel-task');",
            "the cancel button",
        )
        .await;
    browser.click("#cancel-task").await;
    browser.click("#confirm-yes").await;
    let status = wait_status(&server.base, &long, |status| status != "running").await;
    assert_eq!(status, "cancelled");
    browser
        .wait_for(
            "const last = [...document.querySelectorAll('#timeline li')].pop(); return last && last.dataset.type === 'final' && last.textContent.includes('cancelled');",
            "the cancelled final on the page",
        )
        .await;
    browser.assert_no_console_errors(&[]).await;
    // A finished task offers Delete, confirmed, then back to the list.
    browser
        .wait_for(
            "return !!document.querySelector('#delete-task');",
            "the delete button",
        )
        .await;
    browser.click("#delete-task").await;
    browser.click("#confirm-yes").await;
    browser
        .wait_for("return location.pathname === '/';", "the list after delete")
        .await;
    let gone = reqwest::Client::new()
        .get(format!("{}/v1/tasks/{long}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status().as_u16(), 404);
    browser.assert_no_console_errors(&[]).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_submit_form_runs_an_exec_op_with_typed_params_and_shows_the_server_s_422() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("tasktape.toml");
    std::fs::write(
        &config,
        r#"
[ops.greet]
description = "greets someone a few times"
command = ["sh", "-c", "i=0; while [ $i -lt \"$2\" ]; do echo \"hello $1\"; i=$((i+1)); done", "sh", "{name}", "{times}"]
[ops.greet.params.name]
type = "string"
required = true
description = "who to greet"
[ops.greet.params.times]
type = "integer"
minimum = 1
maximum = 5
default = 2
"#,
    )
    .unwrap();
    let server = serve(data.path(), &["--config", config.to_str().unwrap()]);
    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/submit?op=greet", server.base))
        .await;
    browser
        .wait_for(
            "return !!document.querySelector('#param-name');",
            "the greet form",
        )
        .await;
    let help = browser
        .eval("return document.querySelector('#param-times-help').textContent;")
        .await;
    assert!(help.as_str().unwrap().contains("≤ 5"), "{help}");
    // Client-side: a missing required field is refused before any request.
    browser.click("#submit-button").await;
    let error = browser
        .wait_for(
            "return document.querySelector('[data-error-for=name]').textContent;",
            "the required message",
        )
        .await;
    assert_eq!(error, json!("required"));
    browser.screenshot(&screenshots().join("submit.png")).await;
    browser.type_into("#param-name", "tape").await;
    browser.type_into("#param-times", "3").await;
    browser.click("#submit-button").await;
    let task = browser
        .wait_for(
            "const m = location.pathname.match(/^\\/tasks\\/(.+)$/); return m && m[1];",
            "the new task's page",
        )
        .await;
    let task = task.as_str().unwrap().to_owned();
    let finished = wait_status(&server.base, &task, |status| {
        status != "pending" && status != "running"
    })
    .await;
    assert_eq!(finished, "succeeded");
    let row = row(&server, &task).await;
    assert_eq!(row["op"], "greet");
    browser.assert_no_console_errors(&[]).await;

    // The server's 422, next to its field: a name too long for a program's
    // argument (a limit only the server checks).
    browser
        .goto(&format!("{}/submit?op=greet", server.base))
        .await;
    browser
        .wait_for(
            "return !!document.querySelector('#param-name');",
            "the greet form",
        )
        .await;
    browser
        .eval("document.querySelector('#param-name').value = 'x'.repeat(200 * 1024);")
        .await;
    browser.click("#submit-button").await;
    let error = browser
        .wait_for(
            "return document.querySelector('[data-error-for=name]').textContent;",
            "the 422 next to name",
        )
        .await;
    assert!(error.as_str().unwrap().contains("KiB"), "{error}");
    assert!(browser.eval("return location.pathname;").await == json!("/submit"));
    browser.assert_no_console_errors(&[422]).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_page_asks_once_says_when_it_is_wrong_and_then_works() {
    let data = tempfile::tempdir().unwrap();
    let server = serve(data.path(), &["--token", "s3cret-token"]);
    let task = submit_echo_http(&server, Some("s3cret-token"), json!({"count": 1})).await;
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", server.base)).await;
    browser
        .wait_for(
            "return document.querySelector('#token-dialog').open;",
            "the token prompt",
        )
        .await;
    // Nothing but 401s came back: no row is drawn.
    let rows = browser
        .eval("return document.querySelectorAll('#task-rows tr[data-task]').length;")
        .await;
    assert_eq!(rows, json!(0));
    browser.type_into("#token-input", "wrong").await;
    browser.click("#token-submit").await;
    let message = browser
        .wait_for(
            "const d = document.querySelector('#token-dialog'); return d.open && document.querySelector('#token-message').textContent.includes('refused') ? document.querySelector('#token-message').textContent : null;",
            "the wrong-token message",
        )
        .await;
    assert!(message.as_str().unwrap().contains("401"), "{message}");
    browser.type_into("#token-input", "s3cret-token").await;
    browser.click("#token-submit").await;
    browser
        .wait_for(
            &format!("return !!document.querySelector('tr[data-task=\"{task}\"]');"),
            "the list with the token",
        )
        .await;
    // The stream needs the token too (sent as a header, never in the URL).
    browser.click(&format!("tr[data-task=\"{task}\"] a")).await;
    browser
        .wait_for(
            "const last = [...document.querySelectorAll('#timeline li')].pop(); return last && last.dataset.type === 'final';",
            "the tape with the token",
        )
        .await;
    let urls = browser
        .eval("return performance.getEntriesByType('resource').map(e => e.name).join(' ');")
        .await;
    assert!(
        !urls.as_str().unwrap().contains("s3cret"),
        "the token leaked into a URL"
    );
    browser.assert_no_console_errors(&[401]).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_pages_filters_and_finds_by_id_and_every_page_fits_400_px() {
    let data = tempfile::tempdir().unwrap();
    let server = serve(data.path(), &[]);
    let mut ids = Vec::new();
    for _ in 0..60 {
        ids.push(submit_echo_http(&server, None, json!({"count": 1})).await);
    }
    let browser = Browser::start().await;
    browser
        .goto(&format!("{}/?status=succeeded", server.base))
        .await;
    let rows = "return document.querySelectorAll('#task-rows tr[data-task]').length;";
    browser
        .wait_for(
            &format!(
                "return ({}) === 50;",
                rows.trim_start_matches("return ").trim_end_matches(';')
            ),
            "a first page of 50",
        )
        .await;
    browser.click("#page-next").await;
    browser
        .wait_for("return document.querySelectorAll('#task-rows tr[data-task]').length === 10 && document.querySelector('#page-label').textContent === 'page 2';", "the second page")
        .await;
    // The oldest task is on the second page (newest first).
    let oldest = browser
        .eval(&format!(
            "return !!document.querySelector('tr[data-task=\"{}\"]');",
            ids[0]
        ))
        .await;
    assert_eq!(oldest, json!(true));
    browser.click("#page-prev").await;
    browser
        .wait_for(
            "return document.querySelector('#page-label').textContent === 'page 1';",
            "back to page 1",
        )
        .await;
    // Filtering by a status nothing has empties the list.
    browser
        .eval("const s = document.querySelector('#filter-status'); s.value = 'failed'; s.dispatchEvent(new Event('change'));")
        .await;
    browser
        .wait_for(
            "return document.querySelector('#task-rows').textContent.includes('No tasks.');",
            "an empty filtered list",
        )
        .await;
    assert!(
        browser
            .eval("return location.search;")
            .await
            .as_str()
            .unwrap()
            .contains("status=failed")
    );
    // Find by id opens the task.
    browser.type_into("#find-id", &ids[5]).await;
    browser.click("form.filters button[type=submit]").await;
    browser
        .wait_for(
            &format!("return location.pathname === '/tasks/{}';", ids[5]),
            "the found task",
        )
        .await;
    browser.resize(400, 800).await;
    for path in [
        format!("/tasks/{}", ids[5]),
        "/submit".to_owned(),
        "/".to_owned(),
    ] {
        browser.goto(&format!("{}{path}", server.base)).await;
        browser
            .wait_for(
                "return document.querySelector('main h1') !== null;",
                "the page",
            )
            .await;
        let overflow = browser
            .eval("return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
            .await;
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{path} overflows by {overflow} px at 400 px"
        );
    }
    browser.assert_no_console_errors(&[]).await;
    browser.close().await;
}

/// Select-and-act: tick rows, cancel them with one bulk request (after a
/// confirmation), then retry them as new tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selected_rows_are_cancelled_and_retried_in_bulk() {
    let data = tempfile::tempdir().unwrap();
    let server = serve(data.path(), &[]);
    let http = reqwest::Client::new();
    let run_at = tasktape_client::Timestamp::now()
        .add_millis(3_600_000)
        .to_string();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let handle: Value = http
            .post(format!("{}/v1/tasks", server.base))
            .json(&json!({"op": "echo", "params": {"count": 1}, "run_at": run_at}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(handle["task_id"].as_str().unwrap().to_owned());
    }
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", server.base)).await;
    for id in &ids {
        browser
            .wait_for(
                &format!("return !!document.querySelector('tr[data-task=\"{id}\"] input.select');"),
                "the row's checkbox",
            )
            .await;
    }
    assert_eq!(
        browser
            .eval("return document.getElementById('cancel-selected').disabled;")
            .await,
        json!(true)
    );
    for id in &ids[..2] {
        browser
            .click(&format!("tr[data-task=\"{id}\"] input.select"))
            .await;
    }
    browser
        .wait_for(
            "return document.getElementById('selected-count').textContent === '2 selected';",
            "two selected",
        )
        .await;
    browser.click("#cancel-selected").await;
    browser.click("#bulk-yes").await;
    browser
        .wait_for(
            "return document.getElementById('bulk-result').textContent.startsWith('Cancelled 2 of 2');",
            "the bulk cancel's answer",
        )
        .await;
    for id in &ids[..2] {
        assert_eq!(row(&server, id).await["status"], "cancelled");
    }
    assert_eq!(row(&server, &ids[2]).await["status"], "pending");
    // The whole page: select all, retry — only the two finished ones run again.
    browser
        .wait_for(
            &format!("return document.querySelector('tr[data-task=\"{}\"] [data-status]').dataset.status === 'cancelled';", ids[0]),
            "the cancelled status shown",
        )
        .await;
    browser.click("#select-all").await;
    browser.click("#retry-selected").await;
    browser.click("#bulk-yes").await;
    browser
        .wait_for(
            "return document.getElementById('bulk-result').textContent.startsWith('Retried 2 of 3');",
            "the bulk retry's answer",
        )
        .await;
    let page: Value = http
        .get(format!("{}/v1/tasks?limit=100", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let retried: Vec<&str> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|task| task["retry_of"].as_str())
        .collect();
    assert_eq!(retried.len(), 2, "{page}");
    assert!(retried.iter().all(|id| ids[..2].contains(&id.to_string())));
    browser.assert_no_console_errors(&[]).await;
    browser.close().await;
}

/// A task's page shows its params as collapsible JSON with a secret param
/// masked (from the row's `params`, masked by the server; list rows carry
/// none), and the page body draws no outline when the page focuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_params_are_shown_with_secrets_masked_and_the_page_has_no_outline() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("tasktape.toml");
    std::fs::write(
        &config,
        r#"
[ops.login]
description = "signs in with a key"
command = ["sh", "-c", "echo signed in as $1", "sh", "{user}"]
env = { API_KEY = "{key}" }
[ops.login.params.user]
type = "string"
required = true
[ops.login.params.key]
type = "string"
required = true
secret = true
"#,
    )
    .unwrap();
    let server = serve(data.path(), &["--config", config.to_str().unwrap()]);
    let http = reqwest::Client::new();
    let secret = "hunter2-never-shown";
    let submitted: Value = http
        .post(format!("{}/v1/tasks", server.base))
        .json(&json!({"op": "login", "params": {"user": "ana", "key": secret}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let task = submitted["task_id"].as_str().unwrap().to_owned();
    let finished = wait_status(&server.base, &task, |status| {
        status != "pending" && status != "running"
    })
    .await;
    assert_eq!(finished, "succeeded");
    let row = row(&server, &task).await;
    assert_eq!(row["params"], json!({"user": "ana", "key": "•••"}), "{row}");
    let listed = http
        .get(format!("{}/v1/tasks", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!listed.contains("\"params\""), "{listed}");
    assert!(!listed.contains(secret) && !row.to_string().contains(secret));

    let browser = Browser::start().await;
    browser.goto(&format!("{}/tasks/{task}", server.base)).await;
    browser
        .wait_for(
            "return !!document.querySelector('#task-params');",
            "the params on the task's page",
        )
        .await;
    browser.click("#task-params summary").await;
    let shown = browser
        .eval("return document.querySelector('#task-params pre').textContent;")
        .await;
    let shown: Value = serde_json::from_str(shown.as_str().unwrap()).unwrap();
    assert_eq!(shown, json!({"user": "ana", "key": "•••"}));
    let page = browser.eval("return document.body.innerText;").await;
    assert!(!page.as_str().unwrap().contains(secret));
    // The page focuses main after navigating (screen readers start there);
    // it draws no outline, while a focused link or button still does.
    browser.goto(&format!("{}/", server.base)).await;
    let outline = browser
        .wait_for(
            "const main = document.querySelector('main'); return document.activeElement === main && getComputedStyle(main).outlineStyle;",
            "main focused",
        )
        .await;
    assert_eq!(outline, json!("none"));
    let link = browser
        .eval("const a = document.querySelector('a'); a.focus(); return getComputedStyle(a).outlineStyle;")
        .await;
    assert_eq!(link, json!("solid"));
    browser.assert_no_console_errors(&[]).await;
    browser.close().await;
}

/// The Workers page lists remote workers live (state, ops, running tasks)
/// and its Drain button pushes `drain` to a live worker's signal stream;
/// it fits 400 px.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_page_lists_workers_live_and_drains_one() {
    use futures::StreamExt as _;
    use tasktape_client::protocol::{ClaimRequest, Registration, WorkerOp};
    use tasktape_client::{Client, Submission, WorkerSignal};

    let data = tempfile::tempdir().unwrap();
    let server = serve(data.path(), &[]);
    let client = Client::new(&server.base, None).unwrap();
    let registration = |id: &str| Registration {
        worker_id: id.to_owned(),
        host: "gpu-box".to_owned(),
        pid: 4242,
        version: "test 1".to_owned(),
        capacity: 4,
        ops: vec![WorkerOp {
            name: "render".to_owned(),
            description: "renders".to_owned(),
            params_schema: json!({"type": "object"}),
            concurrency: None,
            retry: None,
            idempotent: false,
            timeout_ms: None,
        }],
    };
    let session = client
        .register_worker(&registration("render-1"))
        .await
        .unwrap()
        .session;
    let gone = client
        .register_worker(&registration("render-0"))
        .await
        .unwrap()
        .session;
    client.deregister(&gone).await.unwrap();
    let mut signals = Box::pin(client.worker_signals(&session).await.unwrap());
    assert_eq!(signals.next().await.unwrap().unwrap(), WorkerSignal::Ready);

    let browser = Browser::start().await;
    browser.resize(400, 800).await;
    browser.goto(&format!("{}/workers", server.base)).await;
    browser
        .wait_for(
            "const row = document.querySelector('tr[data-worker=\"render-1\"] [data-state]'); return row && row.dataset.state === 'live';",
            "the live worker listed",
        )
        .await;
    let gone_state = browser
        .eval("return document.querySelector('tr[data-worker=\"render-0\"] [data-state]').dataset.state;")
        .await;
    assert_eq!(gone_state, json!("gone"));
    // A claimed task shows as running, without a reload.
    client
        .submit(&Submission::new("render", json!({})))
        .await
        .unwrap();
    let claimed = client
        .claim(&ClaimRequest {
            session: session.clone(),
            max: 1,
            ops: [("render".to_owned(), 1)].into_iter().collect(),
            wait_ms: 5000,
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    browser
        .wait_for(
            "const cell = document.querySelector('tr[data-worker=\"render-1\"] [data-running]'); return cell && cell.dataset.running === '1';",
            "one running task shown",
        )
        .await;
    let wide = browser
        .eval("return document.documentElement.scrollWidth <= window.innerWidth;")
        .await;
    assert_eq!(wide, json!(true), "the page fits 400 px");
    browser.screenshot(&screenshots().join("workers.png")).await;
    browser.click("button[data-drain=\"render-1\"]").await;
    let signal = tokio::time::timeout(Duration::from_secs(5), signals.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(signal, WorkerSignal::Drain);
    browser
        .wait_for(
            "const row = document.querySelector('tr[data-worker=\"render-1\"] [data-state]'); return row && row.dataset.state === 'draining';",
            "the worker shown draining",
        )
        .await;
    browser.assert_no_console_errors(&[]).await;
    browser.close().await;
}

/// Metadata: chips on the list rows and the detail page; the filter box
/// (and a click on a chip) lists only the tasks that hold it, the URL keeps
/// it, and a bad key is the server's 422 on the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_shown_and_filters_the_list() {
    let data = tempfile::tempdir().unwrap();
    let server = serve(data.path(), &[]);
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for metadata in [
        json!({"customer": "42", "region": "eu"}),
        json!({"customer": "42"}),
        json!({"customer": "7"}),
        json!({}),
    ] {
        let handle: Value = http
            .post(format!("{}/v1/tasks", server.base))
            .json(&json!({"op": "echo", "params": {"count": 1}, "metadata": metadata}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(handle["task_id"].as_str().unwrap().to_owned());
    }
    let listed = "return [...document.querySelectorAll('#task-rows tr[data-task]')].map((row) => row.dataset.task).sort().join(' ');";
    let expect = |wanted: &[&String]| {
        let mut wanted: Vec<&str> = wanted.iter().map(|id| id.as_str()).collect();
        wanted.sort();
        format!(
            "return ({}) === '{}';",
            listed.trim_start_matches("return ").trim_end_matches(';'),
            wanted.join(" ")
        )
    };
    let browser = Browser::start().await;
    browser.goto(&format!("{}/", server.base)).await;
    browser
        .wait_for(&expect(&ids.iter().collect::<Vec<_>>()), "all four rows")
        .await;
    let chips = browser
        .eval(&format!(
            "return document.querySelector('tr[data-task=\"{}\"] .meta').textContent;",
            ids[0]
        ))
        .await;
    assert_eq!(chips, json!("customer=42region=eu"));
    browser.type_into("#filter-meta", "customer=42").await;
    browser
        .eval("document.querySelector('#filter-meta').dispatchEvent(new Event('change'));")
        .await;
    browser
        .wait_for(&expect(&[&ids[0], &ids[1]]), "customer 42's two tasks")
        .await;
    let search = browser.eval("return location.search;").await;
    assert_eq!(search, json!("?meta.customer=42"));
    // A chip filters on itself.
    browser
        .click(&format!(
            "tr[data-task=\"{}\"] .meta button:nth-child(2)",
            ids[0]
        ))
        .await;
    browser
        .wait_for(&expect(&[&ids[0]]), "the eu task alone")
        .await;
    // The URL's filter is read at load.
    browser
        .goto(&format!("{}/?meta.customer=7", server.base))
        .await;
    browser
        .wait_for(&expect(&[&ids[2]]), "customer 7's task")
        .await;
    let shown = browser
        .eval("return document.querySelector('#filter-meta').value;")
        .await;
    assert_eq!(shown, json!("customer=7"));
    // A bad key: the server's 422, named.
    browser
        .eval("const input = document.querySelector('#filter-meta'); input.value = 'Bad=1'; input.dispatchEvent(new Event('change'));")
        .await;
    browser
        .wait_for(
            "return document.querySelector('#task-rows').textContent.includes('meta.Bad');",
            "the 422 naming the key",
        )
        .await;
    // The detail page shows it.
    browser
        .goto(&format!("{}/tasks/{}", server.base, ids[0]))
        .await;
    browser
        .wait_for(
            "const dd = document.querySelector('#task-metadata'); return !!dd && dd.textContent === 'customer=42region=eu';",
            "the metadata on the detail page",
        )
        .await;
    browser.assert_no_console_errors(&[422]).await;
    browser.close().await;
}

/// An op's flow control and its rate's state, on the list filtered by the
/// op (from `GET /v1/ops`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_of_an_op_shows_its_flow_control() {
    let data = tempfile::tempdir().unwrap();
    let server = crate::jobs::serve_config(
        data.path(),
        "[flow.echo]\nkey = \"{customer}\"\nkey_concurrency = 2\nrate = \"600/min\"\n",
    );
    let http = reqwest::Client::new();
    for customer in ["1", "2", "3"] {
        let response = http
            .post(format!("{}/v1/tasks", server.base))
            .json(
                &json!({"op": "echo", "params": {"count": 1}, "metadata": {"customer": customer}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let browser = Browser::start().await;
    browser.goto(&format!("{}/?op=echo", server.base)).await;
    let text = browser
        .wait_for(
            "const box = document.querySelector('#flow-state'); return box && box.textContent.includes('3 started') ? box.textContent : null;",
            "the op's flow control",
        )
        .await;
    assert_eq!(
        text,
        json!(
            "Flow control: key {customer} · at most 2 running per key · rate 600/min: 3 started in the window"
        )
    );
    browser.assert_no_console_errors(&[]).await;
    browser.close().await;
}
