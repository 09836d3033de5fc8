//! `calculator`: arithmetic with `evalexpr`.
//!
//! Expressions are evaluated against an immutable context with no variables, so
//! assignments fail; only a finite numeric result is accepted, so string and boolean
//! expressions are refused even though the evaluator supports them.

use evalexpr::{DefaultNumericTypes, EmptyContextWithBuiltinFunctions, Value as Eval};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolError};

pub const NAME: &str = "calculator";
const MAX_EXPRESSION_CHARS: usize = 500;

/// Evaluates an arithmetic expression.
#[derive(Debug, Clone, Copy, Default)]
pub struct Calculator;

#[derive(Deserialize)]
struct Args {
    expression: String,
}

#[async_trait::async_trait]
impl Tool for Calculator {
    fn name(&self) -> &str {
        NAME
    }

    fn description(&self) -> &str {
        "Evaluates an arithmetic expression and returns the number. Supports + - * / % (remainder), \
         ^ (power), parentheses, decimals and functions such as math::sqrt(x), math::ln(x), \
         math::pow(x, y), math::abs(x), min(a, b), max(a, b), floor(x) and round(x). \
         Integer division truncates (7 / 2 = 3); write 7.0 / 2 for 3.5."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "expression": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_EXPRESSION_CHARS,
                    "description": "The expression, e.g. \"(2 + 3) * 4 ^ 2\" or \"math::sqrt(2)\"."
                }
            },
            "required": ["expression"],
            "additionalProperties": false
        })
    }

    /// Evaluation is pure computation; short (the expression is bounded) but not I/O.
    fn cpu_bound(&self) -> bool {
        true
    }

    async fn call(&self, arguments: Value, _ctx: &ToolContext) -> Result<Value, ToolError> {
        let args: Args = serde_json::from_value(arguments).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        let result = evaluate(&args.expression)?;
        Ok(json!({ "expression": args.expression, "result": result }))
    }
}

/// The value of `expression` as a JSON number (an integer when the evaluator produced one).
fn evaluate(expression: &str) -> Result<Value, ToolError> {
    let context = EmptyContextWithBuiltinFunctions::<DefaultNumericTypes>::default();
    let value = evalexpr::eval_with_context(expression, &context)
        .map_err(|e| ToolError::InvalidArguments(format!("cannot evaluate `{expression}`: {e}")))?;
    match value {
        Eval::Int(i) => Ok(json!(i)),
        Eval::Float(f) if f.is_finite() => Ok(json!(f)),
        Eval::Float(f) => Err(ToolError::InvalidArguments(format!(
            "`{expression}` has no finite result ({f}); check for division by zero"
        ))),
        other => Err(ToolError::InvalidArguments(format!(
            "`{expression}` is not arithmetic: it evaluates to {other}, not a number"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn calc(expression: &str) -> Result<Value, ToolError> {
        let ctx = ToolContext { task_id: uuid::Uuid::nil(), step_id: None, owner: "u".into() };
        Calculator.call(json!({ "expression": expression }), &ctx).await.map(|v| v["result"].clone())
    }

    #[tokio::test]
    async fn evaluates_arithmetic() {
        assert_eq!(calc("(2 + 3) * 4").await.unwrap(), json!(20));
        assert_eq!(calc("2 ^ 10").await.unwrap(), json!(1024.0));
        assert_eq!(calc("17 % 5").await.unwrap(), json!(2));
        assert_eq!(calc("1.5 * 4").await.unwrap(), json!(6.0));
        assert_eq!(calc("math::sqrt(16)").await.unwrap(), json!(4.0));
        assert_eq!(calc("max(3, 9, 4)").await.unwrap(), json!(9));
    }

    #[tokio::test]
    async fn reports_the_expression_with_its_result() {
        let ctx = ToolContext { task_id: uuid::Uuid::nil(), step_id: None, owner: "u".into() };
        let out = Calculator.call(json!({ "expression": "6 * 7" }), &ctx).await.unwrap();
        assert_eq!(out, json!({ "expression": "6 * 7", "result": 42 }));
    }

    #[tokio::test]
    async fn refuses_what_is_not_arithmetic() {
        for (expression, needle) in [
            ("1 / 0", "cannot evaluate"),
            ("1.0 / 0", "no finite result"),
            ("2 +", "cannot evaluate"),
            ("x = 3", "cannot evaluate"),
            ("\"a\" + \"b\"", "not arithmetic"),
            ("1 == 1", "not arithmetic"),
            ("str::to_uppercase(\"a\")", "not arithmetic"),
            ("unknown_variable + 1", "cannot evaluate"),
        ] {
            match calc(expression).await {
                Err(ToolError::InvalidArguments(msg)) => assert!(msg.contains(needle), "{expression}: {msg}"),
                other => panic!("{expression}: {other:?}"),
            }
        }
    }
}
