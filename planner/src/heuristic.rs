//! A rule-based planner that needs no model: one step per clause of the
//! description, each assigned an agent by keyword, chained in order, except that a
//! clause opening with "Separately" or "Independently" starts a branch of its own (it
//! depends on nothing, and what follows it chains after it).
//!
//! Invariant: for any non-blank description it returns a plan that passes
//! [`validate()`] against [`BUILTIN_AGENTS`] and its limits (surplus clauses are
//! merged into the last step and over-long text is cut), so callers can use
//! it as the always-available fallback planner.
//!
//! Its replan ([`HeuristicPlanner::replan_request`]) is as deterministic: the steps that did
//! not complete are planned again one for one, in plan order, with the same dependencies;
//! a failed step goes to the next agent that suits its instruction and has not failed it yet
//! (in this version of the plan or an earlier one), steps that did not run keep theirs. When
//! every suitable agent has failed a step, there is no other way: no revision.

mod assign;
mod clauses;

use crate::error::PlanError;
use crate::plan::{Plan, PlannedStep, make_title};
use crate::replan::{ReplanRequest, Revision, StepState, validate_revision};
use crate::text::fit;
use crate::validate::{PlanLimits, validate};
use crate::{BUILTIN_AGENTS, Planner};

/// Version of the heuristic rules; bump it whenever the same description
/// could be planned differently, so cached plans are not reused.
pub const HEURISTIC_PLANNER_VERSION: &str = "heuristic-2";

/// Words that open a clause meant to run on its own (matched case-insensitively, followed by
/// a comma, a colon or a space).
const BRANCH_MARKERS: [&str; 2] = ["separately", "independently"];

/// Joins clauses that did not fit into their own step.
const MERGE_SEPARATOR: &str = ". ";

/// Plans by splitting the description into clauses; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct HeuristicPlanner {
    limits: PlanLimits,
    /// A task's agent hints: the only agents its plan may use; empty: the built-in ones.
    hints: Vec<String>,
}

impl HeuristicPlanner {
    /// A planner whose plans respect `limits`.
    pub fn new(limits: PlanLimits) -> Self {
        Self { limits, hints: Vec::new() }
    }

    /// The same planner, assigning only `hints` (a task's agent hints; empty: the built-in
    /// agents). Each clause goes to the first hinted agent its keywords ask for, else to the
    /// analyst if hinted, else to the first hint.
    pub fn with_hints(mut self, hints: Vec<String>) -> Self {
        self.hints = hints;
        self
    }

    /// Plans `description` synchronously (the work is cheap string
    /// processing). Fails with [`PlanError::EmptyDescription`] for a blank
    /// description, and otherwise only if the limits themselves are
    /// unsatisfiable (zero steps or zero instruction characters).
    pub fn plan_description(&self, description: &str) -> Result<Plan, PlanError> {
        let hints = &self.hints;
        let description = description.trim();
        if description.is_empty() {
            return Err(PlanError::EmptyDescription);
        }
        let mut clauses = task_clauses(clauses::split_clauses(description));
        if clauses.is_empty() {
            // Nothing but punctuation and markers: still honour the promise
            // of a plan for any non-blank description.
            clauses.push(description.to_owned());
        }
        // Without this a zero limit would leave no step to merge into; the
        // resulting one-step plan is then rejected by `validate` below.
        let max_steps = self.limits.max_steps.max(1);
        let surplus = clauses.split_off(clauses.len().min(max_steps));
        let last = clauses.len() - 1;
        let steps = clauses
            .into_iter()
            .enumerate()
            .map(|(index, clause)| {
                let (clause, branch) = match strip_branch_marker(&clause) {
                    Some(rest) => (rest, true),
                    None => (clause, false),
                };
                let mut instruction = clause.clone();
                if index == last {
                    for extra in &surplus {
                        instruction.push_str(MERGE_SEPARATOR);
                        instruction.push_str(extra);
                    }
                }
                PlannedStep {
                    title: make_title(&clause),
                    instruction: fit(&instruction, self.limits.max_instruction_chars),
                    agent: if hints.is_empty() {
                        assign::assign_agent(&clause).to_owned()
                    } else {
                        assign::assign_agent_among(&clause, hints).to_owned()
                    },
                    depends_on: if branch { Vec::new() } else { index.checked_sub(1).into_iter().collect() },
                    required: false,
                }
            })
            .collect();
        let plan = Plan { steps };
        if hints.is_empty() {
            validate(&plan, &BUILTIN_AGENTS, &self.limits)?;
        } else {
            let known: Vec<&str> = hints.iter().map(String::as_str).collect();
            validate(&plan, &known, &self.limits)?;
        }
        Ok(plan)
    }
}

