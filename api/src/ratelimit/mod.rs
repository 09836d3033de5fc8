//! Rate limits shared by every replica: per user and route class in Redis, per IP in front.

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct RateLimitSettings {}
