//! Logs and traces, set up the same way by core and the processor.
//!
//! **Logs** go to stderr, filtered by `RUST_LOG` (default `info`), as text
//! or JSON lines (`--log-format`), with colours on a terminal only.
//!
//! **Traces.** An event published with a W3C `traceparent` carries it to
//! the processor and its result. Each step of its way is a `tracing` span
//! named for the step, a child of the publisher's span:
//!
//! | span | where | from, until |
//! |---|---|---|
//! | `publish` | core | the request arrived; it was answered |
//! | `commit` | core, inside `publish` | the group commit holding the event |
//! | `deliver` | core | the first send; the result is stored (`attempts`: copies sent) |
//! | `result` | core, inside `deliver` | the ack was accepted; its row is stored |
//! | `process` | processor | the handler ran (`verdict`: ok, failed, retry, rejected) |
//!
//! Core makes no spans for an event without a `traceparent`, and the
//! export drops any span with no publisher's span above it: ackflow
//! continues a publisher's trace, it does not start one. The spans are at
//! debug level,
//! so `RUST_LOG=ackflow_processor=debug` prints the processor's work with
//! each event's trace, and with the default filter they cost nothing.
//!
//! Built with the `otlp` feature (off by default) and run with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//! set, core and the processor export those spans, and only those, over
//! OTLP/gRPC to a collector, whatever `RUST_LOG` says. The standard
//! `OTEL_*` variables apply (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_SCHEDULE_DELAY`, ...). The
//! publisher's sampled flag is kept: a trace it did not sample is not
//! exported.

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The names of the spans of an event's trace (the table above).
pub const SPANS: [&str; 5] = ["publish", "commit", "deliver", "result", "process"];

/// Whether `metadata` is one of ackflow's trace spans.
pub fn is_trace_span(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.is_span()
        && metadata.target().starts_with("ackflow")
        && SPANS.contains(&metadata.name())
}

/// Keeps the trace exporter running; dropping it sends the spans still
/// buffered. Hold it until the runtime stops (drop it first).
#[must_use = "dropping it stops the trace export"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: sending the last trace spans: {e}");
        }
    }
}

/// Sets up logging and, where built and configured, the trace export;
/// `service` names this process in traces unless `OTEL_SERVICE_NAME` does.
/// Call it inside the tokio runtime (the exporter's connection lives
/// there). Does nothing if a subscriber is already set.
pub fn init(service: &'static str, json: bool) -> Telemetry {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log file or journald gets plain
        // text that grep and log shippers read.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let registry = tracing_subscriber::registry().with(fmt.with_filter(filter));

    #[cfg(feature = "otlp")]
    {
        let (layer, provider) = match otlp::layer(service) {
            Ok(Some((layer, provider))) => (Some(layer), Some(provider)),
            Ok(None) => (None, None),
            Err(e) => {
                eprintln!("warning: traces are not exported: {e}");
                (None, None)
            }
        };
        let exporting = provider.is_some();
        if registry.with(layer).try_init().is_ok() && exporting {
            tracing::info!(service, "exporting trace spans over OTLP");
        }
        Telemetry { provider }
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = service;
        let _ = registry.try_init();
        Telemetry {}
    }
}

/// Makes `span` a child of the publisher's span that `traceparent` (in
/// version-00 form, as core stores and sends it) names. Only the trace
/// export reads it; without one, or with a malformed value, nothing
/// happens.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    #[cfg(feature = "otlp")]
    if let Some(cx) = otlp::remote_context(traceparent) {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let _ = span.set_parent(cx);
    }
    #[cfg(not(feature = "otlp"))]
    let _ = (span, traceparent);
}

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
    };
    use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{FilterFn, LevelFilter};
    use tracing_subscriber::registry::LookupSpan;

    /// The export layer (ackflow's trace spans only) and its provider, when
    /// an OTLP endpoint is configured.
    pub(super) fn layer<S>(
        service: &'static str,
    ) -> Result<Option<(impl Layer<S>, SdkTracerProvider)>, opentelemetry_otlp::ExporterBuildError>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        let configured = |name| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        if !configured("OTEL_EXPORTER_OTLP_ENDPOINT")
            && !configured("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?;
        let mut resource = opentelemetry_sdk::Resource::builder();
        if !configured("OTEL_SERVICE_NAME") {
            resource = resource.with_service_name(service);
        }
        // A span without a publisher's span above it is never sampled
        // (ackflow continues traces, it does not start them); below one,
        // the publisher's sampled flag decides.
        let sampler = Sampler::ParentBased(Box::new(Sampler::AlwaysOff));
        let provider = SdkTracerProvider::builder()
            .with_sampler(sampler)
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer(service);
        let filter = FilterFn::new(super::is_trace_span).with_max_level_hint(LevelFilter::DEBUG);
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(filter);
        Ok(Some((layer, provider)))
    }

    /// The remote parent `traceparent` names (`00-<trace>-<span>-<flags>`).
    pub(super) fn remote_context(traceparent: &str) -> Option<opentelemetry::Context> {
        let mut parts = traceparent.split('-');
        let (Some("00"), Some(trace), Some(span), Some(flags), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let context = SpanContext::new(
            TraceId::from_hex(trace).ok()?,
            SpanId::from_hex(span).ok()?,
            TraceFlags::new(u8::from_str_radix(flags, 16).ok()?),
            true,
            TraceState::default(),
        );
        context
            .is_valid()
            .then(|| opentelemetry::Context::new().with_remote_span_context(context))
    }

    #[cfg(test)]
    mod tests {
        use opentelemetry::trace::TraceContextExt;

        use super::remote_context;

        #[test]
        fn a_traceparent_names_the_remote_parent() {
            let cx = remote_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .expect("valid");
            let span = cx.span();
            let parent = span.span_context();
            assert_eq!(
                parent.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert_eq!(parent.span_id().to_string(), "00f067aa0ba902b7");
            assert!(parent.is_sampled() && parent.is_remote());
            let unsampled =
                remote_context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                    .expect("valid");
            assert!(!unsampled.span().span_context().is_sampled());
        }

        #[test]
        fn anything_else_names_none() {
            for bad in [
                "",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
                "00-zz-00f067aa0ba902b7-01",
            ] {
                assert!(remote_context(bad).is_none(), "{bad:?}");
            }
        }
    }
}
