//! Ops: the named async functions tasks run, their parameter checks, and the
//! registry the manager looks them up in. The built-in `echo` lives in
//! [`crate::echo`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

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

/// The params as a JSON object: absent (`null`) is `{}`; anything else but
/// an object is refused (`dict_type`). The first step of most `prepare`s.
pub fn params_object(params: Value) -> Result<Map<String, Value>, ParamsError> {
    match params {
        Value::Null => Ok(Map::new()),
        Value::Object(map) => Ok(map),
        _ => Err(ParamsError::new(
            "",
            "dict_type",
            "input should be a valid dictionary",
        )),
    }
}

/// How an op failed. Becomes the task's `error` object.
///
/// Any error converts into one with `?` (code `op_error`, the message is the
/// error's text with its sources), so an op can be written as
/// `async { let text = std::fs::read_to_string(path)?; … }`. For that
/// conversion to exist `OpError` itself is not a `std::error::Error` (like
/// `anyhow::Error`); it is `Display` and `Debug`.
#[derive(Clone, Debug, PartialEq)]
pub struct OpError(pub ErrorInfo);

impl OpError {
    /// An error with a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        OpError(ErrorInfo::new(code, message))
    }

    /// An error no retry policy tries again (a bad input file, a refused
    /// request): the task ends `failed` at once. Marked `"permanent": true`.
    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        OpError(crate::retry::permanent(ErrorInfo::new(code, message)))
    }

    /// This error, marked permanent (see [`OpError::permanent`]).
    pub fn into_permanent(self) -> Self {
        OpError(crate::retry::permanent(self.0))
    }

    /// The error's code (`op_error` for converted errors).
    pub fn code(&self) -> &str {
        &self.0.code
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.code, self.0.message)
    }
}

impl<E> From<E> for OpError
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        OpError::new("op_error", message)
    }
}

