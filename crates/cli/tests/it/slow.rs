//! Slow and idle clients: sockets that never finish their headers are
//! closed after `header_read_timeout_secs` while normal clients are served;
//! past `max_connections` new connections wait for a free slot.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::serve;

/// Lifts this test process's open-files limit (2,000 sockets and more).
fn raise_open_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    assert!(
        hard >= 4500,
        "the hard open-files limit ({hard}) is too low for this test"
    );
}

fn config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("tasktape.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Whether the server closed `socket` (EOF or reset) within `limit`.
fn closed_within(socket: &mut TcpStream, limit: Duration) -> bool {
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut buffer = [0u8; 512];
    loop {
        match socket.read(&mut buffer) {
            Ok(0) => return true,
            // A 408 answer (hyper may send one) and then EOF.
            Ok(_) => continue,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

async fn healthz(base: &str) -> Duration {
    let started = Instant::now();
    let answer = reqwest::Client::new()
        .get(format!("{base}/v1/healthz"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_sockets_that_never_finish_their_headers_are_closed() {
    raise_open_files();
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "header_read_timeout_secs = 2\n");
    let server = serve(dir.path(), &["--config", path.to_str().unwrap()]);
    let address = server.base.trim_start_matches("http://").to_owned();
    let opened = Instant::now();
    let mut sockets: Vec<(TcpStream, Instant)> = (0..2000)
        .map(|_| {
            let mut socket = TcpStream::connect(&address).unwrap();
            socket
                .write_all(b"GET /v1/tasks HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
                .unwrap();
            (socket, Instant::now())
        })
        .collect();
    eprintln!("2000 sockets opened in {:?}", opened.elapsed());
    // A normal client is served meanwhile, at once.
    let took = healthz(&server.base).await;
    assert!(took < Duration::from_secs(1), "healthz took {took:?}");
    // Not closed early: the newest, still under 1.5 s old, are open (a read
    // would block)…
    let mut checked = 0;
    for (socket, since) in sockets.iter_mut().rev() {
        if since.elapsed() > Duration::from_millis(1500) || checked == 100 {
            break;
        }
        socket.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let read = socket.read(&mut byte);
        assert!(
            matches!(&read, Err(error) if error.kind() == std::io::ErrorKind::WouldBlock),
            "a slow socket was closed {:?} after it connected: {read:?}",
            since.elapsed()
        );
        socket.set_nonblocking(false).unwrap();
        checked += 1;
    }
    assert!(
        checked > 0,
        "opening the sockets took too long to check any"
    );
    // …and every one is closed once its 2 s are up.
    for (index, (socket, _)) in sockets.iter_mut().enumerate() {
        assert!(
            closed_within(socket, Duration::from_secs(8)),
            "slow socket {index} still open {:?} after it connected",
            opened.elapsed()
        );
    }
    assert!(opened.elapsed() < Duration::from_secs(10));
    let took = healthz(&server.base).await;
    assert!(took < Duration::from_secs(1), "healthz took {took:?}");
}

/// Past `max_connections` the 16 connections kept for the health probes
/// answer the probes at once (and anything else with a 503); past those
/// too, a client waits in the backlog until a slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_client_waits_for_a_free_slot() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        "header_read_timeout_secs = 2\nmax_connections = 20\n",
    );
    let server = serve(dir.path(), &["--config", path.to_str().unwrap()]);
    let address = server.base.trim_start_matches("http://").to_owned();
    // Twenty idle connections fill every slot…
    let mut idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // …the probes are still answered at once, on the slots kept for them…
    let took = healthz(&server.base).await;
    assert!(took < Duration::from_millis(800), "healthz took {took:?}");
    let info = reqwest::get(format!("{}/v1/info", server.base))
        .await
        .unwrap();
    assert_eq!(info.status().as_u16(), 503);
    // …and with those taken too, the next client is served only once the
    // idle connections' time is up.
    idle.extend((0..16).map(|_| TcpStream::connect(&address).unwrap()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let took = healthz(&server.base).await;
    assert!(
        took >= Duration::from_millis(1000),
        "served in {took:?} with every slot taken"
    );
    assert!(took < Duration::from_secs(10), "healthz took {took:?}");
    drop(idle);
    let metrics = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("tasktape_http_connections "), "{metrics}");
}

/// Reads what the server sends until it closes the socket; the text and
/// how long that took.
fn answer_and_close(socket: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut text = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match socket.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => text.extend_from_slice(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(error) => panic!("the server kept the socket open: {error}"),
        }
    }
    (
        String::from_utf8_lossy(&text).into_owned(),
        started.elapsed(),
    )
}

/// A body that stalls or trickles is cut off after `body_read_timeout_secs`
/// (408, connection closed), fixed-length or chunked; a `Content-Length`
/// over the limit is refused 413 at once, before any body is sent; the
/// server answers others meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_are_cut_off_and_oversized_ones_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "body_read_timeout_secs = 2\n");
    let server = serve(dir.path(), &["--config", path.to_str().unwrap()]);
    let address = server.base.trim_start_matches("http://").to_owned();

    // Announces 1,000 bytes, sends 10.
    let mut stalled = TcpStream::connect(&address).unwrap();
    stalled
        .write_all(b"POST /v1/tasks HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"op\":\"ec")
        .unwrap();
    // Chunked, a byte every 500 ms, forever.
    let mut trickle = TcpStream::connect(&address).unwrap();
    trickle
        .write_all(b"POST /v1/tasks HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let mut dripping = trickle.try_clone().unwrap();
    let drip = std::thread::spawn(move || {
        for _ in 0..40 {
            if dripping.write_all(b"1\r\n \r\n").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let took = healthz(&server.base).await;
    assert!(took < Duration::from_secs(1), "healthz took {took:?}");
    let (text, after) = answer_and_close(&mut stalled, Duration::from_secs(10));
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(after < Duration::from_secs(4), "cut off after {after:?}");
    let (text, after) = answer_and_close(&mut trickle, Duration::from_secs(10));
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "a trickle is cut off too: {text}"
    );
    assert!(after < Duration::from_secs(4), "cut off after {after:?}");
    drip.join().unwrap();

    // 10^12 bytes announced: 413 before any is sent, and the socket closes.
    let mut huge = TcpStream::connect(&address).unwrap();
    huge.write_all(
        b"POST /v1/tasks HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000000000000\r\n\r\n",
    )
    .unwrap();
    let (text, after) = answer_and_close(&mut huge, Duration::from_secs(5));
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(after < Duration::from_secs(1), "{after:?}");
}

/// No token can starve the server: past `max_streams_per_token` a token's
/// next stream or long-poll is a 429 while another token is still served;
/// with every connection slot taken (slow bodies), the health probes are
/// still answered (on the slots kept for them) and anything else there is a
/// 503 that closes the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_capped_per_token_and_the_probes_survive_a_full_server() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(
        dir.path(),
        "max_connections = 12\nmax_streams_per_token = 3\n\
         [[tokens]]\nname = \"a\"\ntoken = \"token-a\"\nscope = \"submit\"\n\
         [[tokens]]\nname = \"b\"\ntoken = \"token-b\"\nscope = \"submit\"\n",
    );
    let server = serve(dir.path(), &["--config", path.to_str().unwrap()]);
    let address = server.base.trim_start_matches("http://").to_owned();
    let client = reqwest::Client::new();
    // A task that waits a day: its streams stay open.
    let later = tasktape_core::Timestamp::now()
        .add_millis(86_400_000)
        .to_string();
    let task: serde_json::Value = client
        .post(format!("{}/v1/tasks", server.base))
        .bearer_auth("token-a")
        .json(&serde_json::json!({"op": "echo", "params": {}, "run_at": later}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stream = format!(
        "{}/v1/tasks/{}/events/stream",
        server.base,
        task["task_id"].as_str().unwrap()
    );
    let mut open = Vec::new();
    for _ in 0..3 {
        let response = client
            .get(&stream)
            .bearer_auth("token-a")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        open.push(response);
    }
    let refused = client
        .get(&stream)
        .bearer_auth("token-a")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_streams");
    let other = client
        .get(&stream)
        .bearer_auth("token-b")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 200, "another token is served");
    open.push(other);
    // A stream closed gives its slot back.
    drop(open.remove(0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = client
        .get(&stream)
        .bearer_auth("token-a")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 200);
    open.push(again);

    // Every remaining slot taken by bodies that never arrive.
    let mut slow: Vec<TcpStream> = (0..12)
        .map(|_| {
            let mut socket = TcpStream::connect(&address).unwrap();
            socket
                .write_all(b"POST /v1/tasks HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer token-b\r\nContent-Length: 100\r\n\r\n{")
                .unwrap();
            socket
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The probes answer; an API call on a probes-only slot is a 503.
    for _ in 0..5 {
        let took = healthz(&server.base).await;
        assert!(took < Duration::from_secs(2), "healthz took {took:?}");
    }
    let mut api = TcpStream::connect(&address).unwrap();
    api.write_all(
        b"GET /v1/tasks HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer token-b\r\n\r\n",
    )
    .unwrap();
    let (text, _) = answer_and_close(&mut api, Duration::from_secs(5));
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("overloaded"), "{text}");
    slow.clear();
    drop(open);
}
