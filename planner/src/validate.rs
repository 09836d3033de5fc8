//! Plan validation: the single gate every plan passes before it is run.
//!
//! Checks are ordered so the first error found is the most basic one (plan
//! size, then each step's fields in index order, then the graph), which makes
//! the reported step index deterministic.

use crate::error::PlanError;
use crate::plan::{MAX_TITLE_CHARS, Plan, PlannedStep};

/// Default for [`PlanLimits::max_steps`].
pub const DEFAULT_MAX_STEPS: usize = 20;
/// Default for [`PlanLimits::max_instruction_chars`].
pub const DEFAULT_MAX_INSTRUCTION_CHARS: usize = 8000;

/// Size bounds a plan must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Largest number of steps in a plan.
    pub max_steps: usize,
    /// Largest instruction length, in characters.
    pub max_instruction_chars: usize,
}

impl Default for PlanLimits {
    fn default() -> Self {
        Self { max_steps: DEFAULT_MAX_STEPS, max_instruction_chars: DEFAULT_MAX_INSTRUCTION_CHARS }
    }
}

/// Checks that `plan` can be run: 1..=`max_steps` steps; non-blank title and
/// instruction; title at most [`MAX_TITLE_CHARS`] and instruction at most
/// `max_instruction_chars` characters; agent in `known_agents`; every
/// dependency another existing step, listed once; no dependency cycle.
pub fn validate(plan: &Plan, known_agents: &[&str], limits: &PlanLimits) -> Result<(), PlanError> {
    let count = plan.steps.len();
    if count == 0 {
        return Err(PlanError::Empty);
    }
    if count > limits.max_steps {
        return Err(PlanError::TooManySteps { count, max: limits.max_steps });
    }
    for (index, step) in plan.steps.iter().enumerate() {
        check_step(index, step, count, known_agents, limits)?;
    }
    check_acyclic(plan)
}

fn check_step(
    index: usize,
    step: &PlannedStep,
    count: usize,
    known_agents: &[&str],
    limits: &PlanLimits,
) -> Result<(), PlanError> {
    if step.title.trim().is_empty() {
        return Err(PlanError::BlankField { step: index, field: "title" });
    }
    if step.instruction.trim().is_empty() {
        return Err(PlanError::BlankField { step: index, field: "instruction" });
    }
    if step.title.chars().count() > MAX_TITLE_CHARS {
        return Err(PlanError::TitleTooLong { step: index, max: MAX_TITLE_CHARS });
    }
    if step.instruction.chars().count() > limits.max_instruction_chars {
        return Err(PlanError::InstructionTooLong { step: index, max: limits.max_instruction_chars });
    }
    if !known_agents.contains(&step.agent.as_str()) {
        return Err(PlanError::UnknownAgent { step: index, agent: step.agent.clone() });
    }
    for (position, &dependency) in step.depends_on.iter().enumerate() {
        if dependency >= count || dependency == index {
            return Err(PlanError::BadDependency { step: index, dependency });
        }
        if step.depends_on[..position].contains(&dependency) {
            return Err(PlanError::DuplicateDependency { step: index, dependency });
        }
    }
    Ok(())
}

/// Kahn's algorithm; expects every dependency index to be in range.
fn check_acyclic(plan: &Plan) -> Result<(), PlanError> {
    let count = plan.steps.len();
    let mut waiting_on: Vec<usize> = plan.steps.iter().map(|s| s.depends_on.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); count];
    for (index, step) in plan.steps.iter().enumerate() {
        for &dependency in &step.depends_on {
            if let Some(list) = dependents.get_mut(dependency) {
                list.push(index);
            }
        }
    }
    let mut ready: Vec<usize> = (0..count).filter(|&i| waiting_on[i] == 0).collect();
    let mut finished = vec![false; count];
    while let Some(index) = ready.pop() {
        finished[index] = true;
        for &dependent in &dependents[index] {
            waiting_on[dependent] -= 1;
            if waiting_on[dependent] == 0 {
                ready.push(dependent);
            }
        }
    }
    match finished.iter().position(|done| !done) {
        None => Ok(()),
        Some(start) => Err(PlanError::Cycle { step: step_on_cycle(plan, &finished, start) }),
    }
}

