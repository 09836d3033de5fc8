//! Splits a free-text task description into ordered clauses, one per step.
//!
//! Boundaries are, in this order: line breaks and list markers ("1.", "2)",
//! "(3)", "-", "*", "•"), sentence ends (". ", "! ", "? ", "; ") and "then"
//! style connectors (", then", " and then", ", finally", ...). A plain " and "
//! never splits, because it usually joins two halves of one task.
//!
//! Invariants of the output: clauses keep the description's order, carry no
//! list marker, leading connector or trailing punctuation, start with a
//! capital letter, and each contains at least one alphanumeric character.

use crate::text::capitalize_first;

/// Bullets recognised at the start of a line.
const LINE_BULLETS: [&str; 8] = ["-", "*", "+", "•", "‣", "◦", "▪", "–"];
/// Bullets that never occur in prose, so they also split mid-line.
const INLINE_BULLETS: [char; 4] = ['•', '‣', '◦', '▪'];

/// Words ending in "." that do not end a sentence.
const ABBREVIATIONS: [&str; 10] = ["e.g.", "i.e.", "eg.", "ie.", "vs.", "cf.", "approx.", "mr.", "mrs.", "dr."];

/// Connectors that start a new clause when preceded by "," or "and".
const SPLITTING_CONNECTORS: [&str; 4] = ["then", "finally", "afterwards", "after that"];

/// Connector words removed from the start of a clause, longest first so that
/// "and then" wins over "and". `comma_only` connectors are stripped only when
/// a comma follows ("First, ..."), because without one they are often part
/// of the task ("First-time users ...").
const LEADING_CONNECTORS: [(&str, bool); 17] = [
    ("and after that", false),
    ("and afterwards", false),
    ("and finally", false),
    ("and then", false),
    ("after that", false),
    ("afterwards", false),
    ("secondly", false),
    ("firstly", false),
    ("thirdly", false),
    ("finally", false),
    ("lastly", false),
    ("second", true),
    ("first", true),
    ("third", true),
    ("then", false),
    ("next", false),
    ("also", true),
];

/// Splits `description` into cleaned clauses (see the module invariants).
pub(crate) fn split_clauses(description: &str) -> Vec<Clause> {
    list_items(description)
        .into_iter()
        .flat_map(split_sentences)
        .flat_map(split_connectors)
        .filter_map(|raw| clean_clause(raw).map(|text| Clause { text, introduces_list: raw.trim_end().ends_with(':') }))
        .collect()
}

/// One cleaned clause of a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Clause {
    /// The clause text, cleaned as the module invariants describe.
    pub(crate) text: String,
    /// The clause ended with a colon ("Steps:"), so it introduces what
    /// follows rather than being a task of its own.
    pub(crate) introduces_list: bool,
}

/// A whitespace-delimited token and where it sits.
struct Token<'a> {
    start: usize,
    text: &'a str,
    first_on_line: bool,
}

fn tokens(text: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut token_start = None;
    let mut at_line_start = true;
    let mut token_first_on_line = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if let Some(start) = token_start.take() {
                out.push(Token { start, text: &text[start..i], first_on_line: token_first_on_line });
            }
            if c == '\n' {
                at_line_start = true;
            }
        } else if token_start.is_none() {
            token_start = Some(i);
            token_first_on_line = at_line_start;
            at_line_start = false;
        }
    }
    if let Some(start) = token_start {
        out.push(Token { start, text: &text[start..], first_on_line: token_first_on_line });
    }
    out
}

