//! `json_extract`: JSONPath (RFC 9535) queries with `serde_json_path`.
//!
//! The document may be given as a JSON value or as a string holding JSON text (models often
//! pass the raw body of an earlier tool result); a string is always parsed as JSON text.
//!
//! A query cannot be interrupted once it runs, and a 200-byte document nested 100 deep
//! with `$..*..*..*..*..*..*` asks for billions of nodes. So every call is bounded before
//! it runs: the document's size ([`MAX_DOCUMENT_BYTES`]) and depth ([`MAX_DEPTH`]), the
//! `..` segments in the path ([`MAX_DESCENDANT_SEGMENTS`]) and a worst-case bound of the
//! work of the query over that document ([`MAX_WORK`], see [`cost`]); then its result, in
//! nodes ([`MAX_RESULT_NODES`]) and bytes ([`MAX_RESULT_BYTES`]). Each refusal names its
//! bound, so the model can narrow the path or the document. The tool is
//! [`Tool::cpu_bound`], so the registry runs it on the blocking pool under the call timeout.

mod cost;

use serde::Deserialize;
use serde_json::{Value, json};
use serde_json_path::JsonPath;

use super::{Tool, ToolContext, ToolError};

pub const NAME: &str = "json_extract";

/// Largest document, as JSON text.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Deepest nesting of arrays and objects in the document.
pub const MAX_DEPTH: u64 = 32;
/// Most descendant (`..`) segments in a path, those inside filters included.
pub const MAX_DESCENDANT_SEGMENTS: usize = 2;
/// Most work units (nodes visited or listed, filter evaluations) a query may need at worst.
pub const MAX_WORK: u64 = 4_000_000;
/// Most nodes in a result.
pub const MAX_RESULT_NODES: usize = 10_000;
/// Largest result, as JSON text; a result is built only up to this size.
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;

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

    fn cpu_bound(&self) -> bool {
        true
    }

    async fn call(&self, arguments: Value, _ctx: &ToolContext) -> Result<Value, ToolError> {
        let args: Args = serde_json::from_value(arguments).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        extract(args)
    }
}

fn extract(args: Args) -> Result<Value, ToolError> {
    let invalid = ToolError::InvalidArguments;
    let path = JsonPath::parse(&args.path).map_err(|e| invalid(format!("invalid JSONPath `{}`: {e}", args.path)))?;
    // The library accepted the path, so a path this reader cannot follow is refused rather
    // than run without a bound.
    let shape = cost::Query::read(&args.path).ok_or_else(|| {
        invalid(format!("the JSONPath `{}` is too unusual to bound; write it more simply", args.path))
    })?;
    let descendants = shape.descendant_segments();
    if descendants > MAX_DESCENDANT_SEGMENTS {
        return Err(invalid(format!(
            "the path has {descendants} descendant (`..`) segments; at most {MAX_DESCENDANT_SEGMENTS} are allowed"
        )));
    }
    let too_big = |size: &str| {
        invalid(format!("the document is {size} bytes of JSON; at most {MAX_DOCUMENT_BYTES} bytes are accepted"))
    };
    let document = match args.json {
        Value::String(text) => {
            if text.len() > MAX_DOCUMENT_BYTES {
                return Err(too_big(&text.len().to_string()));
            }
            serde_json::from_str(&text).map_err(|e| invalid(format!("`json` is a string but not JSON text: {e}")))?
        }
        value => {
            if !fits(&value, MAX_DOCUMENT_BYTES) {
                return Err(too_big("more than"));
            }
            value
        }
    };
    let size = measure(&document);
    if size.depth > MAX_DEPTH {
        return Err(invalid(format!(
            "the document is nested {} deep; at most {MAX_DEPTH} levels of arrays and objects are accepted",
            size.depth
        )));
    }
    let work = shape.work(size);
    if work > MAX_WORK {
        return Err(invalid(format!(
            "the path `{}` could take up to {work} steps on this document (limit {MAX_WORK}): use fewer `..`, \
             wildcards, unions or filters, or a smaller document",
            args.path
        )));
    }
    let nodes = path.query(&document).all();
    if nodes.len() > MAX_RESULT_NODES {
        return Err(invalid(format!(
            "the path selects {} values; at most {MAX_RESULT_NODES} are returned: narrow the path",
            nodes.len()
        )));
    }
    let mut budget = MAX_RESULT_BYTES;
    let mut matches = Vec::with_capacity(nodes.len());
    for node in nodes {
        let Some(rest) = size_within(node, budget).and_then(|bytes| budget.checked_sub(bytes)) else {
            return Err(invalid(format!(
                "the selected values are more than {MAX_RESULT_BYTES} bytes of JSON: narrow the path"
            )));
        };
        budget = rest;
        matches.push(node.clone());
    }
    Ok(json!({ "matches": matches }))
}

