//! Trace export over OTLP (the `otlp` feature, which the test binaries are
//! built with), end to end: core and the processor send their spans to a
//! collector this test runs.
//!
//! An event published with a sampled `traceparent` gives the five spans of
//! `ackflow_proto::telemetry` in the publisher's trace: `publish` (with
//! its seq), `commit` inside it, `deliver` and `result` inside it from
//! core, `process` from the processor, each under the right parent and
//! named for its service. An event without trace context and one whose
//! publisher did not sample its trace give none.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ackflow_tests::{Core, free_port, post_json, start_processor_with_env, wait_for};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PUBLISHER_SPAN: &str = "00f067aa0ba902b7";
const UNSAMPLED_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

/// A received span: its service, name, ids (hex) and attributes.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: Vec<KeyValue>,
}

impl Received {
    /// A string attribute.
    fn text(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|a| a.key == key).and_then(|a| {
            match a.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.as_str()),
                _ => None,
            }
        })
    }

    /// A numeric attribute (an integer, or a u64 written as a string).
    fn int(&self, key: &str) -> Option<i64> {
        self.attributes.iter().find(|a| a.key == key).and_then(|a| {
            match a.value.as_ref()?.value.as_ref()? {
                Value::IntValue(v) => Some(*v),
                Value::StringValue(s) => s.parse().ok(),
                _ => None,
            }
        })
    }
}

/// An OTLP trace collector that keeps what it receives.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().expect("not poisoned");
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(Received {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: span.attributes,
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_event_s_spans_reach_the_collector_in_the_publisher_s_trace() -> anyhow::Result<()>
{
    let collector = Collector::default();
    let port = free_port();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve(format!("127.0.0.1:{port}").parse()?),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ];
    let dir = tempfile::tempdir()?;
    let core = Core::start_with_env(dir.path(), None, &[], &env).await?;
    let mut processor = start_processor_with_env(dir.path(), &core.grpc_url(), &[], &env)?;

    // One key, so they are processed (and their spans end) in this order:
    // whatever the first two exported would be there before the third's.
    let publishes = [
        r#"{"kind":"sha256","key":"k","payload":"untraced"}"#.to_string(),
        format!(
            r#"{{"kind":"sha256","key":"k","payload":"unsampled","traceparent":"00-{UNSAMPLED_TRACE}-b7ad6b7169203331-00"}}"#
        ),
        format!(
            r#"{{"kind":"sha256","key":"k","payload":"traced","traceparent":"00-{TRACE}-{PUBLISHER_SPAN}-01"}}"#
        ),
    ];
    for (seq, body) in (1..).zip(&publishes) {
        let (status, text) = post_json(core.http, "/v1/events", body).await?;
        anyhow::ensure!(status == 202, "publish {seq}: {status} {text}");
        anyhow::ensure!(text.contains(&format!(r#""seq":{seq}"#)), "{text}");
    }

    let names = ["publish", "commit", "deliver", "result", "process"];
    let spans = wait_for(
        "the traced event's five spans",
        Duration::from_secs(30),
        || {
            let spans = collector.spans.lock().expect("not poisoned").clone();
            async move {
                let complete = names
                    .iter()
                    .all(|n| spans.iter().any(|s| s.trace_id == TRACE && s.name == *n));
                complete.then_some(spans)
            }
        },
    )
    .await;
    processor.kill().await;
    server.abort();
    let spans = spans?;

    let one = |name: &str| -> &Received {
        let found: Vec<&Received> = spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one {name} span: {spans:#?}");
        found[0]
    };
    let (publish, commit, deliver, result, process) = (
        one("publish"),
        one("commit"),
        one("deliver"),
        one("result"),
        one("process"),
    );
    for span in [publish, commit, deliver, result] {
        assert_eq!(span.service, "ackflow-core", "{span:?}");
    }
    assert_eq!(process.service, "ackflow-processor", "{process:?}");
    for span in [publish, deliver, process] {
        assert_eq!(
            span.parent_span_id, PUBLISHER_SPAN,
            "under the publisher: {span:?}"
        );
    }
    assert_eq!(
        commit.parent_span_id, publish.span_id,
        "commit inside publish"
    );
    assert_eq!(
        result.parent_span_id, deliver.span_id,
        "result inside deliver"
    );
    assert_eq!(
        publish.int("seq"),
        Some(3),
        "publish names its seq: {publish:?}"
    );
    for span in [deliver, result, process] {
        assert_eq!(span.int("seq"), Some(3), "{span:?}");
    }
    assert_eq!(
        deliver.int("attempts"),
        Some(1),
        "one copy sent: {deliver:?}"
    );
    assert_eq!(result.text("status"), Some("ok"), "{result:?}");
    assert_eq!(process.text("verdict"), Some("ok"), "{process:?}");
    assert!(
        spans.iter().all(|s| s.trace_id == TRACE),
        "nothing of the untraced or unsampled events: {spans:#?}"
    );
    Ok(())
}
