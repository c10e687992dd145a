//! The client verbs: `submit`, `tasks list|status|events|wait|cancel`,
//! `ops`. Each resolves its server ([`crate::remote`]), calls the typed
//! client, and renders ([`crate::display`]); their arguments are in
//! [`crate::args`], following a tape (timeout, Ctrl-C) in [`crate::follow`].

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Map, Value};
use tasktape_client::{ListQuery, Submission, TaskId, TaskSummary, Timestamp};
use tracing::Instrument as _;

use crate::args::{
    BulkArgs, EventsArgs, IdArgs, ListArgs, ListFormat, OpsArgs, SubmitArgs, TasksCommand, WaitArgs,
};
use crate::display::{Mode, TapeView};
use crate::exit::{Exit, Failure};
use crate::follow::follow_tape;

/// The verbs, ready to run.
pub enum Verb {
    Submit(SubmitArgs),
    Tasks(TasksCommand),
    Ops(OpsArgs),
}

impl Verb {
    fn name(&self) -> &'static str {
        match self {
            Verb::Submit(_) => "tasktape submit",
            Verb::Tasks(TasksCommand::List(_)) => "tasktape tasks list",
            Verb::Tasks(TasksCommand::Status(_)) => "tasktape tasks status",
            Verb::Tasks(TasksCommand::Events(_)) => "tasktape tasks events",
            Verb::Tasks(TasksCommand::Wait(_)) => "tasktape tasks wait",
            Verb::Tasks(TasksCommand::Cancel(_)) => "tasktape tasks cancel",
            Verb::Tasks(TasksCommand::Retry(_)) => "tasktape tasks retry",
            Verb::Ops(_) => "tasktape ops",
        }
    }
}

/// Runs `verb` on a small runtime; prints a failure as one line. With
/// `OTEL_EXPORTER_OTLP_ENDPOINT` set the verb is a traced span whose
/// requests carry its context, so the server's spans join its trace.
pub fn run(verb: Verb) -> ExitCode {
    let telemetry = tasktape_telemetry::export_requested()
        .then(|| tasktape_telemetry::init(tasktape_telemetry::LogFormat::Text));
    let code = run_verb(verb);
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    code
}

fn run_verb(verb: Verb) -> ExitCode {
    let span = tracing::info_span!("cli", otel.name = verb.name(), otel.kind = "client");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return Exit::Failed.code();
        }
    };
    let outcome = runtime.block_on(
        async move {
            match verb {
                Verb::Submit(args) => submit(args).await,
                Verb::Tasks(TasksCommand::List(args)) => list(args).await,
                Verb::Tasks(TasksCommand::Status(args)) => status(args).await,
                Verb::Tasks(TasksCommand::Events(args)) => events(args).await,
                Verb::Tasks(TasksCommand::Wait(args)) => wait(args).await,
                Verb::Tasks(TasksCommand::Cancel(args)) => match args.id {
                    Some(id) => cancel(id, args.bulk).await,
                    None => crate::bulk::cancel(args.bulk).await,
                },
                Verb::Tasks(TasksCommand::Retry(args)) => crate::bulk::retry(args).await,
                Verb::Ops(args) => ops(args).await,
            }
        }
        .instrument(span),
    );
    // Do not wait for anything still running (a steady-tick thread, a
    // request abandoned at Ctrl-C).
    runtime.shutdown_background();
    match outcome {
        Ok(exit) => exit.code(),
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            failure.exit.code()
        }
    }
}

/// `--params` then each `--param`, as one JSON object.
fn build_params(params: Option<&str>, pairs: &[String]) -> Result<Value, Failure> {
    let mut object = match params {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return Err(Failure::usage("--params must be a JSON object")),
            Err(error) => return Err(Failure::usage(format!("--params is not JSON: {error}"))),
        },
    };
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(Failure::usage(format!("--param '{pair}' is not KEY=VALUE")));
        };
        if key.is_empty() {
            return Err(Failure::usage(format!("--param '{pair}' has an empty key")));
        }
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
        object.insert(key.to_owned(), value);
    }
    Ok(Value::Object(object))
}

pub(crate) fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("a response serializes")
    );
}

