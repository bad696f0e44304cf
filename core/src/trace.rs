//! Trace context: the W3C `traceparent` (<https://www.w3.org/TR/trace-context/>)
//! that lets one event be followed from the publisher's trace to the
//! processor's work and back.
//!
//! A publisher sends it as the `traceparent` header (REST) or metadata
//! (gRPC), or per event as the `traceparent` field; the field wins. Core
//! checks it here, stores it with the event, sends it to the processor in
//! `Event.traceparent` and returns it on `GET /v1/events/{seq}`. The
//! processor logs it with its work and hands it to the algorithm; a webhook
//! gets it as its own `traceparent` header.
//!
//! A malformed value is refused with the reason, like any other bad field:
//! ackflow stores it and hands it to code that trusts it, so a broken
//! tracer is told rather than silently cut off from its traces. It is not
//! part of an idempotency key's fingerprint: a retried publish carries the
//! retry's own trace, and a replay keeps the first one.
//!
//! The spans of a traced event's way through core are made here (`publish`,
//! `commit`, `deliver`, `result`; the table is in `ackflow_proto::telemetry`,
//! which also exports them over OTLP with the `otlp` feature). Each is a
//! child of the publisher's span, at debug level: `None` for an event
//! without trace context, and when nothing records the span (the default
//! log filter and no export), so untraced events and untraced
//! deployments pay nothing.

use tracing::Span;

use crate::model::{NewEvent, Seq, StoredEvent};
use crate::validate::Invalid;

/// The header (REST) and metadata key (gRPC) that carries it.
pub const TRACEPARENT: &str = "traceparent";

/// Checks a `traceparent` and returns it in the version-00 form core stores
/// and passes on: `00-<trace-id>-<parent-id>-<trace-flags>`, 55 characters
/// of lowercase hex and dashes.
///
/// As the specification asks, a later version is read for its first four
/// fields (anything after them is dropped) and version `ff` is refused; an
/// all-zero trace-id or parent-id is refused. Surrounding spaces and tabs
/// (optional whitespace in an HTTP header) are ignored.
pub fn traceparent(value: &str) -> Result<String, Invalid> {
    parse(value.trim_matches([' ', '\t'])).map_err(|reason| Invalid::Field {
        field: TRACEPARENT,
        reason: format!(
            "{reason}; expected W3C trace context \
             00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>"
        ),
    })
}

/// Reads a request's `traceparent` header (REST) or metadata (gRPC) from
/// its raw bytes: the trace context of every event the request publishes
/// that has none of its own.
pub fn from_header(value: Option<&[u8]>) -> Result<Option<String>, Invalid> {
    // Bytes that are not ASCII are refused by `traceparent` by name.
    value
        .map(|bytes| traceparent(&String::from_utf8_lossy(bytes)))
        .transpose()
}

/// True when `value` is a traceparent in the form [`traceparent`] returns.
pub fn is_canonical(value: &str) -> bool {
    traceparent(value).is_ok_and(|canonical| canonical == value)
}

/// `publish`: from the request's arrival until its answer; `seq` is
/// recorded once the event is committed.
pub fn publish_span(event: &NewEvent) -> Option<Span> {
    let traceparent = event.traceparent.as_deref()?;
    let span = tracing::debug_span!(
        "publish",
        kind = %event.kind,
        seq = tracing::field::Empty,
        traceparent,
    );
    child_of(span, traceparent)
}

/// `commit`, inside `publish`: the group commit that stores the event.
pub fn commit_span(publish: &Span, events: usize) -> Span {
    tracing::debug_span!(parent: publish, "commit", events)
}

/// `deliver`: from the event's first send until its result is stored.
pub fn deliver_span(event: &StoredEvent) -> Option<Span> {
    let traceparent = event.traceparent.as_deref()?;
    let span = tracing::debug_span!(
        "deliver",
        seq = event.seq,
        kind = %event.kind,
        attempts = 1u32,
        traceparent,
    );
    child_of(span, traceparent)
}

/// `result`, inside `deliver`: from the accepted ack (or the park) until
/// its row is stored.
pub fn result_span(deliver: &Span, seq: Seq, status: &str, attempt: u32) -> Span {
    tracing::debug_span!(parent: deliver, "result", seq, status, attempt)
}

