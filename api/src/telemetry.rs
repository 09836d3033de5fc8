//! Optional OpenTelemetry trace export: the `tracing` spans (`http` per request, `job` per
//! worker job) sent to an OTLP collector over HTTP/protobuf.
//!
//! Off unless [`Settings::otel_endpoint`] (`OTEL_EXPORTER_OTLP_ENDPOINT`) is set. Spans are
//! batched and exported by a task on the tokio runtime, so a request never waits for the
//! collector; a slow or absent collector costs dropped spans, not latency. The exporter also
//! reads the standard `OTEL_EXPORTER_OTLP_HEADERS` (e.g. an API key) and
//! `OTEL_EXPORTER_OTLP_TIMEOUT`.
//!
//! No process-global tracer provider or propagator is installed: [`Telemetry`] owns the
//! provider, the `tracing` layer holds its tracer, and [`Telemetry::shutdown`] flushes what is
//! still buffered, so the spans of the last requests before a stop are not lost.

use opentelemetry::{KeyValue, propagation::TextMapPropagator, trace::TracerProvider as _};
use opentelemetry_otlp::{ExporterBuildError, Protocol, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    runtime,
    trace::{SdkTracer, SdkTracerProvider, span_processor_with_async_runtime::BatchSpanProcessor},
};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::registry::LookupSpan;

use crate::config::Settings;

/// The tracer provider of an enabled export. Call [`Telemetry::shutdown`] before exiting.
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Telemetry {
    /// Starts the exporter when an endpoint is configured; `None` when export is off.
    /// Must run inside the tokio runtime: the batch processor spawns its task there.
    pub fn init(settings: &Settings) -> Result<Option<Self>, ExporterBuildError> {
        let Some(endpoint) = &settings.otel_endpoint else { return Ok(None) };
        // The standard rule for OTEL_EXPORTER_OTLP_ENDPOINT: the signal's path is appended.
        let endpoint = format!("{}/v1/traces", endpoint.as_str().trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .build()?;
        let resource = Resource::builder()
            .with_service_name(settings.otel_service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter, runtime::Tokio).build())
            .with_resource(resource)
            .build();
        let tracer = provider.tracer(env!("CARGO_PKG_NAME"));
        Ok(Some(Self { provider, tracer }))
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans of this provider.
    pub fn layer<S>(&self) -> OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.tracer.clone())
    }

    /// Exports the spans still buffered and stops the exporter. Bounded by the exporter's
    /// HTTP timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`, 10 s by default).
    pub async fn shutdown(self) {
        // The SDK blocks the calling thread until the export task, on this runtime, is done.
        let provider = self.provider;
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing the trace export failed"),
            Err(e) => tracing::warn!(error = %e, "flushing the trace export panicked"),
        }
    }
}

/// Makes `span` continue the caller's trace when the request carries a W3C `traceparent`.
/// Without one, or with export off, the span is left as it is.
pub fn continue_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    // Fails only when no OpenTelemetry layer is installed: export is off, nothing to continue.
    let _ = span.set_parent(parent);
}
