//! Embedding tasktape: serve a custom op over the HTTP API, submit a task
//! in-process, follow its tape to the final event, and shut down.
//!
//!     cargo run -p tasktape-app --example embed

use serde_json::{Value, json};
use tasktape_app::{Builder, Config};
use tasktape_core::{FnOp, ParamsError};

/// `count_words {text}`: one progress step per word.
fn count_words() -> FnOp {
    FnOp::new(
        "count_words",
        "counts the words of a text",
        |params: Value, reporter| async move {
            let words: Vec<String> = params["text"]
                .as_str()
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            for (done, word) in words.iter().enumerate() {
                reporter
                    .progress(
                        "count",
                        done as u64 + 1,
                        words.len() as u64,
                        Some(json!({"word": word})),
                    )
                    .await?;
            }
            Ok(json!({"words": words.len()}))
        },
    )
    .with_schema(
        json!({"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}),
    )
    .with_prepare(|params| match params.get("text") {
        Some(Value::String(_)) => Ok(params),
        _ => Err(ParamsError::new(
            "text",
            "missing",
            "field required: a string",
        )),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = Config::default(); // or Config::from_file("tasktape.toml".as_ref())?
    config.listen = Some("127.0.0.1:0".into());
    config.data_dir =
        Some(std::env::temp_dir().join(format!("tasktape-embed-{}", std::process::id())));
    let app = Builder::new(config).op(count_words()).start().await?;
    println!("serving on http://{}", app.local_addr());
    let manager = app.manager().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(async {
        let _ = stopped.await;
    }));

    let task = manager
        .submit(
            "count_words",
            json!({"text": "a durable ordered tape"}),
            None,
        )
        .await?
        .task;
    let mut events = manager.events(task.task_id, 1);
    while let Some(event) = events.next().await {
        println!("{}", serde_json::to_string(&event?)?);
    }
    let _ = stop.send(());
    server.await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// CI runs the example itself: it must serve, run the task and stop.
    #[test]
    fn example_runs_to_the_end() {
        super::main().expect("the example runs");
    }
}
