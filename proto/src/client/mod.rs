//! What every gRPC client of core shares (the processor, the monitor):
//! the endpoint's timeouts and keepalive, TLS towards core ([`tls`]), the
//! bearer token on every request ([`Bearer`]) and the wait before the next
//! try after a stream ended ([`reconnect_delay`]), and finding the leader
//! among several cores ([`leader`]). Only with the `grpc` feature.

pub mod leader;
pub mod tls;

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::Endpoint;

use crate::token::{Token, TokenDefect};

/// Longest a TCP connect to core may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The endpoint for core at `url`: connect timeout, no Nagle delay, and
/// HTTP/2 keepalive, so that a core that vanished without closing the
/// connection is noticed within seconds instead of hours. TLS is added by
/// [`tls::configure`].
pub fn endpoint(url: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
}

/// Adds `authorization: Bearer <token>` to every request when a token is
/// set.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// The interceptor for `token` (none: requests go out without one).
    pub fn new(token: Option<&Token>) -> Result<Self, TokenDefect> {
        Ok(Self(token.map(Token::authorization).transpose()?))
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The wait before try number `failures + 1` to reach core: `min` doubled
/// per failure up to `max`, then between half and all of it, so that many
/// clients do not dial a restarted core in lockstep.
pub fn reconnect_delay(failures: u32, min: Duration, max: Duration) -> Duration {
    let base = min
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(max);
    base.mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delay_doubles_up_to_the_cap_with_jitter() {
        let (min, max) = (Duration::from_millis(250), Duration::from_secs(5));
        for _ in 0..100 {
            let first = reconnect_delay(1, min, max);
            assert!(first >= min / 2 && first <= min, "{first:?}");
            let third = reconnect_delay(3, min, max);
            assert!(third >= Duration::from_millis(500) && third <= Duration::from_secs(1));
            let late = reconnect_delay(40, min, max);
            assert!(late >= max / 2 && late <= max, "{late:?}");
        }
    }

    #[test]
    fn bearer_token_goes_into_the_authorization_header() {
        let token = Token::from("s3cret-token-0123");
        let mut bearer = Bearer::new(Some(&token)).expect("valid token");
        let request = bearer.call(tonic::Request::new(())).expect("intercepted");
        assert_eq!(
            request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer s3cret-token-0123")
        );
        let mut none = Bearer::new(None).expect("no token");
        let request = none.call(tonic::Request::new(())).expect("intercepted");
        assert!(request.metadata().get("authorization").is_none());
        assert!(Bearer::new(Some(&Token::from("bad\ntoken"))).is_err());
    }
}