/// Kahn leaves unfinished both the steps on a cycle and the steps downstream
/// of one; to name a step that is really on a cycle, walk unfinished
/// dependencies from `start` until a step repeats.
fn step_on_cycle(plan: &Plan, finished: &[bool], start: usize) -> usize {
    let mut position_in_walk: Vec<Option<usize>> = vec![None; plan.steps.len()];
    let mut walk = Vec::new();
    let mut current = start;
    loop {
        if let Some(position) = position_in_walk[current] {
            return walk[position..].iter().copied().min().unwrap_or(current);
        }
        position_in_walk[current] = Some(walk.len());
        walk.push(current);
        // Every unfinished step still waits on an unfinished dependency, so
        // this only fails if the invariant above was broken.
        let next = plan.steps[current].depends_on.iter().copied().find(|&d| finished.get(d) == Some(&false));
        match next {
            Some(next) => current = next,
            None => return current,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BUILTIN_AGENTS;

    fn step(agent: &str, depends_on: Vec<usize>) -> PlannedStep {
        PlannedStep {
            title: "Do it".into(),
            instruction: "Do the thing".into(),
            agent: agent.into(),
            depends_on,
            required: false,
        }
    }

    fn plan(deps: Vec<Vec<usize>>) -> Plan {
        Plan { steps: deps.into_iter().map(|d| step("analyst", d)).collect() }
    }

    fn check(plan: &Plan) -> Result<(), PlanError> {
        validate(plan, &BUILTIN_AGENTS, &PlanLimits::default())
    }

    #[test]
    fn default_limits() {
        assert_eq!(PlanLimits::default(), PlanLimits { max_steps: 20, max_instruction_chars: 8000 });
    }

    #[test]
    fn accepts_a_diamond() {
        assert_eq!(check(&plan(vec![vec![], vec![0], vec![0], vec![1, 2]])), Ok(()));
    }

    #[test]
    fn rejects_empty_plan() {
        assert_eq!(check(&plan(vec![])), Err(PlanError::Empty));
    }

    #[test]
    fn rejects_too_many_steps() {
        let limits = PlanLimits { max_steps: 2, ..PlanLimits::default() };
        let result = validate(&plan(vec![vec![], vec![], vec![]]), &BUILTIN_AGENTS, &limits);
        assert_eq!(result, Err(PlanError::TooManySteps { count: 3, max: 2 }));
    }

    #[test]
    fn rejects_blank_title() {
        let mut p = plan(vec![vec![], vec![0]]);
        p.steps[1].title = "  \t".into();
        assert_eq!(check(&p), Err(PlanError::BlankField { step: 1, field: "title" }));
    }

    #[test]
    fn rejects_blank_instruction() {
        let mut p = plan(vec![vec![]]);
        p.steps[0].instruction = String::new();
        assert_eq!(check(&p), Err(PlanError::BlankField { step: 0, field: "instruction" }));
    }

    #[test]
    fn rejects_long_title() {
        let mut p = plan(vec![vec![]]);
        p.steps[0].title = "é".repeat(MAX_TITLE_CHARS);
        assert_eq!(check(&p), Ok(()));
        p.steps[0].title.push('x');
        assert_eq!(check(&p), Err(PlanError::TitleTooLong { step: 0, max: 80 }));
    }

    #[test]
    fn rejects_long_instruction() {
        let limits = PlanLimits { max_instruction_chars: 5, ..PlanLimits::default() };
        let mut p = plan(vec![vec![], vec![]]);
        p.steps[0].instruction = "12345".into();
        p.steps[1].instruction = "123456".into();
        assert_eq!(validate(&p, &BUILTIN_AGENTS, &limits), Err(PlanError::InstructionTooLong { step: 1, max: 5 }));
    }

    #[test]
    fn rejects_unknown_agent() {
        let p = Plan { steps: vec![step("writer", vec![]), step("astrologer", vec![0])] };
        assert_eq!(check(&p), Err(PlanError::UnknownAgent { step: 1, agent: "astrologer".into() }));
        assert_eq!(validate(&p, &["writer", "astrologer"], &PlanLimits::default()), Ok(()));
    }

    #[test]
    fn rejects_self_dependency() {
        assert_eq!(check(&plan(vec![vec![], vec![1]])), Err(PlanError::BadDependency { step: 1, dependency: 1 }));
    }

    #[test]
    fn rejects_out_of_range_dependency() {
        assert_eq!(check(&plan(vec![vec![], vec![2]])), Err(PlanError::BadDependency { step: 1, dependency: 2 }));
    }

    #[test]
    fn rejects_duplicate_dependency() {
        assert_eq!(
            check(&plan(vec![vec![], vec![], vec![0, 1, 0]])),
            Err(PlanError::DuplicateDependency { step: 2, dependency: 0 })
        );
    }

    #[test]
    fn rejects_two_step_cycle() {
        assert_eq!(check(&plan(vec![vec![1], vec![0]])), Err(PlanError::Cycle { step: 0 }));
    }

    #[test]
    fn cycle_report_names_a_step_on_the_cycle_not_downstream() {
        // 0 waits on the cycle 1 -> 2 -> 3 -> 1 without being on it.
        let p = plan(vec![vec![1], vec![3], vec![1], vec![2]]);
        assert_eq!(check(&p), Err(PlanError::Cycle { step: 1 }));
    }

    #[test]
    fn cycle_behind_a_valid_prefix_is_found() {
        let p = plan(vec![vec![], vec![0, 3], vec![1], vec![2]]);
        assert_eq!(check(&p), Err(PlanError::Cycle { step: 1 }));
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            PlanError::TooManySteps { count: 3, max: 2 }.to_string(),
            "the plan has 3 steps, more than the maximum of 2"
        );
        assert_eq!(PlanError::UnknownAgent { step: 4, agent: "x".into() }.to_string(), "step 4: unknown agent \"x\"");
        assert_eq!(PlanError::Cycle { step: 0 }.to_string(), "step 0 is part of a dependency cycle");
    }
}
