//! TLS: `tasktape serve --tls-cert/--tls-key` serves https, which the CLI
//! reaches with `--ca-cert` (or `TASKTAPE_CA_CERT`) and refuses without it;
//! PostgreSQL connections honour `sslmode` (`require`, `verify-full` with
//! `sslrootcert`). Certificates are made here with openssl.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::multi::{PrivatePg, instance_with_env, schema, test_url};
use crate::support::{client, finish, serve};

/// A self-signed certificate for 127.0.0.1 and localhost in `dir`:
/// (certificate, key).
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl made no certificate");
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reaches_an_https_server_with_its_ca_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let server = serve(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        server.base.starts_with("https://127.0.0.1:"),
        "{}",
        server.base
    );
    let home = tempfile::tempdir().unwrap();
    // Trusted by --ca-cert: a task runs to its end.
    let run = finish(
        client(&server.base, home.path())
            .args(["submit", "echo", "-p", "count=2", "--wait", "--ca-cert"])
            .arg(&cert),
    );
    assert_eq!(run.code, 0, "{run:?}");
    // And by TASKTAPE_CA_CERT.
    let run = finish(
        client(&server.base, home.path())
            .env("TASKTAPE_CA_CERT", &cert)
            .args(["tasks", "list"]),
    );
    assert_eq!(run.code, 0, "{run:?}");
    // Not trusted: refused, saying why.
    let run = finish(client(&server.base, home.path()).args(["tasks", "list"]));
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.to_lowercase().contains("certificate"),
        "{}",
        run.stderr
    );
    // Plain HTTP to the https port gets no answer from the API.
    let plain = reqwest::get(server.base.replacen("https://", "http://", 1) + "/v1/healthz").await;
    assert!(
        plain
            .map(|answer| !answer.status().is_success())
            .unwrap_or(true)
    );
}

#[test]
fn a_certificate_without_its_key_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _) = certificate(dir.path());
    let output = crate::support::tasktape()
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tls_cert and tls_key go together"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_honour_sslmode() {
    test_url();
    let mut cert_path = PathBuf::new();
    let pg = PrivatePg::start_with(|dir| {
        let (cert, key) = certificate(dir);
        cert_path = cert.clone();
        format!(
            "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cert.display(),
            key.display()
        )
    });
    let schema = schema();
    // require: encrypted (checked on the server's side).
    let url = format!("{}?sslmode=require", pg.url());
    let a = instance_with_env(&url, "tls-a", &schema, "", &[]);
    assert!(a.client.healthz().await.is_ok());
    let (admin, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = admin
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name LIKE 'tasktape%'",
            &[],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "no tasktape connection seen");
    assert!(
        rows.iter().all(|row| row.get::<_, bool>(0)),
        "a tasktape connection is not encrypted"
    );
    // verify-full with the server's certificate as the root: accepted.
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url(),
        cert_path.display()
    );
    let b = instance_with_env(&url, "tls-b", &schema, "", &[]);
    let task = b
        .client
        .submit(&tasktape_client::Submission::new(
            "echo",
            serde_json::json!({"count": 1}),
        ))
        .await
        .unwrap();
    assert!(!task.task_id.to_string().is_empty());
    // verify-full against the system's roots: refused at start.
    let output = crate::support::tasktape()
        .args(["serve", "--listen", "127.0.0.1:0", "--instance-id", "tls-c"])
        .env(
            "TASKTAPE_STORE",
            format!("{}?sslmode=verify-full", pg.url()),
        )
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
}

/// Over TLS too, a body that stalls is cut off after
/// `body_read_timeout_secs` (408, then the connection closes): openssl
/// s_client sends the headers and part of the body, then nothing.
#[test]
fn over_tls_a_stalled_body_is_cut_off() {
    use std::io::{Read, Write};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let config = dir.path().join("t.toml");
    std::fs::write(&config, "body_read_timeout_secs = 2\n").unwrap();
    let server = serve(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    let address = server.base.trim_start_matches("https://").to_owned();
    let mut tls = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &address])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl runs");
    let mut stdin = tls.stdin.take().unwrap();
    stdin
        .write_all(b"POST /v1/tasks HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"op\":")
        .unwrap();
    stdin.flush().unwrap();
    let started = Instant::now();
    let mut text = String::new();
    tls.stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let took = started.elapsed();
    drop(stdin);
    let _ = tls.kill();
    let _ = tls.wait();
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
}
