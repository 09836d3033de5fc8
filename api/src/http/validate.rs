//! Field checks shared by the routes that take user input, so a field means the same thing
//! (and fails the same way) wherever it appears. Each error names the field at fault.

use serde_json::{Map, Value};

use super::error::ApiError;

/// Longest `user_id`.
pub const MAX_USER_ID_CHARS: usize = 200;
/// Metadata is stored and returned with every read; keep it small.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid { field: field.to_owned(), message: message.into() }
}

pub fn user_id(raw: &str) -> Result<String, ApiError> {
    let user = raw.trim();
    if user.is_empty() || user.chars().count() > MAX_USER_ID_CHARS {
        return Err(invalid("user_id", format!("must be 1 to {MAX_USER_ID_CHARS} characters")));
    }
    Ok(user.to_owned())
}

/// What `task_type` must match (the schema's CHECK says the same).
pub const TASK_TYPE_RULE: &str =
    "must be 1 to 64 characters of a-z, 0-9, '_', '.' and '-', starting with a letter or digit";

/// A task type: a short lowercase name (`report`, `triage.v2`).
pub fn task_type(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    (1..=64).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-'))
}

/// Trimmed, non-blank text of at most `max` characters. Postgres refuses NUL in text, so it
/// is refused here rather than met as a 500.
pub fn text(field: &str, raw: &str, max: usize) -> Result<String, ApiError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(invalid(field, "must not be blank"));
    }
    if text.chars().count() > max {
        return Err(invalid(field, format!("must be at most {max} characters")));
    }
    if text.contains('\0') {
        return Err(invalid(field, "must not contain NUL characters"));
    }
    Ok(text.to_owned())
}

/// An optional JSON object of bounded size without NUL characters (jsonb refuses them).
pub fn metadata(raw: Option<Value>) -> Result<Option<Map<String, Value>>, ApiError> {
    match raw {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => {
            let text = serde_json::to_string(&map).unwrap_or_default();
            if text.len() > MAX_METADATA_BYTES {
                return Err(invalid("metadata", format!("must be at most {MAX_METADATA_BYTES} bytes of JSON")));
            }
            if text.contains("\\u0000") {
                return Err(invalid("metadata", "must not contain NUL characters"));
            }
            Ok(Some(map))
        }
        Some(_) => Err(invalid("metadata", "must be a JSON object")),
    }
}
