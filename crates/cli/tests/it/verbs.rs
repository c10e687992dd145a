//! The client verbs against a real `tasktape serve`: every verb, plain and
//! JSON output in a pipe, and every exit code.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Server, client, finish, run, serve, serve_with_env, wait_status};

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// Submits `echo` with `count` and `delay_ms`; returns the task id.
fn submit_echo(server: &Server, home: &std::path::Path, count: u32, delay_ms: u32) -> String {
    let count = format!("count={count}");
    let delay = format!("delay_ms={delay_ms}");
    let submitted = run(
        server,
        home,
        &["submit", "echo", "-p", &count, "--param", &delay],
    );
    assert_eq!(submitted.code, 0, "{submitted:?}");
    let task_id = submitted.stdout.trim().to_owned();
    assert_eq!(task_id.len(), 36, "{submitted:?}");
    task_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_events_and_status_in_a_pipe() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = serve(data.path(), &[]);
    let task_id = submit_echo(&server, home.path(), 3, 0);

    let waited = run(&server, home.path(), &["tasks", "wait", &task_id]);
    assert_eq!(waited.code, 0, "{waited:?}");
    assert!(
        !waited.stdout.contains('\x1b'),
        "no escape codes in a pipe: {waited:?}"
    );
    let lines = waited.lines();
    assert_eq!(lines.len(), 6, "{waited:?}");
    assert!(lines[0].starts_with("#1 ") && lines[0].contains(" task_started echo"));
    assert!(
        lines[1].contains(" progress echo 1/3 {\"step\":1}"),
        "{}",
        lines[1]
    );
    assert!(
        lines[4].contains(" partial echo_done {\"count\":3}"),
        "{}",
        lines[4]
    );
    assert!(
        lines[5].contains(" final succeeded {\"echoed\":3}"),
        "{}",
        lines[5]
    );
    // --plain prints the same in a terminal; in a pipe it changes nothing.
    let plain = run(
        &server,
        home.path(),
        &["tasks", "wait", &task_id, "--plain"],
    );
    assert_eq!(plain.stdout, waited.stdout);
    // Long-polling instead of SSE gives the same lines.
    let polled = run(&server, home.path(), &["tasks", "wait", &task_id, "--poll"]);
    assert_eq!(polled.stdout, waited.stdout);

    let json = run(
        &server,
        home.path(),
        &["submit", "echo", "-p", "count=2", "--wait", "--json"],
    );
    assert_eq!(json.code, 0, "{json:?}");
    let events = json_lines(&json.stdout);
    let types: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["task_started", "progress", "progress", "partial", "final"]
    );
    assert_eq!(events[4]["result"]["echoed"], 2);
    assert!(json.stderr.contains("submitted echo task"), "{json:?}");

    let handle = run(
        &server,
        home.path(),
        &["submit", "echo", "--json", "--params", r#"{"count":1}"#],
    );
    let handle: Value = serde_json::from_str(&handle.stdout).unwrap();
    assert_eq!(handle["op"], "echo");
    assert!(
        handle["links"]["events"]
            .as_str()
            .unwrap()
            .ends_with("/events")
    );

    let events = run(
        &server,
        home.path(),
        &[
            "tasks",
            "events",
            &task_id,
            "--from-seq",
            "2",
            "--limit",
            "2",
        ],
    );
    assert_eq!(events.code, 0, "{events:?}");
    let seqs: Vec<_> = events
        .lines()
        .iter()
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    assert_eq!(seqs, ["#2", "#3"]);
    let all = run(
        &server,
        home.path(),
        &["tasks", "events", &task_id, "--json"],
    );
    let all = json_lines(&all.stdout);
    assert_eq!(
        all.iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );

    let status = run(&server, home.path(), &["tasks", "status", &task_id]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        status.stdout.contains("status         succeeded"),
        "{status:?}"
    );
    assert!(
        status.stdout.contains("result         {\"echoed\":3}"),
        "{status:?}"
    );
    let row: Value = serde_json::from_str(
        &run(
            &server,
            home.path(),
            &["tasks", "status", &task_id, "--json"],
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(row["task_id"], task_id.as_str());
    assert_eq!(row["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_a_live_task_to_its_end() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = serve(data.path(), &[]);
    let task_id = submit_echo(&server, home.path(), 20, 20);
    let followed = run(
        &server,
        home.path(),
        &["tasks", "events", &task_id, "--follow", "--json"],
    );
    assert_eq!(followed.code, 0, "{followed:?}");
    let events = json_lines(&followed.stdout);
    assert_eq!(events.len(), 23);
    assert_eq!(events.last().unwrap()["type"], "final");
    // From a seq, at most a limit of events.
    let some = run(
        &server,
        home.path(),
        &[
            "tasks",
            "events",
            &task_id,
            "--follow",
            "--from-seq",
            "5",
            "--limit",
            "3",
        ],
    );
    assert_eq!(some.code, 0, "{some:?}");
    assert_eq!(some.lines().len(), 3);
    assert!(some.lines()[0].starts_with("#5 "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_ops_and_cancel() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = serve(data.path(), &[]);
    let mut done = Vec::new();
    for _ in 0..3 {
        let task_id = submit_echo(&server, home.path(), 1, 0);
        wait_status(&server.base, &task_id, |s| s == "succeeded").await;
        done.push(task_id);
    }
    let long = submit_echo(&server, home.path(), 100_000, 5);
    wait_status(&server.base, &long, |s| s == "running").await;

    let table = run(&server, home.path(), &["tasks", "list"]);
    assert_eq!(table.code, 0, "{table:?}");
    let lines = table.lines();
    assert!(
        lines[0].starts_with("TASK_ID") && lines[0].contains("STATUS"),
        "{table:?}"
    );
    assert_eq!(lines.len(), 5);
    assert!(
        lines[1].starts_with(&long) && lines[1].contains("running"),
        "{table:?}"
    );

    let page = run(&server, home.path(), &["tasks", "list", "--limit", "2"]);
    assert_eq!(page.lines().len(), 3);
    assert!(page.stderr.contains("--all"), "{page:?}");
    let every = run(
        &server,
        home.path(),
        &["tasks", "list", "--limit", "2", "--all", "--format", "json"],
    );
    let every: Vec<Value> = serde_json::from_str(&every.stdout).unwrap();
    assert_eq!(every.len(), 4);
    let succeeded = run(
        &server,
        home.path(),
        &[
            "tasks",
            "list",
            "--status",
            "succeeded",
            "--op",
            "echo",
            "--json",
        ],
    );
    let succeeded: Vec<Value> = serde_json::from_str(&succeeded.stdout).unwrap();
    let mut ids: Vec<_> = succeeded
        .iter()
        .map(|t| t["task_id"].as_str().unwrap().to_owned())
        .collect();
    ids.reverse();
    assert_eq!(ids, done);
    let bad_status = run(
        &server,
        home.path(),
        &["tasks", "list", "--status", "sleeping"],
    );
    assert_eq!(bad_status.code, 2, "{bad_status:?}");

    let ops = run(&server, home.path(), &["ops"]);
    assert_eq!(ops.code, 0, "{ops:?}");
    assert!(ops.lines()[1].starts_with("echo "), "{ops:?}");
    let ops: Value =
        serde_json::from_str(&run(&server, home.path(), &["ops", "--json"]).stdout).unwrap();
    assert_eq!(ops[0]["name"], "echo");
    assert!(ops[0]["params_schema"].is_object());

    let cancelled = run(&server, home.path(), &["tasks", "cancel", &long]);
    assert_eq!(cancelled.code, 0, "{cancelled:?}");
    assert!(
        cancelled.stdout.contains("cancel requested"),
        "{cancelled:?}"
    );
    let waited = run(&server, home.path(), &["tasks", "wait", &long]);
    assert_eq!(waited.code, 130, "cancelled exits 130: {waited:?}");
    assert!(waited.lines().last().unwrap().ends_with("final cancelled"));
    let again = run(&server, home.path(), &["tasks", "cancel", &long, "--json"]);
    let again: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(again["already_terminal"], true);
    let human = run(&server, home.path(), &["tasks", "cancel", &long]);
    assert!(
        human.stdout.contains("already ended (cancelled)"),
        "{human:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_exits_124_and_a_failed_task_exits_1() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let mut server = serve(data.path(), &[]);
    let task_id = submit_echo(&server, home.path(), 100_000, 5);
    let timed_out = run(
        &server,
        home.path(),
        &["tasks", "wait", &task_id, "--timeout", "0.5"],
    );
    assert_eq!(timed_out.code, 124, "{timed_out:?}");
    assert!(
        timed_out.stderr.contains("timed out after 0.5s"),
        "{timed_out:?}"
    );
    assert_eq!(
        wait_status(&server.base, &task_id, |_| true).await,
        "running"
    );

    // kill -9 and restart: the task ends failed (server_restart).
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(server);
    let server = serve(data.path(), &[]);
    let failed = run(&server, home.path(), &["tasks", "wait", &task_id]);
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(
        failed
            .lines()
            .last()
            .unwrap()
            .contains("final failed server_restart: "),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_with_one_clear_line() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = serve(data.path(), &[]);
    for (args, expect) in [
        (&["submit", "nope"][..], "known ops: echo"),
        (&["submit", "echo", "-p", "count"], "not KEY=VALUE"),
        (
            &["submit", "echo", "--params", "[1]"],
            "must be a JSON object",
        ),
        (&["submit", "echo", "-p", "delay_ms=99999"], "delay_ms"),
        (&["tasks", "status", "not-a-uuid"], "not-a-uuid"),
        (&["tasks", "wait"], "<ID>"),
        (
            &[
                "tasks",
                "wait",
                "01a21fc1-a675-73b9-bbde-0881f151904e",
                "--timeout",
                "soon",
            ],
            "soon",
        ),
    ] {
        let failed = run(&server, home.path(), args);
        assert_eq!(failed.code, 2, "{args:?}: {failed:?}");
        assert!(failed.stderr.contains(expect), "{args:?}: {failed:?}");
        assert!(failed.stdout.is_empty(), "{args:?}: {failed:?}");
    }
    let one_line = run(&server, home.path(), &["submit", "nope"]);
    assert_eq!(one_line.stderr.lines().count(), 1, "{one_line:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_servers_unknown_tasks_and_tokens_are_named() {
    let home = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let refused = finish(client(&url, home.path()).args(["ops"]));
    assert_eq!(refused.code, 1, "{refused:?}");
    assert_eq!(refused.stderr.lines().count(), 1, "{refused:?}");
    assert!(
        refused.stderr.contains(&url) && refused.stderr.contains("TASKTAPE_URL"),
        "{refused:?}"
    );

    let data = tempfile::tempdir().unwrap();
    let server = serve_with_env(data.path(), &[], &[("TASKTAPE_TOKEN", "s3cret")]);
    let missing = run(&server, home.path(), &["ops"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(
        missing.stderr.contains("needs a token") && missing.stderr.contains("TASKTAPE_TOKEN"),
        "{missing:?}"
    );
    let wrong = finish(
        client(&server.base, home.path())
            .env("TASKTAPE_TOKEN", "nope")
            .args(["ops"]),
    );
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert!(
        wrong
            .stderr
            .contains("refused the token from $TASKTAPE_TOKEN"),
        "{wrong:?}"
    );
    let flag = run(&server, home.path(), &["ops", "--token", "s3cret"]);
    assert_eq!(flag.code, 0, "{flag:?}");

    // URL and token from the config file; the environment's URL wins over it.
    let config = home.path().join(".config/tasktape");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("client.toml"),
        format!("url = \"{}\"\ntoken = \"s3cret\"\n", server.base),
    )
    .unwrap();
    let from_file = finish(
        client(&server.base, home.path())
            .env_remove("TASKTAPE_URL")
            .args(["ops"]),
    );
    assert_eq!(from_file.code, 0, "{from_file:?}");
    let env_wins = finish(client(&url, home.path()).args(["ops"]));
    assert_eq!(env_wins.code, 1, "{env_wins:?}");
    assert!(env_wins.stderr.contains(&url), "{env_wins:?}");
    std::fs::write(config.join("client.toml"), "colour = \"red\"\n").unwrap();
    let bad_file = run(&server, home.path(), &["ops"]);
    assert_eq!(bad_file.code, 2, "{bad_file:?}");
    assert!(bad_file.stderr.contains("client.toml"), "{bad_file:?}");
    std::fs::remove_file(config.join("client.toml")).unwrap();

    let unknown = run(
        &server,
        home.path(),
        &[
            "tasks",
            "status",
            "01a21fc1-a675-73b9-bbde-0881f151904e",
            "--token",
            "s3cret",
        ],
    );
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("not found"), "{unknown:?}");
    let unknown = run(
        &server,
        home.path(),
        &[
            "tasks",
            "wait",
            "01a21fc1-a675-73b9-bbde-0881f151904e",
            "--token",
            "s3cret",
        ],
    );
    assert_eq!(unknown.code, 1, "{unknown:?}");
}

/// The task's tape's last seq.
async fn last_seq(base: &str, task_id: &str) -> u64 {
    let page: Value = reqwest::Client::new()
        .get(format!(
            "{base}/v1/tasks/{task_id}/events?from_seq=1&limit=1"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["last_seq"].as_u64().unwrap()
}

/// Starts `tasks wait` on a long task, waits for its first lines, sends
/// SIGINT, and returns what it printed and its exit code.
async fn interrupt_wait(
    server: &Server,
    home: &std::path::Path,
    task_id: &str,
    extra: &[&str],
) -> crate::support::Run {
    let mut child = client(&server.base, home)
        .args(["tasks", "wait", task_id])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    // Its first printed event proves it follows, with its Ctrl-C handler
    // installed (the handler is polled before the first event is shown).
    let stdout = child.stdout.take().unwrap();
    let (first, seen) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines.is_empty() {
                let _ = first.send(());
            }
            lines.push(line);
        }
        lines
    });
    seen.recv_timeout(Duration::from_secs(20))
        .expect("tasks wait printed its first event");
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let lines = reader.join().unwrap();
    crate::support::Run {
        code: output.status.code().expect("exited"),
        stdout: lines.iter().map(|line| format!("{line}\n")).collect(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_following_or_cancels_when_asked() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = serve(data.path(), &[]);

    let task_id = submit_echo(&server, home.path(), 100_000, 5);
    let stopped = interrupt_wait(&server, home.path(), &task_id, &[]).await;
    assert_eq!(stopped.code, 130, "{stopped:?}");
    assert!(stopped.stdout.starts_with("#1 "), "{stopped:?}");
    assert!(
        stopped
            .stderr
            .contains(&format!("tasktape tasks cancel {task_id}")),
        "{stopped:?}"
    );
    // Not cancelled: its tape keeps growing well past the interrupt (a
    // cancel would end it within the 5 ms step and the grace).
    let at_interrupt = last_seq(&server.base, &task_id).await;
    let since = std::time::Instant::now();
    while last_seq(&server.base, &task_id).await < at_interrupt + 50 {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the task stopped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        wait_status(&server.base, &task_id, |_| true).await,
        "running"
    );

    let cancelled =
        interrupt_wait(&server, home.path(), &task_id, &["--cancel-on-interrupt"]).await;
    assert_eq!(cancelled.code, 130, "{cancelled:?}");
    assert!(
        cancelled
            .stdout
            .lines()
            .last()
            .unwrap()
            .ends_with("final cancelled"),
        "{cancelled:?}"
    );
    assert_eq!(
        wait_status(&server.base, &task_id, |_| true).await,
        "cancelled"
    );
}

/// The client flags work before the verb as after it (`tasktape --url URL
/// --json ops`), the verb's own winning; they are refused before `serve`,
/// and `--help` lists them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_flags_work_before_or_after_the_verb() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = serve(data.path(), &[]);
    let bare = || {
        let mut command = crate::support::tasktape();
        command
            .env("HOME", home.path())
            .env_remove("TASKTAPE_URL")
            .stdin(Stdio::null());
        command
    };
    let before = finish(bare().args(["--url", &server.base, "--json", "ops"]));
    assert_eq!(before.code, 0, "{before:?}");
    let ops: Value =
        serde_json::from_str(before.stdout.trim()).expect("JSON after a global --json");
    assert!(ops.to_string().contains("echo"), "{ops}");
    let submitted = finish(bare().args(["--url", &server.base, "submit", "echo", "-p", "count=1"]));
    assert_eq!(submitted.code, 0, "{submitted:?}");
    let task_id = submitted.stdout.trim().to_owned();
    let listed = finish(bare().args(["--url", &server.base, "--json", "tasks", "list"]));
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(listed.stdout.contains(&task_id), "{listed:?}");
    // Given in both places, the verb's own wins.
    let both = finish(bare().args([
        "--url",
        "http://127.0.0.1:1",
        "tasks",
        "status",
        &task_id,
        "--url",
        &server.base,
    ]));
    assert_eq!(both.code, 0, "{both:?}");
    let clash = finish(bare().args(["--url", &server.base, "--json", "ops", "--plain"]));
    assert_eq!(clash.code, 2, "{clash:?}");
    assert!(clash.stderr.contains("--json and --plain"), "{clash:?}");
    let serve_refused = finish(bare().args(["--url", &server.base, "serve"]));
    assert_eq!(serve_refused.code, 2, "{serve_refused:?}");
    assert!(
        serve_refused.stderr.contains("do not apply to `serve`"),
        "{serve_refused:?}"
    );
    let help = finish(bare().arg("--help"));
    assert_eq!(help.code, 0);
    for flag in ["--url", "--token", "--ca-cert", "--json", "--plain"] {
        assert!(help.stdout.contains(flag), "{flag} in {}", help.stdout);
    }
}
