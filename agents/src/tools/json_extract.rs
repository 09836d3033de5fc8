//! `json_extract`: JSONPath (RFC 9535) queries with `serde_json_path`.
//!
//! The document may be given as a JSON value or as a string holding JSON text (models often
//! pass the raw body of an earlier tool result); a string is always parsed as JSON text.

use serde::Deserialize;
use serde_json::{Value, json};
use serde_json_path::JsonPath;

use super::{Tool, ToolContext, ToolError};

pub const NAME: &str = "json_extract";

/// Selects values from a JSON document.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonExtract;

#[derive(Deserialize)]
struct Args {
    json: Value,
    path: String,
}

#[async_trait::async_trait]
impl Tool for JsonExtract {
    fn name(&self) -> &str {
        NAME
    }

    fn description(&self) -> &str {
        "Selects values from a JSON document with a JSONPath expression (RFC 9535), e.g. \
         \"$.items[*].price\" or \"$..name\". Returns every match, in document order."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "json": { "description": "The document: any JSON value, or a string containing JSON text." },
                "path": { "type": "string", "minLength": 1, "maxLength": 1000, "description": "A JSONPath expression starting with $." }
            },
            "required": ["json", "path"],
            "additionalProperties": false
        })
    }

    async fn call(&self, arguments: Value, _ctx: &ToolContext) -> Result<Value, ToolError> {
        let args: Args = serde_json::from_value(arguments).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        let path = JsonPath::parse(&args.path)
            .map_err(|e| ToolError::InvalidArguments(format!("invalid JSONPath `{}`: {e}", args.path)))?;
        let document = match args.json {
            Value::String(text) => serde_json::from_str(&text)
                .map_err(|e| ToolError::InvalidArguments(format!("`json` is a string but not JSON text: {e}")))?,
            value => value,
        };
        let matches: Vec<Value> = path.query(&document).all().into_iter().cloned().collect();
        Ok(json!({ "matches": matches }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn extract(json: Value, path: &str) -> Result<Value, ToolError> {
        let ctx = ToolContext { task_id: uuid::Uuid::nil(), step_id: None, owner: "u".into() };
        JsonExtract.call(json!({ "json": json, "path": path }), &ctx).await
    }

    #[tokio::test]
    async fn selects_from_a_value_or_from_json_text() {
        let doc = json!({ "items": [{ "price": 3 }, { "price": 4.5 }, { "name": "free" }] });
        let out = extract(doc.clone(), "$.items[*].price").await.unwrap();
        assert_eq!(out, json!({ "matches": [3, 4.5] }));
        let from_text = extract(json!(doc.to_string()), "$.items[*].price").await.unwrap();
        assert_eq!(from_text, out);
        assert_eq!(extract(doc, "$.nothing").await.unwrap(), json!({ "matches": [] }));
    }

    #[tokio::test]
    async fn bad_paths_and_bad_json_text_are_invalid_arguments() {
        match extract(json!({}), "$.items[").await {
            Err(ToolError::InvalidArguments(msg)) => assert!(msg.contains("invalid JSONPath `$.items[`"), "{msg}"),
            other => panic!("{other:?}"),
        }
        match extract(json!("{not json"), "$").await {
            Err(ToolError::InvalidArguments(msg)) => assert!(msg.contains("not JSON text"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }
}
