//! The evaluation harness. It only ever talks to the orchestrator over HTTP, exactly as a
//! user's client would, so what it measures is what users get.
//!
//! [`client::ApiClient`] is the typed client the suites and benchmarks are built on; the
//! integration tests of `api` use it too.

pub mod bench;
pub mod client;

pub use client::{ApiClient, ClientError, TaskView};
