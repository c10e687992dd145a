//! Submit an `echo` task and follow its tape until it ends.
//!
//! ```text
//! cargo run --release -- serve &                 # a server on 127.0.0.1:8765
//! cargo run -p tasktape-client --example follow  # TASKTAPE_URL / TASKTAPE_TOKEN if needed
//! ```

use serde_json::json;
use tasktape_client::EventBody;
use tasktape_client::{Client, FollowMode, Submission};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("TASKTAPE_URL").unwrap_or_else(|_| "http://127.0.0.1:8765".into());
    let token = std::env::var("TASKTAPE_TOKEN").ok();
    let client = Client::new(&url, token.as_deref())?;

    let submission = Submission::new("echo", json!({"count": 5, "delay_ms": 200}));
    let handle = client.submit(&submission).await?;
    println!("task {} submitted", handle.task_id);

    // Server-Sent Events; a dropped connection is resumed from the last seq.
    let mut tape = client.follow(handle.task_id, 0, FollowMode::Sse);
    while let Some(event) = tape.next().await? {
        match event.body {
            EventBody::Progress {
                phase,
                current,
                total,
                ..
            } => println!("{phase}: {current}/{total}"),
            EventBody::Log { level, message } => println!("[{level}] {message}"),
            EventBody::Partial { kind, payload } => println!("partial {kind}: {payload}"),
            EventBody::Final {
                status,
                result,
                error,
            } => {
                println!("{status}: result {result:?}, error {error:?}")
            }
            _ => {}
        }
    }
    Ok(())
}
