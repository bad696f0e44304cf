//! Validation of published events, shared by REST and gRPC so that both
//! reject the same input with the same message.

use crate::model::NewEvent;

/// Size limits applied to every publish.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted payload, in bytes.
    pub max_payload_bytes: usize,
    /// Largest number of events in one batch request.
    pub max_batch_events: usize,
}

/// Longest `kind`.
pub const MAX_KIND_LEN: usize = 64;
/// Longest `key` and `idempotency_key`, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// Deepest JSON nesting accepted in a payload.
pub const MAX_JSON_DEPTH: usize = 64;

/// A publish that cannot be accepted; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A field's value is not allowed; the message names the field.
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },
    /// The payload is over the size limit.
    #[error("payload is {size} bytes, more than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    /// The payload nests arrays and objects deeper than [`MAX_JSON_DEPTH`].
    #[error("payload: nested deeper than {limit} levels")]
    TooDeep { limit: usize },
}

fn field(field: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid::Field {
        field,
        reason: reason.into(),
    }
}

/// Checks an event kind: 1 to 64 letters, digits, '_', '-' and '.'. Also
/// the value parser of core's `--at-most-once`.
pub fn kind(kind: &str) -> Result<String, String> {
    if kind.is_empty() {
        return Err("must not be empty".into());
    }
    if kind.len() > MAX_KIND_LEN {
        return Err(format!("longer than {MAX_KIND_LEN} characters"));
    }
    if !kind
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err("only letters, digits, '_', '-' and '.' are allowed".into());
    }
    Ok(kind.to_string())
}

/// Checks the fields of one event. The payload must already be JSON text.
pub fn check(event: &NewEvent, limits: &Limits) -> Result<(), Invalid> {
    kind(&event.kind).map_err(|reason| field("kind", reason))?;
    if event.key.as_ref().is_some_and(|k| k.len() > MAX_KEY_LEN) {
        return Err(field("key", format!("longer than {MAX_KEY_LEN} bytes")));
    }
    // PostgreSQL's TEXT refuses NUL while SQLite stores it: one rule for
    // both stores, checked before the group commit so that one bad key can
    // never fail the innocent events committed with it.
    if event.key.as_deref().is_some_and(has_control) {
        return Err(field("key", CONTROL_CHARACTERS));
    }
    if event.idempotency_key.as_deref().is_some_and(has_control) {
        return Err(field("idempotency_key", CONTROL_CHARACTERS));
    }
    // Core's own keys (`ackflow-requeue:N`, so that a repeated Requeue
    // returns the same copy) must not be taken by a client: a client's event
    // would then stand in for the requeued copy.
    // Compared as bytes: a key's first 8 bytes may end inside a character.
    if event.idempotency_key.as_deref().is_some_and(|k| {
        k.as_bytes()
            .get(..RESERVED_PREFIX.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(RESERVED_PREFIX.as_bytes()))
    }) {
        return Err(field(
            "idempotency_key",
            format!("the prefix {RESERVED_PREFIX:?} is reserved for core"),
        ));
    }
    if event
        .idempotency_key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > MAX_KEY_LEN)
    {
        return Err(field(
            "idempotency_key",
            format!("must be 1 to {MAX_KEY_LEN} bytes"),
        ));
    }
    // The edges read it with `trace::traceparent`; anything else is refused
    // here, so the store and the processor only ever see that form.
    if event
        .traceparent
        .as_deref()
        .is_some_and(|t| !crate::trace::is_canonical(t))
    {
        return Err(field(
            crate::trace::TRACEPARENT,
            "not in W3C version-00 form (read it with trace::traceparent)",
        ));
    }
    if event.payload.len() > limits.max_payload_bytes {
        return Err(Invalid::TooLarge {
            size: event.payload.len(),
            limit: limits.max_payload_bytes,
        });
    }
    Ok(())
}

