//! tasktape's traces and logs, for the binary and for embedders.
//!
//! - [`init`] installs the subscriber: `RUST_LOG` filter (default `info`),
//!   text or JSON logs on stderr (JSON lines carry `trace_id`/`span_id`
//!   inside a span), and — when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and `OTEL_SDK_DISABLED` is
//!   not `true` — an OpenTelemetry layer exporting spans over OTLP
//!   HTTP/protobuf, honouring the standard `OTEL_*` variables. Without an
//!   endpoint and with text logs there is no OpenTelemetry layer at all.
//! - [`continue_trace`] makes a span continue a caller's W3C trace
//!   (`traceparent`/`tracestate`); [`traceparent`] renders a span's context.
//! - [`OtelTaskTracing`] makes each task run a root span `task.<op>` linked
//!   to the span that submitted the task.
//!
//! # Layout
//!
//! - `lib.rs`: [`init`], [`Telemetry`], propagation, task spans.
//! - `json.rs`: the JSON log line format.

mod json;

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tasktape_core::Task;
use tasktape_core::observe::TaskTracing;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable text (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line, with `trace_id` and `span_id` in a span.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

/// What [`init`] set up; flush it before the process exits.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    exporting: bool,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.exporting
    }

    /// Exports what is buffered and stops the exporter. Blocks (the OTLP
    /// client is synchronous): call it from a plain thread or
    /// `spawn_blocking`, not from an async task.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(error) = provider.force_flush() {
                eprintln!("tasktape: could not export the last spans: {error}");
            }
            let _ = provider.shutdown();
        }
    }
}

/// Whether `span` goes to OpenTelemetry (an OpenTelemetry layer recorded
/// it): callers add the attributes only a trace backend reads when it does,
/// and keep spans lean for plain logs otherwise.
pub fn traced(span: &Span) -> bool {
    !span.is_disabled() && span.context().span().span_context().is_valid()
}

fn env_true(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| value.trim().eq_ignore_ascii_case("true"))
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| !value.trim().is_empty())
}

/// Whether the environment asks for OTLP export.
pub fn export_requested() -> bool {
    !env_true("OTEL_SDK_DISABLED")
        && (env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// A tracer provider exporting over OTLP HTTP/protobuf (the standard
/// `OTEL_*` variables pick the endpoint, headers, timeout, sampler, batch
/// sizes and resource), with `service.name` defaulting to `tasktape`.
pub fn otlp_provider() -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|error| format!("cannot build the OTLP exporter: {error}"))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource())
        .build())
}

/// The process's resource: the environment's, `service.name` = `tasktape`
/// unless `OTEL_SERVICE_NAME` says otherwise.
pub fn resource() -> opentelemetry_sdk::Resource {
    let builder = opentelemetry_sdk::Resource::builder();
    if env_set("OTEL_SERVICE_NAME") {
        builder.build()
    } else {
        builder.with_service_name("tasktape").build()
    }
}

/// Installs the global subscriber (see the crate docs). A second call does
/// nothing. Errors building the exporter are printed and export stays off.
pub fn init(format: LogFormat) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let exporting = export_requested();
    // JSON logs carry trace ids, which only the OpenTelemetry layer makes:
    // with JSON logs it runs even when nothing is exported.
    let provider = if exporting {
        match otlp_provider() {
            Ok(provider) => Some(provider),
            Err(error) => {
                eprintln!("tasktape: {error}; traces are not exported");
                None
            }
        }
    } else if format == LogFormat::Json && !env_true("OTEL_SDK_DISABLED") {
        Some(
            SdkTracerProvider::builder()
                .with_resource(resource())
                .build(),
        )
    } else {
        None
    };
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("tasktape"))
            .with_tracked_inactivity(false)
    });
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(json::JsonLines)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(logs)
        .try_init()
        .is_ok();
    Telemetry {
        exporting: exporting && provider.is_some() && installed,
        provider: if installed { provider } else { None },
    }
}

/// Makes `span` continue the caller's trace given by a W3C `traceparent`
/// (and `tracestate`); an absent or malformed header changes nothing.
pub fn continue_trace(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(context) = traceparent.and_then(|parent| remote_context(parent, tracestate)) else {
        return;
    };
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(context));
}

/// The span context a W3C `traceparent` (and `tracestate`) names, if valid.
fn remote_context(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    if let Some(tracestate) = tracestate {
        carrier.insert("tracestate".to_owned(), tracestate.to_owned());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    let context = cx.span().span_context().clone();
    context.is_valid().then_some(context)
}

/// `span`'s context as a W3C `traceparent`, when it is traced.
pub fn traceparent(span: &Span) -> Option<String> {
    let cx = span.context();
    let span_ref = cx.span();
    let context = span_ref.span_context();
    context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        )
    })
}

/// Task runs as root spans linked to their submitter's span.
#[derive(Debug, Default)]
pub struct OtelTaskTracing;

impl TaskTracing for OtelTaskTracing {
    fn capture(&self) -> Option<String> {
        traceparent(&Span::current())
    }

    fn run_span(&self, task: &Task) -> Span {
        let span = tasktape_core::observe::run_span(task);
        if let Some(context) = task
            .trace_parent
            .as_deref()
            .and_then(|parent| remote_context(parent, None))
        {
            span.add_link(context);
        }
        span
    }
}
