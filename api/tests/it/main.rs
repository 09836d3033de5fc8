//! One integration-test binary: every test starts the real app on port 0 against a fresh
//! Postgres database and its own Redis key prefix.

mod approvals;
mod auth;
mod bench;
mod budgets;
mod cli;
mod dispatch;
mod durability;
mod eval_run;
mod events;
mod fairness;
mod fake_llm;
mod faults;
mod flow;
mod follow_ups;
mod generated_client;
mod health;
mod helpers;
mod hostile_tools;
mod llm;
mod long_loops;
mod memory;
mod observability;
mod openapi;
mod partial;
mod plans;
mod poison;
mod prefer_wait;
mod rate_limits;
mod store;
mod tasks_api;
mod telemetry;
mod tls;
mod trust;
mod webhooks;