impl HeuristicPlanner {
    /// A revised plan for the work that did not complete (see the module docs), or `None`
    /// when a failed step has no suitable agent left. Agents come from the hints, or else the
    /// built-in agents.
    pub fn replan_request(&self, request: &ReplanRequest) -> Result<Option<Revision>, PlanError> {
        let allowed: Vec<&str> = if self.hints.is_empty() {
            BUILTIN_AGENTS.to_vec()
        } else {
            self.hints.iter().map(String::as_str).collect()
        };
        let mapping = request.one_for_one();
        let mut steps = Vec::new();
        for current in &request.steps {
            let agent = match &current.state {
                StepState::Completed { .. } => continue,
                StepState::NotRun => current.step.agent.clone(),
                StepState::Failed { .. } => {
                    let tried = request.agents_that_failed(&current.step.instruction);
                    let candidates = assign::candidate_agents(&current.step.instruction, &allowed);
                    match candidates.into_iter().find(|agent| !tried.contains(agent)) {
                        Some(agent) => agent.to_owned(),
                        None => return Ok(None),
                    }
                }
            };
            let depends_on = current
                .step
                .depends_on
                .iter()
                .map(|&d| mapping.get(d).copied().ok_or(PlanError::BadDependency { step: steps.len(), dependency: d }))
                .collect::<Result<_, _>>()?;
            steps.push(PlannedStep { agent, depends_on, ..current.step.clone() });
        }
        let revision = Revision { steps };
        // Steps that did not run keep their agents, which may come from an agents file.
        let mut known = allowed;
        known.extend(request.steps.iter().map(|s| s.step.agent.as_str()));
        validate_revision(request, &revision, &known, &self.limits)?;
        Ok(Some(revision))
    }
}

/// The clause without its branch marker ("Separately, research B" → "research B"), when it
/// opens with one and something follows it.
fn strip_branch_marker(clause: &str) -> Option<String> {
    BRANCH_MARKERS.iter().find_map(|marker| {
        let head = clause.get(..marker.len())?;
        let rest = &clause[marker.len()..];
        // "Separately, …", "Separately: …", "Separately …"; not "Separatelyish".
        if !head.eq_ignore_ascii_case(marker) || !rest.starts_with([',', ':', ' ']) {
            return None;
        }
        let mut chars = rest.trim_start_matches([',', ':', ' ']).trim().chars();
        let first = chars.next()?;
        Some(first.to_uppercase().chain(chars).collect())
    })
}

/// The clause texts that are tasks: drops list introductions that ask for
/// nothing ("Steps:", "Please do the following:") when something follows
/// them, but keeps ones that do ("Build a site with these pages:").
fn task_clauses(clauses: Vec<clauses::Clause>) -> Vec<String> {
    let count = clauses.len();
    clauses
        .into_iter()
        .enumerate()
        .filter(|(index, clause)| {
            let bare_intro = clause.introduces_list && assign::keyword_agent(&clause.text).is_none();
            !bare_intro || index + 1 == count
        })
        .map(|(_, clause)| clause.text)
        .collect()
}

#[async_trait::async_trait]
impl Planner for HeuristicPlanner {
    fn version(&self) -> &str {
        HEURISTIC_PLANNER_VERSION
    }

