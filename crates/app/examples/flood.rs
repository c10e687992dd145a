//! The exec output flood, measured: a program prints 500,000 progress lines
//! as fast as it can while another task (echo, 200 steps 10 ms apart) is
//! followed over HTTP long-polls. Prints the flood's rate and the
//! follower's latency (event `ts` → receipt), against a run without flood.
//!
//!     cargo run --release -p tasktape-app --example flood

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tasktape_app::{Builder, Config};
use tasktape_core::Timestamp;

const LINES: u64 = 500_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("tasktape-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("flood.sh");
    std::fs::write(
        &script,
        format!(
            "seq 1 {LINES} | awk '{{ print \"{{\\\"progress\\\": {{\\\"phase\\\": \\\"flood\\\", \\\"current\\\": \" $1 \", \\\"total\\\": {LINES}}}}}\" }}'\n"
        ),
    )?;
    let toml = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[ops.flood]\ncommand = [\"sh\", {:?}]\n",
        dir.display().to_string(),
        script.display().to_string(),
    );
    let app = Builder::new(Config::from_toml(&toml)?).start().await?;
    let base = format!("http://{}", app.local_addr());
    let manager = app.manager().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();

    let (quiet_p50, quiet_p99, quiet_took) = follow_echo(&http, &base).await;
    println!(
        "follower without flood: p50 {quiet_p50:.1} ms, p99 {quiet_p99:.1} ms; echo(200 × 10 ms) took {quiet_took:.0} ms"
    );

    let flood = manager.submit("flood", json!({}), None).await?.task;
    let started = Instant::now();
    let (p50, p99, echo_took) = follow_echo(&http, &base).await;
    let row = manager
        .wait(flood.task_id, Duration::from_secs(600))
        .await?
        .unwrap();
    let took = started.elapsed();
    let page: Value = http
        .get(format!(
            "{base}/v1/tasks/{}/events?from_seq=1&limit=1",
            flood.task_id
        ))
        .send()
        .await?
        .json()
        .await?;
    println!(
        "flood: {} lines → {} events, status {}, {:.2} s, {:.0} events/s",
        LINES,
        page["last_seq"],
        row.status,
        took.as_secs_f64(),
        page["last_seq"].as_f64().unwrap_or(0.0) / took.as_secs_f64()
    );
    println!(
        "follower during flood: p50 {p50:.1} ms, p99 {p99:.1} ms; echo(200 × 10 ms) took {echo_took:.0} ms"
    );
    let status = http
        .get(format!("{base}/v1/healthz"))
        .send()
        .await?
        .status();
    println!("server after flood: healthz {status}");
    let _ = stop.send(());
    server.await??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Submits echo(200, 10 ms) and follows it by long-poll; latency of each
/// event from its `ts` (its commit) to its receipt, p50 and p99 in ms, and
/// how long the echo took from submit to the receipt of `final` (2 s of
/// sleeps plus whatever its appends waited for behind the flood's).
async fn follow_echo(http: &reqwest::Client, base: &str) -> (f64, f64, f64) {
    let submitted = Instant::now();
    let handle: Value = http
        .post(format!("{base}/v1/echo"))
        .json(&json!({"count": 200, "delay_ms": 10}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = handle["task_id"].as_str().unwrap().to_owned();
    let mut from = 1;
    let mut latencies = Vec::new();
    loop {
        let page: Value = http
            .get(format!(
                "{base}/v1/tasks/{id}/events?from_seq={from}&wait=30"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let now = Timestamp::now().as_millis();
        let mut done = false;
        for event in page["events"].as_array().unwrap() {
            let ts = Timestamp::parse(event["ts"].as_str().unwrap())
                .unwrap()
                .as_millis();
            latencies.push((now - ts) as f64);
            done |= event["type"] == "final";
        }
        from = page["next_from_seq"].as_u64().unwrap();
        if done {
            break;
        }
    }
    let took = submitted.elapsed().as_secs_f64() * 1000.0;
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), took)
}
