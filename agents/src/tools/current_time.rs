//! `current_time`: the current instant, from an injected [`Clock`] so tests control it.

use std::sync::Arc;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolError};

pub const NAME: &str = "current_time";

/// Where the tool reads the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Tells the model the current date and time.
pub struct CurrentTime {
    clock: Arc<dyn Clock>,
}

impl CurrentTime {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock }
    }
}

#[derive(Deserialize)]
struct Args {
    timezone: Option<String>,
}

#[async_trait::async_trait]
impl Tool for CurrentTime {
    fn name(&self) -> &str {
        NAME
    }

    fn description(&self) -> &str {
        "Returns the current date and time in UTC (RFC 3339) and as Unix seconds; with a fixed \
         offset such as \"+02:00\", also the local time at that offset."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "timezone": {
                    "type": "string",
                    "pattern": "^(UTC|[+-](0[0-9]|1[0-4]):[0-5][0-9])$",
                    "description": "\"UTC\" (the default) or a fixed offset like \"+02:00\" or \"-05:30\"."
                }
            },
            "additionalProperties": false
        })
    }

    async fn call(&self, arguments: Value, _ctx: &ToolContext) -> Result<Value, ToolError> {
        let args: Args = serde_json::from_value(arguments).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        let now = self.clock.now();
        let mut out = json!({
            "utc": now.to_rfc3339_opts(SecondsFormat::Secs, true),
            "unix": now.timestamp(),
        });
        if let Some(zone) = args.timezone.filter(|z| z != "UTC") {
            let offset = parse_offset(&zone)?;
            out["timezone"] = json!(zone);
            out["local"] = json!(now.with_timezone(&offset).to_rfc3339_opts(SecondsFormat::Secs, false));
        }
        Ok(out)
    }
}

/// `+HH:MM` / `-HH:MM` as a fixed offset.
fn parse_offset(zone: &str) -> Result<FixedOffset, ToolError> {
    let invalid =
        || ToolError::InvalidArguments(format!("timezone `{zone}` is not \"UTC\" or an offset like \"+02:00\""));
    let (sign, rest) = match zone.split_at_checked(1) {
        Some(("+", rest)) => (1, rest),
        Some(("-", rest)) => (-1, rest),
        _ => return Err(invalid()),
    };
    let (hours, minutes) = rest.split_once(':').ok_or_else(invalid)?;
    let hours: i32 = hours.parse().map_err(|_| invalid())?;
    let minutes: i32 = minutes.parse().map_err(|_| invalid())?;
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60)).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(DateTime<Utc>);

    impl Clock for Fixed {
        fn now(&self) -> DateTime<Utc> {
            self.0
        }
    }

    fn tool() -> CurrentTime {
        let at = DateTime::parse_from_rfc3339("2026-03-01T22:30:00Z").unwrap().with_timezone(&Utc);
        CurrentTime::new(Arc::new(Fixed(at)))
    }

    fn ctx() -> ToolContext {
        ToolContext { task_id: uuid::Uuid::nil(), step_id: None, owner: "u".into() }
    }

    #[tokio::test]
    async fn reports_utc_and_unix_seconds() {
        let out = tool().call(json!({}), &ctx()).await.unwrap();
        assert_eq!(out, json!({ "utc": "2026-03-01T22:30:00Z", "unix": 1_772_404_200 }));
        let explicit = tool().call(json!({ "timezone": "UTC" }), &ctx()).await.unwrap();
        assert_eq!(explicit, out);
    }

    #[tokio::test]
    async fn adds_local_time_for_a_fixed_offset() {
        let out = tool().call(json!({ "timezone": "+02:00" }), &ctx()).await.unwrap();
        assert_eq!(out["local"], json!("2026-03-02T00:30:00+02:00"));
        let west = tool().call(json!({ "timezone": "-05:30" }), &ctx()).await.unwrap();
        assert_eq!(west["local"], json!("2026-03-01T17:00:00-05:30"));
    }

    #[test]
    fn offsets_outside_the_pattern_are_invalid() {
        assert!(parse_offset("02:00").is_err());
        assert!(parse_offset("+2").is_err());
        assert!(parse_offset("+99:00").is_err());
        assert_eq!(parse_offset("-01:15").unwrap().local_minus_utc(), -4500);
    }
}
