//! The declaration of an exec op (`[ops.NAME]` in the config file), its
//! checks at start-up, the JSON Schema shown by `GET /v1/ops`, and the
//! validation of a submit's params against it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Number, Value};
use tasktape_core::ParamsError;

/// `[ops.NAME]`: one exec op as the operator declares it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecOpSpec {
    /// One line for `GET /v1/ops`.
    #[serde(default)]
    pub description: Option<String>,
    /// The argv: a program and its arguments, with `{param}` placeholders.
    pub command: Vec<String>,
    /// Working directory (default: the server's).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Added to the child's environment; values may hold placeholders.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables passed on from the server's environment (default
    /// [`DEFAULT_INHERIT_ENV`]); nothing else is.
    #[serde(default)]
    pub inherit_env: Option<Vec<String>>,
    /// Past this the task ends `failed` with code `timeout`.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// This op's concurrency limit.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// SIGTERM, then SIGKILL after this on cancel, timeout and shutdown.
    #[serde(default)]
    pub cancel_grace_ms: Option<u64>,
    /// The typed parameters, by name.
    #[serde(default)]
    pub params: BTreeMap<String, ParamSpec>,
    /// How failed tasks are tried again (default: they are not).
    #[serde(default)]
    pub retries: Option<crate::retries::RetriesSpec>,
    /// Also retry after a lost run (`owner_lost`, `server_restart`, `server_shutdown`).
    #[serde(default)]
    pub idempotent: bool,
}

/// What the child inherits from the server's environment by default.
pub const DEFAULT_INHERIT_ENV: [&str; 4] = ["PATH", "HOME", "LANG", "TZ"];

/// `[ops.NAME.params.PARAM]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// The JSON type.
    #[serde(rename = "type")]
    pub kind: ParamType,
    /// Whether a submit must give it (a default makes that moot).
    #[serde(default)]
    pub required: bool,
    /// Help text for forms.
    #[serde(default)]
    pub description: Option<String>,
    /// Used when the submit does not give it.
    #[serde(default)]
    pub default: Option<Value>,
    /// Smallest allowed value (integer and number).
    #[serde(default)]
    pub minimum: Option<Number>,
    /// Largest allowed value (integer and number).
    #[serde(default)]
    pub maximum: Option<Number>,
    /// The allowed values (string, integer, number).
    #[serde(default, rename = "enum")]
    pub allowed: Option<Vec<Value>>,
    /// Never written to logs, spans or errors; usable only in `env` values.
    #[serde(default)]
    pub secret: bool,
}

/// A parameter's JSON type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// A JSON string.
    String,
    /// A whole number (i64).
    Integer,
    /// Any JSON number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// An array of strings; fills whole argv elements.
    Array,
    /// A JSON object; rendered as compact JSON.
    Object,
}

impl ParamType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::Array => "array",
            ParamType::Object => "object",
        }
    }
}

