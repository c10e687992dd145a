//! The stdout line protocol: a line that is a JSON object with exactly one
//! of `progress`, `log`, `partial`, `result`, of the right shape, is an
//! event; anything else is plain output (a `log` line). Never an error.

use serde_json::{Map, Value};
use tasktape_core::EventBody;

/// What one stdout line means.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Line {
    /// A `progress`, `log` or `partial` event.
    Event(EventBody),
    /// The task's result (if the program exits 0).
    Result(Value),
    /// Not a protocol line: logged at `info` as it is.
    Plain,
}

/// Reads one line (already cut and made UTF-8).
pub(crate) fn parse(line: &str) -> Line {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') {
        return Line::Plain;
    }
    let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(trimmed) else {
        return Line::Plain;
    };
    if object.len() != 1 {
        return Line::Plain;
    }
    let Some((key, value)) = object.iter_mut().next() else {
        return Line::Plain;
    };
    let value = value.take();
    match key.as_str() {
        "result" => Line::Result(value),
        "progress" => progress(value).unwrap_or(Line::Plain),
        "log" => log(value).unwrap_or(Line::Plain),
        "partial" => partial(value).unwrap_or(Line::Plain),
        _ => Line::Plain,
    }
}

fn fields(value: Value, allowed: &[&str]) -> Option<Map<String, Value>> {
    match value {
        Value::Object(map) if map.keys().all(|key| allowed.contains(&key.as_str())) => Some(map),
        _ => None,
    }
}

fn progress(value: Value) -> Option<Line> {
    let mut map = fields(value, &["phase", "current", "total", "detail"])?;
    let phase = match map.remove("phase")? {
        Value::String(phase) => phase,
        _ => return None,
    };
    let current = map.remove("current")?.as_u64()?;
    let total = match map.remove("total") {
        None | Some(Value::Null) => 0,
        Some(total) => total.as_u64()?,
    };
    let detail = match map.remove("detail") {
        None | Some(Value::Null) => None,
        Some(detail @ Value::Object(_)) => Some(detail),
        Some(_) => return None,
    };
    Some(Line::Event(EventBody::Progress {
        phase,
        current,
        total,
        detail,
    }))
}

fn log(value: Value) -> Option<Line> {
    let mut map = fields(value, &["level", "message"])?;
    let level = match map.remove("level") {
        None => "info".to_owned(),
        Some(Value::String(level)) if !level.is_empty() && level.len() <= 32 => level,
        Some(_) => return None,
    };
    let message = match map.remove("message")? {
        Value::String(message) => message,
        _ => return None,
    };
    Some(Line::Event(EventBody::Log { level, message }))
}

fn partial(value: Value) -> Option<Line> {
    let mut map = fields(value, &["kind", "payload"])?;
    let kind = match map.remove("kind")? {
        Value::String(kind) if !kind.is_empty() => kind,
        _ => return None,
    };
    let payload = map.remove("payload").unwrap_or(Value::Null);
    Some(Line::Event(EventBody::Partial { kind, payload }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_each_kind() {
        assert_eq!(
            parse(r#"{"progress": {"phase": "resize", "current": 3, "total": 10}}"#),
            Line::Event(EventBody::Progress {
                phase: "resize".into(),
                current: 3,
                total: 10,
                detail: None
            })
        );
        assert_eq!(
            parse(
                r#"{"progress": {"phase": "p", "current": 1, "total": 2, "detail": {"f": "a"}}}"#
            ),
            Line::Event(EventBody::Progress {
                phase: "p".into(),
                current: 1,
                total: 2,
                detail: Some(json!({"f": "a"}))
            })
        );
        assert_eq!(
            parse(r#"{"log": {"level": "error", "message": "disk"}}"#),
            Line::Event(EventBody::Log {
                level: "error".into(),
                message: "disk".into()
            })
        );
        assert_eq!(
            parse(r#"{"partial": {"kind": "thumb", "payload": {"n": 1}}}"#),
            Line::Event(EventBody::Partial {
                kind: "thumb".into(),
                payload: json!({"n": 1})
            })
        );
        assert_eq!(parse(r#"{"result": [1, 2]}"#), Line::Result(json!([1, 2])));
    }

    #[test]
    fn malformed_lines_are_plain() {
        for line in [
            "hello",
            "{not json",
            r#"{"progress": {"phase": "p"}}"#,
            r#"{"progress": {"phase": "p", "current": -1}}"#,
            r#"{"progress": {"phase": 1, "current": 1}}"#,
            r#"{"progress": {"phase": "p", "current": 1, "extra": 1}}"#,
            r#"{"log": {"level": "info"}}"#,
            r#"{"log": "text"}"#,
            r#"{"partial": {"payload": {}}}"#,
            r#"{"result": 1, "log": {"message": "x"}}"#,
            r#"{"other": 1}"#,
            "[1, 2]",
            "",
        ] {
            assert_eq!(parse(line), Line::Plain, "{line}");
        }
    }
}
