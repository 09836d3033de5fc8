//! The memory crate's single error type.
//!
//! Callers (the API) map every variant to a status with an exhaustive match, so each variant
//! says whose fault the failure is: the caller's input (`InvalidInput`), the configuration
//! (`EmbedderMismatch`, `DataDirLocked`, `InvalidConfig`), a remote model (`EmbeddingRejected`,
//! `Backend`), or the infrastructure (`Database`, `Index`, `Io`, `Internal`).

use std::path::PathBuf;

/// The command an operator runs to recompute stored vectors with the configured embedder.
pub const REEMBED_COMMAND: &str = "orchestrator memory reembed";

/// Why a memory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// An embedder was asked for a vector size outside the supported range.
    #[error(
        "invalid embedding dimension {0}: must be between {min} and {max}",
        min = crate::dimension::MIN_DIMENSION,
        max = crate::dimension::MAX_DIMENSION
    )]
    InvalidDimension(usize),
    /// A vector does not have the dimension its store or embedder expects.
    #[error("vector has dimension {actual}, expected {expected}")]
    DimensionMismatch {
        /// The dimension required.
        expected: usize,
        /// The dimension found.
        actual: usize,
    },
    /// An embedding backend (for example a remote model) failed, after any retries.
    #[error("embedding backend failed: {0}")]
    Backend(String),
    /// The embedding backend refused the request with a 4xx status other than 429; retrying
    /// the same request cannot succeed (bad key, unknown model, input too long…).
    #[error("embedding request rejected with status {status}: {message}")]
    EmbeddingRejected {
        /// The HTTP status.
        status: u16,
        /// The provider's error message, or the start of its body.
        message: String,
    },
    /// Live stored vectors were made by another embedder than the configured one; searching
    /// them with the configured one would silently return nonsense.
    #[error(
        "memory_items holds vectors made by embedder `{stored}` but the configured embedder is \
         `{configured}`; run `{REEMBED_COMMAND}` to recompute them with `{configured}`, \
         or configure `{stored}` again"
    )]
    EmbedderMismatch {
        /// An embedder name found on live rows.
        stored: String,
        /// The configured embedder's name.
        configured: String,
    },
    /// A caller-supplied value is out of range.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The offending field, as the caller named it.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is unusable.
    #[error("invalid memory configuration: {0}")]
    InvalidConfig(String),
    /// Another process (or another store in this process) already uses the data directory.
    #[error("memory data directory {0} is locked by another store; give each process its own data_dir")]
    DataDirLocked(PathBuf),
    /// Postgres failed.
    #[error("memory database error: {0}")]
    Database(#[from] sqlx::Error),
    /// FAISS failed.
    #[error("vector index error: {0}")]
    Index(#[from] faiss::error::Error),
    /// Reading or writing a snapshot file failed.
    #[error("memory snapshot I/O error on {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A bug or a crashed background task: a poisoned lock, a panicked blocking task, a row
    /// that violates the schema's invariants.
    #[error("memory internal error: {0}")]
    Internal(String),
}

impl MemoryError {
    /// An [`MemoryError::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    /// An [`MemoryError::InvalidInput`] for `field`.
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidInput { field, reason: reason.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedder_mismatch_names_the_reembed_command() {
        let message =
            MemoryError::EmbedderMismatch { stored: "hashing-v1-384".into(), configured: "openai:m:1536".into() }
                .to_string();
        assert!(message.contains("`orchestrator memory reembed`"), "{message}");
        assert!(message.contains("hashing-v1-384") && message.contains("openai:m:1536"), "{message}");
    }
}
