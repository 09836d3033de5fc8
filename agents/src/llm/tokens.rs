//! Token counting for models that report no usage (the offline model, and the llama.cpp or
//! Ollama servers that omit `usage`).
//!
//! Counts use the `cl100k_base` BPE: exact for the GPT-4 family, and within a few percent of
//! other modern tokenizers, which is what accounting needs when the provider says nothing.
//! (`o200k_base` would match the newest OpenAI models, but those always report usage, and
//! it costs twice the memory and start-up time.)
//!
//! Invariants: the BPE is built at most once per process, lazily, in a `OnceLock`; building
//! it takes a noticeable amount of CPU, so async callers go through [`warm_up_tokenizer`]
//! (which builds it on the blocking pool) before counting on the runtime. If the BPE ever
//! failed to build, counts fall back to a four-characters-per-token estimate instead of
//! failing a model call over accounting. Counts of long texts are remembered in a bounded
//! memo, so a text re-sent on every call of a conversation is encoded once.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{LazyLock, Mutex, MutexGuard, OnceLock, PoisonError},
};

use tiktoken_rs::CoreBPE;

use super::{ChatRequest, ToolCall};

/// Tokens a chat format adds around each message (role markers and separators), as in
/// OpenAI's published counting recipe.
const PER_MESSAGE_OVERHEAD: u64 = 4;
/// Tokens that prime the assistant's reply.
const REPLY_PRIMING: u64 = 3;

/// Texts this long or longer are remembered once counted. A conversation re-sends every
/// earlier message on each call, and an agent its system prompt and tool schemas, while
/// encoding costs far more than hashing (the BPE's pre-tokenising regex runs at tens of MB/s,
/// SipHash at GB/s): without the memo, counting a loop's prompts grows with the square of its
/// length. Shorter texts encode faster than a lookup pays.
const MEMO_MIN_BYTES: usize = 64;
/// Counts remembered at most. When full the memo starts over: bounded memory, and no
/// bookkeeping on the hot path.
const MEMO_CAPACITY: usize = 4096;

static BPE: OnceLock<Option<CoreBPE>> = OnceLock::new();

/// Counts by (hash, length) of the text. A 64-bit hash collision between two texts of one
/// length would misreport one count; accounting can live with odds of that order.
static MEMO: LazyLock<Mutex<HashMap<(u64, usize), u64>>> = LazyLock::new(Mutex::default);

fn memo() -> MutexGuard<'static, HashMap<(u64, usize), u64>> {
    MEMO.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shared BPE, built on first use. Blocks the calling thread while it is built.
fn bpe() -> Option<&'static CoreBPE> {
    BPE.get_or_init(|| match tiktoken_rs::cl100k_base() {
        Ok(bpe) => Some(bpe),
        Err(err) => {
            tracing::error!(error = %err, "cannot build the cl100k_base tokenizer; token counts are estimated");
            None
        }
    })
    .as_ref()
}

/// Builds the tokenizer on the blocking pool if it is not built yet, so the first
/// [`count_tokens`] on an async task does not stall the runtime. Cheap once built.
pub async fn warm_up_tokenizer() {
    if BPE.get().is_some() {
        return;
    }
    // A join error means the build panicked; `count_tokens` then retries the build inline,
    // which is the best that can be done.
    if let Err(err) = tokio::task::spawn_blocking(|| bpe().is_some()).await {
        tracing::error!(error = %err, "building the tokenizer panicked");
    }
}

/// Number of `cl100k_base` tokens in `text`; zero only for empty text.
///
/// Encoding short texts (a prompt, an answer) takes microseconds and is fine on an async
/// task once [`warm_up_tokenizer`] has run; the first call builds the tokenizer and blocks.
pub fn count_tokens(text: &str) -> u64 {
    if text.len() < MEMO_MIN_BYTES {
        return encode_count(text);
    }
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    let key = (hasher.finish(), text.len());
    if let Some(&count) = memo().get(&key) {
        return count;
    }
    // Encoded outside the lock: two callers may count the same new text at once, which
    // costs twice but answers the same.
    let count = encode_count(text);
    let mut memo = memo();
    if memo.len() >= MEMO_CAPACITY {
        memo.clear();
    }
    memo.insert(key, count);
    count
}