async fn submit(args: SubmitArgs) -> Result<Exit, Failure> {
    let (op, batch) = (args.op.clone(), args.batch.clone());
    let op = match (op, batch) {
        (_, Some(path)) => return crate::batch::submit(args, &path).await,
        (Some(op), None) => op,
        (None, None) => return Err(Failure::usage("give an op, or --batch FILE")),
    };
    let params = build_params(args.params.as_deref(), &args.param)?;
    let remote = args.remote.connect()?;
    let mut submission = Submission::new(&op, params);
    submission.idempotency_key = args.idempotency_key.clone();
    submission.metadata = args.meta.iter().cloned().collect();
    submission.priority = args.priority.map(i64::from);
    submission.run_at = args.at.or_else(|| {
        args.in_
            .map(|wait| Timestamp::now().add_millis(wait.as_millis() as i64))
    });
    let handle = remote.call(remote.client.submit(&submission)).await?;
    let mode = Mode::pick(args.output.json, args.output.plain);
    if !args.wait {
        match mode {
            Mode::Json => print_json(&handle),
            _ => println!("{}", handle.task_id),
        }
        if mode == Mode::Live {
            eprintln!(
                "submitted {} task {}; follow it with: tasktape tasks wait {}{}",
                handle.op,
                handle.task_id,
                handle.task_id,
                remote.url_flag()
            );
        }
        return Ok(Exit::Succeeded);
    }
    let line = format!("submitted {} task {}", handle.op, handle.task_id);
    if mode == Mode::Live {
        println!("{line}");
    } else {
        eprintln!("{line}");
    }
    follow_tape(&remote, handle.task_id, 0, None, &args.follow, mode).await
}

async fn wait(args: WaitArgs) -> Result<Exit, Failure> {
    let remote = args.remote.connect()?;
    let mode = Mode::pick(args.output.json, args.output.plain);
    follow_tape(&remote, args.id, 0, None, &args.follow, mode).await
}

async fn events(args: EventsArgs) -> Result<Exit, Failure> {
    let remote = args.remote.connect()?;
    let mode = Mode::pick(args.output.json, args.output.plain);
    if args.follow {
        return follow_tape(
            &remote,
            args.id,
            args.from_seq,
            args.limit,
            &args.follow_args,
            mode,
        )
        .await;
    }
    // A snapshot: page through what is on the tape now.
    let mut view = TapeView::new(if mode == Mode::Live {
        Mode::Plain
    } else {
        mode
    });
    let mut from = args.from_seq;
    let mut left = args.limit.unwrap_or(u64::MAX);
    while left > 0 {
        let page_size = u32::try_from(left.min(1000)).expect("at most 1000");
        let page = remote
            .call(
                remote
                    .client
                    .events(args.id, from, page_size, Duration::ZERO),
            )
            .await?;
        for event in &page.events {
            if !view.event(event) {
                return Ok(Exit::Succeeded);
            }
        }
        left -= page.events.len() as u64;
        from = page.next_from_seq;
        if !page.has_more || page.events.is_empty() {
            break;
        }
    }
    Ok(Exit::Succeeded)
}

async fn status(args: IdArgs) -> Result<Exit, Failure> {
    let remote = args.remote.connect()?;
    let row = remote.call(remote.client.task(args.id)).await?;
    if args.output.json {
        print_json(&row);
        return Ok(Exit::Succeeded);
    }
    let time = |ts: Option<Timestamp>| ts.map_or_else(|| "-".to_owned(), |ts| ts.to_string());
    println!("task_id        {}", row.task_id);
    println!("op             {}", row.op);
    println!("status         {}", row.status);
    println!("created_at     {}", row.created_at);
    println!("started_at     {}", time(row.started_at));
    println!(
        "finished_at    {}{}",
        time(row.finished_at),
        took(row.started_at, row.finished_at)
            .map(|took| format!(" (took {took})"))
            .unwrap_or_default()
    );
    println!("params_digest  {}", row.params_digest);
    if let Some(result) = &row.result {
        println!("result         {result}");
    }
    if let Some(error) = &row.error {
        println!("error          {}: {}", error.code, error.message);
    }
    Ok(Exit::Succeeded)
}

fn took(started: Option<Timestamp>, finished: Option<Timestamp>) -> Option<String> {
    let millis = finished?.as_millis() - started?.as_millis();
    Some(if millis < 10_000 {
        format!("{:.2}s", millis as f64 / 1000.0)
    } else {
        let seconds = millis / 1000;
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    })
}

