//! Bearer-token checks for the gRPC services.

use tonic::{Request, Status};

/// Compares without an early exit, so the time taken does not tell how many
/// leading bytes matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An interceptor requiring `authorization: Bearer <token>` when a token is
/// configured, and letting everything through when none is.
pub fn bearer(
    token: Option<String>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        let Some(expected) = &token else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("missing or wrong bearer token"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_whole_tokens() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        let mut check = bearer(Some("secret".into()));
        assert!(check(Request::new(())).is_err());
        let mut ok = Request::new(());
        ok.metadata_mut()
            .insert("authorization", "Bearer secret".parse().unwrap());
        assert!(check(ok).is_ok());
        assert!(bearer(None)(Request::new(())).is_ok());
    }
}