    async fn plan(&self, description: &str) -> Result<Plan, PlanError> {
        self.plan_description(description)
    }

    async fn replan(&self, request: &ReplanRequest) -> Result<Option<Revision>, PlanError> {
        self.replan_request(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planner() -> HeuristicPlanner {
        HeuristicPlanner::new(PlanLimits::default())
    }

    fn step(title: &str, instruction: &str, agent: &str, depends_on: Vec<usize>) -> PlannedStep {
        PlannedStep {
            title: title.into(),
            instruction: instruction.into(),
            agent: agent.into(),
            depends_on,
            required: false,
        }
    }

    /// (agent, instruction) pairs, for compact assertions.
    fn summary(plan: &Plan) -> Vec<(&str, &str)> {
        plan.steps.iter().map(|s| (s.agent.as_str(), s.instruction.as_str())).collect()
    }

    #[test]
    fn hinted_plans_use_only_the_hinted_agents() {
        let hinted = planner().with_hints(vec!["writer".into(), "reviewer".into()]);
        let plan = hinted
            .plan_description("Research the market. Then analyze the findings. Then check the numbers.")
            .expect("plan");
        let agents: Vec<&str> = plan.steps.iter().map(|s| s.agent.as_str()).collect();
        assert_eq!(agents, ["writer", "writer", "reviewer"]);
        // An agent from an agents file, not a built-in one, is allowed when hinted.
        let custom = planner().with_hints(vec!["translator".into()]).plan_description("Translate it.").expect("plan");
        assert_eq!(custom.steps[0].agent, "translator");
    }

    #[test]
    fn spec_example() {
        let plan = planner()
            .plan_description("Analyze the requirements and build a plan. Then implement core APIs.")
            .expect("plan");
        assert_eq!(
            plan,
            Plan {
                steps: vec![
                    step(
                        "Analyze the requirements and build a plan",
                        "Analyze the requirements and build a plan",
                        "analyst",
                        vec![]
                    ),
                    step("Implement core APIs", "Implement core APIs", "engineer", vec![0]),
                ]
            }
        );
        assert_eq!(plan.roots(), vec![0]);
    }

    #[test]
    fn numbered_list() {
        let plan = planner()
            .plan_description(
                "1. Research competitor pricing\n2. Compare it with ours\n3. Write a short report\n4. Proofread it",
            )
            .expect("plan");
        assert_eq!(
            summary(&plan),
            [
                ("researcher", "Research competitor pricing"),
                ("analyst", "Compare it with ours"),
                ("writer", "Write a short report"),
                ("reviewer", "Proofread it"),
            ]
        );
        let deps: Vec<Vec<usize>> = plan.steps.iter().map(|s| s.depends_on.clone()).collect();
        assert_eq!(deps, [vec![], vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn a_clause_opening_with_separately_starts_a_branch_of_its_own() {
        let plan = planner()
            .plan_description(
                "Research job queues. Then write a summary. Separately, analyze the costs. Then review it.",
            )
            .expect("plan");
        assert_eq!(
            summary(&plan),
            [
                ("researcher", "Research job queues"),
                ("writer", "Write a summary"),
                ("analyst", "Analyze the costs"),
                ("reviewer", "Review it"),
            ]
        );
        let deps: Vec<Vec<usize>> = plan.steps.iter().map(|s| s.depends_on.clone()).collect();
        assert_eq!(deps, [vec![], vec![0], vec![], vec![2]]);
        // Only as the clause's first word, and not when nothing follows it.
        assert_eq!(strip_branch_marker("INDEPENDENTLY: check the logs").as_deref(), Some("Check the logs"));
        assert_eq!(strip_branch_marker("Separately"), None);
        assert_eq!(strip_branch_marker("Separatelyish things"), None);
        assert_eq!(strip_branch_marker("Do it separately"), None);
    }

    #[test]
    fn bare_list_introductions_are_not_steps() {
        let plan = planner()
            .plan_description("Steps:\n1) look up the rate limits\n2) refactor client.rs to respect them")
            .expect("plan");
        assert_eq!(
            summary(&plan),
            [("researcher", "Look up the rate limits"), ("engineer", "Refactor client.rs to respect them"),]
        );
        let plan = planner().plan_description("Build a site with these pages:\n- home\n- pricing").expect("plan");
        assert_eq!(
            summary(&plan),
            [("engineer", "Build a site with these pages"), ("analyst", "Home"), ("analyst", "Pricing"),]
        );
        let plan = planner().plan_description("Todo:").expect("plan");
        assert_eq!(summary(&plan), [("analyst", "Todo")]);
    }

    #[test]
    fn bullets() {
        let plan =
            planner().plan_description("- find the slow queries\n- fix them\n• verify latency improved").expect("plan");
        assert_eq!(
            summary(&plan),
            [
                ("researcher", "Find the slow queries"),
                ("engineer", "Fix them"),
                ("reviewer", "Verify latency improved"),
            ]
        );
    }

    #[test]
    fn then_splitting() {
        let plan = planner()
            .plan_description("gather user feedback, then summarize it and then draft a roadmap")
            .expect("plan");
        assert_eq!(
            summary(&plan),
            [("researcher", "Gather user feedback"), ("writer", "Summarize it"), ("writer", "Draft a roadmap"),]
        );
    }

    #[test]
    fn decimals_and_abbreviations_stay_in_one_step() {
        let plan = planner()
            .plan_description("Upgrade Python 3.5 code in api.rs, e.g. the handlers, i.e. all of them, etc. and deploy")
            .expect("plan");
        assert_eq!(
            summary(&plan),
            [("engineer", "Upgrade Python 3.5 code in api.rs, e.g. the handlers, i.e. all of them, etc. and deploy")]
        );
        assert_eq!(plan.steps[0].title, "Upgrade Python 3.5 code in api.rs, e.g. the…");
    }

    #[test]
    fn long_clause_gets_a_short_title() {
        let plan = planner()
            .plan_description(
                "Investigate why the nightly export job sometimes writes duplicate rows into the warehouse",
            )
            .expect("plan");
        assert_eq!(plan.steps[0].title, "Investigate why the nightly export job sometimes writes…");
        assert_eq!(plan.steps[0].agent, "analyst");
    }

    #[test]
    fn surplus_clauses_merge_into_the_last_step() {
        let limits = PlanLimits { max_steps: 3, ..PlanLimits::default() };
        let plan = HeuristicPlanner::new(limits)
            .plan_description("Research A. Analyse B. Build C. Test D. Document E.")
            .expect("plan");
        assert_eq!(
            summary(&plan),
            [("researcher", "Research A"), ("analyst", "Analyse B"), ("engineer", "Build C. Test D. Document E"),]
        );
        assert_eq!(plan.steps[2].title, "Build C");
        assert_eq!(plan.steps[2].depends_on, vec![1]);
    }

    #[test]
    fn many_clauses_fit_default_limits() {
        let description: String = (1..=50).map(|i| format!("Step number {i}. ")).collect();
        let plan = planner().plan_description(&description).expect("plan");
        assert_eq!(plan.steps.len(), 20);
        assert!(plan.steps[19].instruction.ends_with("Step number 50"));
    }

    #[test]
    fn long_instruction_is_cut_to_the_limit() {
        let limits = PlanLimits { max_steps: 2, max_instruction_chars: 30 };
        let plan = HeuristicPlanner::new(limits)
            .plan_description("Write the intro. Write chapter one. Write chapter two. Write chapter three.")
            .expect("plan");
        assert_eq!(plan.steps[1].instruction, "Write chapter one. Write…");
        assert!(plan.steps.iter().all(|s| s.instruction.chars().count() <= 30));
    }

    #[test]
    fn blank_description_is_an_error() {
        assert_eq!(planner().plan_description(""), Err(PlanError::EmptyDescription));
        assert_eq!(planner().plan_description(" \n\t "), Err(PlanError::EmptyDescription));
    }

    #[test]
    fn punctuation_only_description_still_plans() {
        let plan = planner().plan_description("?!").expect("plan");
        assert_eq!(summary(&plan), [("analyst", "?!")]);
    }

    #[test]
    fn unsatisfiable_limits_are_reported_not_panicked() {
        let zero_steps = PlanLimits { max_steps: 0, ..PlanLimits::default() };
        assert_eq!(
            HeuristicPlanner::new(zero_steps).plan_description("Build it"),
            Err(PlanError::TooManySteps { count: 1, max: 0 })
        );
        let zero_chars = PlanLimits { max_instruction_chars: 0, ..PlanLimits::default() };
        assert_eq!(
            HeuristicPlanner::new(zero_chars).plan_description("Build it"),
            Err(PlanError::BlankField { step: 0, field: "instruction" })
        );
    }

    #[test]
    fn plans_always_validate() {
        let long = "word ".repeat(5000);
        let inputs = ["x", "1.", "Then.", "•", "a; b; c; d", "Ünïcödé ✓ tëxt. 変換する。次に確認する", long.as_str()];
        for input in inputs {
            let plan = planner().plan_description(input).expect(input);
            assert_eq!(validate(&plan, &BUILTIN_AGENTS, &PlanLimits::default()), Ok(()));
        }
    }

    fn current(instruction: &str, agent: &str, depends_on: Vec<usize>, state: StepState) -> crate::CurrentStep {
        crate::CurrentStep { step: step(instruction, instruction, agent, depends_on), state }
    }

    fn failed() -> StepState {
        StepState::Failed { error: "refused".into() }
    }

    #[test]
    fn a_replan_gives_a_failed_step_to_the_next_suitable_agent_and_keeps_the_rest() {
        // 0 write (completed); 1 research (failed) → 2 summarise (not run)
        let request = ReplanRequest {
            goal: "g".into(),
            steps: vec![
                current("Write a haiku", "writer", vec![], StepState::Completed { output: "h".into() }),
                current("Research retry policies", "researcher", vec![], failed()),
                current("Summarise them", "writer", vec![1], StepState::NotRun),
            ],
            earlier_failures: vec![],
        };
        let revision = planner().replan_request(&request).expect("valid").expect("a revision");
        assert_eq!(
            revision.steps,
            [
                step("Research retry policies", "Research retry policies", "analyst", vec![]),
                step("Summarise them", "Summarise them", "writer", vec![1]),
            ]
        );
        // The same request gives the same revision.
        assert_eq!(planner().replan_request(&request), Ok(Some(revision)));
    }

    #[test]
    fn a_replan_skips_agents_that_failed_before_and_gives_up_when_none_is_left() {
        let mut request = ReplanRequest {
            goal: "g".into(),
            steps: vec![current("Research retry policies", "analyst", vec![], failed())],
            earlier_failures: vec![("Research retry policies".into(), "researcher".into())],
        };
        let revision = planner().replan_request(&request).unwrap().unwrap();
        assert_eq!(revision.steps[0].agent, "engineer");
        request
            .earlier_failures
            .extend(["engineer", "writer", "reviewer"].map(|a| ("Research retry policies".to_owned(), a.to_owned())));
        assert_eq!(planner().replan_request(&request), Ok(None));
        // With hints, only hinted agents are candidates.
        let hinted = planner().with_hints(vec!["analyst".into(), "writer".into()]);
        request.earlier_failures.clear();
        assert_eq!(hinted.replan_request(&request).unwrap().unwrap().steps[0].agent, "writer");
    }

    #[tokio::test]
    async fn planner_trait() {
        let planner: Box<dyn Planner> = Box::new(planner());
        assert_eq!(planner.version(), "heuristic-2");
        let plan = planner.plan("Write docs").await.expect("plan");
        assert_eq!(summary(&plan), [("writer", "Write docs")]);
        assert_eq!(planner.plan("").await, Err(PlanError::EmptyDescription));
    }
}
