//! Chooses which built-in agent should carry out a clause.
//!
//! Rule: scan the clause's words left to right and take the agent of the
//! first keyword found, so the main verb of an instruction ("Analyze ... and
//! build ...") decides. Keywords match whole words or word stems,
//! case-insensitively. Invariant: the result is always one of
//! [`crate::BUILTIN_AGENTS`]; a clause with no keyword goes to the analyst.

const ANALYST: &str = "analyst";
const RESEARCHER: &str = "researcher";
const ENGINEER: &str = "engineer";
const WRITER: &str = "writer";
const REVIEWER: &str = "reviewer";

/// Agent for clauses that match no keyword: working out what an unclear
/// request means is analysis.
pub(crate) const DEFAULT_AGENT: &str = ANALYST;

/// A keyword: `"stem*"` matches any word starting with `stem`, anything else
/// matches the whole word only (short stems like "code" or "test" would
/// otherwise catch "codec" or "testimony").
const KEYWORDS: &[(&str, &str)] = &[
    ("analy*", ANALYST),
    ("evaluat*", ANALYST),
    ("assess*", ANALYST),
    ("compar*", ANALYST),
    ("investigat*", ANALYST),
    ("requirement*", ANALYST),
    ("estimat*", ANALYST),
    ("prioriti*", ANALYST),
    ("research*", RESEARCHER),
    ("find", RESEARCHER),
    ("finds", RESEARCHER),
    ("search*", RESEARCHER),
    ("lookup*", RESEARCHER),
    ("gather*", RESEARCHER),
    ("collect*", RESEARCHER),
    ("survey*", RESEARCHER),
    ("explor*", RESEARCHER),
    ("build*", ENGINEER),
    ("built", ENGINEER),
    ("implement*", ENGINEER),
    ("code", ENGINEER),
    ("codes", ENGINEER),
    ("coded", ENGINEER),
    ("coding", ENGINEER),
    ("develop*", ENGINEER),
    ("creat*", ENGINEER),
    ("fix", ENGINEER),
    ("fixes", ENGINEER),
    ("fixed", ENGINEER),
    ("fixing", ENGINEER),
    ("deploy*", ENGINEER),
    ("refactor*", ENGINEER),
    ("program*", ENGINEER),
    ("debug*", ENGINEER),
    ("install*", ENGINEER),
    ("configur*", ENGINEER),
    ("integrat*", ENGINEER),
    ("optimi*", ENGINEER),
    ("setup", ENGINEER),
    ("write", WRITER),
    ("writes", WRITER),
    ("writing", WRITER),
    ("written", WRITER),
    ("wrote", WRITER),
    ("summar*", WRITER),
    ("document*", WRITER),
    ("draft*", WRITER),
    ("report*", WRITER),
    ("explain*", WRITER),
    ("explanat*", WRITER),
    ("describ*", WRITER),
    ("outline*", WRITER),
    ("review*", REVIEWER),
    ("check*", REVIEWER),
    ("verif*", REVIEWER),
    ("test", REVIEWER),
    ("tests", REVIEWER),
    ("tested", REVIEWER),
    ("testing", REVIEWER),
    ("validat*", REVIEWER),
    ("audit*", REVIEWER),
    ("proofread*", REVIEWER),
    ("inspect*", REVIEWER),
    ("critiqu*", REVIEWER),
];

/// Things whose writing is engineering, not prose: "write code", "write
/// unit tests", "write a script".
const CODE_OBJECTS: &[&str] = &[
    "code",
    "test",
    "tests",
    "script",
    "scripts",
    "function",
    "functions",
    "program",
    "programs",
    "implementation",
    "query",
    "queries",
    "sql",
    "migration",
    "migrations",
    "module",
    "modules",
    "class",
    "classes",
    "endpoint",
    "endpoints",
    "api",
    "apis",
    "parser",
    "cli",
    "handler",
    "handlers",
    "library",
    "patch",
    "bindings",
];

/// Words that may sit between "write" and its object ("write the unit tests").
const OBJECT_FILLERS: &[&str] = &[
    "a",
    "an",
    "the",
    "some",
    "more",
    "new",
    "additional",
    "missing",
    "any",
    "all",
    "our",
    "its",
    "their",
    "this",
    "that",
    "these",
    "those",
    "unit",
    "integration",
    "automated",
    "regression",
    "e2e",
    "python",
    "rust",
    "javascript",
    "typescript",
    "go",
    "java",
];