impl OpError {
    /// An error with every field of `info` (extra fields included); the
    /// same as `OpError(info)`. (`From<ErrorInfo>` cannot exist beside the
    /// conversion from any `std::error::Error`.)
    pub fn from_info(info: ErrorInfo) -> Self {
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

    /// How long one run may take; past it the manager fires the run's
    /// cancel token and the task ends `failed` with code `timeout`. `None`
    /// (the default): no limit.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// How long a cancelled (or timed-out) run may take to return before it
    /// is aborted; `None` (the default): the manager's `cancel_grace`.
    fn cancel_grace(&self) -> Option<Duration> {
        None
    }

    /// How a failed task of this op is tried again; `None` (the default):
    /// it is not. A submit's own policy, or the manager config's for the op,
    /// overrides it.
    fn retry(&self) -> Option<crate::retry::RetryPolicy> {
        None
    }

    /// Whether running the op again after a lost run is safe (its instance
    /// died or shut down mid-run); only then do `owner_lost`,
    /// `server_restart` and `server_shutdown` retry. Default `false`.
    fn idempotent(&self) -> bool {
        false
    }

    /// The op's flow control (a key, its concurrency, weights), unless the
    /// manager config has one for it. Default none.
    fn flow(&self) -> Option<crate::flow::Flow> {
        None
    }

    /// Whether a remote worker runs it (the server only relays): its
    /// claims are the workers', never this instance's own.
    fn is_remote(&self) -> bool {
        false
    }
}

type BoxRun =
    Box<dyn Fn(Value, Reporter) -> Pin<Box<dyn Future<Output = OpResult> + Send>> + Send + Sync>;

type BoxPrepare = Box<dyn Fn(Value) -> Result<Value, ParamsError> + Send + Sync>;

/// An op built from a closure. By default its params must be a JSON object
/// (or absent) and its schema is `{"type": "object"}`; give it a schema with
/// [`FnOp::with_schema`], a validation and normalization step with
/// [`FnOp::with_prepare`], and a time limit with [`FnOp::with_timeout`].
///
/// ```
/// use tasktape_core::{FnOp, OpError, ParamsError};
/// use serde_json::{json, Value};
///
/// let op = FnOp::new("count_lines", "count the lines of a file", |params: Value, reporter| async move {
///     let path = params["path"].as_str().unwrap_or_default().to_owned();
///     let text = tokio::fs::read_to_string(&path).await?; // io::Error → OpError
///     reporter.progress("read", 1, 1, None).await.ok();
///     Ok(json!({"lines": text.lines().count()}))
/// })
/// .with_schema(json!({"type": "object", "required": ["path"],
///                     "properties": {"path": {"type": "string"}}}))
/// .with_prepare(|params| match params.get("path") {
///     Some(Value::String(_)) => Ok(params),
///     _ => Err(ParamsError::new("path", "missing", "Field required")),
/// });
/// ```
pub struct FnOp {
    name: String,
    description: String,
    schema: Value,
    prepare: Option<BoxPrepare>,
    timeout: Option<Duration>,
    cancel_grace: Option<Duration>,
    retry: Option<crate::retry::RetryPolicy>,
    idempotent: bool,
    flow: Option<crate::flow::Flow>,
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
            schema: serde_json::json!({"type": "object"}),
            prepare: None,
            timeout: None,
            cancel_grace: None,
            retry: None,
            idempotent: false,
            flow: None,
            run: Box::new(move |params, reporter| Box::pin(run(params, reporter))),
        }
    }

    /// The JSON Schema `GET /v1/ops` shows for the params.
    pub fn with_schema(mut self, schema: Value) -> Self {
        self.schema = schema;
        self
    }

    /// Validates and normalizes the params on submit (after the "must be an
    /// object" check): an error refuses the submit with a 422 naming its
    /// field; the returned value is what the run gets.
    pub fn with_prepare<P>(mut self, prepare: P) -> Self
    where
        P: Fn(Value) -> Result<Value, ParamsError> + Send + Sync + 'static,
    {
        self.prepare = Some(Box::new(prepare));
        self
    }

    /// Ends a run that takes longer `failed` with code `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How long a cancelled run may take to return before it is aborted.
    pub fn with_cancel_grace(mut self, grace: Duration) -> Self {
        self.cancel_grace = Some(grace);
        self
    }

    /// Retries failed tasks of this op by `policy` (see [`Op::retry`]).
    pub fn with_retry(mut self, policy: crate::retry::RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Marks the op safe to run again after a lost run (see [`Op::idempotent`]).
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// The op's flow control (see [`Op::flow`]).
    pub fn with_flow(mut self, flow: crate::flow::Flow) -> Self {
        self.flow = Some(flow);
        self
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
        self.schema.clone()
    }

    fn prepare(&self, params: Value) -> Result<Value, ParamsError> {
        let params = Value::Object(params_object(params)?);
        match &self.prepare {
            Some(prepare) => prepare(params),
            None => Ok(params),
        }
    }

    async fn run(&self, params: Value, reporter: Reporter) -> OpResult {
        (self.run)(params, reporter).await
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn cancel_grace(&self) -> Option<Duration> {
        self.cancel_grace
    }

    fn retry(&self) -> Option<crate::retry::RetryPolicy> {
        self.retry.clone()
    }

    fn idempotent(&self) -> bool {
        self.idempotent
    }

    fn flow(&self) -> Option<crate::flow::Flow> {
        self.flow.clone()
    }
}

/// What a secret param shows instead of its value.
pub const MASK: &str = "•••";

/// `params` as someone reading the task may see them: each top-level
/// property the op's params `schema` marks `writeOnly` (a secret: exec ops'
/// `secret = true`) replaced by [`MASK`].
pub fn masked_params(schema: &Value, params: &Value) -> Value {
    let (Some(properties), Value::Object(params)) =
        (schema.get("properties").and_then(Value::as_object), params)
    else {
        return params.clone();
    };
    let masked = params
        .iter()
        .map(|(name, value)| {
            let secret = properties
                .get(name)
                .and_then(|property| property.get("writeOnly"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let shown = if secret {
                Value::from(MASK)
            } else {
                value.clone()
            };
            (name.clone(), shown)
        })
        .collect();
    Value::Object(masked)
}

/// The ops a manager can run, by name. A clone is a copy; the manager's
/// components share one registry, to which remote workers' ops are added
/// while it runs.
#[derive(Default)]
pub struct OpRegistry {
    ops: Arc<std::sync::RwLock<BTreeMap<String, Arc<dyn Op>>>>,
}

impl Clone for OpRegistry {
    fn clone(&self) -> Self {
        OpRegistry {
            ops: Arc::new(std::sync::RwLock::new(self.read().clone())),
        }
    }
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

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<dyn Op>>> {
        self.ops.read().unwrap_or_else(|poison| poison.into_inner())
    }

    /// This registry itself (not a copy): what one adds, all see.
    pub(crate) fn shared(&self) -> OpRegistry {
        OpRegistry {
            ops: Arc::clone(&self.ops),
        }
    }

    /// Adds (or replaces) an op in the shared registry.
    pub(crate) fn put(&self, op: Arc<dyn Op>) {
        self.ops
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .insert(op.name().to_owned(), op);
    }

    /// Adds (or replaces) an op under its name.
    pub fn register(&mut self, op: impl Op) -> &mut Self {
        self.put(Arc::new(op));
        self
    }

    /// Adds (or replaces) an op already behind an `Arc`.
    pub fn register_arc(&mut self, op: Arc<dyn Op>) -> &mut Self {
        self.put(op);
        self
    }

    /// The op named `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Op>> {
        self.read().get(name).cloned()
    }

    /// All ops, by name.
    pub fn iter(&self) -> impl Iterator<Item = Arc<dyn Op>> {
        self.read()
            .values()
            .cloned()
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }
}

impl std::fmt::Debug for OpRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.read().keys()).finish()
    }
}
