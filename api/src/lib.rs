//! The orchestrator service as a library: `main.rs` is a thin CLI shim over [`app`], and
//! the integration tests start the very same [`app::App`] on port 0.

pub mod app;
pub mod auth;
mod backoff;
pub mod budget;
pub mod cli;
pub mod config;
pub mod coordination;
pub mod database;
pub mod domain;
pub mod events;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod providers;
pub mod queue;
pub mod ratelimit;
pub mod scrub;
pub mod store;
pub mod telemetry;
pub mod webhooks;
pub mod worker;
