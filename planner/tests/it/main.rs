//! Integration tests of the planner crate. The LLM planner runs against a scripted in-process
//! model: the HTTP providers are tested on their own in the agents crate.

mod llm_planner;
