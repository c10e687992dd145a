//! Ops: the named async functions tasks run, their parameter checks, and the
//! registry the manager looks them up in. The built-in `echo` lives in
//! [`crate::echo`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::model::ErrorInfo;
use crate::reporter::Reporter;

/// Params an op refused: names the field, like a 422 `invalid_request`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("invalid params: {field}: {message}")]
pub struct ParamsError {
    /// The offending field (`""` for the params as a whole).
    pub field: String,
    /// What is wrong, in one line.
    pub message: String,
    /// Pydantic-style error type (`int_parsing`, `less_than_equal`, …).
    pub kind: String,
}

impl ParamsError {
    /// A refusal of `field`.
    pub fn new(
        field: impl Into<String>,
        kind: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ParamsError {
            field: field.into(),
            kind: kind.into(),
            message: message.into(),
        }
    }
}

/// How an op failed. Becomes the task's `error` object.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}: {}", .0.code, .0.message)]
pub struct OpError(pub ErrorInfo);

impl OpError {
    /// An error with a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        OpError(ErrorInfo::new(code, message))
    }
}

impl From<ErrorInfo> for OpError {
    fn from(info: ErrorInfo) -> Self {
        OpError(info)
    }
}

/// The op's answer.
pub type OpResult = Result<Value, OpError>;

/// A named operation tasks run.
///
/// Call order: [`Op::prepare`] once per submit, on the request path (cheap,
/// no I/O); then, when the task's turn comes, [`Op::run`] once with the
/// prepared params. `run` should check `reporter.cancel_token()` between
/// steps; one that ignores it is aborted after the manager's grace period.
#[async_trait]
pub trait Op: Send + Sync + 'static {
    /// The registered name (the URL segment of `POST /v1/{op}`).
    fn name(&self) -> &str;

    /// One line for `GET /v1/ops`.
    fn description(&self) -> &str;

    /// A JSON Schema object describing the params.
    fn params_schema(&self) -> Value;

    /// Validates and normalizes the params (defaults, clamping); the result
    /// is what `run` gets and what `params_digest` is computed over.
    fn prepare(&self, params: Value) -> Result<Value, ParamsError>;

    /// Runs the op.
    async fn run(&self, params: Value, reporter: Reporter) -> OpResult;
}

type BoxRun =
    Box<dyn Fn(Value, Reporter) -> Pin<Box<dyn Future<Output = OpResult> + Send>> + Send + Sync>;

/// An op built from a closure; params must be a JSON object (or absent).
pub struct FnOp {
    name: String,
    description: String,
    run: BoxRun,
}

impl FnOp {
    /// An op named `name` that runs `run`.
    pub fn new<F, Fut>(name: impl Into<String>, description: impl Into<String>, run: F) -> Self
    where
        F: Fn(Value, Reporter) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = OpResult> + Send + 'static,
    {
        FnOp {
            name: name.into(),
            description: description.into(),
            run: Box::new(move |params, reporter| Box::pin(run(params, reporter))),
        }
    }
}

#[async_trait]
impl Op for FnOp {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn params_schema(&self) -> Value {
        serde_json::json!({"type": "object"})
    }

    fn prepare(&self, params: Value) -> Result<Value, ParamsError> {
        match params {
            Value::Null => Ok(Value::Object(Map::new())),
            Value::Object(map) => Ok(Value::Object(map)),
            _ => Err(ParamsError::new(
                "",
                "dict_type",
                "params must be a JSON object",
            )),
        }
    }

    async fn run(&self, params: Value, reporter: Reporter) -> OpResult {
        (self.run)(params, reporter).await
    }
}

/// The ops a manager can run, by name.
#[derive(Clone, Default)]
pub struct OpRegistry {
    ops: BTreeMap<String, Arc<dyn Op>>,
}

impl OpRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with the built-in ops (`echo`).
    pub fn with_builtins() -> Self {
        let mut registry = Self::new();
        registry.register(crate::echo::Echo);
        registry
    }

    /// Adds (or replaces) an op under its name.
    pub fn register(&mut self, op: impl Op) -> &mut Self {
        self.ops.insert(op.name().to_owned(), Arc::new(op));
        self
    }

    /// The op named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Op>> {
        self.ops.get(name)
    }

    /// All ops, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Op>> {
        self.ops.values()
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.ops.keys().map(String::as_str).collect()
    }
}

impl std::fmt::Debug for OpRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.ops.keys()).finish()
    }
}
