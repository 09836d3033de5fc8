//! Text from outside (model answers, tool results) made storable.
//!
//! Postgres refuses U+0000 in `text` and in `jsonb` (as a character or as the `\u0000`
//! escape), so one NUL in a model's answer or in a fetched binary file used to make every
//! write of the step fail, and the step ran again, paying again, forever. Text enters the
//! agent layer at two doors only: the model's responses ([`crate::llm::Storable`] wraps every
//! client the runner is given) and the tools' results and errors (the tool registry cleans
//! every call's outcome before it records it and replies to the model). Both pass through
//! here, which replaces each NUL with U+FFFD (the Unicode replacement character), so
//! everything written downstream (messages, step output, tool-call arguments and results,
//! plan JSON, memories the model asks to store) is storable. Every other character,
//! control characters included, is kept.

use std::borrow::Cow;

use serde_json::Value;

/// What a NUL becomes.
pub const REPLACEMENT: char = '\u{FFFD}';

/// `s` with every NUL replaced by [`REPLACEMENT`]; borrowed when there was none.
pub fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') { Cow::Owned(s.replace('\0', "\u{FFFD}")) } else { Cow::Borrowed(s) }
}

/// [`text`] for an owned string, without a copy when it is already clean.
pub fn string(s: String) -> String {
    match text(&s) {
        Cow::Borrowed(_) => s,
        Cow::Owned(clean) => clean,
    }
}

/// Every string of a JSON value, object keys included, made storable in place.
pub fn json(value: &mut Value) {
    match value {
        Value::String(s) => {
            if s.contains('\0') {
                *s = s.replace('\0', "\u{FFFD}");
            }
        }
        Value::Array(items) => items.iter_mut().for_each(json),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                let entries = std::mem::take(map);
                for (key, mut v) in entries {
                    json(&mut v);
                    map.insert(string(key), v);
                }
            } else {
                map.values_mut().for_each(json);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn nul_becomes_the_replacement_character_and_nothing_else_changes() {
        assert_eq!(text("ok\0"), "ok\u{FFFD}");
        assert!(matches!(text("tab\tbell\u{7}é"), Cow::Borrowed(_)));
        assert_eq!(string("a\0b\0".into()), "a\u{FFFD}b\u{FFFD}");
    }

    #[test]
    fn every_string_of_a_json_value_is_cleaned_keys_included() {
        let mut v = json!({"a\u{0}": ["x\u{0}", 1, null, {"k": "v\u{0}"}], "clean": true});
        json(&mut v);
        assert_eq!(v, json!({"a\u{FFFD}": ["x\u{FFFD}", 1, null, {"k": "v\u{FFFD}"}], "clean": true}));
        assert!(!serde_json::to_string(&v).unwrap().contains("\\u0000"));
    }
}