fn child_of(span: Span, traceparent: &str) -> Option<Span> {
    if span.is_disabled() {
        return None;
    }
    ackflow_proto::telemetry::set_parent(&span, traceparent);
    Some(span)
}

fn parse(value: &str) -> Result<String, String> {
    const LEN: usize = 55;
    let bytes = value.as_bytes();
    // Every field below is sliced by byte position.
    if !value.is_ascii() {
        return Err("it holds characters other than ASCII".into());
    }
    if bytes.len() < LEN {
        return Err(format!("{} characters, fewer than {LEN}", bytes.len()));
    }
    let version = &value[..2];
    if !is_hex(version) {
        return Err("the version is not two lowercase hex digits".into());
    }
    if version == "ff" {
        return Err("version ff is invalid".into());
    }
    if version == "00" && bytes.len() != LEN {
        return Err(format!("{} characters; version 00 has {LEN}", bytes.len()));
    }
    if bytes.len() > LEN && bytes[LEN] != b'-' {
        return Err("a later version's fields must follow a '-'".into());
    }
    if [2, 35, 52].iter().any(|&i| bytes[i] != b'-') {
        return Err("the fields are not separated by '-' at 3, 36 and 53".into());
    }
    let (trace_id, parent_id, flags) = (&value[3..35], &value[36..52], &value[53..55]);
    for (name, field) in [
        ("trace-id", trace_id),
        ("parent-id", parent_id),
        ("trace-flags", flags),
    ] {
        if !is_hex(field) {
            return Err(format!("the {name} is not lowercase hex"));
        }
    }
    if trace_id.bytes().all(|b| b == b'0') {
        return Err("the trace-id is all zeros".into());
    }
    if parent_id.bytes().all(|b| b == b'0') {
        return Err("the parent-id is all zeros".into());
    }
    Ok(format!("00-{trace_id}-{parent_id}-{flags}"))
}

fn is_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_version_00_value_is_kept_as_it_is() {
        assert_eq!(traceparent(GOOD).unwrap(), GOOD);
        assert_eq!(traceparent(&format!(" \t{GOOD} ")).unwrap(), GOOD);
        assert!(is_canonical(GOOD));
        assert!(!is_canonical(&format!(" {GOOD}")));
    }

    #[test]
    fn a_header_is_read_from_its_bytes() {
        assert_eq!(from_header(None).unwrap(), None);
        assert_eq!(from_header(Some(GOOD.as_bytes())).unwrap().unwrap(), GOOD);
        let mut bytes = GOOD.as_bytes().to_vec();
        bytes[10] = 0xff;
        let err = from_header(Some(&bytes)).unwrap_err().to_string();
        assert!(err.contains("other than ASCII"), "{err}");
    }

    #[test]
    fn a_later_version_is_read_for_its_first_four_fields() {
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        assert_eq!(traceparent(v1).unwrap(), GOOD);
        let v1_plain = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(traceparent(v1_plain).unwrap(), GOOD);
    }

    #[test]
    fn malformed_values_are_refused_with_the_reason() {
        let cases = [
            ("", "0 characters"),
            (&GOOD[..54], "54 characters"),
            (&format!("{GOOD}-00"), "version 00 has 55"),
            (&GOOD.replace("00-4b", "ff-4b"), "version ff"),
            (&GOOD.replace("00-4b", "0g-4b"), "version is not"),
            (&GOOD.to_uppercase(), "trace-id is not lowercase hex"),
            (
                &GOOD.replace("-00f0", "-00F0"),
                "parent-id is not lowercase hex",
            ),
            (&GOOD.replace("-00f0", "_00f0"), "not separated"),
            (&GOOD.replace("-01", "-0x"), "trace-flags is not"),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "trace-id is all zeros",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "parent-id is all zeros",
            ),
            (
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
                "must follow a '-'",
            ),
            // Multi-byte text must not split a character.
            (&"é".repeat(28), "other than ASCII"),
            (&format!("00-é{}", &GOOD[5..]), "other than ASCII"),
        ];
        for (value, reason) in cases {
            let err = traceparent(value).unwrap_err().to_string();
            assert!(
                err.starts_with("traceparent: ") && err.contains(reason),
                "{value:?}: {err}"
            );
        }
    }
}
