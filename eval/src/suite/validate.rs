//! The rules a suite's values must keep, checked after the file parsed. Each broken rule is
//! reported with where it is (the case, by name, and the field) and what is wrong.

use std::{collections::HashSet, time::Duration};

use regex::Regex;

use super::{
    Case, DEFAULT_MIN_SCORE, Expectations, FinalStatus, Rubric, Suite, TaskSpec,
    file::{CaseFile, DefaultsFile, ExpectFile, SuiteFile},
};

const MAX_NAME_CHARS: usize = 100;
const MAX_USER_ID_CHARS: usize = 200;
const MAX_DESCRIPTION_CHARS: usize = 8000;
const MAX_CONTEXT_MESSAGES: usize = 50;
const MAX_AGENT_HINTS: usize = 10;
const MAX_REPEAT: u32 = 100;
const MAX_TIMEOUT_SECS: u64 = 24 * 60 * 60;

/// Where a rule was broken, and how.
pub(super) type Violation = (String, String);

pub(super) fn validate(file: SuiteFile) -> Result<Suite, Violation> {
    let top = |field: &str, problem: String| (field.to_owned(), problem);
    if file.name.trim().is_empty() {
        return Err(top("name", "must not be blank".into()));
    }
    if file.cases.is_empty() {
        return Err(top("cases", "a suite needs at least one case".into()));
    }
    let defaults = &file.defaults;
    if let Some(user_id) = &defaults.user_id {
        check_user_id(user_id).map_err(|p| top("defaults.user_id", p))?;
    }
    if let Some(attempts) = defaults.max_attempts {
        check_attempts(attempts).map_err(|p| top("defaults.max_attempts", p))?;
    }
    if let Some(secs) = defaults.timeout_secs {
        check_timeout(secs).map_err(|p| top("defaults.timeout_secs", p))?;
    }
    let mut seen = HashSet::new();
    let mut cases = Vec::with_capacity(file.cases.len());
    for (index, case) in file.cases.into_iter().enumerate() {
        let label = if case.name.trim().is_empty() {
            format!("cases[{index}]")
        } else {
            format!("case {:?} (cases[{index}])", case.name)
        };
        let at = |field: &str, problem: String| (format!("{label}, {field}"), problem);
        if case.name.trim().is_empty() {
            return Err(at("name", "must not be blank".into()));
        }
        if case.name.chars().count() > MAX_NAME_CHARS {
            return Err(at("name", format!("must be at most {MAX_NAME_CHARS} characters")));
        }
        if !seen.insert(case.name.clone()) {
            return Err(at("name", "another case has the same name; names identify cases in reports".into()));
        }
        cases.push(validate_case(case, defaults).map_err(|(field, problem)| at(&field, problem))?);
    }
    Ok(Suite { name: file.name, description: file.description, cases })
}

fn validate_case(case: CaseFile, defaults: &DefaultsFile) -> Result<Case, Violation> {
    let at = |field: &str, problem: String| (field.to_owned(), problem);
    let task = case.task;
    if task.description.trim().is_empty() {
        return Err(at("task.description", "must not be blank".into()));
    }
    if task.description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(at("task.description", format!("must be at most {MAX_DESCRIPTION_CHARS} characters")));
    }
    let user_id = task.user_id.or_else(|| defaults.user_id.clone());
    if let Some(user_id) = &user_id {
        check_user_id(user_id).map_err(|p| at("task.user_id", p))?;
    }
    if let Some(metadata) = &task.metadata
        && !metadata.is_object()
    {
        return Err(at("task.metadata", "must be a mapping (a JSON object)".into()));
    }
    let max_attempts = task.max_attempts.or(defaults.max_attempts);
    if let Some(attempts) = max_attempts {
        check_attempts(attempts).map_err(|p| at("task.max_attempts", p))?;
    }
    if let Some(cost) = task.max_cost_usd {
        check_amount(cost).map_err(|p| at("task.max_cost_usd", p))?;
    }
    if task.max_tokens.is_some_and(|t| t < 0) {
        return Err(at("task.max_tokens", "must not be negative".into()));
    }
    let context = task.context.unwrap_or_default();
    if context.len() > MAX_CONTEXT_MESSAGES {
        return Err(at("task.context", format!("at most {MAX_CONTEXT_MESSAGES} messages")));
    }
    let agent_hints = task.agent_hints.unwrap_or_default();
    if agent_hints.len() > MAX_AGENT_HINTS {
        return Err(at("task.agent_hints", format!("at most {MAX_AGENT_HINTS} agents")));
    }
    check_names(&agent_hints).map_err(|p| at("task.agent_hints", p))?;
    // The warm-up's step contexts are kept only for a typed task.
    let warm_up = case.warm_up.unwrap_or(false);
    if warm_up && task.task_type.is_none() {
        return Err(at("warm_up", "needs task.task_type: only a typed task's steps leave warm contexts".into()));
    }
    let approve = case.approve.unwrap_or_default();
    check_names(&approve).map_err(|p| at("approve", p))?;
    // A case that approves calls wants them to wait: they do when the task names no tools.
    let require_approval = task.require_approval.unwrap_or_else(|| approve.clone());
    check_names(&require_approval).map_err(|p| at("task.require_approval", p))?;
    let repeat = case.repeat.unwrap_or(1);
    if !(1..=MAX_REPEAT).contains(&repeat) {
        return Err(at("repeat", format!("must be between 1 and {MAX_REPEAT}, not {repeat}")));
    }
    let timeout_secs = case.timeout_secs.or(defaults.timeout_secs);
    if let Some(secs) = timeout_secs {
        check_timeout(secs).map_err(|p| at("timeout_secs", p))?;
    }
    Ok(Case {
        name: case.name,
        about: case.about,
        task: TaskSpec {
            description: task.description,
            user_id,
            metadata: task.metadata,
            priority: task.priority.or(defaults.priority),
            max_attempts,
            max_cost_usd: task.max_cost_usd,
            max_tokens: task.max_tokens,
            use_plan_cache: task.use_plan_cache.unwrap_or(false),
            context,
            agent_hints,
            task_type: task.task_type,
            warm_start: task.warm_start.unwrap_or(false),
            require_approval,
        },
        expect: validate_expect(case.expect)?,
        repeat,
        timeout: timeout_secs.map(Duration::from_secs),
        warm_up,
        approve,
    })
}

