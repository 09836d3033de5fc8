//! Integration tests of the memory crate against a real Postgres (a fresh database per test)
//! and real FAISS, plus the OpenAI embedder against a fake server on a random port.

mod embedder;
mod openai;
mod persistence;
mod replicas;
mod scoping;
mod search;
mod support;
