//! The memory crate's single error type.

/// Why a memory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// An embedder was asked for a vector size outside the supported range.
    #[error(
        "invalid embedding dimension {0}: must be between {min} and {max}",
        min = crate::embed::hashing::MIN_DIMENSION,
        max = crate::embed::hashing::MAX_DIMENSION
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
    /// An embedding backend (for example a remote model) failed.
    #[error("embedding backend failed: {0}")]
    Backend(String),
}
