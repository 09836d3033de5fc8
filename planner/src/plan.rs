//! The plan data model: an ordered list of steps forming a DAG through
//! `depends_on` indices.
//!
//! These types are plain data that any producer (heuristic, LLM, API client)
//! can build; the invariants (indices in range, no cycles, known agents,
//! bounded text) are only guaranteed after [`crate::validate()`] succeeds.

use serde::{Deserialize, Serialize};

use crate::text::{ELLIPSIS, capitalize_first, cut_with_ellipsis, trim_before_ellipsis};

/// Longest title, in characters, that [`crate::validate()`] accepts.
pub const MAX_TITLE_CHARS: usize = 80;

/// How many leading words of a text [`make_title`] keeps.
const TITLE_WORDS: usize = 8;

/// One unit of work for one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// Short human label, at most [`MAX_TITLE_CHARS`] characters.
    pub title: String,
    /// What the agent must do.
    pub instruction: String,
    /// Name of the agent that runs the step, e.g. `"analyst"`.
    pub agent: String,
    /// Indices into [`Plan::steps`] of the steps that must finish first.
    pub depends_on: Vec<usize>,
    /// A failure of this step fails the task at once, rather than skipping only what
    /// depends on it while other branches run on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
}

/// An ordered set of steps whose dependencies form a DAG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The steps; their positions are the indices `depends_on` refers to.
    pub steps: Vec<PlannedStep>,
}

impl Plan {
    /// Indices of the steps with no dependencies, in ascending order.
    pub fn roots(&self) -> Vec<usize> {
        self.steps.iter().enumerate().filter(|(_, step)| step.depends_on.is_empty()).map(|(index, _)| index).collect()
    }
}

/// Builds a step title from free text: its first eight words, first letter
/// capitalised, at most [`MAX_TITLE_CHARS`] characters; an ellipsis marks
/// that words were left out.
pub fn make_title(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let kept = &words[..words.len().min(TITLE_WORDS)];
    let head = capitalize_first(&kept.join(" "));
    let dropped_words = words.len() > kept.len();
    let head_chars = head.chars().count();
    if !dropped_words && head_chars <= MAX_TITLE_CHARS {
        return head;
    }
    if dropped_words && head_chars < MAX_TITLE_CHARS {
        let mut title = trim_before_ellipsis(&head).to_owned();
        title.push(ELLIPSIS);
        return title;
    }
    cut_with_ellipsis(&head, MAX_TITLE_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(depends_on: Vec<usize>) -> PlannedStep {
        PlannedStep { title: "T".into(), instruction: "I".into(), agent: "analyst".into(), depends_on, required: false }
    }

    #[test]
    fn roots_are_steps_without_dependencies() {
        let plan = Plan { steps: vec![step(vec![]), step(vec![0]), step(vec![]), step(vec![1, 2])] };
        assert_eq!(plan.roots(), vec![0, 2]);
        assert_eq!(Plan { steps: vec![] }.roots(), Vec::<usize>::new());
    }

    #[test]
    fn plan_round_trips_through_json() {
        let plan = Plan { steps: vec![step(vec![]), step(vec![0])] };
        let json = serde_json::to_string(&plan).expect("serialize");
        assert_eq!(
            json,
            r#"{"steps":[{"title":"T","instruction":"I","agent":"analyst","depends_on":[]},{"title":"T","instruction":"I","agent":"analyst","depends_on":[0]}]}"#
        );
        let back: Plan = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, plan);
    }

    #[test]
    fn title_keeps_short_text_whole() {
        assert_eq!(make_title("implement core APIs"), "Implement core APIs");
    }

    #[test]
    fn title_keeps_first_eight_words() {
        assert_eq!(
            make_title("one two three four five six seven eight nine ten"),
            "One two three four five six seven eight…"
        );
        assert_eq!(
            make_title("one two three four five six seven eight, nine"),
            "One two three four five six seven eight…"
        );
    }

    #[test]
    fn title_is_bounded_in_characters() {
        let long_words = "internationalization ".repeat(8);
        let title = make_title(&long_words);
        assert!(title.chars().count() <= MAX_TITLE_CHARS, "{title}");
        assert_eq!(title, "Internationalization internationalization internationalization…");
    }

    #[test]
    fn title_hard_cuts_one_huge_word() {
        let title = make_title(&"x".repeat(200));
        assert_eq!(title.chars().count(), MAX_TITLE_CHARS);
        assert!(title.ends_with('…'));
    }
}
