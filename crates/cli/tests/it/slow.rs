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
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // …so the next client is served only once their idle time is up.
    let took = healthz(&server.base).await;
    assert!(
        took >= Duration::from_millis(1200),
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