/// The number of a list marker token: "3.", "3)" or "(3)".
fn list_number(token: &str) -> Option<u32> {
    let digits = match token.strip_prefix('(') {
        Some(inner) => inner.strip_suffix(')')?,
        None => token.strip_suffix('.').or_else(|| token.strip_suffix(')'))?,
    };
    // More than three digits is a year or an amount, not a list position.
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Byte spans of the list markers in `text`.
///
/// A numbered marker at the start of a line always counts. Mid-line, "2." is
/// usually the end of a sentence about the number two ("Step number 1. Step
/// number 2."), so it counts only as part of a run on the same line that
/// starts at 1, where a "1." must also open a sentence or follow a colon
/// ("Do this: 1. a 2. b"); "(1)" and "1)" are list-like enough on their own.
fn marker_spans(text: &str, tokens: &[Token<'_>]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let numbered: Vec<(usize, u32)> =
        tokens.iter().enumerate().filter_map(|(i, t)| list_number(t.text).map(|n| (i, n))).collect();
    let mut inline_run: Option<u32> = None;
    let mut run_line_start = 0;
    for (k, &(index, number)) in numbered.iter().enumerate() {
        let token = &tokens[index];
        if token.first_on_line {
            spans.push((token.start, token.start + token.text.len()));
            inline_run = None;
            continue;
        }
        let line_start = text[..token.start].rfind('\n').map_or(0, |i| i + 1);
        if line_start != run_line_start {
            inline_run = None;
            run_line_start = line_start;
        }
        let has_content_after = tokens.get(index + 1).is_some();
        let continues_run = inline_run.is_some_and(|last| number == last + 1);
        let opens_run = number == 1
            && opens_inline_list(token.text, index.checked_sub(1).map(|i| tokens[i].text))
            && numbered[k + 1..].iter().any(|&(_, n)| n == 2);
        if has_content_after && (continues_run || opens_run) {
            spans.push((token.start, token.start + token.text.len()));
            inline_run = Some(number);
        }
    }
    for token in tokens {
        if token.first_on_line && LINE_BULLETS.contains(&token.text) {
            spans.push((token.start, token.start + token.text.len()));
        } else if let Some(bullet) = token.text.chars().next().filter(|c| INLINE_BULLETS.contains(c)) {
            // A bullet glued to its text ("•Research") is still a bullet.
            spans.push((token.start, token.start + bullet.len_utf8()));
        }
    }
    for (i, c) in text.char_indices() {
        if c == '\n' || c == '\r' {
            spans.push((i, i + c.len_utf8()));
        }
    }
    spans.sort_unstable();
    spans
}

/// Whether a mid-line "1." / "1)" / "(1)" can start a list, given the token
/// before it.
fn opens_inline_list(marker: &str, previous: Option<&str>) -> bool {
    marker.ends_with(')') || previous.is_none_or(|p| p.ends_with([':', '.', '!', '?', ';']))
}

/// Cuts `text` at line breaks and list markers, dropping the markers.
fn list_items(text: &str) -> Vec<&str> {
    let spans = marker_spans(text, &tokens(text));
    let mut items = Vec::with_capacity(spans.len() + 1);
    let mut start = 0;
    for (span_start, span_end) in spans {
        // Spans never overlap, but stay safe if a future marker rule breaks that.
        if span_start >= start {
            items.push(&text[start..span_start]);
            start = span_end;
        }
    }
    items.push(&text[start..]);
    items
}

/// Closing characters that belong to the sentence they follow: `done.)`.
fn is_closer(c: char) -> bool {
    matches!(c, ')' | ']' | '"' | '\'' | '”' | '’' | '»')
}

/// Cuts `text` after each sentence terminator followed by whitespace or the
/// end. A dot only ends a sentence if it is not part of an abbreviation;
/// decimals ("3.5") and dotted names ("api.rs") never split because no
/// whitespace follows their dot.
fn split_sentences(text: &str) -> Vec<&str> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut sentences = Vec::new();
    let mut start = 0;
    for (k, &(i, c)) in chars.iter().enumerate() {
        if !matches!(c, '.' | '!' | '?' | ';') {
            continue;
        }
        let mut after = k + 1;
        while chars.get(after).is_some_and(|&(_, c)| is_closer(c)) {
            after += 1;
        }
        let end = match chars.get(after) {
            None => text.len(),
            Some(&(j, next)) if next.is_whitespace() => j,
            Some(_) => continue,
        };
        if c == '.' && !dot_ends_sentence(text, i, &chars[after..]) {
            continue;
        }
        sentences.push(&text[start..end]);
        start = end;
    }
    sentences.push(&text[start..]);
    sentences
}

/// Whether the dot at byte `dot` ends a sentence, given the characters after
/// it.
fn dot_ends_sentence(text: &str, dot: usize, rest: &[(usize, char)]) -> bool {
    let word = text[..=dot]
        .split_whitespace()
        .next_back()
        .unwrap_or_default()
        .trim_start_matches(['(', '[', '"', '\'', '“', '‘'])
        .to_lowercase();
    if ABBREVIATIONS.contains(&word.as_str()) {
        return false;
    }
    if word == "etc." {
        // "etc." ends a list, and ends the sentence only if a new one starts.
        return rest.iter().map(|&(_, c)| c).find(|c| !c.is_whitespace()).is_some_and(char::is_uppercase);
    }
    true
}

/// Whether `text` has the whole word `word` (ASCII) at byte `at`.
fn word_at(text: &str, at: usize, word: &str) -> bool {
    let Some(rest) = text.get(at..) else {
        return false;
    };
    rest.starts_with(word)
        && text[..at].chars().next_back().is_none_or(|c| !c.is_alphanumeric())
        && rest[word.len()..].chars().next().is_none_or(|c| !c.is_alphanumeric())
}

/// Where a clause joined by `connector` at byte `at` should be cut, if the
/// connector is introduced by "," or "and": the cut goes before that
/// introducer so the left clause ends cleanly.
fn connector_cut(lower: &str, at: usize) -> Option<usize> {
    let before = lower[..at].trim_end();
    let cut = if let Some(rest) = before.strip_suffix(',') {
        rest.len()
    } else if before.ends_with("and") && word_at(before, before.len() - 3, "and") {
        before[..before.len() - 3].trim_end().trim_end_matches(',').len()
    } else {
        return None;
    };
    lower[..cut].chars().any(char::is_alphanumeric).then_some(cut)
}

/// Cuts `sentence` before ", then", " and then", ", finally" and the like.
fn split_connectors(sentence: &str) -> Vec<&str> {
    // ASCII lowercasing keeps byte offsets identical to the original.
    let lower = sentence.to_ascii_lowercase();
    let mut cuts = Vec::new();
    for (at, _) in lower.char_indices() {
        let is_connector = SPLITTING_CONNECTORS.iter().any(|c| word_at(&lower, at, c));
        if is_connector && let Some(cut) = connector_cut(&lower, at) {
            cuts.push(cut);
        }
    }
    let mut parts = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts {
        if cut > start {
            parts.push(&sentence[start..cut]);
            start = cut;
        }
    }
    parts.push(&sentence[start..]);
    parts
}

/// Removes one leading connector word, if any.
fn strip_connector(text: &str) -> &str {
    for (connector, comma_only) in LEADING_CONNECTORS {
        let Some(head) = text.get(..connector.len()) else {
            continue;
        };
        if !head.eq_ignore_ascii_case(connector) {
            continue;
        }
        let rest = &text[connector.len()..];
        let mut after = rest.chars();
        let stripped = match after.next() {
            None | Some(',' | ':') => true,
            // "Then." alone is a connector, "Next.js" is a name.
            Some('.' | ';' | '!' | '?') => after.next().is_none_or(char::is_whitespace),
            Some(c) => c.is_whitespace() && !comma_only,
        };
        if stripped {
            return rest;
        }
    }
    text
}

/// Words left dangling at a clause end when a list marker or connector cut
/// a sentence ("find sources, (2) compare them and (3) ...").
const TRAILING_CONJUNCTIONS: [&str; 3] = ["and", "or", "then"];

/// Drops trailing punctuation and dangling conjunctions.
fn trim_clause_end(text: &str) -> &str {
    let mut text = text;
    loop {
        let trimmed =
            text.trim_end_matches(|c: char| c.is_whitespace() || matches!(c, '.' | '!' | '?' | ';' | ',' | ':'));
        let without_conjunction = TRAILING_CONJUNCTIONS.iter().find_map(|word| {
            let rest = trimmed.strip_suffix(word)?;
            // Keep a clause that is only the conjunction, and words like "brand".
            (rest.ends_with(char::is_whitespace) || rest.ends_with(',')).then_some(rest)
        });
        match without_conjunction {
            Some(rest) => text = rest,
            None => return trimmed,
        }
    }
}

/// Strips leading punctuation and connectors and trailing punctuation;
/// `None` if nothing meaningful is left.
fn clean_clause(raw: &str) -> Option<String> {
    let mut text = raw;
    loop {
        let trimmed = text.trim_start_matches(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | ':'));
        let stripped = strip_connector(trimmed);
        if stripped.len() == text.len() {
            break;
        }
        text = stripped;
    }
    let text = trim_clause_end(text);
    text.chars().any(char::is_alphanumeric).then(|| capitalize_first(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<String> {
        split_clauses(text).into_iter().map(|c| c.text).collect()
    }

    #[test]
    fn clauses_ending_in_a_colon_introduce_lists() {
        let flags: Vec<bool> =
            split_clauses("Steps:\n- build it: quickly\n- test it").iter().map(|c| c.introduces_list).collect();
        assert_eq!(flags, [true, false, false]);
    }

    #[test]
    fn sentences() {
        assert_eq!(
            split("Gather the data. Analyse it! Is it sound? Write it up; ship it"),
            ["Gather the data", "Analyse it", "Is it sound", "Write it up", "Ship it"]
        );
    }

    #[test]
    fn spec_example() {
        assert_eq!(
            split("Analyze the requirements and build a plan. Then implement core APIs."),
            ["Analyze the requirements and build a plan", "Implement core APIs"]
        );
    }

    #[test]
    fn plain_and_does_not_split() {
        assert_eq!(split("research the market and compare vendors"), ["Research the market and compare vendors"]);
    }

    #[test]
    fn decimals_abbreviations_and_dotted_names_do_not_split() {
        assert_eq!(
            split("Upgrade to version 3.5 of the parser, e.g. the one in api.rs vs. the old one. Then test it"),
            ["Upgrade to version 3.5 of the parser, e.g. the one in api.rs vs. the old one", "Test it"]
        );
        assert_eq!(
            split("Compare tools i.e. linters, formatters etc. and pick one"),
            ["Compare tools i.e. linters, formatters etc. and pick one"]
        );
    }

    #[test]
    fn etc_before_a_new_sentence_splits() {
        assert_eq!(
            split("Collect logs, metrics etc. Then find the cause."),
            ["Collect logs, metrics etc", "Find the cause"]
        );
    }

    #[test]
    fn closing_quotes_stay_with_their_sentence() {
        assert_eq!(split("Fix the bug (see issue 12.) Then deploy."), ["Fix the bug (see issue 12.)", "Deploy"]);
    }

    #[test]
    fn numbered_list_on_lines() {
        assert_eq!(
            split("1. Research competitors\n2) Analyse pricing\n(3) Write the report\n"),
            ["Research competitors", "Analyse pricing", "Write the report"]
        );
    }

    #[test]
    fn numbered_list_inline() {
        assert_eq!(
            split("Please do: 1. research competitors 2. analyse pricing 3. write the report."),
            ["Please do", "Research competitors", "Analyse pricing", "Write the report"]
        );
    }

    #[test]
    fn numbered_list_inline_with_parentheses() {
        assert_eq!(
            split("We need to (1) find sources, (2) compare them and (3) write it up"),
            ["We need to", "Find sources", "Compare them", "Write it up"]
        );
        assert_eq!(split("Do 1) this 2) that"), ["Do", "This", "That"]);
    }

    #[test]
    fn sentences_ending_in_numbers_are_not_a_list() {
        assert_eq!(split("Raise the limit to 2. Then measure latency"), ["Raise the limit to 2", "Measure latency"]);
        assert_eq!(split("Run phase 1. Run phase 2. Run phase 3."), ["Run phase 1", "Run phase 2", "Run phase 3"]);
        assert_eq!(split("1. Raise the limit to 2. Measure again"), ["Raise the limit to 2", "Measure again"]);
    }

    #[test]
    fn bullets() {
        assert_eq!(
            split("Tasks:\n- gather sources\n* summarise them\n• review the summary\n  + publish"),
            ["Tasks", "Gather sources", "Summarise them", "Review the summary", "Publish"]
        );
        assert_eq!(
            split("• find papers • summarize them •check citations"),
            ["Find papers", "Summarize them", "Check citations"]
        );
    }

    #[test]
    fn hyphens_inside_text_are_not_bullets() {
        assert_eq!(split("Build a read-only cache - quickly"), ["Build a read-only cache - quickly"]);
    }

    #[test]
    fn then_connectors() {
        assert_eq!(
            split("Find the sources, then summarize them and then review the summary; then publish it"),
            ["Find the sources", "Summarize them", "Review the summary", "Publish it"]
        );
        assert_eq!(split("then build it, and then test it"), ["Build it", "Test it"]);
    }

    #[test]
    fn then_without_comma_or_and_does_not_split() {
        assert_eq!(split("If the build fails then fix it"), ["If the build fails then fix it"]);
    }

    #[test]
    fn other_leading_connectors_are_stripped() {
        assert_eq!(
            split("First, gather data. Next, analyse it. After that write a draft. Finally: review it."),
            ["Gather data", "Analyse it", "Write a draft", "Review it"]
        );
    }

    #[test]
    fn finally_after_comma_splits() {
        assert_eq!(split("Build the API, and finally deploy it"), ["Build the API", "Deploy it"]);
    }

    #[test]
    fn connector_words_inside_other_words_are_kept() {
        assert_eq!(
            split("Thenardier story. Nextcloud setup. First-time user flow. Next.js app"),
            ["Thenardier story", "Nextcloud setup", "First-time user flow", "Next.js app"]
        );
    }

    #[test]
    fn empty_and_punctuation_only_clauses_are_dropped() {
        assert_eq!(split("   "), Vec::<String>::new());
        assert_eq!(split("...\n- \n2.\n!!"), Vec::<String>::new());
        assert_eq!(split("Then. Finally."), Vec::<String>::new());
    }

    #[test]
    fn unicode_text_survives() {
        assert_eq!(
            split("Überprüfe die Daten. Dann schreibe — bitte — einen Bericht über 3.5 Ergebnisse"),
            ["Überprüfe die Daten", "Dann schreibe — bitte — einen Bericht über 3.5 Ergebnisse"]
        );
    }

    #[test]
    fn crlf_lines() {
        assert_eq!(split("1. build\r\n2. test\r\n"), ["Build", "Test"]);
    }
}
