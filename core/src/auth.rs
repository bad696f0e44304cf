//! Bearer tokens: which role may use which service.
//!
//! Each role has a token of its own (`authorization: Bearer <token>`),
//! compared in constant time:
//!
//! | token | guards |
//! |---|---|
//! | `--publish-token` | every REST route but the open ones ([`OPEN_PATHS`]): publishing and reading events and results; the gRPC `Ingest` service |
//! | `--processor-token` | `Delivery.Subscribe` (the processor's stream) |
//! | `--admin-token` | every `Admin` method (the monitor) |
//!
//! A role without a token is open to anyone who reaches the port; core
//! refuses that on a non-loopback address unless started with `--insecure`
//! (`Config::check`). gRPC health and reflection are always open: they tell
//! whether core serves and what its schema is, nothing more.

use std::sync::Arc;

use ackflow_proto::token::Token;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tonic::Status;

/// REST paths served without a token whatever is configured: liveness,
/// readiness and metrics, which probes and scrapers call without
/// credentials and which reveal no event.
pub const OPEN_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Compares without an early exit over the bytes, so the time taken does
/// not tell how many leading bytes matched (only whether the lengths do).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// What a request presented, against the token expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// `Bearer <the token>`.
    Right,
    /// No `authorization` at all.
    Nothing,
    /// Something else: another token, another scheme, a malformed value.
    Wrong,
}

/// Checks an `authorization` value (HTTP header or gRPC metadata) against
/// `expected`. The scheme is matched as clients send it, `Bearer ` exactly.
pub fn presented(expected: &Token, authorization: Option<&[u8]>) -> Presented {
    let Some(value) = authorization else {
        return Presented::Nothing;
    };
    match value.strip_prefix(b"Bearer ") {
        Some(token) if constant_time_eq(token, expected.expose().as_bytes()) => Presented::Right,
        _ => Presented::Wrong,
    }
}

/// An interceptor requiring `authorization: Bearer <token>` when a token is
/// configured, and letting everything through when none is.
pub fn bearer(
    token: Option<Token>,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, Status> + Clone {
    move |request: tonic::Request<()>| {
        let Some(expected) = &token else {
            return Ok(request);
        };
        let authorization = request.metadata().get("authorization");
        match presented(expected, authorization.map(|v| v.as_bytes())) {
            Presented::Right => Ok(request),
            Presented::Nothing | Presented::Wrong => {
                Err(Status::unauthenticated("missing or wrong bearer token"))
            }
        }
    }
}

/// Puts every route of `router` but [`OPEN_PATHS`] behind the publish
/// token, when there is one. Everything else is guarded, not just the
/// routes known today, so a route added later is never open by accident.
pub fn require_publish_token(router: axum::Router, token: Option<Token>) -> axum::Router {
    match token {
        None => router,
        Some(token) => router.layer(axum::middleware::from_fn_with_state(
            Arc::new(token),
            rest_bearer,
        )),
    }
}

/// The REST check: `401` problem+json with `WWW-Authenticate: Bearer`
/// (RFC 6750 §3) before the handler reads anything, so nothing is stored
/// or read.
async fn rest_bearer(State(token): State<Arc<Token>>, request: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let authorization = request.headers().get(header::AUTHORIZATION);
    let (detail, challenge) = match presented(&token, authorization.map(|v| v.as_bytes())) {
        Presented::Right => return next.run(request).await,
        Presented::Nothing => (
            "this route needs authorization: Bearer <token> (core's --publish-token)",
            r#"Bearer realm="ackflow""#,
        ),
        Presented::Wrong => (
            "the bearer token is wrong (core's --publish-token)",
            r#"Bearer realm="ackflow", error="invalid_token""#,
        ),
    };
    let mut response = crate::rest::Problem::unauthorized(detail).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_whole_tokens() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        let token = Token::from("secret");
        assert_eq!(presented(&token, None), Presented::Nothing);
        assert_eq!(presented(&token, Some(b"Bearer secret")), Presented::Right);
        for wrong in [
            &b"Bearer secre"[..],
            b"Bearer secrets",
            b"Basic secret",
            b"secret",
        ] {
            assert_eq!(presented(&token, Some(wrong)), Presented::Wrong);
        }
        let mut check = bearer(Some(token));
        assert!(check(tonic::Request::new(())).is_err());
        let mut ok = tonic::Request::new(());
        ok.metadata_mut()
            .insert("authorization", "Bearer secret".parse().unwrap());
        assert!(check(ok).is_ok());
        assert!(bearer(None)(tonic::Request::new(())).is_ok());
    }
}
