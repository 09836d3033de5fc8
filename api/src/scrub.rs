//! Text for tenants, without the deployment's insides.
//!
//! Errors from outside (a model provider's refusal, a transport failure) are worth showing to
//! the user whose task failed, but they can carry the provider's URL, the address a name
//! resolved to or an internal host and port. [`internal_details`] keeps the words and
//! replaces those: every URL becomes `<url>` and every IP address (with or without a port)
//! becomes `<address>`. The original goes to the log, with the task and step ids.

use std::net::{IpAddr, SocketAddr};

/// `text` with URLs and IP addresses replaced.
pub fn internal_details(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| !c.is_whitespace()) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        out.push_str(&word(&rest[..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// One whitespace-free word, with the punctuation around it kept.
fn word(word: &str) -> String {
    let is_edge = |c: char| matches!(c, '(' | ')' | '"' | '\'' | ',' | ';' | '<' | '>' | '`' | '{' | '}');
    let core = word.trim_matches(is_edge).trim_end_matches(['.', ':']);
    let Some(at) = (!core.is_empty()).then(|| word.find(core)).flatten() else { return word.to_owned() };
    let replacement = if core.contains("://") {
        "<url>"
    } else if is_address(core) {
        "<address>"
    } else {
        return word.to_owned();
    };
    format!("{}{replacement}{}", &word[..at], &word[at + core.len()..])
}

fn is_address(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
        || s.parse::<SocketAddr>().is_ok()
        || s.strip_prefix('[').and_then(|s| s.strip_suffix(']')).is_some_and(|s| s.parse::<IpAddr>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::internal_details;

    #[test]
    fn urls_and_addresses_go_and_the_words_stay() {
        assert_eq!(
            internal_details("error sending request for url (http://10.0.3.7:8080/v1/chat/completions)"),
            "error sending request for url (<url>)"
        );
        assert_eq!(
            internal_details("connect to 192.168.1.20:5432 failed; tried [::1] and fe80::1."),
            "connect to <address> failed; tried <address> and <address>."
        );
        assert_eq!(
            internal_details("the model provider rejected the request (401): Incorrect API key provided"),
            "the model provider rejected the request (401): Incorrect API key provided"
        );
        assert_eq!(internal_details("  version 1.2 at 12:30  "), "  version 1.2 at 12:30  ");
    }
}