fn encode_count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    match bpe() {
        // Special-token text such as "<|endoftext|>" is counted as plain text: it is plain
        // text in a prompt, and `encode_ordinary` cannot fail on it.
        Some(bpe) => bpe.encode_ordinary(text).len() as u64,
        None => (text.chars().count() as u64).div_ceil(4),
    }
}

/// Tokens of the tool calls of one message: name plus JSON arguments.
fn tool_call_tokens(calls: &[ToolCall]) -> u64 {
    calls.iter().map(|c| count_tokens(&c.name) + count_tokens(&c.arguments.to_string())).sum()
}

/// Prompt tokens of a request: every message with its framing, and the tool definitions
/// the provider puts into the prompt.
pub fn prompt_tokens(request: &ChatRequest) -> u64 {
    let messages: u64 = request
        .messages
        .iter()
        .map(|m| PER_MESSAGE_OVERHEAD + count_tokens(&m.content) + tool_call_tokens(&m.tool_calls))
        .sum();
    let tools: u64 = request
        .tools
        .iter()
        .map(|t| count_tokens(&t.name) + count_tokens(&t.description) + count_tokens(&t.parameters.to_string()))
        .sum();
    messages + tools + REPLY_PRIMING
}

/// Completion tokens of an answer.
pub(crate) fn completion_tokens(content: Option<&str>, tool_calls: &[ToolCall]) -> u64 {
    content.map_or(0, count_tokens) + tool_call_tokens(tool_calls)
}

/// Counts a whole call on the blocking pool: prompts of HTTP providers can be long enough
/// that encoding them inline would hold up other tasks.
pub(crate) async fn count_call(request: &ChatRequest, content: Option<&str>, tool_calls: &[ToolCall]) -> super::Usage {
    let request = request.clone();
    let content = content.map(str::to_owned);
    let tool_calls = tool_calls.to_vec();
    let count = move || super::Usage {
        prompt_tokens: prompt_tokens(&request),
        completion_tokens: completion_tokens(content.as_deref(), &tool_calls),
        cached_tokens: 0,
    };
    match tokio::task::spawn_blocking(count).await {
        Ok(usage) => usage,
        Err(err) => {
            // Only a panic inside the tokenizer gets here; accounting must not fail the call.
            tracing::error!(error = %err, "counting tokens panicked; the call is recorded with zero usage");
            super::Usage::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{ChatMessage, Role};

    #[test]
    fn counts_with_the_real_tokenizer() {
        assert_eq!(count_tokens(""), 0);
        // cl100k_base: "hello" and " world" are one token each.
        assert_eq!(count_tokens("hello world"), 2);
        // Special-token text is counted, not rejected.
        assert!(count_tokens("<|endoftext|>") > 1);
    }

    #[test]
    fn a_long_text_is_counted_once_and_answers_as_when_encoded() {
        let long = "The quarterly report covers revenue, churn and the hiring plan for the next year. ".repeat(20);
        let fresh = encode_count(&long);
        assert_eq!(count_tokens(&long), fresh);
        assert_eq!(count_tokens(&long), fresh, "from the memo");
        let mut hasher = DefaultHasher::new();
        long.hash(&mut hasher);
        assert_eq!(memo().get(&(hasher.finish(), long.len())), Some(&fresh));
        // A text one character longer is another key, and another count.
        let longer = format!("{long}x");
        assert_eq!(count_tokens(&longer), encode_count(&longer));
    }

    #[test]
    fn prompt_counts_framing_content_and_tools() {
        let bare = ChatRequest { messages: vec![ChatMessage::new(Role::User, "hello world")], ..Default::default() };
        assert_eq!(prompt_tokens(&bare), PER_MESSAGE_OVERHEAD + 2 + REPLY_PRIMING);
        let mut with_tool = bare.clone();
        with_tool.tools.push(crate::llm::ToolDefinition {
            name: "calculator".into(),
            description: "Evaluates arithmetic".into(),
            parameters: serde_json::json!({"type": "object"}),
        });
        assert!(prompt_tokens(&with_tool) > prompt_tokens(&bare));
    }
}