/// Longest result output stored; a processor's longer output is cut.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// Longest reject reason stored with a dead event.
pub const MAX_REASON_BYTES: usize = 4 * 1024;

/// Makes text from a processor (an output, a reject reason) storable on
/// both stores: NUL, which PostgreSQL's TEXT refuses, becomes U+FFFD, and
/// text over `max` bytes is cut at a character boundary and marked with
/// `…`. Without this, one hostile or buggy output would fail every retry of
/// the result writer's batch and hold the acked floor forever.
pub fn storable_text(text: String, max: usize) -> String {
    let mut text = if text.contains('\0') {
        text.replace('\0', "\u{fffd}")
    } else {
        text
    };
    if text.len() > max {
        let mut end = max.saturating_sub('…'.len_utf8());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Idempotency keys core uses itself start with this (any case).
pub const RESERVED_PREFIX: &str = "ackflow-";

const CONTROL_CHARACTERS: &str = "must not contain control characters (U+0000 to U+001F, U+007F)";

/// True when `text` holds a C0 control character (NUL included) or DEL.
fn has_control(text: &str) -> bool {
    text.bytes().any(|b| b < 0x20 || b == 0x7f)
}

/// Checks that the JSON text of a payload nests no deeper than
/// [`MAX_JSON_DEPTH`]. REST and gRPC apply the same limit.
pub fn check_depth(text: &str) -> Result<(), Invalid> {
    if json_depth(text) > MAX_JSON_DEPTH {
        return Err(Invalid::TooDeep {
            limit: MAX_JSON_DEPTH,
        });
    }
    Ok(())
}

/// Checks that `payload` is a JSON document no deeper than
/// [`MAX_JSON_DEPTH`]. Used for gRPC, where the payload arrives as bytes.
/// The depth scan runs only when the payload holds more than
/// [`MAX_JSON_DEPTH`] brackets at all (a count the compiler vectorises):
/// fewer cannot nest deeper. Most payloads are then parsed once, nothing
/// more (the scan cost more than the parse in W1's profile).
pub fn check_json(payload: &[u8]) -> Result<(), Invalid> {
    let text = std::str::from_utf8(payload).map_err(|_| field("payload", "is not valid UTF-8"))?;
    let openers = payload.iter().filter(|&&b| b == b'[' || b == b'{').count();
    if openers > MAX_JSON_DEPTH {
        check_depth(text)?;
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| field("payload", format!("is not valid JSON: {e}")))?;
    Ok(())
}

/// Deepest nesting of `[` and `{` outside strings. Cheap, and run before the
/// parser so that deep input never reaches recursion.
pub fn json_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> NewEvent {
        NewEvent {
            kind: kind.into(),
            key: None,
            payload: b"{}".to_vec(),
            idempotency_key: None,
            traceparent: None,
        }
    }

    const LIMITS: Limits = Limits {
        max_payload_bytes: 16,
        max_batch_events: 10,
    };

    #[test]
    fn kind_rules() {
        assert!(check(&event("sha256"), &LIMITS).is_ok());
        assert!(check(&event(""), &LIMITS).is_err());
        assert!(check(&event("a b"), &LIMITS).is_err());
        assert!(check(&event(&"k".repeat(65)), &LIMITS).is_err());
    }

    #[test]
    fn control_characters_in_keys() {
        for bad in ["a\u{0}", "\n", "x\u{1f}y", "\u{7f}"] {
            let mut e = event("k");
            e.key = Some(bad.into());
            assert!(
                matches!(check(&e, &LIMITS), Err(Invalid::Field { field: "key", .. })),
                "{bad:?}"
            );
            let mut e = event("k");
            e.idempotency_key = Some(bad.into());
            assert!(
                matches!(
                    check(&e, &LIMITS),
                    Err(Invalid::Field {
                        field: "idempotency_key",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        let mut e = event("k");
        e.key = Some("ü-ключ 🔑".into());
        assert!(check(&e, &LIMITS).is_ok());
    }

    #[test]
    fn the_reserved_prefix_is_refused_to_clients() {
        for key in ["ackflow-requeue:5", "AckFlow-x", "ackflow-"] {
            let mut e = event("k");
            e.idempotency_key = Some(key.into());
            assert!(check(&e, &LIMITS).is_err(), "{key:?}");
        }
        // A multi-byte character across the 8th byte must not panic.
        for key in ["ackflow", "my-ackflow-key", "é", "ㄋõ/𞹾𐲦:"] {
            let mut e = event("k");
            e.idempotency_key = Some(key.into());
            assert!(check(&e, &LIMITS).is_ok(), "{key:?}");
        }
    }

    #[test]
    fn processor_text_is_made_storable() {
        assert_eq!(storable_text("ok".into(), 10), "ok");
        assert_eq!(storable_text("a\0b".into(), 10), "a\u{fffd}b");
        let cut = storable_text("é".repeat(10), 9);
        assert_eq!(cut, "ééé…");
        assert_eq!(storable_text("abc".into(), 3), "abc");
    }

    #[test]
    fn payload_limit() {
        let mut e = event("sum");
        e.payload = vec![b'1'; 17];
        assert_eq!(
            check(&e, &LIMITS),
            Err(Invalid::TooLarge {
                size: 17,
                limit: 16
            })
        );
    }

    #[test]
    fn json_checks() {
        assert!(check_json(b"[1,2]").is_ok());
        assert!(check_json(b"[1,").is_err());
        assert!(check_json(&[0xff, 0xfe]).is_err());
        let deep = "[".repeat(65) + &"]".repeat(65);
        assert!(check_json(deep.as_bytes()).is_err());
    }

    #[test]
    fn check_json_stops_at_the_depth_limit_and_names_it() {
        let nested =
            |n: usize, open: &str, close: &str| format!("{}1{}", open.repeat(n), close.repeat(n));
        let objects = |n: usize| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
        for text in [
            nested(MAX_JSON_DEPTH, "[", "]"),
            objects(MAX_JSON_DEPTH),
            format!(
                "[{},{}]",
                nested(MAX_JSON_DEPTH - 1, "[", "]"),
                objects(MAX_JSON_DEPTH - 1)
            ),
        ] {
            assert_eq!(check_json(text.as_bytes()), Ok(()), "{text}");
            assert_eq!(json_depth(&text), MAX_JSON_DEPTH);
        }
        for text in [
            nested(MAX_JSON_DEPTH + 1, "[", "]"),
            objects(MAX_JSON_DEPTH + 1),
            nested(100_000, "[", "]"),
            format!("[1,{}]", objects(MAX_JSON_DEPTH)),
        ] {
            assert_eq!(
                check_json(text.as_bytes()),
                Err(Invalid::TooDeep {
                    limit: MAX_JSON_DEPTH
                })
            );
        }
        // Not JSON, shallow: the parser's own error.
        assert!(matches!(
            check_json(b"{\"a\":}"),
            Err(Invalid::Field {
                field: "payload",
                ..
            })
        ));
        assert!(matches!(
            check_json(b"[1] 2"),
            Err(Invalid::Field {
                field: "payload",
                ..
            })
        ));
        // Many brackets, shallow: the depth scan runs and lets it through.
        let wide = format!("[{}]", vec!["[]"; 1000].join(","));
        assert_eq!(check_json(wide.as_bytes()), Ok(()));
        // Numbers are not read as numbers: out of f64's range is still JSON.
        assert_eq!(
            check_json(b"[1e400, -1e400, 123456789012345678901234567890]"),
            Ok(())
        );
        // Brackets inside strings are not nesting.
        let quoted = format!("[\"{}\"]", "[".repeat(1000));
        assert_eq!(check_json(quoted.as_bytes()), Ok(()));
        assert_eq!(json_depth(r#"{"a":"[[[["}"#), 1);
    }
}
