//! Small text helpers shared by titles and instructions.
//!
//! All lengths are counted in `char`s, not bytes, because the limits they
//! enforce are user-facing ("80 characters"), and every cut falls on a `char`
//! boundary so no helper can panic on multi-byte text.

/// Marks text that was cut short.
pub(crate) const ELLIPSIS: char = '…';

/// Upper-cases the first character, leaving the rest as written.
pub(crate) fn capitalize_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Drops trailing whitespace and punctuation that would read badly before an
/// ellipsis ("plan, …").
pub(crate) fn trim_before_ellipsis(text: &str) -> &str {
    text.trim_end_matches(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | ':' | '.' | '-'))
}

/// Returns `text` unchanged if it has at most `max_chars` characters;
/// otherwise cuts it to at most `max_chars` characters including a trailing
/// ellipsis, at a word boundary when one exists.
pub(crate) fn fit(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    cut_with_ellipsis(text, max_chars)
}

/// Cuts `text` to at most `max_chars` characters, the last being an ellipsis.
pub(crate) fn cut_with_ellipsis(text: &str, max_chars: usize) -> String {
    let Some(budget) = max_chars.checked_sub(1) else {
        return String::new();
    };
    let end = text.char_indices().nth(budget).map_or(text.len(), |(i, _)| i);
    let head = &text[..end];
    let next_is_break = text[end..].chars().next().is_none_or(char::is_whitespace);
    // Prefer ending on a whole word; a single over-long word is hard-cut.
    let head = if next_is_break {
        head
    } else {
        match head.rfind(char::is_whitespace) {
            Some(space) if !trim_before_ellipsis(&head[..space]).is_empty() => &head[..space],
            _ => head,
        }
    };
    let trimmed = trim_before_ellipsis(head);
    let mut out = String::with_capacity(trimmed.len() + ELLIPSIS.len_utf8());
    out.push_str(if trimmed.is_empty() { head } else { trimmed });
    out.push(ELLIPSIS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capitalize_first_handles_empty_and_unicode() {
        assert_eq!(capitalize_first(""), "");
        assert_eq!(capitalize_first("build it"), "Build it");
        assert_eq!(capitalize_first("éclair"), "Éclair");
        assert_eq!(capitalize_first("Already"), "Already");
    }

    #[test]
    fn fit_keeps_short_text() {
        assert_eq!(fit("short text", 10), "short text");
    }

    #[test]
    fn fit_cuts_at_word_boundary() {
        assert_eq!(fit("alpha beta gamma", 12), "alpha beta…");
        assert_eq!(fit("alpha beta, gamma", 13), "alpha beta…");
    }

    #[test]
    fn fit_hard_cuts_a_single_long_word() {
        assert_eq!(fit("abcdefghij", 5), "abcd…");
    }

    #[test]
    fn fit_counts_chars_not_bytes() {
        let out = fit("ééééé ééééé", 8);
        assert_eq!(out, "ééééé…");
        assert!(out.chars().count() <= 8);
    }

    #[test]
    fn cut_with_zero_budget_is_empty() {
        assert_eq!(cut_with_ellipsis("abc", 0), "");
        assert_eq!(cut_with_ellipsis("abc", 1), "…");
    }
}
