//! Several `tasktape serve` processes on one PostgreSQL database
//! (`TASKTAPE_TEST_PG`, from `scripts/with-postgres`): following and
//! cancelling across instances, kill -9 of an owner, restarts, the per-op
//! limit across instances, and a database restart mid-run.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tasktape_client::{Client, FollowMode, ListQuery, Submission};
use tasktape_core::{EventBody, Status, TaskId};

use crate::support::{Server, serve_with_env};

/// The test database's URL; these tests fail (never skip) without it.
pub fn test_url() -> String {
    match std::env::var("TASKTAPE_TEST_PG") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "TASKTAPE_TEST_PG is not set: run the tests through scripts/with-postgres, which starts a throwaway PostgreSQL"
        ),
    }
}

/// One instance's process, data dir and config file.
pub struct Instance {
    pub server: Server,
    pub client: Client,
    _dir: tempfile::TempDir,
}

impl Instance {
    pub fn new(server: Server, client: Client, dir: tempfile::TempDir) -> Self {
        Instance {
            server,
            client,
            _dir: dir,
        }
    }
}

/// A config file for instance `id` on `schema`, plus `extra` TOML lines.
fn config(dir: &Path, id: &str, schema: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("tasktape.toml");
    std::fs::write(
        &path,
        format!(
            "instance_id = \"{id}\"\npg_schema = \"{schema}\"\ncancel_grace_ms = 500\n{extra}\n"
        ),
    )
    .unwrap();
    path
}

/// Starts instance `id` on `url`'s database, schema `schema`.
pub fn instance(url: &str, id: &str, schema: &str, extra: &str) -> Instance {
    instance_with_env(url, id, schema, extra, &[])
}

/// [`instance`] with more environment variables.
pub fn instance_with_env(
    url: &str,
    id: &str,
    schema: &str,
    extra: &str,
    env: &[(&str, &str)],
) -> Instance {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), id, schema, extra);
    let mut vars = vec![("TASKTAPE_STORE", url)];
    vars.extend_from_slice(env);
    let server = serve_with_env(dir.path(), &["--config", config.to_str().unwrap()], &vars);
    let client = Client::new(&server.base, None).unwrap();
    Instance {
        server,
        client,
        _dir: dir,
    }
}

pub fn schema() -> String {
    format!("t_{}", uuid::Uuid::new_v4().simple())
}

pub fn echo(count: u64, delay_ms: u64) -> Submission {
    Submission::new("echo", json!({"count": count, "delay_ms": delay_ms}))
}