/// How many filler words may sit between "write" and a code object.
const MAX_FILLERS: usize = 3;

/// Returns the agent for `clause` (see the module rule).
pub(crate) fn assign_agent(clause: &str) -> &'static str {
    keyword_agent(clause).unwrap_or(DEFAULT_AGENT)
}

/// The agent asked for by the first keyword in `clause`, if it has one.
pub(crate) fn keyword_agent(clause: &str) -> Option<&'static str> {
    keyword_agent_among(clause, |_| true)
}

/// The agent for `clause` when only `allowed` (a task's agent hints, not empty) may be used:
/// the first keyword naming an allowed agent decides; without one, the default agent if it
/// is allowed, else the first hint.
pub(crate) fn assign_agent_among<'a>(clause: &str, allowed: &'a [String]) -> &'a str {
    let pick = |agent: &str| allowed.iter().find(|a| a.as_str() == agent).map(String::as_str);
    keyword_agent_among(clause, |agent| pick(agent).is_some())
        .and_then(pick)
        .or_else(|| pick(DEFAULT_AGENT))
        .unwrap_or_else(|| allowed.first().map(String::as_str).unwrap_or(DEFAULT_AGENT))
}

/// Every agent of `allowed` that could carry out `clause`, best first: those its keywords ask
/// for, in the order they appear, then the default agent, then the others in `allowed`'s
/// order; each once. What a replan chooses from when the agent a step had failed it.
pub(crate) fn candidate_agents<'a>(clause: &str, allowed: &[&'a str]) -> Vec<&'a str> {
    let words: Vec<String> =
        clause.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
    let asked = (0..words.len()).filter_map(|i| agent_at(&words, i)).chain([DEFAULT_AGENT]);
    let mut candidates: Vec<&'a str> = Vec::with_capacity(allowed.len());
    for agent in asked.chain(allowed.iter().copied()) {
        if let Some(&known) = allowed.iter().find(|a| **a == agent)
            && !candidates.contains(&known)
        {
            candidates.push(known);
        }
    }
    candidates
}

fn keyword_agent_among(clause: &str, allowed: impl Fn(&str) -> bool) -> Option<&'static str> {
    let words: Vec<String> =
        clause.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
    (0..words.len()).filter_map(|i| agent_at(&words, i)).find(|agent| allowed(agent))
}

/// The agent a keyword starting at `words[i]` asks for, if one does.
fn agent_at(words: &[String], i: usize) -> Option<&'static str> {
    let word = words[i].as_str();
    let next = words.get(i + 1).map(String::as_str);
    if matches!(word, "write" | "writes" | "writing" | "wrote") && writes_code(&words[i + 1..]) {
        return Some(ENGINEER);
    }
    if matches!(word, "look" | "looks" | "looking") && next == Some("up") {
        return Some(RESEARCHER);
    }
    if matches!(word, "set" | "sets" | "setting") && next == Some("up") {
        return Some(ENGINEER);
    }
    KEYWORDS.iter().find(|(pattern, _)| matches_keyword(word, pattern)).map(|&(_, agent)| agent)
}

fn matches_keyword(word: &str, pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(stem) => word.starts_with(stem),
        None => word == pattern,
    }
}

