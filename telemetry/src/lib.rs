//! Logs and traces for the Isame binaries: `tracing` events and spans go to
//! stderr as text or JSON lines (through a non-blocking writer, so a slow
//! terminal never stalls a request), and, when the standard `OTEL_*`
//! environment variables ask for it, spans are exported as OpenTelemetry
//! traces over OTLP/gRPC.
#![forbid(unsafe_code)]

pub mod propagation;
pub mod request_span;

pub use request_span::RequestSpan;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use std::io::Write as _;
use std::time::Duration;
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP settings ask for something this build cannot do.
    #[error("OpenTelemetry: {0}")]
    Config(String),
    /// The exporter could not be built.
    #[error("OpenTelemetry exporter: {0}")]
    Exporter(String),
    /// A global subscriber is already installed.
    #[error("logging is already set up: {0}")]
    Init(String),
}

/// Hands whole lines to the background log writer, in order with every
/// other log line (one writer thread, so lines never interleave). Lines are
/// dropped, not waited for, when the writer is more than 128k lines behind.
#[derive(Clone)]
pub struct LineWriter(NonBlocking);

impl LineWriter {
    /// Queues one line (with its newline).
    pub fn write_line(&mut self, line: &[u8]) {
        // A lossy non-blocking writer never reports an error.
        let _ = self.0.write(line);
    }
}

/// Keeps logs and traces flowing; flushes both when dropped.
pub struct Telemetry {
    writer: NonBlocking,
    provider: Option<SdkTracerProvider>,
    /// Runs the OTLP exporter's gRPC client, apart from the serving threads.
    runtime: Option<tokio::runtime::Runtime>,
    _logs: WorkerGuard,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn tracing(&self) -> bool {
        self.provider.is_some()
    }

    /// A writer for log lines formatted elsewhere (the access log).
    pub fn line_writer(&self) -> LineWriter {
        LineWriter(self.writer.clone())
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown_with_timeout(Duration::from_secs(5)) {
                eprintln!("OpenTelemetry: spans not flushed at exit: {e}");
            }
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Whether the environment asks for trace export: an OTLP endpoint is set
/// (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), or
/// `OTEL_TRACES_EXPORTER=otlp`; and neither `OTEL_SDK_DISABLED=true` nor
/// `OTEL_TRACES_EXPORTER=none` says otherwise.
pub fn otel_requested() -> bool {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return false;
    }
    match env("OTEL_TRACES_EXPORTER").map(|v| v.to_ascii_lowercase()) {
        Some(v) if v == "none" => false,
        Some(v) if v == "otlp" => true,
        _ => {
            env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                || env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        }
    }
}

/// Checks the parts of the OTLP settings this build supports.
fn check_otel_env() -> Result<(), TelemetryError> {
    if let Some(v) = env("OTEL_TRACES_EXPORTER") {
        if !matches!(v.to_ascii_lowercase().as_str(), "otlp" | "none") {
            return Err(TelemetryError::Config(format!(
                "OTEL_TRACES_EXPORTER={v:?}: only \"otlp\" and \"none\" are supported"
            )));
        }
    }
    for name in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(v) = env(name) {
            if v != "grpc" {
                return Err(TelemetryError::Config(format!(
                    "{name}={v:?}: only \"grpc\" is supported (send to the collector's OTLP/gRPC port, 4317)"
                )));
            }
            break;
        }
    }
    Ok(())
}

/// Sets up logging (`RUST_LOG`, default `info`) and, when requested, trace
/// export for a process whose default service name is `service`.
pub fn init(service: &'static str, format: LogFormat) -> Result<Telemetry, TelemetryError> {
    // Settings this build cannot follow turn tracing off with a warning:
    // serving traffic matters more than exporting its traces.
    let unsupported = if otel_requested() {
        check_otel_env().err()
    } else {
        None
    };
    let (runtime, provider) = if otel_requested() && unsupported.is_none() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otel-export")
            .enable_all()
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let exporter = {
            let _in_runtime = rt.enter();
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?
        };
        let mut resource = Resource::builder();
        if env("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service);
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let _ = request_span::TRACER.set(provider.tracer(service));
        (Some(rt), Some(provider))
    } else {
        (None, None)
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer.clone())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(writer.clone())
            .boxed(),
    };
    // RUST_LOG chooses log lines only: spans down to INFO are exported
    // whatever the log level, and log events stay log lines (so whether a
    // log target is on depends on RUST_LOG alone).
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service))
            .with_filter(filter_fn(|m| {
                m.is_span() && *m.level() <= tracing::Level::INFO
            }))
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .try_init()
        .map_err(|e| TelemetryError::Init(e.to_string()))?;
    if let Some(e) = unsupported {
        tracing::warn!(error = %e, "traces are not exported");
    } else if provider.is_some() {
        tracing::info!("exporting traces over OTLP/gRPC");
    }
    Ok(Telemetry {
        writer,
        provider,
        runtime,
        _logs: guard,
    })
}
