//! The built-in `echo` op, exactly as dikw-core runs it (WIRE.md): a test
//! and compatibility op that emits `count` progress steps.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::op::{Op, OpResult, ParamsError};
use crate::reporter::Reporter;

/// `echo {count = 5, delay_ms = 0}`: `task_started`, `count` × progress,
/// `partial{kind:"echo_done"}`, `final{result:{echoed:count}}`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

/// The largest `delay_ms` echo accepts.
pub const MAX_DELAY_MS: i64 = 10_000;

/// The largest `count` echo accepts (its tape is `count + 3` events).
pub const MAX_COUNT: i64 = 100_000;

#[async_trait]
impl Op for Echo {
    fn name(&self) -> &str {
        "echo"
    }

    fn description(&self) -> &str {
        "emits count progress steps, sleeping delay_ms after each; for tests and compatibility"
    }

    fn params_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "count": {"type": "integer", "default": 5, "maximum": MAX_COUNT, "description": "steps; values below 1 run 1"},
                "delay_ms": {"type": "integer", "default": 0, "minimum": 0, "maximum": MAX_DELAY_MS},
            },
        })
    }

    fn prepare(&self, params: Value) -> Result<Value, ParamsError> {
        let map = crate::op::params_object(params)?;
        let count = match map.get("count") {
            None => 5,
            Some(value) => integer(value, "count")?,
        };
        let delay_ms = match map.get("delay_ms") {
            None => 0,
            Some(value) => integer(value, "delay_ms")?,
        };
        if count > MAX_COUNT {
            return Err(ParamsError::new(
                "count",
                "less_than_equal",
                format!("input should be less than or equal to {MAX_COUNT}"),
            ));
        }
        if delay_ms < 0 {
            return Err(ParamsError::new(
                "delay_ms",
                "greater_than_equal",
                "input should be greater than or equal to 0",
            ));
        }
        if delay_ms > MAX_DELAY_MS {
            return Err(ParamsError::new(
                "delay_ms",
                "less_than_equal",
                format!("input should be less than or equal to {MAX_DELAY_MS}"),
            ));
        }
        Ok(json!({"count": count.max(1), "delay_ms": delay_ms}))
    }

    async fn run(&self, params: Value, reporter: Reporter) -> OpResult {
        let count = params["count"].as_i64().unwrap_or(5).max(1) as u64;
        let delay = Duration::from_millis(params["delay_ms"].as_u64().unwrap_or(0));
        for step in 1..=count {
            if reporter.is_cancelled() {
                break;
            }
            // A dropped progress means the task already finished (cancelled):
            // stop emitting, whatever we return is discarded.
            if reporter
                .progress("echo", step, count, Some(json!({"step": step})))
                .await
                .is_err()
            {
                break;
            }
            if !delay.is_zero() {
                // Wake early on cancel: the check before the next step ends it.
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = reporter.cancelled() => {}
                }
            }
        }
        if reporter.is_cancelled() {
            return Err(crate::op::OpError::new("cancelled", "echo was cancelled"));
        }
        // Ignored on purpose: a failed partial cannot change the result.
        let _ = reporter.partial("echo_done", json!({"count": count})).await;
        Ok(json!({"echoed": count}))
    }
}

/// An integer the way pydantic's lax mode reads one: a JSON integer, a float
/// with no fraction, or a string of digits.
fn integer(value: &Value, field: &str) -> Result<i64, ParamsError> {
    let bad = |kind: &str, message: &str| ParamsError::new(field, kind, message);
    match value {
        Value::Number(number) => {
            if let Some(int) = number.as_i64() {
                Ok(int)
            } else if let Some(float) = number.as_f64() {
                if float.fract() != 0.0 {
                    Err(bad(
                        "int_from_float",
                        "input should be a valid integer, got a number with a fractional part",
                    ))
                } else if float.abs() < 9.0e15 {
                    Ok(float as i64)
                } else {
                    Err(bad(
                        "int_parsing_size",
                        "input should be a valid integer, the number is too large",
                    ))
                }
            } else {
                Err(bad(
                    "int_parsing",
                    "input should be a valid integer, the number is too large",
                ))
            }
        }
        Value::String(text) => text.trim().parse::<i64>().map_err(|_| {
            bad(
                "int_parsing",
                "input should be a valid integer, unable to parse string as an integer",
            )
        }),
        _ => Err(bad("int_type", "input should be a valid integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::params_digest;

    #[test]
    fn prepare_clamps_and_defaults_like_dikw() {
        let echo = Echo;
        assert_eq!(
            echo.prepare(Value::Null).unwrap(),
            json!({"count":5,"delay_ms":0})
        );
        assert_eq!(
            echo.prepare(json!({})).unwrap(),
            json!({"count":5,"delay_ms":0})
        );
        assert_eq!(
            echo.prepare(json!({"count":0})).unwrap(),
            json!({"count":1,"delay_ms":0})
        );
        assert_eq!(
            echo.prepare(json!({"count":-5,"bogus":1})).unwrap(),
            json!({"count":1,"delay_ms":0})
        );
        assert_eq!(
            echo.prepare(json!({"count":"7"})).unwrap(),
            json!({"count":7,"delay_ms":0})
        );
        let prepared = echo.prepare(json!({"count":3,"delay_ms":200})).unwrap();
        assert_eq!(params_digest(&prepared), "9fbc57e71c2c80a0");
    }

    #[test]
    fn prepare_names_the_bad_field() {
        let echo = Echo;
        let error = echo
            .prepare(json!({"count":1,"delay_ms":20000}))
            .unwrap_err();
        assert_eq!(
            (error.field.as_str(), error.kind.as_str()),
            ("delay_ms", "less_than_equal")
        );
        let error = echo.prepare(json!({"count":"many"})).unwrap_err();
        assert_eq!(
            (error.field.as_str(), error.kind.as_str()),
            ("count", "int_parsing")
        );
        let error = echo.prepare(json!({"delay_ms":-1})).unwrap_err();
        assert_eq!(error.field, "delay_ms");
        // A huge whole number is too large, not "fractional".
        let error = echo.prepare(json!({"count": 1e23})).unwrap_err();
        assert_eq!(error.kind, "int_parsing_size");
        assert!(error.message.contains("too large"), "{}", error.message);
        let error = echo.prepare(json!({"count": 2.5})).unwrap_err();
        assert_eq!(error.kind, "int_from_float");
        let error = echo.prepare(json!({"count":null})).unwrap_err();
        assert_eq!(error.kind, "int_type");
        assert_eq!(
            echo.prepare(json!({"count":1.5})).unwrap_err().kind,
            "int_from_float"
        );
        assert_eq!(echo.prepare(json!([1])).unwrap_err().field, "");
    }
}
