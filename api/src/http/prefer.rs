//! The `Prefer` request header (RFC 7240), of which the API honours `wait=N`: answer once the
//! task has ended, or after N seconds, whichever comes first.
//!
//! A preference is a hint: a header that does not parse, a `wait` whose value is not a
//! number of seconds, or preferences this server does not know are ignored, never refused
//! (RFC 7240 §2). Only the first `wait` counts when several are sent (§2). Waits longer than
//! [`MAX_WAIT_SECS`] are shortened to it, and the answer's `Preference-Applied` says how long
//! the server actually waited for.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};

/// The longest wait a request may hold its connection for; longer ones are shortened to it.
pub const MAX_WAIT_SECS: u64 = 60;

/// The name of the header that names the preferences a response honoured.
pub const PREFERENCE_APPLIED: &str = "preference-applied";

/// A `wait` preference the server can honour: 1 to [`MAX_WAIT_SECS`] seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    seconds: u64,
}

impl Wait {
    /// The first `wait` preference of the request's `Prefer` headers, shortened to
    /// [`MAX_WAIT_SECS`]; `None` when there is none, it is malformed, or it is `wait=0`.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let value = headers
            .get_all(header::HeaderName::from_static("prefer"))
            .iter()
            // A field that is not visible ASCII cannot hold a valid preference.
            .filter_map(|field| field.to_str().ok())
            .flat_map(preferences)
            .find_map(|preference| {
                let (name, value) = name_and_value(preference);
                name.eq_ignore_ascii_case("wait").then_some(value)
            })?;
        let seconds = delta_seconds(value?)?;
        (seconds > 0).then(|| Self { seconds: seconds.min(MAX_WAIT_SECS) })
    }

    pub fn duration(self) -> Duration {
        Duration::from_secs(self.seconds)
    }

    /// `Preference-Applied: wait=N`, N the seconds actually granted.
    pub fn applied(self) -> HeaderValue {
        // Digits after `wait=` are always a valid value; the fallback is unreachable.
        HeaderValue::try_from(format!("wait={}", self.seconds)).unwrap_or(HeaderValue::from_static("wait"))
    }
}

/// Splits a `Prefer` field into its preferences at the commas outside quoted strings.
fn preferences(field: &str) -> Vec<&str> {
    split_outside_quotes(field, ',').into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

/// The `token [= word]` of a preference, without its `; parameter`s, the value's quotes
/// removed. Escapes inside them are left as they are: a number has none, so a quoted value
/// with one fails to parse as a number, as it should.
fn name_and_value(preference: &str) -> (&str, Option<&str>) {
    let head = split_outside_quotes(preference, ';').into_iter().next().unwrap_or_default();
    match head.split_once('=') {
        Some((name, value)) => {
            let value = value.trim();
            let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
            (name.trim(), Some(value))
        }
        None => (head.trim(), None),
    }
}

/// `text` split at each `separator` that is not inside a quoted string (where `\` escapes
/// the next character).
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// RFC 9110 delta-seconds: one or more ASCII digits; values too large for a `u64` saturate.
fn delta_seconds(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(fields: &[&str]) -> Option<u64> {
        let mut headers = HeaderMap::new();
        for field in fields {
            headers.append("prefer", HeaderValue::from_str(field).unwrap());
        }
        Wait::from_headers(&headers).map(|w| w.duration().as_secs())
    }

    #[test]
    fn a_plain_wait_is_read() {
        assert_eq!(wait(&["wait=5"]), Some(5));
        assert_eq!(wait(&["WAIT = 7"]), Some(7));
        assert_eq!(wait(&["wait=\"9\""]), Some(9));
        assert_eq!(wait(&["wait=60"]), Some(60));
    }

    #[test]
    fn a_long_wait_is_shortened_to_the_maximum() {
        assert_eq!(wait(&["wait=61"]), Some(MAX_WAIT_SECS));
        assert_eq!(wait(&["wait=99999999999999999999999999"]), Some(MAX_WAIT_SECS));
    }

    #[test]
    fn other_preferences_and_parameters_are_skipped() {
        assert_eq!(wait(&["respond-async, wait=10"]), Some(10));
        assert_eq!(wait(&["return=minimal; foo=\"a,wait=3\", wait=4"]), Some(4));
        assert_eq!(wait(&["wait=8; unit=s"]), Some(8));
        assert_eq!(wait(&["handling=lenient", "wait=2"]), Some(2));
        assert_eq!(wait(&["respond-async"]), None);
        assert_eq!(wait(&[]), None);
    }

    #[test]
    fn only_the_first_wait_counts() {
        assert_eq!(wait(&["wait=3, wait=10"]), Some(3));
        assert_eq!(wait(&["wait=3", "wait=10"]), Some(3));
        // A malformed first one is ignored, and so the request does not wait at all.
        assert_eq!(wait(&["wait=soon, wait=10"]), None);
    }

    #[test]
    fn a_malformed_or_zero_wait_is_ignored() {
        for bad in ["wait", "wait=", "wait=-1", "wait=1.5", "wait=5s", "wait=0x10", "wait=\"\"", "wait= ", "wait=١"] {
            assert_eq!(wait(&[bad]), None, "{bad}");
        }
        assert_eq!(wait(&["wait=0"]), None);
        assert_eq!(wait(&["wait=000"]), None);
    }

    #[test]
    fn a_field_that_is_not_ascii_is_ignored() {
        let mut headers = HeaderMap::new();
        headers.append("prefer", HeaderValue::from_bytes(b"wait=\xff").unwrap());
        headers.append("prefer", HeaderValue::from_static("wait=4"));
        assert_eq!(Wait::from_headers(&headers).map(|w| w.duration().as_secs()), Some(4));
    }

    #[test]
    fn the_applied_header_names_the_granted_wait() {
        assert_eq!(Wait { seconds: 60 }.applied(), "wait=60");
    }
}
