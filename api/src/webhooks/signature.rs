//! Signing and verifying webhook calls: HMAC-SHA256 over `"{id}.{timestamp}.{body}"`, sent
//! as `Webhook-Signature: v1=<lowercase hex>` (the scheme of the crate docs in
//! [`crate::webhooks`]). [`verify`] is the receiver's side, for Rust receivers and tests.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Name of the delivery id header.
pub const ID_HEADER: &str = "webhook-id";
/// Name of the header carrying the unix time (seconds) of the attempt.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Name of the signature header.
pub const SIGNATURE_HEADER: &str = "webhook-signature";
/// Version prefix of the one signature scheme.
const SCHEME: &str = "v1=";

/// Signs webhook calls with one shared secret.
#[derive(Clone)]
pub struct WebhookSigner {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for WebhookSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSigner(..)") // never the key
    }
}

impl WebhookSigner {
    pub fn new(secret: &[u8]) -> Self {
        Self { mac: mac(secret) }
    }

    /// The `Webhook-Signature` value of one attempt.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        feed(&mut mac, id, &timestamp.to_string(), body);
        format!("{SCHEME}{}", hex::encode(mac.finalize().into_bytes()))
    }
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length")
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
    #[error("Webhook-Timestamp is not a unix time in seconds")]
    BadTimestamp,
    #[error("Webhook-Timestamp is {age} s away from now, beyond the {tolerance} s tolerance")]
    Stale { age: i64, tolerance: i64 },
    #[error("Webhook-Signature holds no v1 signature")]
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
/// and one of the space-separated `v1=` signatures is the HMAC of the exact bytes received.
/// Comparison is constant-time.
pub fn verify(secret: &[u8], received: Received<'_>, now: i64, tolerance_secs: i64) -> Result<(), VerifyError> {
    let timestamp: i64 = received.timestamp.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
    let age = (now - timestamp).abs();
    if age > tolerance_secs {
        return Err(VerifyError::Stale { age, tolerance: tolerance_secs });
    }
    let mut candidates = received
        .signature
        .split_whitespace()
        .filter_map(|s| s.strip_prefix(SCHEME))
        .filter_map(|h| hex::decode(h).ok())
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

    const SECRET: &[u8] = b"a-test-secret-of-some-length";

    #[test]
    fn a_signed_call_verifies_and_any_change_is_caught() {
        let signature = WebhookSigner::new(SECRET).sign("d-1", 1_700_000_000, br#"{"a":1}"#);
        assert!(signature.starts_with("v1=") && signature.len() == 3 + 64, "{signature}");
        let good = Received { id: "d-1", timestamp: "1700000000", signature: &signature, body: br#"{"a":1}"# };
        assert_eq!(verify(SECRET, good, 1_700_000_010, 300), Ok(()));

        let tampered_body = Received { body: br#"{"a":2}"#, ..good };
        assert_eq!(verify(SECRET, tampered_body, 1_700_000_010, 300), Err(VerifyError::Mismatch));
        let tampered_time = Received { timestamp: "1700000001", ..good };
        assert_eq!(verify(SECRET, tampered_time, 1_700_000_010, 300), Err(VerifyError::Mismatch));
        let other_id = Received { id: "d-2", ..good };
        assert_eq!(verify(SECRET, other_id, 1_700_000_010, 300), Err(VerifyError::Mismatch));
        assert_eq!(verify(b"another-secret-entirely", good, 1_700_000_010, 300), Err(VerifyError::Mismatch));
    }

    #[test]
    fn old_or_unsigned_calls_are_refused() {
        let signature = WebhookSigner::new(SECRET).sign("d", 1000, b"x");
        let call = Received { id: "d", timestamp: "1000", signature: &signature, body: b"x" };
        assert_eq!(verify(SECRET, call, 1000 + 301, 300), Err(VerifyError::Stale { age: 301, tolerance: 300 }));
        assert_eq!(verify(SECRET, Received { timestamp: "soon", ..call }, 1000, 300), Err(VerifyError::BadTimestamp));
        assert_eq!(verify(SECRET, Received { signature: "v0=abcd", ..call }, 1000, 300), Err(VerifyError::NoSignature));
        // One valid signature among several (a receiver rotating keys) is enough.
        let both = format!("v1=00ff {signature}");
        assert_eq!(verify(SECRET, Received { signature: &both, ..call }, 1000, 300), Ok(()));
    }
}
