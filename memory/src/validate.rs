//! Checks on caller-supplied text before it reaches Postgres, so bad input is reported as
//! [`MemoryError::InvalidInput`] naming the field, never as a database error: Postgres `text`
//! and `jsonb` reject NUL characters, and owners and namespaces are bounded like user ids.

use serde_json::{Map, Value};

use crate::error::MemoryError;

/// Longest owner or namespace accepted, in characters (as `tasks.user_id`).
pub const MAX_NAME_CHARS: usize = 200;

/// An owner or namespace: not blank, at most [`MAX_NAME_CHARS`], no NUL.
pub(crate) fn check_name(field: &'static str, value: &str) -> Result<(), MemoryError> {
    check_text(field, value)?;
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(MemoryError::invalid(field, format!("must be at most {MAX_NAME_CHARS} characters")));
    }
    Ok(())
}

/// Free text: not blank, no NUL.
pub(crate) fn check_text(field: &'static str, value: &str) -> Result<(), MemoryError> {
    if value.trim().is_empty() {
        return Err(MemoryError::invalid(field, "must not be empty"));
    }
    check_no_nul(field, value)
}

/// Text that may be empty but must not contain NUL.
pub(crate) fn check_no_nul(field: &'static str, value: &str) -> Result<(), MemoryError> {
    if value.contains('\0') {
        return Err(MemoryError::invalid(field, "must not contain NUL characters"));
    }
    Ok(())
}

/// A metadata object: no NUL in any key or string, at any depth.
pub(crate) fn check_metadata(field: &'static str, metadata: &Map<String, Value>) -> Result<(), MemoryError> {
    fn walk(value: &Value) -> bool {
        match value {
            Value::String(s) => !s.contains('\0'),
            Value::Array(items) => items.iter().all(walk),
            Value::Object(map) => map.iter().all(|(k, v)| !k.contains('\0') && walk(v)),
            Value::Null | Value::Bool(_) | Value::Number(_) => true,
        }
    }
    if !metadata.iter().all(|(k, v)| !k.contains('\0') && walk(v)) {
        return Err(MemoryError::invalid(field, "must not contain NUL characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("owner", "alice").is_ok());
        assert!(check_name("owner", &"é".repeat(MAX_NAME_CHARS)).is_ok());
        assert!(check_name("owner", &"é".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert!(matches!(check_name("namespace", " "), Err(MemoryError::InvalidInput { field: "namespace", .. })));
        assert!(check_name("owner", "al\0ice").is_err());
    }

    #[test]
    fn text_and_metadata() {
        assert!(check_text("content", "hello").is_ok());
        assert!(check_text("content", "\n\t").is_err());
        assert!(check_text("content", "a\0b").is_err());
        assert!(check_no_nul("content", "").is_ok());
        let ok = serde_json::json!({"a": [1, "x", {"b": null}]});
        assert!(check_metadata("metadata", ok.as_object().unwrap_or(&Map::new())).is_ok());
        for bad in
            [serde_json::json!({"a": ["x\0"]}), serde_json::json!({"a": {"k\0": 1}}), serde_json::json!({"\0": 1})]
        {
            assert!(check_metadata("metadata", bad.as_object().unwrap_or(&Map::new())).is_err(), "{bad}");
        }
    }
}
