//! Replanning: after a step failed for good, a revised plan for the work that did not
//! complete, given the goal, what completed (with its outputs) and what failed (with why).
//!
//! The completed steps stay as they are and keep their outputs; a [`Revision`] lists only the
//! new steps, whose `depends_on` indices count the completed steps first (in plan order, `0`
//! to `K - 1`) and then the revision's own steps (`K` and up), so a new step can build on the
//! output of a completed one. [`validate_revision`] checks the whole revised plan (the
//! completed steps followed by the new ones) as [`validate()`] checks any plan.

use crate::{Plan, PlanError, PlanLimits, PlannedStep, validate};

/// Where a step of the current plan stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepState {
    /// It completed with this output; it stays in the revised plan.
    Completed { output: String },
    /// It failed for good with this error.
    Failed { error: String },
    /// It did not run: a step it needed failed, or it never started.
    NotRun,
}

/// One step of the current plan and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentStep {
    /// The step; its `depends_on` are indices into [`ReplanRequest::steps`].
    pub step: PlannedStep,
    pub state: StepState,
}

/// What a planner is given to replan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplanRequest {
    /// The task's description.
    pub goal: String,
    /// The current plan in plan order, each step with where it stands.
    pub steps: Vec<CurrentStep>,
    /// (instruction, agent) of the steps that failed for good in earlier versions of the plan,
    /// so that the same work is not given again to an agent that already failed it.
    pub earlier_failures: Vec<(String, String)>,
}

/// New steps for the work that did not complete. Their `depends_on` index the completed steps
/// of the [`ReplanRequest`] first, in plan order, then these steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub steps: Vec<PlannedStep>,
}

impl ReplanRequest {
    /// The steps that completed, in plan order: the first indices of a revised plan.
    pub fn completed(&self) -> impl Iterator<Item = (&PlannedStep, &str)> {
        self.steps.iter().filter_map(|s| match &s.state {
            StepState::Completed { output } => Some((&s.step, output.as_str())),
            _ => None,
        })
    }

    /// The steps that failed, in plan order, each with its error.
    pub fn failed(&self) -> impl Iterator<Item = (&PlannedStep, &str)> {
        self.steps.iter().filter_map(|s| match &s.state {
            StepState::Failed { error } => Some((&s.step, error.as_str())),
            _ => None,
        })
    }

    /// Every agent that failed `instruction`, in this plan or an earlier version of it.
    pub fn agents_that_failed(&self, instruction: &str) -> Vec<&str> {
        let now = self.failed().filter(|(s, _)| s.instruction == instruction).map(|(s, _)| s.agent.as_str());
        let before = self.earlier_failures.iter().filter(|(i, _)| i == instruction).map(|(_, a)| a.as_str());
        let mut agents: Vec<&str> = Vec::new();
        for agent in now.chain(before) {
            if !agents.contains(&agent) {
                agents.push(agent);
            }
        }
        agents
    }

    /// Where each step of the current plan goes in a revised plan that keeps the completed
    /// steps (first, in plan order) and replaces the others one for one (after them, in plan
    /// order): its index there.
    pub(crate) fn one_for_one(&self) -> Vec<usize> {
        let kept = self.completed().count();
        let (mut done, mut new) = (0, kept);
        self.steps
            .iter()
            .map(|s| {
                let slot = if matches!(s.state, StepState::Completed { .. }) { &mut done } else { &mut new };
                *slot += 1;
                *slot - 1
            })
            .collect()
    }
}

impl Revision {
    /// The whole revised plan: the completed steps (dependencies renumbered among themselves)
    /// followed by the revision's steps.
    pub fn full_plan(&self, request: &ReplanRequest) -> Plan {
        let mapping = request.one_for_one();
        let mut steps: Vec<PlannedStep> = request
            .steps
            .iter()
            .filter(|s| matches!(s.state, StepState::Completed { .. }))
            .map(|s| PlannedStep {
                depends_on: s.step.depends_on.iter().map(|&d| mapping.get(d).copied().unwrap_or(d)).collect(),
                ..s.step.clone()
            })
            .collect();
        steps.extend(self.steps.iter().cloned());
        Plan { steps }
    }
}

/// Checks a revision: at least one new step, and the whole revised plan (completed steps
/// first) valid against `known_agents` and `limits`. Step indices in errors are those of the
/// whole plan.
pub fn validate_revision(
    request: &ReplanRequest,
    revision: &Revision,
    known_agents: &[&str],
    limits: &PlanLimits,
) -> Result<(), PlanError> {
    if revision.steps.is_empty() {
        return Err(PlanError::Empty);
    }
    validate(&revision.full_plan(request), known_agents, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(instruction: &str, agent: &str, depends_on: Vec<usize>) -> PlannedStep {
        PlannedStep {
            title: instruction.into(),
            instruction: instruction.into(),
            agent: agent.into(),
            depends_on,
            required: false,
        }
    }

    fn request() -> ReplanRequest {
        // 0 research (failed) → 1 write (not run); 2 analyse (completed) → 3 review (completed)
        ReplanRequest {
            goal: "g".into(),
            steps: vec![
                CurrentStep {
                    step: step("Research A", "researcher", vec![]),
                    state: StepState::Failed { error: "no".into() },
                },
                CurrentStep { step: step("Write B", "writer", vec![0]), state: StepState::NotRun },
                CurrentStep {
                    step: step("Analyse C", "analyst", vec![]),
                    state: StepState::Completed { output: "C done".into() },
                },
                CurrentStep {
                    step: step("Review C", "reviewer", vec![2]),
                    state: StepState::Completed { output: "ok".into() },
                },
            ],
            earlier_failures: vec![("Research A".into(), "engineer".into())],
        }
    }

    #[test]
    fn completed_steps_come_first_and_the_others_follow_in_plan_order() {
        let request = request();
        assert_eq!(request.one_for_one(), [2, 3, 0, 1]);
        let revision =
            Revision { steps: vec![step("Research A", "analyst", vec![0]), step("Write B", "writer", vec![2])] };
        let plan = revision.full_plan(&request);
        let summary: Vec<(&str, Vec<usize>)> =
            plan.steps.iter().map(|s| (s.instruction.as_str(), s.depends_on.clone())).collect();
        assert_eq!(
            summary,
            [("Analyse C", vec![]), ("Review C", vec![0]), ("Research A", vec![0]), ("Write B", vec![2])]
        );
        assert_eq!(validate_revision(&request, &revision, &crate::BUILTIN_AGENTS, &PlanLimits::default()), Ok(()));
    }

    #[test]
    fn a_revision_must_add_a_step_and_make_a_valid_plan() {
        let request = request();
        let agents = crate::BUILTIN_AGENTS;
        let limits = PlanLimits::default();
        assert_eq!(validate_revision(&request, &Revision { steps: vec![] }, &agents, &limits), Err(PlanError::Empty));
        let cycle = Revision { steps: vec![step("x", "analyst", vec![3]), step("y", "analyst", vec![2])] };
        assert_eq!(validate_revision(&request, &cycle, &agents, &limits), Err(PlanError::Cycle { step: 2 }));
        let unknown = Revision { steps: vec![step("x", "poet", vec![])] };
        assert!(matches!(
            validate_revision(&request, &unknown, &agents, &limits),
            Err(PlanError::UnknownAgent { step: 2, .. })
        ));
    }

    #[test]
    fn the_agents_that_failed_an_instruction_include_earlier_versions() {
        assert_eq!(request().agents_that_failed("Research A"), ["researcher", "engineer"]);
        assert!(request().agents_that_failed("Write B").is_empty());
    }
}