/// Nodes and nesting depth of `value`, counted without recursion.
fn measure(value: &Value) -> cost::DocumentSize {
    let mut size = cost::DocumentSize { nodes: 0, depth: 0 };
    let mut stack = vec![(value, 0_u64)];
    while let Some((value, depth)) = stack.pop() {
        size.nodes += 1;
        size.depth = size.depth.max(depth);
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            Value::Object(members) => stack.extend(members.values().map(|v| (v, depth + 1))),
            _ => {}
        }
    }
    size
}

/// Whether `value` serialises to at most `max` bytes.
fn fits(value: &Value, max: usize) -> bool {
    size_within(value, max).is_some()
}

/// The length of `value` as JSON text when it is at most `max`; serialising stops as soon as
/// it is longer.
fn size_within(value: &Value, max: usize) -> Option<usize> {
    struct Counter {
        written: usize,
        max: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.written += buf.len();
            if self.written > self.max {
                return Err(std::io::Error::other("over the limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { written: 0, max };
    serde_json::to_writer(&mut counter, value).ok().map(|()| counter.written)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn extract(json: Value, path: &str) -> Result<Value, ToolError> {
        let ctx = ToolContext { task_id: uuid::Uuid::nil(), step_id: None, owner: "u".into() };
        JsonExtract.call(json!({ "json": json, "path": path }), &ctx).await
    }

    /// `[[[…[1]…]]]`, `depth` arrays deep.
    fn nested(depth: usize) -> Value {
        serde_json::from_str(&format!("{}1{}", "[".repeat(depth), "]".repeat(depth))).unwrap()
    }

    /// The refusal's message; panics on anything else.
    async fn refusal(json: Value, path: &str) -> String {
        match extract(json, path).await {
            Err(ToolError::InvalidArguments(msg)) => msg,
            other => panic!("{path}: {other:?}"),
        }
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

    #[tokio::test]
    async fn the_hostile_input_is_refused_for_its_path_and_for_its_depth() {
        let msg = refusal(json!(nested(100).to_string()), "$..*..*..*..*..*..*").await;
        assert!(msg.contains("6 descendant (`..`) segments"), "{msg}");
        let msg = refusal(json!(nested(100).to_string()), "$..*").await;
        assert!(msg.contains("nested 100 deep") && msg.contains("at most 32 levels"), "{msg}");
        assert!(extract(nested(32), "$..*").await.is_ok());
    }

    #[tokio::test]
    async fn too_many_descendant_segments_are_refused() {
        let msg = refusal(nested(3), "$..*..*..*").await;
        assert!(msg.contains("3 descendant (`..`) segments; at most 2"), "{msg}");
        let in_filter = refusal(nested(3), "$..*[?@..x]..y").await;
        assert!(in_filter.contains("3 descendant"), "{in_filter}");
        assert_eq!(extract(nested(3), "$..*..*").await.unwrap()["matches"].as_array().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn large_documents_are_refused_as_text_and_as_values() {
        let big: Vec<u32> = vec![1_000_000; MAX_DOCUMENT_BYTES / 8 + 1];
        let msg = refusal(json!(json!(big).to_string()), "$[0]").await;
        assert!(msg.contains(&format!("at most {MAX_DOCUMENT_BYTES} bytes")), "{msg}");
        let msg = refusal(json!(big), "$[0]").await;
        assert!(msg.contains(&format!("at most {MAX_DOCUMENT_BYTES} bytes")), "{msg}");
    }

    #[tokio::test]
    async fn a_query_that_could_explode_is_refused_before_it_runs() {
        // 30 deep (allowed), no `..`, but each level multiplies the matches by ten.
        let path = format!("${}", "[*,*,*,*,*,*,*,*,*,*]".repeat(30));
        let msg = refusal(nested(30), &path).await;
        assert!(msg.contains(&format!("(limit {MAX_WORK})")), "{msg}");
    }

    #[tokio::test]
    async fn too_many_result_nodes_are_refused() {
        let doc = json!(vec![0; MAX_RESULT_NODES + 1]);
        let msg = refusal(doc.clone(), "$[*]").await;
        assert!(msg.contains(&format!("selects {} values; at most {MAX_RESULT_NODES}", MAX_RESULT_NODES + 1)), "{msg}");
        assert!(extract(doc, "$[:10000]").await.is_ok());
    }

    #[tokio::test]
    async fn a_result_over_its_byte_limit_is_refused_while_it_is_built() {
        // Each element is ~100 KiB; ten copies of each pass the node limit but not the bytes.
        let doc = json!(["x".repeat(100 * 1024), "y".repeat(100 * 1024)]);
        let msg = refusal(doc, "$[0,1,0,1,0,1,0,1,0,1,0,1]").await;
        assert!(msg.contains(&format!("more than {MAX_RESULT_BYTES} bytes")), "{msg}");
    }

    #[test]
    fn documents_are_measured_without_recursion() {
        assert_eq!(measure(&json!(1)), cost::DocumentSize { nodes: 1, depth: 0 });
        assert_eq!(measure(&json!({"a": [1, {"b": 2}], "c": 3})), cost::DocumentSize { nodes: 6, depth: 3 });
        assert_eq!(measure(&nested(100)).depth, 100);
    }
}
