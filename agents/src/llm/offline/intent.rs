//! What a step instruction plainly asks a tool for, read the way a person would: an
//! arithmetic expression to evaluate, or something to recall from memory.
//!
//! Invariants: detection is pure and deterministic (same text, same answer), it never
//! invents arguments (an expression is a verbatim slice of the instruction, a memory query
//! is the instruction with its trigger words removed), and it prefers missing a request to
//! misreading ordinary text: ranges and dates such as `3-5` or `2024-01-15` are not sums.

/// Opens the step's instruction inside the agent loop's user message.
const INSTRUCTION_PREFIX: &str = "Instruction: ";
/// Follows the instruction when dependency outputs are appended.
const EARLIER_OUTPUTS_MARKER: &str = "\nOutputs of earlier steps:";
/// Follows the instruction (and the outputs) when the user's memories are appended.
const MEMORIES_MARKER: &str = "\nRelevant long-term memories:";

/// Characters an arithmetic expression is made of.
fn is_expression_char(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '.' | '+' | '-' | '*' | '/' | '^' | '%' | '(' | ')' | ' ')
}

fn is_operator(c: char) -> bool {
    matches!(c, '+' | '-' | '*' | '/' | '^' | '%')
}

/// Phrases that ask for memory, longest first so "search the memory" wins over parts of it.
const MEMORY_TRIGGERS: [&str; 5] = ["look up what we know", "search the memory", "search memory", "remember", "recall"];
/// Words left dangling at the start of a query once its trigger is gone ("search memory for X").
const QUERY_CONNECTIVES: [&str; 4] = ["for", "about", "on", "of"];

/// The instruction of a step prompt (`Instruction: …` up to the earlier outputs or the
/// memories), or the whole text when it is not a step prompt. Earlier outputs and memories
/// are not instructions: numbers and words in them ("recall", from an earlier task's
/// description) must not trigger tools.
pub(super) fn instruction_of(message: &str) -> &str {
    let Some(start) = message.find(INSTRUCTION_PREFIX) else {
        return message.trim();
    };
    let rest = &message[start + INSTRUCTION_PREFIX.len()..];
    let end = [EARLIER_OUTPUTS_MARKER, MEMORIES_MARKER].iter().filter_map(|m| rest.find(m)).min().unwrap_or(rest.len());
    rest[..end].trim()
}

/// The first arithmetic expression in `text`: a maximal run of digits, operators,
/// parentheses, decimal points and spaces with at least one operator between two numbers.
pub(super) fn arithmetic_expression(text: &str) -> Option<String> {
    text.split(|c: char| !is_expression_char(c)).filter_map(tidy_expression).find(|e| is_arithmetic(e))
}

/// Cuts the edges of a run to the expression: no leading or trailing operators, spaces or
/// full stops, and no parenthesis that the run cut off from its partner.
fn tidy_expression(run: &str) -> Option<String> {
    let mut start = run.find(|c: char| c.is_ascii_digit() || c == '(')?;
    // Keep a sign or decimal point written against its number: "-3 + 4" is not "3 + 4".
    while start > 0 && matches!(run.as_bytes()[start - 1], b'-' | b'.') {
        start -= 1;
    }
    let end = run.rfind(|c: char| c.is_ascii_digit() || c == ')')? + 1;
    if end <= start {
        return None;
    }
    let mut expr = &run[start..end];
    loop {
        let opens = expr.matches('(').count();
        let closes = expr.matches(')').count();
        if closes > opens && expr.ends_with(')') {
            expr = expr[..expr.len() - 1].trim_end();
        } else if opens > closes && expr.starts_with('(') {
            expr = expr[1..].trim_start();
        } else {
            break;
        }
    }
    let expr = expr.trim_end_matches(|c: char| !(c.is_ascii_digit() || c == ')')).trim();
    (!expr.is_empty()).then(|| expr.to_owned())
}

/// True when an operator stands between two numbers, and the text is not a range, date or
/// code written with dashes or slashes only ("3-5", "2024-01-15", "1/2/2025").
fn is_arithmetic(expr: &str) -> bool {
    let operators: Vec<char> = expr.chars().filter(|&c| is_operator(c)).collect();
    let compact = !expr.contains([' ', '(', ')']);
    if compact && operators.iter().all(|&c| c == '-') {
        return false;
    }
    if compact && operators.iter().all(|&c| c == '/') && operators.len() > 1 {
        return false;
    }
    let mut after_operand = false;
    let mut operator_pending = false;
    for c in expr.chars().filter(|c| !c.is_whitespace()) {
        if c.is_ascii_digit() {
            if operator_pending {
                return true;
            }
            after_operand = true;
        } else if c == '.' || c == ')' {
            after_operand = true;
        } else if c == '(' {
            after_operand = false;
        } else if is_operator(c) {
            // A sign after an operator ("3 * -2") keeps the pending operator.
            operator_pending |= after_operand;
            after_operand = false;
        }
    }
    false
}