/// A declaration the server refuses to start with: names the op and the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("op {op:?}: {key}: {message}")]
pub struct ConfigError {
    /// The op's name.
    pub op: String,
    /// The offending key (`command[2]`, `params.width.default`, …).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(op: &str, key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            op: op.to_owned(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Whether `name` is a valid op name: 1–64 of `[a-z0-9_.-]`, not `.` or
/// `..` (clients normalise those away from `POST /v1/{op}`).
pub fn valid_op_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

/// Whether `name` is a valid parameter name: a letter or `_`, then letters,
/// digits, `_` or `-` (at most 64).
pub fn valid_param_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && name.len() <= 64
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Checks a parameter's own declaration (types of default, bounds, enum).
pub(crate) fn check_param(op: &str, name: &str, spec: &ParamSpec) -> Result<(), ConfigError> {
    let key = |field: &str| format!("params.{name}.{field}");
    if !valid_param_name(name) {
        return Err(ConfigError::new(
            op,
            format!("params.{name}"),
            "parameter names are a letter or _, then letters, digits, _ or - (at most 64)",
        ));
    }
    let numeric = matches!(spec.kind, ParamType::Integer | ParamType::Number);
    for (field, bound) in [("minimum", &spec.minimum), ("maximum", &spec.maximum)] {
        if let Some(bound) = bound {
            if !numeric {
                return Err(ConfigError::new(
                    op,
                    key(field),
                    format!("only integer and number parameters have a {field}"),
                ));
            }
            if spec.kind == ParamType::Integer && bound.as_i64().is_none() {
                return Err(ConfigError::new(op, key(field), "must be a whole number"));
            }
        }
    }
    if let (Some(low), Some(high)) = (&spec.minimum, &spec.maximum)
        && low.as_f64() > high.as_f64()
    {
        return Err(ConfigError::new(op, key("minimum"), "is above maximum"));
    }
    if let Some(allowed) = &spec.allowed {
        if !matches!(
            spec.kind,
            ParamType::String | ParamType::Integer | ParamType::Number
        ) {
            return Err(ConfigError::new(
                op,
                key("enum"),
                "only string, integer and number parameters have an enum",
            ));
        }
        if allowed.is_empty() {
            return Err(ConfigError::new(op, key("enum"), "lists no value"));
        }
        for (index, value) in allowed.iter().enumerate() {
            let strict = Checker {
                spec: &ParamSpec {
                    allowed: None,
                    ..spec.clone()
                },
                name,
            };
            if strict.check(value.clone()).ok().as_ref() != Some(value) {
                // A secret's value is not printed, only where it is.
                let shown = if spec.secret {
                    "the value".to_owned()
                } else {
                    value.to_string()
                };
                return Err(ConfigError::new(
                    op,
                    format!("params.{name}.enum[{index}]"),
                    format!("{shown} is not a valid {}", spec.kind.as_str()),
                ));
            }
        }
    }
    if let Some(default) = &spec.default {
        // Strict: the default is written as it will be used (800, not "800").
        let shown = if spec.secret {
            "the value".to_owned()
        } else {
            default.to_string()
        };
        match (Checker { spec, name }).check(default.clone()) {
            Err(error) => {
                // The checker's messages name no value but an enum's; a
                // secret's enum is not said (see `check`).
                return Err(ConfigError::new(op, key("default"), error.message));
            }
            Ok(checked) if !same_value(&checked, default) => {
                return Err(ConfigError::new(
                    op,
                    key("default"),
                    format!("{shown} is not a {} (write it as one)", spec.kind.as_str()),
                ));
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Validates and normalizes a submit's params: unknown names, missing
/// required ones, types, bounds and enums are refused naming the field;
/// defaults are filled in. Lax where a terminal user would expect it
/// (`-p width=800` sends a number, `-p tag=2024` a number for a string):
/// numbers and booleans become strings for string params, numeric strings
/// become numbers, `"true"`/`"false"` booleans.
pub(crate) fn prepare(
    params: &BTreeMap<String, ParamSpec>,
    given: Value,
) -> Result<Value, ParamsError> {
    let mut given = tasktape_core::op::params_object(given)?;
    if let Some(unknown) = given.keys().find(|key| !params.contains_key(*key)) {
        let known: Vec<&str> = params.keys().map(String::as_str).collect();
        let message = if known.is_empty() {
            "extra inputs are not permitted: this op takes no parameters".to_owned()
        } else {
            format!(
                "extra inputs are not permitted (known: {})",
                known.join(", ")
            )
        };
        return Err(ParamsError::new(
            unknown.clone(),
            "extra_forbidden",
            message,
        ));
    }
    let mut out = Map::new();
    for (name, spec) in params {
        match given.remove(name) {
            Some(Value::Null) | None => {
                if let Some(default) = &spec.default {
                    out.insert(name.clone(), default.clone());
                } else if spec.required {
                    return Err(ParamsError::new(name.clone(), "missing", "field required"));
                }
            }
            Some(value) => {
                let value = Checker { spec, name }.check(value)?;
                out.insert(name.clone(), value);
            }
        }
    }
    Ok(Value::Object(out))
}

struct Checker<'a> {
    spec: &'a ParamSpec,
    name: &'a str,
}

impl Checker<'_> {
    fn bad(&self, kind: &str, message: impl Into<String>) -> ParamsError {
        ParamsError::new(self.name, kind, message)
    }

    fn check(&self, value: Value) -> Result<Value, ParamsError> {
        let value = match self.spec.kind {
            ParamType::String => match value {
                Value::String(_) => value,
                Value::Number(number) => Value::String(number.to_string()),
                Value::Bool(flag) => Value::String(flag.to_string()),
                _ => return Err(self.bad("string_type", "input should be a valid string")),
            },
            ParamType::Integer => Value::from(self.integer(&value)?),
            ParamType::Number => Value::Number(self.number(&value)?),
            ParamType::Boolean => match value {
                Value::Bool(_) => value,
                Value::String(text) if text == "true" => Value::Bool(true),
                Value::String(text) if text == "false" => Value::Bool(false),
                _ => return Err(self.bad("bool_type", "input should be a valid boolean")),
            },
            ParamType::Array => match value {
                Value::Array(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (index, item) in items.into_iter().enumerate() {
                        match item {
                            Value::String(_) => out.push(item),
                            Value::Number(number) => out.push(Value::String(number.to_string())),
                            _ => {
                                return Err(ParamsError::new(
                                    format!("{}.{index}", self.name),
                                    "string_type",
                                    "input should be a valid string",
                                ));
                            }
                        }
                    }
                    Value::Array(out)
                }
                _ => {
                    return Err(self.bad("list_type", "input should be a valid list of strings"));
                }
            },
            ParamType::Object => match value {
                Value::Object(_) => value,
                _ => return Err(self.bad("dict_type", "input should be a valid dictionary")),
            },
        };
        self.bounds(&value)?;
        if value_len(&value) > MAX_VALUE_BYTES {
            return Err(self.bad(
                "string_too_long",
                format!(
                    "is longer than {} KiB, too long for a program's argument or environment",
                    MAX_VALUE_BYTES / 1024
                ),
            ));
        }
        if let Some(allowed) = &self.spec.allowed
            && !allowed.iter().any(|choice| same_value(choice, &value))
        {
            if self.spec.secret {
                // A secret's allowed values are never said.
                return Err(self.bad(
                    "enum",
                    "input is not one of the values this secret parameter allows",
                ));
            }
            let choices: Vec<String> = allowed.iter().map(Value::to_string).collect();
            return Err(self.bad(
                "enum",
                format!("input should be one of {}", choices.join(", ")),
            ));
        }
        Ok(value)
    }

    fn integer(&self, value: &Value) -> Result<i64, ParamsError> {
        match value {
            Value::Number(number) => {
                if let Some(int) = number.as_i64() {
                    Ok(int)
                } else if let Some(float) = number.as_f64()
                    && float.fract() == 0.0
                    && float.abs() < 9.0e15
                {
                    Ok(float as i64)
                } else if number.as_f64().is_some_and(|float| float.fract() == 0.0) {
                    Err(self.bad(
                        "int_parsing_size",
                        "input should be a valid integer, the number is too large",
                    ))
                } else {
                    Err(self.bad(
                        "int_from_float",
                        "input should be a valid integer, got a number with a fractional part",
                    ))
                }
            }
            Value::String(text) => text.trim().parse::<i64>().map_err(|_| {
                self.bad(
                    "int_parsing",
                    "input should be a valid integer, unable to parse string as an integer",
                )
            }),
            _ => Err(self.bad("int_type", "input should be a valid integer")),
        }
    }

    fn number(&self, value: &Value) -> Result<Number, ParamsError> {
        match value {
            Value::Number(number) => Ok(number.clone()),
            Value::String(text) => text
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(Number::from_f64)
                .ok_or_else(|| {
                    self.bad(
                        "float_parsing",
                        "input should be a valid number, unable to parse string as a number",
                    )
                }),
            _ => Err(self.bad("float_type", "input should be a valid number")),
        }
    }

    fn bounds(&self, value: &Value) -> Result<(), ParamsError> {
        let Some(number) = value.as_number() else {
            return Ok(());
        };
        let below = |bound: &Number| match (number.as_i64(), bound.as_i64()) {
            (Some(a), Some(b)) => a < b,
            _ => number.as_f64() < bound.as_f64(),
        };
        let above = |bound: &Number| match (number.as_i64(), bound.as_i64()) {
            (Some(a), Some(b)) => a > b,
            _ => number.as_f64() > bound.as_f64(),
        };
        if let Some(minimum) = &self.spec.minimum
            && below(minimum)
        {
            return Err(self.bad(
                "greater_than_equal",
                format!("input should be greater than or equal to {minimum}"),
            ));
        }
        if let Some(maximum) = &self.spec.maximum
            && above(maximum)
        {
            return Err(self.bad(
                "less_than_equal",
                format!("input should be less than or equal to {maximum}"),
            ));
        }
        Ok(())
    }
}

/// The most a parameter may hold, as text: Linux refuses a single argument
/// or environment string over 128 KiB (E2BIG) when the program starts.
const MAX_VALUE_BYTES: usize = 100 * 1024;

/// A parameter's size as the argument text it becomes.
fn value_len(value: &Value) -> usize {
    match value {
        Value::String(text) => text.len(),
        Value::Array(items) => items.iter().map(value_len).max().unwrap_or(0),
        other => other.to_string().len(),
    }
}

/// JSON equality where numbers compare by value (`800` = `800.0`).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}
