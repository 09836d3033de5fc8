//! Signing and verifying webhook calls exactly as the Standard Webhooks specification does,
//! so receivers can use its libraries (`standardwebhooks`, `svix`): HMAC-SHA256, keyed with
//! the bytes of the user's `whsec_` secret, over `"{webhook-id}.{webhook-timestamp}.{body}"`,
//! sent as `webhook-signature: v1,<base64>`. During a rotation's overlap the header carries
//! one such entry per secret, space separated. [`verify`] is the receiver's side, for Rust
//! receivers and tests.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::secrets::SigningSecret;

/// Name of the delivery id header.
pub const ID_HEADER: &str = "webhook-id";
/// Name of the header carrying the unix time (seconds) of the attempt.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Name of the signature header.
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// Version prefix of the one signature scheme.
const SCHEME: &str = "v1,";

/// The `webhook-signature` value of one attempt: one `v1,` entry per secret, in order.
pub fn sign<'a>(secrets: impl IntoIterator<Item = &'a SigningSecret>, id: &str, timestamp: i64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let entries: Vec<String> = secrets
        .into_iter()
        .map(|secret| {
            let mut mac = mac(secret);
            feed(&mut mac, id, &timestamp, body);
            format!("{SCHEME}{}", STANDARD.encode(mac.finalize().into_bytes()))
        })
        .collect();
    entries.join(" ")
}

fn mac(secret: &SigningSecret) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret.key()).expect("HMAC accepts keys of any length")
}

fn feed(mac: &mut Hmac<Sha256>, id: &str, timestamp: &str, body: &[u8]) {
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
}

/// Why a received call is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("webhook-timestamp is not a unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is {age} s away from now, beyond the {tolerance} s tolerance")]
    Stale { age: i64, tolerance: i64 },
    #[error("webhook-signature holds no v1 signature")]
    NoSignature,
    #[error("no signature matches: the body, id or timestamp was altered, or the secret differs")]
    Mismatch,
}

/// What a receiver got: the three headers (as sent) and the raw body bytes.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub signature: &'a str,
    pub body: &'a [u8],
}

/// The receiver's check: the timestamp is within `tolerance_secs` of `now` (a replay guard)
/// and one of the space-separated `v1,` signatures is the HMAC of the exact bytes received.
/// Comparison is constant-time.
pub fn verify(
    secret: &SigningSecret,
    received: Received<'_>,
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let timestamp: i64 = received.timestamp.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
    let age = (now - timestamp).abs();
    if age > tolerance_secs {
        return Err(VerifyError::Stale { age, tolerance: tolerance_secs });
    }
    let mut candidates = received
        .signature
        .split(' ')
        .filter_map(|s| s.strip_prefix(SCHEME))
        .filter_map(|b| STANDARD.decode(b).ok())
        .peekable();
    if candidates.peek().is_none() {
        return Err(VerifyError::NoSignature);
    }
    let key = mac(secret);
    for candidate in candidates {
        let mut mac = key.clone();
        // The timestamp as received, byte for byte: it is what was signed.
        feed(&mut mac, received.id, received.timestamp, received.body);
        if mac.verify_slice(&candidate).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::secrets::ServerKey;

    fn secret(user: &str) -> SigningSecret {
        ServerKey::new(b"a-test-server-key").derive(user, &[3; 32])
    }

    #[test]
    fn the_specifications_test_vector_signs_alike() {
        // The example of the Standard Webhooks specification and its reference libraries.
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign([&secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_signed_call_verifies_and_any_change_is_caught() {
        let key = secret("alice");
        let signature = sign([&key], "d-1", 1_700_000_000, br#"{"a":1}"#);
        let good = Received { id: "d-1", timestamp: "1700000000", signature: &signature, body: br#"{"a":1}"# };
        assert_eq!(verify(&key, good, 1_700_000_010, 300), Ok(()));

        let tampered_body = Received { body: br#"{"a":2}"#, ..good };
        assert_eq!(verify(&key, tampered_body, 1_700_000_010, 300), Err(VerifyError::Mismatch));
        let tampered_time = Received { timestamp: "1700000001", ..good };
        assert_eq!(verify(&key, tampered_time, 1_700_000_010, 300), Err(VerifyError::Mismatch));
        let other_id = Received { id: "d-2", ..good };
        assert_eq!(verify(&key, other_id, 1_700_000_010, 300), Err(VerifyError::Mismatch));
        assert_eq!(verify(&secret("bob"), good, 1_700_000_010, 300), Err(VerifyError::Mismatch));
    }

    #[test]
    fn old_or_unsigned_calls_are_refused_and_either_of_two_signatures_passes() {
        let (old, new) = (secret("old"), secret("new"));
        let signature = sign([&new], "d", 1000, b"x");
        let call = Received { id: "d", timestamp: "1000", signature: &signature, body: b"x" };
        assert_eq!(verify(&new, call, 1000 + 301, 300), Err(VerifyError::Stale { age: 301, tolerance: 300 }));
        assert_eq!(verify(&new, Received { timestamp: "soon", ..call }, 1000, 300), Err(VerifyError::BadTimestamp));
        assert_eq!(verify(&new, Received { signature: "v1=abcd", ..call }, 1000, 300), Err(VerifyError::NoSignature));

        // A rotation's overlap: both entries, each verifiable with its own secret only.
        let both = sign([&new, &old], "d", 1000, b"x");
        assert_eq!(both.split(' ').count(), 2, "{both}");
        let call = Received { signature: &both, ..call };
        assert_eq!(verify(&new, call, 1000, 300), Ok(()));
        assert_eq!(verify(&old, call, 1000, 300), Ok(()));
        assert_eq!(verify(&secret("third"), call, 1000, 300), Err(VerifyError::Mismatch));
    }
}