/// The memory query when `text` asks to recall something: the text without its trigger
/// words, trimmed; `None` when nothing is left to look up.
pub(super) fn memory_query(text: &str) -> Option<String> {
    // ASCII lower-casing keeps byte offsets, so ranges found in `lower` cut `text`.
    let lower = text.to_ascii_lowercase();
    let mut cuts: Vec<(usize, usize)> = Vec::new();
    for trigger in MEMORY_TRIGGERS {
        for (at, _) in lower.match_indices(trigger) {
            let end = at + trigger.len();
            let overlaps = cuts.iter().any(|&(s, e)| at < e && s < end);
            if !overlaps && starts_word(&lower, at) && ends_word(&lower, end) {
                cuts.push((at, end));
            }
        }
    }
    if cuts.is_empty() {
        return None;
    }
    cuts.sort_unstable();
    let mut rest = String::with_capacity(text.len());
    let mut from = 0;
    for (start, end) in cuts {
        rest.push_str(&text[from..start]);
        rest.push(' ');
        from = end;
    }
    rest.push_str(&text[from..]);
    let punctuation: &[char] = &[':', ',', ';', '.', '-', '!', '?'];
    // Punctuation that followed a trigger ("Remember: x") is left standing alone.
    let mut words: Vec<&str> = rest.split_whitespace().filter(|w| !w.trim_matches(punctuation).is_empty()).collect();
    while let Some(first) = words.first() {
        if QUERY_CONNECTIVES.iter().any(|c| c.eq_ignore_ascii_case(first.trim_matches(punctuation))) {
            words.remove(0);
        } else {
            break;
        }
    }
    let query = words.join(" ");
    let query = query.trim_matches(|c: char| c.is_whitespace() || punctuation.contains(&c));
    (!query.is_empty()).then(|| query.to_owned())
}

/// True when no letter or digit precedes `at`: the match starts a word.
fn starts_word(text: &str, at: usize) -> bool {
    text[..at].chars().next_back().is_none_or(|c| !c.is_alphanumeric())
}

/// True when no letter or digit follows `end`: the match ends a word ("recalled" does not).
fn ends_word(text: &str, end: usize) -> bool {
    text[end..].chars().next().is_none_or(|c| !c.is_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_expressions_in_instructions() {
        assert_eq!(arithmetic_expression("compute 17 * (3 + 4)").as_deref(), Some("17 * (3 + 4)"));
        assert_eq!(arithmetic_expression("what is 2^10 + 1?").as_deref(), Some("2^10 + 1"));
        assert_eq!(arithmetic_expression("Compute 17 * (3 + 4).").as_deref(), Some("17 * (3 + 4)"));
        assert_eq!(arithmetic_expression("(so: 3.5 / 7)").as_deref(), Some("3.5 / 7"));
        assert_eq!(arithmetic_expression("add -3 + 4 please").as_deref(), Some("-3 + 4"));
        assert_eq!(arithmetic_expression("then 3 * -2").as_deref(), Some("3 * -2"));
        assert_eq!(arithmetic_expression("ratio 10/4").as_deref(), Some("10/4"));
        assert_eq!(arithmetic_expression("Done. 5 + .5 is next").as_deref(), Some("5 + .5"));
        assert_eq!(arithmetic_expression("take .5 * 8").as_deref(), Some(".5 * 8"));
    }

    #[test]
    fn ignores_numbers_that_are_not_sums() {
        for text in [
            "Write 3 paragraphs",
            "cover pages 10-20",
            "released on 2024-01-15",
            "due 1/2/2025",
            "a top-10 list about GPT-4",
            "grow by 20%",
            "version 1.2.3",
        ] {
            assert_eq!(arithmetic_expression(text), None, "{text}");
        }
    }

    #[test]
    fn memory_queries_drop_their_trigger_words() {
        assert_eq!(
            memory_query("Recall what the user said about pricing").as_deref(),
            Some("what the user said about pricing")
        );
        assert_eq!(memory_query("Search memory for prior incidents.").as_deref(), Some("prior incidents"));
        assert_eq!(memory_query("Look up what we know about Rust async").as_deref(), Some("Rust async"));
        assert_eq!(memory_query("Please REMEMBER: the deploy steps").as_deref(), Some("Please the deploy steps"));
        assert_eq!(memory_query("Recall."), None);
        assert_eq!(memory_query("He recalled the incident"), None);
        assert_eq!(memory_query("Write a summary"), None);
    }

    #[test]
    fn instruction_is_read_from_the_step_prompt() {
        let prompt =
            "Task: t 1 + 1\nStep: S\nInstruction: compute 2 * 3\n\nOutputs of earlier steps:\n\n### A\n5 + 5\n";
        assert_eq!(instruction_of(prompt), "compute 2 * 3");
        assert_eq!(instruction_of("just text"), "just text");
        let with_memories =
            "Task: t\nStep: S\nInstruction: compute 2 * 3\n\nRelevant long-term memories:\n- Recall what we decided\n";
        assert_eq!(instruction_of(with_memories), "compute 2 * 3");
        assert_eq!(memory_query(instruction_of(with_memories)), None);
    }
}
