//! Exec ops end to end: real child processes run by a real server.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Running, gone, logs, process_exists, sh_op};

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_lines_become_events_and_the_result_line_the_result() {
    let script = r#"
echo '{"progress": {"phase": "resize", "current": 1, "total": 2, "detail": {"file": "a.png"}}}'
echo '{"log": {"level": "error", "message": "disk almost full"}}'
echo '{"partial": {"kind": "thumb", "payload": {"n": 1}}}'
echo 'plain output'
echo '{"progress": {"phase": "resize", "current": "x"}}'
echo 'to stderr' >&2
echo '{"result": {"resized": 2}}'
echo '{"progress": {"phase": "resize", "current": 2, "total": 2}}'
"#;
    let app = Running::start(&sh_op("job", script, "")).await;
    let id = app.submit("job", json!({})).await;
    let row = app.finished(id, LIMIT).await;
    assert_eq!(row["status"], "succeeded", "{row}");
    assert_eq!(row["result"], json!({"resized": 2}));
    let tape = app.tape(id).await;
    let types: Vec<&str> = tape.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"task_started"));
    assert_eq!(types.last(), Some(&"final"));
    let progress: Vec<&Value> = tape.iter().filter(|e| e["type"] == "progress").collect();
    assert_eq!(progress.len(), 2);
    assert_eq!(progress[0]["phase"], "resize");
    assert_eq!(progress[0]["detail"], json!({"file": "a.png"}));
    assert_eq!(progress[1]["current"], 2);
    let partial = tape.iter().find(|e| e["type"] == "partial").unwrap();
    assert_eq!(partial["kind"], "thumb");
    assert_eq!(partial["payload"], json!({"n": 1}));
    let logs = logs(&tape);
    assert!(
        logs.contains(&("error".into(), "disk almost full".into())),
        "{logs:?}"
    );
    assert!(
        logs.contains(&("info".into(), "plain output".into())),
        "{logs:?}"
    );
    assert!(
        logs.contains(&("warn".into(), "to stderr".into())),
        "{logs:?}"
    );
    // A malformed protocol line is output, not a failure.
    assert!(
        logs.iter()
            .any(|(level, message)| level == "info" && message.contains("\"current\": \"x\"")),
        "{logs:?}"
    );
    // The result line is the result, not an event.
    assert!(!logs.iter().any(|(_, message)| message.contains("resized")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_fill_the_argv_and_the_environment_is_not_leaked() {
    assert!(
        std::env::var("CARGO_MANIFEST_DIR").is_ok(),
        "the test runner sets it"
    );
    let toml = r#"
[ops.args]
command = ["sh", "-c", "printf 'arg=%s\n' \"$@\"; echo \"leak=${{CARGO_MANIFEST_DIR:-none}} mode=$MODE key=$API_KEY id=$TASKTAPE_TASK_ID\"; echo \"params=$TASKTAPE_PARAMS\"", "sh", "{src}", "--width={width}", "{files}", "--limit={limit}", "{{literal}}", "{flag}", "{opts}"]
env = { MODE = "fast", API_KEY = "{key}" }
[ops.args.params.src]
type = "string"
required = true
[ops.args.params.width]
type = "integer"
default = 800
[ops.args.params.files]
type = "array"
default = []
[ops.args.params.limit]
type = "integer"
[ops.args.params.flag]
type = "boolean"
default = false
[ops.args.params.opts]
type = "object"
default = {a = 1}
[ops.args.params.key]
type = "string"
secret = true
default = "s3cret"
"#;
    let app = Running::start(toml).await;
    let id = app
        .submit(
            "args",
            json!({"src": "/x y", "files": ["a", "b c"], "flag": true}),
        )
        .await;
    let row = app.finished(id, LIMIT).await;
    assert_eq!(row["status"], "succeeded", "{row}");
    let messages: Vec<String> = logs(&app.tape(id).await)
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    let args: Vec<&str> = messages
        .iter()
        .filter_map(|m| m.strip_prefix("arg="))
        .collect();
    // `--limit={limit}` is left out: limit is optional, absent, no default.
    assert_eq!(
        args,
        [
            "/x y",
            "--width=800",
            "a",
            "b c",
            "{literal}",
            "true",
            r#"{"a":1}"#
        ]
    );
    let env_line = messages.iter().find(|m| m.starts_with("leak=")).unwrap();
    assert_eq!(env_line, &format!("leak=none mode=fast key=s3cret id={id}"));
    let params_line = messages.iter().find(|m| m.starts_with("params=")).unwrap();
    let params: Value = serde_json::from_str(params_line.strip_prefix("params=").unwrap()).unwrap();
    assert_eq!(params["width"], 800);
    assert_eq!(params["src"], "/x y");
    // The secret's configured default is not shown to clients.
    let (_, ops) = app.get("/v1/ops").await;
    let args_op = ops["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|op| op["name"] == "args")
        .unwrap();
    let key = &args_op["params_schema"]["properties"]["key"];
    assert_eq!(key["writeOnly"], true);
    assert!(key.get("default").is_none(), "{key}");
    assert!(!ops.to_string().contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_params_are_refused_naming_the_field_and_ops_show_the_schema() {
    let toml = r#"
[ops.resize]
description = "resize the images of a folder"
command = ["sh", "-c", "true", "sh", "{src}", "{width}", "{mode}"]
[ops.resize.params.src]
type = "string"
required = true
description = "folder to read"
[ops.resize.params.width]
type = "integer"
minimum = 1
maximum = 10000
default = 800
[ops.resize.params.mode]
type = "string"
enum = ["fast", "best"]
default = "fast"
"#;
    let app = Running::start(toml).await;
    for (params, field, kind) in [
        (json!({}), "src", "missing"),
        (
            json!({"src": "/x", "width": "wide"}),
            "width",
            "int_parsing",
        ),
        (
            json!({"src": "/x", "width": 0}),
            "width",
            "greater_than_equal",
        ),
        (
            json!({"src": "/x", "width": 10001}),
            "width",
            "less_than_equal",
        ),
        (
            json!({"src": "/x", "width": 1.5}),
            "width",
            "int_from_float",
        ),
        (
            json!({"src": "/x", "width": 1e23}),
            "width",
            "int_parsing_size",
        ),
        (json!({"src": "/x", "mode": "slow"}), "mode", "enum"),
        (
            json!({"src": "/x", "colour": "red"}),
            "colour",
            "extra_forbidden",
        ),
        (json!({"src": ["/x"]}), "src", "string_type"),
        (json!([1]), "params", "dict_type"),
        (
            json!({"src": "x".repeat(200 * 1024)}),
            "src",
            "string_too_long",
        ),
    ] {
        let (status, body) = app.post("/v1/resize", params.clone()).await;
        assert_eq!(status, 422, "{params}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request");
        assert_eq!(body["error"]["detail"]["field"], field, "{params}: {body}");
        assert_eq!(body["error"]["detail"]["type"], kind, "{params}: {body}");
    }
    let (status, ops) = app.get("/v1/ops").await;
    assert_eq!(status, 200);
    let resize = ops["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|op| op["name"] == "resize")
        .unwrap();
    assert_eq!(resize["description"], "resize the images of a folder");
    let schema = &resize["params_schema"];
    assert_eq!(schema["required"], json!(["src"]));
    assert_eq!(
        schema["properties"]["width"],
        json!({"type": "integer", "minimum": 1, "maximum": 10000, "default": 800})
    );
    assert_eq!(
        schema["properties"]["mode"]["enum"],
        json!(["fast", "best"])
    );
    assert_eq!(schema["properties"]["src"]["description"], "folder to read");
    assert_eq!(schema["additionalProperties"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_signals_timeouts_and_spawn_failures_end_failed_with_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let vanishing = dir.path().join("vanishing.sh");
    std::fs::write(&vanishing, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(
        &vanishing,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let toml = format!(
        "{}{}{}[ops.vanishing]\ncommand = [{:?}]\n",
        sh_op("exits", "echo first >&2; echo oops >&2; exit 3", ""),
        sh_op("killed", "kill -9 $$", ""),
        sh_op(
            "slow",
            "sleep 30",
            "timeout_secs = 1\ncancel_grace_ms = 200"
        ),
        vanishing.display().to_string(),
    );
    let app = Running::start(&toml).await;
    std::fs::remove_file(&vanishing).unwrap();

    let id = app.submit("exits", json!({})).await;
    let row = app.finished(id, LIMIT).await;
    assert_eq!(row["status"], "failed");
    assert_eq!(row["error"]["code"], "exit_status");
    assert_eq!(row["error"]["message"], "exited with status 3");
    assert_eq!(row["error"]["detail"]["exit_code"], 3);
    assert_eq!(
        row["error"]["detail"]["stderr_tail"],
        json!(["first", "oops"])
    );

    let id = app.submit("killed", json!({})).await;
    let row = app.finished(id, LIMIT).await;
    assert_eq!(row["error"]["code"], "killed", "{row}");
    assert_eq!(row["error"]["detail"]["signal"], 9);
    assert_eq!(row["error"]["detail"]["signal_name"], "SIGKILL");

    let started = Instant::now();
    let id = app.submit("slow", json!({})).await;
    let row = app.finished(id, LIMIT).await;
    assert_eq!(row["status"], "failed");
    assert_eq!(row["error"]["code"], "timeout", "{row}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );

    let id = app.submit("vanishing", json!({})).await;
    let row = app.finished(id, LIMIT).await;
    assert_eq!(row["error"]["code"], "spawn_failed", "{row}");
    assert!(
        row["error"]["message"]
            .as_str()
            .unwrap()
            .contains("No such file"),
        "{row}"
    );
}

/// The pid a script printed as `pid=N`.
async fn printed_pid(app: &Running, id: tasktape_core::TaskId) -> i32 {
    app.wait_for_event(id, |e| {
        e["type"] == "log" && e["message"].as_str().is_some_and(|m| m.starts_with("pid="))
    })
    .await;
    let tape = app.tape(id).await;
    let message = logs(&tape)
        .into_iter()
        .find(|(_, m)| m.starts_with("pid="))
        .unwrap()
        .1;
    message.strip_prefix("pid=").unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_kills_the_whole_process_group_grandchildren_included() {
    let toml = sh_op(
        "tree",
        "sleep 1000 & echo pid=$!; wait",
        "cancel_grace_ms = 300",
    );
    let app = Running::start(&toml).await;
    let id = app.submit("tree", json!({})).await;
    let grandchild = printed_pid(&app, id).await;
    assert!(process_exists(grandchild));
    let (status, body) = app.post(&format!("/v1/tasks/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let row = app.finished(id, LIMIT).await;
    assert_eq!(row["status"], "cancelled", "{row}");
    assert!(
        gone(grandchild, Duration::from_secs(5)).await,
        "grandchild {grandchild} still exists (zombie or alive)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_ignoring_sigterm_is_killed_after_its_grace() {
    let toml = sh_op(
        "stubborn",
        "trap '' TERM; echo pid=$$; while true; do sleep 0.1; done",
        "cancel_grace_ms = 500",
    );
    let app = Running::start(&toml).await;
    let id = app.submit("stubborn", json!({})).await;
    let pid = printed_pid(&app, id).await;
    let cancelled = Instant::now();
    app.post(&format!("/v1/tasks/{id}/cancel"), json!({})).await;
    let row = app.finished(id, LIMIT).await;
    assert_eq!(row["status"], "cancelled");
    assert!(
        cancelled.elapsed() >= Duration::from_millis(450),
        "SIGKILL came before the grace"
    );
    assert!(gone(pid, Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_a_running_child_and_ends_the_task_server_shutdown() {
    let toml = format!(
        "shutdown_timeout_secs = 2\n{}",
        sh_op(
            "long",
            "sleep 1000 & echo pid=$!; wait",
            "cancel_grace_ms = 300"
        )
    );
    let mut app = Running::start(&toml).await;
    let id = app.submit("long", json!({})).await;
    let grandchild = printed_pid(&app, id).await;
    let manager = app.manager.clone();
    app.shutdown().await;
    let row = manager.wait(id, Duration::ZERO).await.unwrap().unwrap();
    assert_eq!(row.status.as_str(), "failed");
    assert_eq!(row.error.unwrap().code, "server_shutdown");
    assert!(gone(grandchild, Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_lines_and_binary_garbage_are_logged_safely() {
    let toml = format!(
        "{}{}",
        sh_op(
            "wide",
            "head -c 10000000 /dev/zero | tr '\\000' x; echo; echo after",
            ""
        ),
        sh_op(
            "garbage",
            "head -c 200000 /dev/urandom; printf '\\000\\377\\n'",
            ""
        ),
    );
    let app = Running::start(&toml).await;
    let id = app.submit("wide", json!({})).await;
    let row = app.finished(id, LIMIT).await;
    assert_eq!(row["status"], "succeeded", "{row}");
    let logs_wide = logs(&app.tape(id).await);
    assert_eq!(logs_wide.len(), 2, "one cut line and `after`");
    assert_eq!(
        logs_wide[0].1.len(),
        64 * 1024 + " [… line cut: longer than 64 KiB]".len()
    );
    assert!(logs_wide[0].1.ends_with("[… line cut: longer than 64 KiB]"));
    assert_eq!(logs_wide[1].1, "after");

    let id = app.submit("garbage", json!({})).await;
    let row = app.finished(id, LIMIT).await;
    assert_eq!(row["status"], "succeeded", "{row}");
    let tape = app.tape(id).await;
    assert_eq!(tape.last().unwrap()["type"], "final");
    let garbage = logs(&tape);
    assert!(!garbage.is_empty());
    assert!(
        garbage
            .iter()
            .all(|(_, m)| !m.contains('\0') && m.len() <= 64 * 1024 * 3 + 64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_running_30_seconds_on_an_idle_server_is_not_killed() {
    // PR_SET_PDEATHSIG fires when the spawning *thread* exits: Tokio's idle
    // blocking threads retire after ~10 s, so spawning from one would kill
    // this child midway.
    let app = Running::start(&sh_op("patient", "sleep 30; echo done", "")).await;
    let id = app.submit("patient", json!({})).await;
    let row = app.finished(id, Duration::from_secs(60)).await;
    assert_eq!(row["status"], "succeeded", "{row}");
    assert!(logs(&app.tape(id).await).contains(&("info".into(), "done".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_name_the_op_and_the_key() {
    for (toml, expected) in [
        (
            "[ops.a]\ncommand = [\"sh\"]\ncolour = 1\n",
            "unknown field `colour`",
        ),
        ("[ops.a]\ncommand = \"sh -c x\"\n", "invalid type"),
        (
            "[ops.a]\ncommand = [\"sh\", \"{nope}\"]\n",
            "op \"a\": command[1]: placeholder {nope} names no declared parameter",
        ),
        (
            "[ops.a]\ncommand = [\"no-such-program-here\"]\n",
            "op \"a\": command[0]: program \"no-such-program-here\" not found",
        ),
        (
            "[ops.a]\ncommand = [\"/etc/passwd\"]\n",
            "op \"a\": command[0]: /etc/passwd is not an executable file",
        ),
        ("[ops.a]\ncommand = []\n", "op \"a\": command: is empty"),
        (
            "[ops.a]\ncommand = [\"sh\", \"{k}\"]\n[ops.a.params.k]\ntype = \"string\"\nsecret = true\n",
            "op \"a\": command[1]: secret parameter k",
        ),
        (
            "[ops.tasks]\ncommand = [\"sh\"]\n",
            "op \"tasks\": name: collides with the server's own route",
        ),
        (
            "[ops.echo]\ncommand = [\"sh\"]\n",
            "op \"echo\": name: an op of that name is already registered",
        ),
        (
            "[ops.Bad]\ncommand = [\"sh\"]\n",
            "op \"Bad\": name: op names are",
        ),
        (
            "[ops.a]\ncommand = [\"sh\", \"--f={f}\"]\n[ops.a.params.f]\ntype = \"array\"\n",
            "op \"a\": command[1]: array parameter f must fill a whole element",
        ),
        (
            "[ops.a]\ncommand = [\"sh\", \"{w}\"]\n[ops.a.params.w]\ntype = \"integer\"\nminimum = 5\ndefault = 1\n",
            "op \"a\": params.w.default: input should be greater than or equal to 5",
        ),
        (
            "[ops.a]\ncommand = [\"sh\"]\ncwd = \"/no/such/dir\"\n",
            "op \"a\": cwd: /no/such/dir is not a directory",
        ),
        (
            "[ops.a]\ncommand = [\"sh\"]\ntimeout_secs = 0\n",
            "op \"a\": timeout_secs: must be at least 1",
        ),
        (
            "[ops.a]\ncommand = [\"sh\"]\n[ops.a.params.p]\ntype = \"text\"\n",
            "unknown variant `text`",
        ),
    ] {
        let error = match Running::try_start(toml).await {
            Ok(_) => panic!("started with {toml}"),
            Err(error) => error,
        };
        assert!(error.is_config(), "{error}");
        let text = error.to_string();
        assert!(
            text.contains(expected),
            "{toml}\n→ {text}\nwanted: {expected}"
        );
        assert!(!text.contains('\n'), "one line: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_finishes_after_the_shutdown_s_sigterm_keeps_its_result() {
    let script = "trap 'sleep 0.2; echo \"{\\\"result\\\": {\\\"saved\\\": true}}\"; exit 0' TERM; echo pid=$$; while true; do sleep 0.1; done";
    let toml = format!(
        "shutdown_timeout_secs = 2\ncancel_grace_ms = 100\n{}",
        sh_op("graceful", script, "")
    );
    let mut app = Running::start(&toml).await;
    let id = app.submit("graceful", json!({})).await;
    printed_pid(&app, id).await;
    let manager = app.manager.clone();
    app.shutdown().await;
    let row = manager.wait(id, Duration::ZERO).await.unwrap().unwrap();
    // It ran through the 2 s drain; SIGTERM came then, and its answer
    // 200 ms later (past the 100 ms cancel grace, inside the 500 ms
    // wind-down) stands.
    assert_eq!(row.status.as_str(), "succeeded", "{:?}", row.error);
    assert_eq!(row.result, Some(json!({"saved": true})));
}

/// A secret parameter's allowed values and default are never shown: not in
/// `GET /v1/ops`, not in a 422, not in a start-up error (which names the
/// parameter and where, not the value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_s_values_are_never_shown() {
    let toml = r#"
[ops.unlock]
command = ["sh", "-c", "true"]
env = { PIN = "{pin}" }
[ops.unlock.params.pin]
type = "string"
secret = true
enum = ["1111", "2222"]
default = "1111"
"#;
    let app = Running::start(toml).await;
    let (status, ops) = app.get("/v1/ops").await;
    assert_eq!(status, 200);
    let text = ops.to_string();
    assert!(!text.contains("1111") && !text.contains("2222"), "{text}");
    let (status, refused) = app.post("/v1/unlock", json!({"pin": "9999"})).await;
    assert_eq!(status, 422, "{refused}");
    let text = refused.to_string();
    assert!(!text.contains("1111") && !text.contains("2222"), "{text}");
    assert_eq!(refused["error"]["detail"]["field"], "pin");
    // Start-up errors say where, not what.
    for toml in [
        "[ops.a]\ncommand = [\"sh\"]\nenv = { K = \"{k}\" }\n[ops.a.params.k]\ntype = \"integer\"\nsecret = true\ndefault = \"31337\"\n",
        "[ops.a]\ncommand = [\"sh\"]\nenv = { K = \"{k}\" }\n[ops.a.params.k]\ntype = \"integer\"\nsecret = true\nenum = [\"31337\"]\n",
        "[ops.a]\ncommand = [\"sh\"]\nenv = { K = \"{k}\" }\n[ops.a.params.k]\ntype = \"string\"\nsecret = true\nenum = [\"a\"]\ndefault = \"31337\"\n",
    ] {
        let error = match Running::try_start(toml).await {
            Ok(_) => panic!("started with {toml}"),
            Err(error) => error,
        };
        let text = error.to_string();
        assert!(text.contains("params.k"), "{text}");
        assert!(
            !text.contains("31337"),
            "a secret's value in an error: {text}"
        );
    }
}

/// Params are judged as the program will get them: two params that each
/// fit but together overflow `TASKTAPE_PARAMS` (one environment string), an
/// argument over the kernel's limit for one string, and a NUL byte in any
/// string are 422s naming a param — never a task that fails to spawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn params_are_checked_as_they_travel_to_the_program() {
    let toml = r#"
[ops.pair]
command = ["sh", "-c", "true", "sh", "--a={a}"]
[ops.pair.params.a]
type = "string"
[ops.pair.params.b]
type = "string"
[ops.pair.params.list]
type = "array"
"#;
    let app = Running::start(toml).await;
    let big = "x".repeat(70 * 1024);
    let (status, refused) = app.post("/v1/pair", json!({"a": big, "b": big})).await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        ["a", "b"].contains(&refused["error"]["detail"]["field"].as_str().unwrap()),
        "{refused}"
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("TASKTAPE_PARAMS"),
        "{refused}"
    );
    for params in [
        json!({"a": "one\u{0}two"}),
        json!({"list": ["ok", "no\u{0}"]}),
    ] {
        let (status, refused) = app.post("/v1/pair", params.clone()).await;
        assert_eq!(status, 422, "{params}: {refused}");
        assert_eq!(
            refused["error"]["detail"]["type"], "string_nul",
            "{refused}"
        );
    }
    // One that fits runs.
    let id = app
        .submit("pair", json!({"a": "x".repeat(60 * 1024)}))
        .await;
    let row = app.finished(id, Duration::from_secs(10)).await;
    assert_eq!(row["status"], "succeeded", "{row}");
}
