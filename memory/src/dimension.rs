//! The range of vector dimensions the crate accepts.
//!
//! Its own module so that both the embedders and [`crate::error`] can name the bounds
//! without depending on each other: the embedders return the error, and the error's message
//! states the bounds.

/// Smallest dimension accepted: fewer buckets make everything collide.
pub const MIN_DIMENSION: usize = 8;
/// Largest dimension accepted: beyond this the vectors only waste memory.
pub const MAX_DIMENSION: usize = 4096;
