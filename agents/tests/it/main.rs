//! Integration tests of the agents crate: the HTTP model providers against local fakes of
//! their APIs (real HTTP on 127.0.0.1, so the real client code runs), pricing files, and the
//! offline model's tool use.

mod anthropic;
mod fake_provider;
mod offline;
mod openai;
mod pricing;