/// Polls the row until `done` holds (at most `limit`); returns it.
pub async fn wait_row(
    client: &Client,
    task_id: TaskId,
    limit: Duration,
    done: impl Fn(&tasktape_client::TaskRow) -> bool,
) -> tasktape_client::TaskRow {
    let since = Instant::now();
    loop {
        if let Ok(row) = client.task(task_id).await
            && done(&row)
        {
            return row;
        }
        assert!(
            since.elapsed() < limit,
            "task {task_id} did not get there in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The whole tape via one client; checks seqs are 1..=n.
pub async fn tape(client: &Client, task_id: TaskId) -> Vec<tasktape_core::Event> {
    let page = client
        .events(task_id, 0, 1000, Duration::ZERO)
        .await
        .unwrap();
    let seqs: Vec<u64> = page.events.iter().map(|event| event.seq).collect();
    assert_eq!(
        seqs,
        (1..=page.last_seq).collect::<Vec<_>>(),
        "contiguous tape"
    );
    page.events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_and_a_cancel_on_one_instance_reach_a_task_on_another() {
    let url = test_url();
    let schema = schema();
    // A starts alone and claims the task; B joins after.
    let a = instance(&url, "a", &schema, "");
    let long = a.client.submit(&echo(100_000, 5)).await.unwrap();
    wait_row(&a.client, long.task_id, Duration::from_secs(10), |row| {
        row.status == Status::Running
    })
    .await;
    let b = instance(&url, "b", &schema, "");

    for mode in [FollowMode::Sse, FollowMode::LongPoll] {
        let mut tape = b.client.follow(long.task_id, 0, mode);
        let mut seen = Vec::new();
        while seen.len() < 5 {
            seen.push(tape.next().await.unwrap().unwrap().seq);
        }
        assert_eq!(seen, [1, 2, 3, 4, 5], "{mode:?}");
    }

    let mut follower = b.client.follow(long.task_id, 0, FollowMode::Sse);
    let answer = b.client.cancel(long.task_id).await.unwrap();
    assert!(answer.cancelled && !answer.already_terminal);
    let cancelled_at = Instant::now();
    let mut last = None;
    while let Some(event) = follower.next().await.unwrap() {
        last = Some(event);
    }
    let took = cancelled_at.elapsed();
    assert!(
        matches!(
            last.unwrap().body,
            EventBody::Final {
                status: Status::Cancelled,
                ..
            }
        ),
        "the task ended cancelled"
    );
    assert!(took < Duration::from_secs(3), "cancel took {took:?}");
    let row = a.client.task(long.task_id).await.unwrap();
    assert_eq!(row.status, Status::Cancelled);
    tape(&b.client, long.task_id).await;

    // A short task submitted on B runs somewhere and B sees its whole tape.
    let short = b.client.submit(&echo(20, 1)).await.unwrap();
    let mut follower = a.client.follow(short.task_id, 0, FollowMode::Sse);
    let mut seqs = Vec::new();
    while let Some(event) = follower.next().await.unwrap() {
        seqs.push(event.seq);
    }
    assert_eq!(seqs, (1..=23).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owner_s_tasks_end_owner_lost_within_ttl_and_an_interval() {
    let url = test_url();
    let schema = schema();
    let leases = "lease_ttl_ms = 1500\nlease_interval_ms = 250";
    let mut a = instance(&url, "a", &schema, leases);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(a.client.submit(&echo(100_000, 10)).await.unwrap().task_id);
    }
    for id in &ids {
        wait_row(&a.client, *id, Duration::from_secs(10), |row| {
            row.status == Status::Running
        })
        .await;
    }
    let b = instance(&url, "b", &schema, leases);
    let c = instance(&url, "c", &schema, leases);
    a.server.child.kill().unwrap();
    a.server.child.wait().unwrap();
    let killed = Instant::now();
    for id in &ids {
        let row = wait_row(&b.client, *id, Duration::from_secs(10), |row| {
            row.status.is_terminal()
        })
        .await;
        assert_eq!(row.status, Status::Failed);
        assert_eq!(row.error.as_ref().unwrap().code, "owner_lost");
        let events = tape(&c.client, *id).await;
        assert!(matches!(
            events.last().unwrap().body,
            EventBody::Final {
                status: Status::Failed,
                ..
            }
        ));
    }
    let took = killed.elapsed();
    // TTL (1.5 s) + one interval (0.25 s), plus polling slack.
    assert!(
        took < Duration::from_millis(1500 + 250 + 750),
        "reaped after {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_finishes_its_leftovers_and_leaves_a_live_peer_alone() {
    let url = test_url();
    let schema = schema();
    let mut a = instance(&url, "a", &schema, "");
    let mine = a.client.submit(&echo(100_000, 10)).await.unwrap().task_id;
    wait_row(&a.client, mine, Duration::from_secs(10), |row| {
        row.status == Status::Running
    })
    .await;
    a.server.child.kill().unwrap();
    a.server.child.wait().unwrap();
    let b = instance(&url, "b", &schema, "");
    let theirs = b.client.submit(&echo(100_000, 10)).await.unwrap().task_id;
    wait_row(&b.client, theirs, Duration::from_secs(10), |row| {
        row.status == Status::Running
    })
    .await;

    let a = instance(&url, "a", &schema, "");
    let row = wait_row(&a.client, mine, Duration::from_secs(10), |row| {
        row.status.is_terminal()
    })
    .await;
    assert_eq!(row.error.unwrap().code, "server_restart");
    // Recovery ran before `a` served its first request: had it touched the
    // peer's task, the change would be visible now.
    assert_eq!(
        a.client.task(theirs).await.unwrap().status,
        Status::Running,
        "a live peer's task"
    );
    b.client.cancel(theirs).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_op_limit_holds_across_three_instances() {
    let url = test_url();
    let schema = schema();
    let limit = "[concurrency]\necho = 2";
    let nodes = [
        instance(&url, "a", &schema, limit),
        instance(&url, "b", &schema, limit),
        instance(&url, "c", &schema, limit),
    ];
    let mut ids = Vec::new();
    for index in 0..12 {
        let node = &nodes[index % 3];
        ids.push(node.client.submit(&echo(4, 50)).await.unwrap().task_id);
    }
    let since = Instant::now();
    let mut peak = 0;
    loop {
        let running = nodes[0]
            .client
            .list(&ListQuery {
                status: Some(Status::Running),
                op: Some("echo".into()),
                ..ListQuery::default()
            })
            .await
            .unwrap()
            .tasks
            .len();
        peak = peak.max(running);
        assert!(
            running <= 2,
            "{running} echo tasks ran at once; the limit is 2"
        );
        let mut done = 0;
        for id in &ids {
            if nodes[1]
                .client
                .task(*id)
                .await
                .unwrap()
                .status
                .is_terminal()
            {
                done += 1;
            }
        }
        if done == ids.len() {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "{done} of {} finished",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(peak, 2, "two ran at once at some point");
    // FIFO: a task starts no earlier than any task created two or more
    // places before it. Two free slots are claimed by racing instances, so
    // the two tasks of one pair may start in either order by a few ms.
    let mut rows = Vec::new();
    for id in &ids {
        rows.push(nodes[2].client.task(*id).await.unwrap());
    }
    assert!(rows.iter().all(|row| row.status == Status::Succeeded));
    let started: Vec<_> = rows.iter().map(|row| row.started_at.unwrap()).collect();
    for (earlier, first) in started.iter().enumerate() {
        for later in &started[(earlier + 2).min(started.len())..] {
            assert!(first <= later, "task {earlier} started late: {started:?}");
        }
    }
}

/// A PostgreSQL server of this test's own, so it can be restarted.
pub struct PrivatePg {
    pub dir: tempfile::TempDir,
    bin: String,
    pub user: Option<String>,
    port: u16,
    /// More `-c name=value` server options (TLS, say).
    extra: String,
}

impl PrivatePg {
    fn command(&self, program: &str) -> std::process::Command {
        let path = format!("{}/{program}", self.bin);
        match &self.user {
            Some(user) => {
                let mut command = std::process::Command::new("runuser");
                command.args(["-u", user, "--", &path]);
                command
            }
            None => std::process::Command::new(path),
        }
    }

    pub fn start() -> PrivatePg {
        Self::start_with(|_| String::new())
    }

    /// Starts a server whose extra options `options(dir)` gives (files it
    /// needs can be put in `dir`, which the server's user owns).
    pub fn start_with(options: impl FnOnce(&std::path::Path) -> String) -> PrivatePg {
        let bin = std::env::var("TASKTAPE_TEST_PG_BIN")
            .expect("TASKTAPE_TEST_PG_BIN (set by scripts/with-postgres)");
        let user = std::env::var("TASKTAPE_TEST_PG_USER")
            .ok()
            .filter(|user| !user.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let extra = options(dir.path());
        if let Some(user) = &user {
            let chowned = std::process::Command::new("chown")
                .args(["-R", user])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(chowned.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = PrivatePg {
            dir,
            bin,
            user,
            port,
            extra,
        };
        let data = pg.dir.path().join("data");
        let status = pg
            .command("initdb")
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb");
        pg.pg_ctl(&["start"]);
        pg
    }

    pub fn pg_ctl(&self, action: &[&str]) {
        let data = self.dir.path().join("data");
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off {}",
            self.port,
            self.dir.path().display(),
            self.extra
        );
        let status = self
            .command("pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap(),
                "-l",
                self.dir.path().join("log").to_str().unwrap(),
                "-w",
                "-t",
                "30",
                "-o",
                &options,
            ])
            .args(action)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl {action:?}");
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_run_loses_nothing_and_every_task_ends() {
    // Make sure the shared test database is there too: a missing one fails.
    test_url();
    let pg = PrivatePg::start();
    let url = pg.url();
    let schema = schema();
    let leases = "lease_ttl_ms = 3000\nlease_interval_ms = 500";
    let a = instance(&url, "a", &schema, leases);
    let b = instance(&url, "b", &schema, leases);
    let task = a.client.submit(&echo(150, 20)).await.unwrap().task_id;
    wait_row(&a.client, task, Duration::from_secs(10), |row| {
        row.status == Status::Running
    })
    .await;
    // A follower on B, through the outage (the client reconnects).
    let follower = {
        let client = b.client.clone();
        tokio::spawn(async move {
            let mut tape = client
                .follow(task, 0, FollowMode::Sse)
                .reconnect_for(Duration::from_secs(60));
            let mut events = Vec::new();
            while let Some(event) = tape.next().await.unwrap() {
                events.push(event);
            }
            events
        })
    };
    // The follower is connected to B before the database goes.
    crate::support::wait_followers(&b.server.base, "sse", 1).await;

    pg.pg_ctl(&["stop", "-m", "fast"]);
    // While the database is down: 503 in the envelope, no 500, no hang.
    let http = reqwest::Client::new();
    let answer = http
        .get(format!("{}/v1/tasks", b.server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 503);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    // readyz answers from a check at most a second old.
    let since = Instant::now();
    loop {
        let ready = http
            .get(format!("{}/v1/readyz", a.server.base))
            .send()
            .await
            .unwrap();
        if ready.status().as_u16() == 503 {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(3),
            "readyz stayed 200"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.pg_ctl(&["start"]);

    // Back: the task ends (how depends on what the outage cost it), and the
    // follower on B saw its whole tape, once, in order.
    let row = wait_row(&b.client, task, Duration::from_secs(30), |row| {
        row.status.is_terminal()
    })
    .await;
    let events = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .unwrap()
        .unwrap();
    let tape = tape(&a.client, task).await;
    assert_eq!(events, tape, "the follower saw exactly the tape");
    let EventBody::Final { status, .. } = &events.last().unwrap().body else {
        panic!("no final: {:?}", events.last());
    };
    assert_eq!(*status, row.status);
    eprintln!(
        "after the restart the task ended {} ({:?}) with {} events",
        row.status,
        row.error.map(|error| error.code),
        events.len()
    );
    // New work runs again.
    let after = b.client.submit(&echo(3, 0)).await.unwrap().task_id;
    let row = wait_row(&a.client, after, Duration::from_secs(10), |row| {
        row.status.is_terminal()
    })
    .await;
    assert_eq!(row.status, Status::Succeeded);
}