async fn cancel(id: TaskId, args: BulkArgs) -> Result<Exit, Failure> {
    let remote = args.remote.connect()?;
    let answer = remote.call(remote.client.cancel(id)).await?;
    if args.output.json {
        print_json(&answer);
    } else if answer.already_terminal {
        let status = remote
            .client
            .task(id)
            .await
            .map(|row| row.status.to_string())
            .unwrap_or_else(|_| "ended".to_owned());
        println!("task {id} had already ended ({status}); nothing to cancel");
    } else {
        println!("cancel requested for task {id}");
    }
    Ok(Exit::Succeeded)
}

async fn ops(args: OpsArgs) -> Result<Exit, Failure> {
    let remote = args.remote.connect()?;
    let ops = remote.call(remote.client.ops()).await?;
    if args.output.json {
        print_json(&ops);
        return Ok(Exit::Succeeded);
    }
    let width = ops.iter().map(|op| op.name.len()).max().unwrap_or(0).max(4);
    println!("{:width$}  DESCRIPTION", "NAME");
    for op in &ops {
        println!("{:width$}  {}", op.name, op.description);
    }
    Ok(Exit::Succeeded)
}

async fn list(args: ListArgs) -> Result<Exit, Failure> {
    let remote = args.remote.connect()?;
    let json = args.json || args.format == ListFormat::Json;
    let mut query = ListQuery {
        status: args.status,
        op: args.op.clone(),
        limit: Some(args.limit),
        metadata: args.meta.iter().cloned().collect(),
        ..ListQuery::default()
    };
    let mut rows: Vec<TaskSummary> = Vec::new();
    let more = loop {
        let page = remote.call(remote.client.list(&query)).await?;
        rows.extend(page.tasks);
        match page.next_cursor {
            Some(cursor) if page.has_more && args.all => query.cursor = Some(cursor),
            _ => break page.has_more,
        }
    };
    if json {
        print_json(&rows);
        return Ok(Exit::Succeeded);
    }
    let op_width = rows
        .iter()
        .map(|row| row.op.len())
        .max()
        .unwrap_or(0)
        .max(2);
    // A metadata column only when some row has metadata.
    let with_meta = rows.iter().any(|row| !row.metadata.is_empty());
    let header = format!(
        "{:36}  {:op_width$}  {:9}  {:24}  {:8}  {}",
        "TASK_ID",
        "OP",
        "STATUS",
        "CREATED_AT",
        "TOOK",
        if with_meta { "METADATA" } else { "" }
    );
    println!("{}", header.trim_end());
    for row in &rows {
        let took = took(row.started_at, row.finished_at).unwrap_or_else(|| "-".to_owned());
        let meta: Vec<String> = row
            .metadata
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect();
        let line = format!(
            "{:36}  {:op_width$}  {:9}  {:24}  {took:8}  {}",
            row.task_id.to_string(),
            row.op,
            row.status.as_str(),
            row.created_at.to_string(),
            meta.join(",")
        );
        println!("{}", line.trim_end());
    }
    if more {
        eprintln!("more tasks match; pass --all to list them all");
    }
    Ok(Exit::Succeeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_merge_json_and_pairs_with_pairs_winning() {
        let params = build_params(
            Some(r#"{"count": 3, "name": "x"}"#),
            &[
                "count=5".to_owned(),
                "label=hello world".to_owned(),
                "on=true".to_owned(),
            ],
        )
        .unwrap();
        assert_eq!(
            params,
            serde_json::json!({"count": 5, "name": "x", "label": "hello world", "on": true})
        );
    }

    #[test]
    fn bad_params_are_usage_errors() {
        for (json, pairs) in [
            (Some("[1]"), vec![]),
            (Some("{"), vec![]),
            (None, vec!["novalue".to_owned()]),
            (None, vec!["=1".to_owned()]),
        ] {
            let failure = build_params(json, &pairs).unwrap_err();
            assert_eq!(failure.exit, Exit::Usage, "{json:?} {pairs:?}");
        }
    }

    #[test]
    fn durations_read_as_seconds_and_minutes() {
        let at = |millis| Some(Timestamp::from_millis(millis));
        assert_eq!(took(at(0), at(710)).as_deref(), Some("0.71s"));
        assert_eq!(took(at(0), at(125_000)).as_deref(), Some("2m05s"));
        assert_eq!(took(None, at(1)), None);
    }
}
