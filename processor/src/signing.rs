//! Webhook signatures as the Standard Webhooks specification defines them
//! (<https://www.standardwebhooks.com>), so that a receiver's stock verifier
//! accepts them:
//!
//! * `webhook-id`: the event's id, the same on every attempt;
//! * `webhook-timestamp`: seconds since the Unix epoch at the call;
//! * `webhook-signature`: `v1,<base64 of HMAC-SHA256(key, "id.timestamp.body")>`,
//!   one per secret, separated by spaces (two during a rotation).
//!
//! A secret is written `whsec_<base64 key>`. Secrets come from a file or the
//! environment, never from the command line, and are never printed: their
//! `Debug` says only how many there are.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Most secrets a webhook signs with at once (the old and the new one
/// during a rotation).
pub const MAX_SECRETS: usize = 2;

/// A webhook's signing keys, each decoded from `whsec_<base64>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets(Vec<Vec<u8>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

impl Secrets {
    /// Reads one or two secrets separated by whitespace (a file with one per
    /// line, or an environment variable's value). The error never contains
    /// the text it read.
    pub fn parse(text: &str) -> Result<Self, String> {
        let keys = text
            .split_whitespace()
            .enumerate()
            .map(|(i, secret)| {
                let encoded = secret
                    .strip_prefix("whsec_")
                    .ok_or_else(|| format!("secret {} does not start with whsec_", i + 1))?;
                match STANDARD.decode(encoded) {
                    Ok(key) if !key.is_empty() => Ok(key),
                    Ok(_) => Err(format!("secret {} is empty", i + 1)),
                    Err(_) => Err(format!("secret {} is not whsec_ and base64", i + 1)),
                }
            })
            .collect::<Result<Vec<_>, String>>()?;
        match keys.len() {
            0 => Err("no secret (expected whsec_<base64>)".into()),
            n if n > MAX_SECRETS => Err(format!(
                "{n} secrets; at most {MAX_SECRETS} (the old and the new one during a rotation)"
            )),
            _ => Ok(Self(keys)),
        }
    }

    /// The `webhook-signature` header value for one call.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut header = String::new();
        for key in &self.0 {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            if !header.is_empty() {
                header.push(' ');
            }
            header.push_str("v1,");
            header.push_str(&STANDARD.encode(mac.finalize().into_bytes()));
        }
        header
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_example_signs_as_published() {
        // The example of the Standard Webhooks specification (and of its
        // reference libraries' tests).
        let secrets = Secrets::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secrets.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn two_secrets_sign_twice_and_bad_ones_are_refused_without_echoing_them() {
        let two = Secrets::parse("whsec_c2VjcmV0LW9uZQ==\nwhsec_c2VjcmV0LXR3bw==\n").unwrap();
        let header = two.sign("id", 1, b"{}");
        assert_eq!(header.split(' ').count(), 2, "{header}");
        assert!(header.split(' ').all(|s| s.starts_with("v1,")));
        assert_eq!(format!("{two:?}"), "Secrets(2 redacted)");
        for bad in [
            "",
            "c2VjcmV0",
            "whsec_!!!",
            "whsec_",
            "whsec_YQ== whsec_YQ== whsec_YQ==",
        ] {
            let error = Secrets::parse(bad).unwrap_err();
            assert!(bad.is_empty() || !error.contains(bad), "{error}");
        }
    }
}
