//! Tool settings, read once at start by the host and passed to [`super::builtin_tools`].

use std::time::Duration;

use super::http_get::AddressPolicy;

/// Limits every tool call gets, and the configuration of the tools that need one.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSettings {
    /// How long one call may run before it is abandoned and recorded as an error.
    pub timeout: Duration,
    /// Results larger than this (serialised JSON) are cut for the record and the model.
    pub max_result_bytes: usize,
    pub http: HttpGetSettings,
}

impl Default for ToolSettings {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(10), max_result_bytes: 16 * 1024, http: HttpGetSettings::default() }
    }
}

/// Configuration of the `http_get` tool.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpGetSettings {
    /// Hosts the tool may fetch from: exact names (`api.example.com`) or suffix patterns
    /// (`*.example.com`, which matches sub-domains but not `example.com` itself). Empty
    /// disables the tool: it is not registered at all.
    pub allowed_hosts: Vec<String>,
    /// Bytes of the response body read at most; the rest is not downloaded.
    pub max_bytes: usize,
    /// Time limit of one request, connection included.
    pub timeout: Duration,
    /// Which resolved addresses may be connected to.
    pub address_policy: AddressPolicy,
}

impl Default for HttpGetSettings {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            max_bytes: 64 * 1024,
            // Below the per-call tool timeout, so the tool reports its own, clearer error.
            timeout: Duration::from_secs(8),
            address_policy: AddressPolicy::PublicOnly,
        }
    }
}
