//! `tasks wait` in a pseudo-terminal: the live bars render, and the run
//! ends cleanly with the result below them.

use std::io::Read;

use portable_pty::{CommandBuilder, PtySize, native_pty_system};

use crate::support::{run, serve, wait_status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_draws_bars_in_a_terminal_and_ends_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let server = serve(data.path(), &[]);
    let submitted = run(
        &server,
        home.path(),
        &["submit", "echo", "-p", "count=10", "-p", "delay_ms=100"],
    );
    let task_id = submitted.stdout.trim().to_owned();

    let pty = native_pty_system()
        .openpty(PtySize {
            rows: 30,
            cols: 160,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_tasktape"));
    command.args(["tasks", "wait", &task_id]);
    command.env("TASKTAPE_URL", &server.base);
    command.env("HOME", home.path());
    command.env("TERM", "xterm-256color");
    command.env_remove("NO_COLOR");
    command.env_remove("TASKTAPE_TOKEN");
    let mut child = pty.slave.spawn_command(command).unwrap();
    drop(pty.slave);
    let mut reader = pty.master.try_clone_reader().unwrap();
    let screen = tokio::task::spawn_blocking(move || {
        let mut bytes = Vec::new();
        let mut chunk = [0_u8; 4096];
        // Reading ends with EOF or EIO once the child has exited.
        while let Ok(read) = reader.read(&mut chunk) {
            if read == 0 {
                break;
            }
            bytes.extend_from_slice(&chunk[..read]);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    drop(pty.master);
    let screen = screen.await.unwrap();

    assert!(status.success(), "{status:?}\n{screen}");
    assert_eq!(
        wait_status(&server.base, &task_id, |_| true).await,
        "succeeded"
    );
    // The bar was drawn (colours, the bar's frame) and moved through the steps.
    assert!(screen.contains("\x1b["), "no escape codes: {screen:?}");
    assert!(screen.contains("echo"), "{screen:?}");
    assert!(
        screen.contains("5/10") || screen.contains("6/10"),
        "{screen:?}"
    );
    assert!(screen.contains("/s ETA"), "rate and ETA: {screen:?}");
    // Logs and partials above the bars, then the final state and the result.
    assert!(
        screen.contains("partial echo_done: {\"count\":10}"),
        "{screen:?}"
    );
    let last_bar = screen.rfind("10/10").expect("the bar reached 10/10");
    let result = screen.rfind("\"echoed\": 10").expect("the result as JSON");
    assert!(
        last_bar < result,
        "the result comes below the bars: {screen:?}"
    );
    // Ends with the result's closing brace on its own line: nothing drawn after.
    let tail = screen.trim_end_matches(['\r', '\n']);
    assert!(tail.ends_with('}'), "{screen:?}");
    let last_line = tail.rsplit(['\r', '\n']).next().unwrap();
    assert_eq!(last_line, "}", "{screen:?}");
}
