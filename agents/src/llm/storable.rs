//! A model client whose answers are storable: see [`crate::storable`].

use std::sync::Arc;

use super::{ChatRequest, ChatResponse, LlmClient, LlmError};
use crate::storable::{json, string};

/// Wraps a client so that every response and every error it reports carries no NUL: the
/// answer, the tool calls (names, ids, arguments), the model name and the provider's own
/// error text all end up in Postgres.
pub struct Storable {
    inner: Arc<dyn LlmClient>,
}

impl Storable {
    /// `inner` wrapped, unless it already is.
    pub fn wrap(inner: Arc<dyn LlmClient>) -> Arc<dyn LlmClient> {
        if inner.is_storable() { inner } else { Arc::new(Self { inner }) }
    }
}

#[async_trait::async_trait]
impl LlmClient for Storable {
    fn provider(&self) -> &str {
        self.inner.provider()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    fn is_storable(&self) -> bool {
        true
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        match self.inner.chat(request).await {
            Ok(mut response) => {
                response.content = response.content.map(string);
                response.model = string(response.model);
                for call in &mut response.tool_calls {
                    call.id = string(std::mem::take(&mut call.id));
                    call.name = string(std::mem::take(&mut call.name));
                    json(&mut call.arguments);
                }
                Ok(response)
            }
            Err(e) => Err(match e {
                LlmError::Rejected { status, message } => LlmError::Rejected { status, message: string(message) },
                LlmError::Unavailable(m) => LlmError::Unavailable(string(m)),
                LlmError::InvalidResponse(m) => LlmError::InvalidResponse(string(m)),
                LlmError::Timeout => LlmError::Timeout,
            }),
        }
    }
}
