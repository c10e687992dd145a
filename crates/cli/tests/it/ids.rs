//! Duplicate instance ids on one PostgreSQL schema are refused: a second
//! live instance with the same id exits 2 naming the id; an instance
//! restarted right after `kill -9` is let in; the guard survives a
//! database restart.

use std::time::{Duration, Instant};

use crate::multi::{PrivatePg, instance, schema, test_url};
use crate::support::tasktape;

/// Runs `tasktape serve` as instance `id` and expects it to be refused.
fn refused(url: &str, id: &str, schema: &str) -> (Duration, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tasktape.toml");
    std::fs::write(
        &config,
        format!("instance_id = \"{id}\"\npg_schema = \"{schema}\"\n"),
    )
    .unwrap();
    let started = Instant::now();
    let output = tasktape()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
            config.to_str().unwrap(),
        ])
        .env("TASKTAPE_STORE", url)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    (started.elapsed(), stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_live_instance_with_the_same_id_is_refused() {
    let url = test_url();
    let schema = schema();
    let first = instance(&url, "twin", &schema, "");
    let (took, stderr) = refused(&url, "twin", &schema);
    let line = stderr
        .lines()
        .find(|line| line.contains("tasktape serve:"))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    assert!(
        line.contains("\"twin\"") && line.contains("in use"),
        "{line}"
    );
    assert!(took < Duration::from_secs(10), "refused after {took:?}");
    // The first one is untouched.
    assert!(first.client.healthz().await.is_ok());
    // Another id on the same schema is fine.
    let _other = instance(&url, "other", &schema, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_restarted_right_after_kill_9_is_let_in() {
    let url = test_url();
    let schema = schema();
    let mut first = instance(&url, "phoenix", &schema, "");
    first.server.child.kill().unwrap();
    first.server.child.wait().unwrap();
    let started = Instant::now();
    let again = instance(&url, "phoenix", &schema, "");
    assert!(again.client.healthz().await.is_ok());
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_survives_a_database_restart() {
    test_url();
    let pg = PrivatePg::start();
    let url = pg.url();
    let schema = schema();
    let mut first = instance(&url, "keeper", &schema, "");
    pg.pg_ctl(&["stop", "-m", "fast"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.pg_ctl(&["start"]);
    // The instance did not exit, and took its id's lock again.
    let since = Instant::now();
    loop {
        let logs = first.server.log_lines().join("\n");
        if logs.contains("instance id's lock taken again") {
            break;
        }
        assert!(since.elapsed() < Duration::from_secs(15), "{logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        first.server.child.try_wait().unwrap().is_none(),
        "the instance exited"
    );
    assert!(first.client.healthz().await.is_ok());
    let (_, stderr) = refused(&url, "keeper", &schema);
    assert!(stderr.contains("in use"), "{stderr}");
}
