//! The evaluation harness. It only ever talks to the orchestrator over HTTP, exactly as a
//! user's client would, so what it measures is what users get.
//!
//! [`client::ApiClient`] is the typed client the suites and benchmarks are built on; the
//! integration tests of `api` use it too. `orchestrator eval run` reads a [`suite`], runs it
//! with the [`runner`], checks each run ([`expect`], [`judge`]) and writes a [`report`];
//! `eval compare` diffs two reports ([`compare`]); `eval bench` is the load benchmark ([`bench`]).

pub mod bench;
pub mod client;
pub mod command;
pub mod compare;
pub mod expect;
pub mod judge;
pub mod report;
pub mod runner;
pub mod server;
pub mod stats;
pub mod suite;

pub use client::{ApiClient, ClientError, TaskView};
pub use command::EvalCommand;
