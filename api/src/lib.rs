//! The orchestrator service as a library: `main.rs` is a thin CLI shim over [`app`], and
//! the integration tests start the very same [`app::App`] on port 0.
//!
//! # Layers
//!
//! Dependencies between the modules point one way, down. At the bottom are the domain types
//! ([`domain`]), the settings ([`config`], which declare every setting and import none of the
//! modules that apply them), the store, the queue, the lifecycle that owns every transition,
//! and the services built on them (events, coordination, budgets, webhooks, auth, rate
//! limits, providers): none of these names anything above it. On top sit the entry points,
//! each on its own: [`http`] (routes, middleware, `ApiError` and its status mapping),
//! [`worker`] and [`cli`] (the command line and the commands that are not the service).
//! [`app`] assembles HTTP and workers from the settings, and `main.rs` wires the command line
//! to all of it. What the top needs from below (opening the database, the backoff, the
//! settings slices) lives below; what a module needs from the store is declared with the
//! store. The `layering` tests read the sources and fail on a module that breaks this.

pub mod app;
pub mod auth;
mod backoff;
pub mod budget;
pub mod cli;
pub mod config;
pub mod coordination;
pub mod database;
// Before the modules that write SQL: its state macros (`task_status!`, …) are textual.
#[macro_use]
pub mod domain;
pub mod events;
pub mod http;
#[cfg(test)]
mod layering;
pub mod lifecycle;
pub mod metrics;
pub mod providers;
pub mod queue;
pub mod ratelimit;
pub mod scrub;
pub mod store;
pub mod task_hash;
pub mod telemetry;
pub mod thread;
pub mod webhooks;
pub mod worker;