/// Whether the words after "write" name code rather than prose.
fn writes_code(after: &[String]) -> bool {
    after
        .iter()
        .take(MAX_FILLERS + 1)
        .map(String::as_str)
        .find(|w| !OBJECT_FILLERS.contains(w) || CODE_OBJECTS.contains(w))
        .is_some_and(|w| CODE_OBJECTS.contains(&w))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BUILTIN_AGENTS;

    #[test]
    fn candidates_are_the_keywords_agents_then_the_default_then_the_rest() {
        assert_eq!(
            candidate_agents("Research and compare the retry policies", &BUILTIN_AGENTS),
            ["researcher", "analyst", "engineer", "writer", "reviewer"]
        );
        assert_eq!(
            candidate_agents("Write a summary, then review it", &BUILTIN_AGENTS),
            ["writer", "reviewer", "analyst", "researcher", "engineer"]
        );
        // Only allowed agents, in the hints' order after the keywords' and the default's.
        assert_eq!(
            candidate_agents("Research it", &["writer", "translator", "researcher"]),
            ["researcher", "writer", "translator"]
        );
    }

    #[test]
    fn keyword_table() {
        let cases = [
            ("Analyse the logs", "analyst"),
            ("analyze the logs", "analyst"),
            ("An analysis of churn", "analyst"),
            ("Evaluate both vendors", "analyst"),
            ("Assess the risk", "analyst"),
            ("Compare the options", "analyst"),
            ("Investigate the outage", "analyst"),
            ("Requirements for the new billing flow", "analyst"),
            ("Research the market", "researcher"),
            ("Find three papers on RAG", "researcher"),
            ("Search the web for vendors", "researcher"),
            ("Look up the current price", "researcher"),
            ("Gather customer quotes", "researcher"),
            ("Survey existing tools", "researcher"),
            ("Explore alternatives", "researcher"),
            ("Build the service", "engineer"),
            ("Implement the parser", "engineer"),
            ("Code the endpoint", "engineer"),
            ("Develop a prototype", "engineer"),
            ("Create a database schema", "engineer"),
            ("Write code for the importer", "engineer"),
            ("Write tests for the importer", "engineer"),
            ("Write unit tests", "engineer"),
            ("Write the Python script", "engineer"),
            ("Fix the login bug", "engineer"),
            ("Deploy to staging", "engineer"),
            ("Refactor the module", "engineer"),
            ("Program the controller", "engineer"),
            ("Set up the CI", "engineer"),
            ("Write a blog post", "writer"),
            ("Summarise the findings", "writer"),
            ("Summarize the findings", "writer"),
            ("Document the API", "writer"),
            ("Draft an email", "writer"),
            ("Report on progress", "writer"),
            ("Explain the trade-offs", "writer"),
            ("Review the pull request", "reviewer"),
            ("Check the numbers", "reviewer"),
            ("Verify the results", "reviewer"),
            ("Test the release", "reviewer"),
            ("Validate the schema", "reviewer"),
            ("Audit the permissions", "reviewer"),
            ("Proofread the article", "reviewer"),
        ];
        for (clause, agent) in cases {
            assert_eq!(assign_agent(clause), agent, "clause: {clause}");
        }
    }

    #[test]
    fn hints_pick_the_first_keyword_of_an_allowed_agent() {
        let hints = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let writer_reviewer = hints(&["writer", "reviewer"]);
        assert_eq!(assign_agent_among("Analyze the data and write a report", &writer_reviewer), "writer");
        assert_eq!(assign_agent_among("Check the numbers", &writer_reviewer), "reviewer");
        // No allowed keyword: the default agent if hinted, else the first hint.
        assert_eq!(assign_agent_among("Think about pricing", &writer_reviewer), "writer");
        assert_eq!(assign_agent_among("Think about pricing", &hints(&["engineer", "analyst"])), "analyst");
        assert_eq!(assign_agent_among("Translate the manual", &hints(&["translator"])), "translator");
    }

    #[test]
    fn earliest_keyword_wins() {
        assert_eq!(assign_agent("Analyze the requirements and build a plan"), "analyst");
        assert_eq!(assign_agent("Build a plan after you analyze the requirements"), "engineer");
        assert_eq!(assign_agent("Please review the draft and fix typos"), "reviewer");
        assert_eq!(assign_agent("Fix the bug reported by users"), "engineer");
    }

    #[test]
    fn no_keyword_falls_back_to_analyst() {
        assert_eq!(assign_agent("Think about pricing"), "analyst");
        assert_eq!(assign_agent(""), "analyst");
        assert_eq!(keyword_agent("Think about pricing"), None);
        assert_eq!(keyword_agent("Think, then write"), Some("writer"));
    }

    #[test]
    fn short_keywords_need_the_whole_word() {
        assert_eq!(assign_agent("The testimony of the codec expert"), "analyst");
        assert_eq!(assign_agent("Look at the setup"), "engineer");
        assert_eq!(assign_agent("Look around"), "analyst");
    }

    #[test]
    fn write_about_code_stays_with_the_writer() {
        assert_eq!(assign_agent("Write a summary of the code changes"), "writer");
        assert_eq!(assign_agent("Write the release notes"), "writer");
    }

    #[test]
    fn matching_is_case_insensitive_and_unicode_aware() {
        assert_eq!(assign_agent("DEPLOY IT NOW"), "engineer");
        assert_eq!(assign_agent("Café owners: research their habits"), "researcher");
    }

    #[test]
    fn every_agent_is_builtin() {
        for (_, agent) in KEYWORDS {
            assert!(BUILTIN_AGENTS.contains(agent), "{agent}");
        }
        assert!(BUILTIN_AGENTS.contains(&DEFAULT_AGENT));
    }
}