fn validate_expect(expect: ExpectFile) -> Result<Expectations, Violation> {
    let at = |field: &str, problem: String| (format!("expect.{field}"), problem);
    if let (Some(min), Some(max)) = (expect.min_steps, expect.max_steps)
        && min > max
    {
        return Err(at("min_steps", format!("{min} is more than expect.max_steps ({max})")));
    }
    if expect.max_steps == Some(0) {
        return Err(at("max_steps", "must be at least 1: every plan has a step".into()));
    }
    check_names(&expect.agents).map_err(|p| at("agents", p))?;
    check_names(&expect.tools).map_err(|p| at("tools", p))?;
    check_names(&expect.cached_tools).map_err(|p| at("cached_tools", p))?;
    if let Some(i) = expect.result_contains.iter().position(String::is_empty) {
        return Err(at(&format!("result_contains[{i}]"), "must not be empty".into()));
    }
    let result_matches = expect
        .result_matches
        .iter()
        .enumerate()
        .map(|(i, pattern)| {
            Regex::new(pattern).map_err(|e| at(&format!("result_matches[{i}]"), format!("not a valid regex: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(cost) = expect.max_cost_usd {
        check_amount(cost).map_err(|p| at("max_cost_usd", p))?;
    }
    let judge = match expect.judge {
        None => None,
        Some(judge) => {
            if judge.rubric.trim().is_empty() {
                return Err(at("judge.rubric", "must not be blank".into()));
            }
            let min_score = judge.min_score.unwrap_or(DEFAULT_MIN_SCORE);
            if !(0.0..=1.0).contains(&min_score) {
                return Err(at("judge.min_score", format!("must be between 0 and 1, not {min_score}")));
            }
            Some(Rubric { text: judge.rubric, min_score })
        }
    };
    Ok(Expectations {
        status: expect.status.unwrap_or(FinalStatus::Completed),
        min_steps: expect.min_steps,
        max_steps: expect.max_steps,
        agents: expect.agents,
        tools: expect.tools,
        cached_tools: expect.cached_tools,
        result_contains: expect.result_contains,
        result_matches,
        max_cost_usd: expect.max_cost_usd,
        max_latency_ms: expect.max_latency_ms,
        max_tokens: expect.max_tokens,
        judge,
    })
}

fn check_user_id(user_id: &str) -> Result<(), String> {
    let chars = user_id.chars().count();
    if user_id.trim().is_empty() || chars > MAX_USER_ID_CHARS {
        return Err(format!("must be 1 to {MAX_USER_ID_CHARS} characters and not blank"));
    }
    Ok(())
}

fn check_attempts(attempts: i32) -> Result<(), String> {
    if (1..=10).contains(&attempts) { Ok(()) } else { Err(format!("must be between 1 and 10, not {attempts}")) }
}

fn check_timeout(secs: u64) -> Result<(), String> {
    if (1..=MAX_TIMEOUT_SECS).contains(&secs) {
        Ok(())
    } else {
        Err(format!("must be between 1 and {MAX_TIMEOUT_SECS} seconds, not {secs}"))
    }
}

fn check_amount(usd: f64) -> Result<(), String> {
    if usd.is_finite() && usd >= 0.0 { Ok(()) } else { Err(format!("must be a non-negative amount, not {usd}")) }
}

fn check_names(names: &[String]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for name in names {
        if name.trim().is_empty() {
            return Err("names must not be blank".into());
        }
        if !seen.insert(name) {
            return Err(format!("{name:?} is listed twice"));
        }
    }
    Ok(())
}
