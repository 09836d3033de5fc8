//! `http_get`: fetch a URL from an allowlisted host, never a private network.
//!
//! Invariants, in the order they are checked:
//! - only `http` and `https` URLs whose host matches the allowlist are fetched;
//! - the host is resolved here (`tokio::net::lookup_host`) and refused if *any* of its
//!   addresses is not public (see [`is_forbidden`]), so a name with one private record
//!   cannot be used to reach it;
//! - the request connects only to those vetted addresses: the client gets them as fixed DNS
//!   overrides and a resolver that refuses every other name, so a DNS answer that changes
//!   between the check and the connection (rebinding) is never used; proxies are off;
//! - redirects are not followed (a hop could lead anywhere): the response reports the
//!   `Location` and the model may ask for it, which goes through the same checks;
//! - at most `max_bytes` of the body are read, and the whole request has a time limit.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::{
    dns::{Name, Resolve, Resolving},
    header, redirect,
};
use serde::Deserialize;
use serde_json::{Value, json};
use url::{Host, Url};

use super::{HttpGetSettings, RegistryError, Tool, ToolContext, ToolError};

pub const NAME: &str = "http_get";

/// Which resolved addresses `http_get` may connect to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AddressPolicy {
    /// Public unicast addresses only: the production setting.
    #[default]
    PublicOnly,
    /// Also loopback (127.0.0.0/8, ::1). Exists for local development and tests against a
    /// server on the same machine; never use it where the process can reach anything
    /// sensitive on loopback.
    AllowLoopback,
}

impl AddressPolicy {
    /// Whether a connection to `ip` is allowed.
    pub fn permits(self, ip: IpAddr) -> bool {
        match self {
            Self::PublicOnly => !is_forbidden(ip),
            Self::AllowLoopback => ip.to_canonical().is_loopback() || !is_forbidden(ip),
        }
    }
}

/// Whether `ip` is anything but a public unicast address: unspecified, loopback, private,
/// shared (CGNAT), link-local, documentation, benchmarking, multicast, broadcast, reserved,
/// unique- or site-local IPv6, special-purpose IPv6 ranges, and IPv6 forms that embed an
/// IPv4 address which is itself forbidden (IPv4-mapped, NAT64).
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

const FORBIDDEN_V4: [(Ipv4Addr, u8); 15] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network", unspecified
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // private
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // shared address space (CGNAT)
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // link-local (cloud metadata lives here)
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // private
    (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24),    // documentation (TEST-NET-1)
    (Ipv4Addr::new(192, 88, 99, 0), 24),  // 6to4 relay anycast (deprecated)
    (Ipv4Addr::new(192, 168, 0, 0), 16),  // private
    (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation (TEST-NET-2)
    (Ipv4Addr::new(203, 0, 113, 0), 24),  // documentation (TEST-NET-3)
    (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),     // reserved, and 255.255.255.255 broadcast
];

const FORBIDDEN_V6: [(Ipv6Addr, u8); 13] = [
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96), // unspecified, loopback, IPv4-compatible
    (Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0, 0), 96), // IPv4-translated (SIIT)
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // local-use NAT64
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64), // discard-only
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23), // IETF special purpose, Teredo
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16), // 6to4 (embeds any IPv4)
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20), // documentation
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16), // SRv6 SIDs
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7), // unique local
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10), // link-local
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10), // site-local (deprecated)
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8), // multicast
];

/// The well-known NAT64 prefix 64:ff9b::/96 carries a (public) IPv4 address.
const NAT64: (Ipv6Addr, u8) = (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96);

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let bits = u32::from(ip);
    FORBIDDEN_V4.iter().any(|(net, len)| {
        let mask = u32::MAX << (32 - u32::from(*len));
        bits & mask == u32::from(*net)
    })
}

fn in_v6(ip: Ipv6Addr, (net, len): (Ipv6Addr, u8)) -> bool {
    let mask = u128::MAX << (128 - u32::from(len));
    u128::from(ip) & mask == u128::from(net)
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_forbidden_v4(v4);
    }
    if in_v6(ip, NAT64) {
        let [.., a, b, c, d] = ip.octets();
        return is_forbidden_v4(Ipv4Addr::new(a, b, c, d));
    }
    FORBIDDEN_V6.iter().any(|range| in_v6(ip, *range))
}

/// One allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Suffix(String),
}

impl HostPattern {
    fn parse(raw: &str) -> Result<Self, String> {
        let pattern = normalize_host(raw.trim());
        let pattern = pattern.trim_start_matches('[').trim_end_matches(']');
        if let Some(domain) = pattern.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                return Err(format!("`{raw}`: a wildcard must look like `*.example.com`"));
            }
            return Ok(Self::Suffix(format!(".{domain}")));
        }
        if pattern.is_empty() || pattern.contains(['*', '/']) {
            return Err(format!("`{raw}`: expected a host name, an IP address or `*.domain`"));
        }
        Ok(Self::Exact(pattern.to_owned()))
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => name == host,
            Self::Suffix(suffix) => host.ends_with(suffix.as_str()),
        }
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Fetches web pages and APIs from the configured hosts.
#[derive(Debug, Clone)]
pub struct HttpGet {
    allowed: Vec<HostPattern>,
    settings: HttpGetSettings,
}

impl HttpGet {
    /// Fails when an allowlist entry is not a host name, an IP address or `*.domain`.
    pub fn new(settings: HttpGetSettings) -> Result<Self, RegistryError> {
        let allowed = settings
            .allowed_hosts
            .iter()
            .map(|raw| HostPattern::parse(raw))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| RegistryError::InvalidSettings { tool: NAME.to_owned(), reason })?;
        Ok(Self { allowed, settings })
    }

    /// The addresses the request may use, after the allowlist and address checks.
    async fn vet(&self, url: &Url) -> Result<Vec<IpAddr>, ToolError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ToolError::InvalidArguments(format!(
                "only http and https URLs are fetched, not `{}`",
                url.scheme()
            )));
        }
        let (name, literal) = match url.host() {
            Some(Host::Domain(domain)) => (normalize_host(domain), None),
            Some(Host::Ipv4(ip)) => (ip.to_string(), Some(IpAddr::V4(ip))),
            Some(Host::Ipv6(ip)) => (ip.to_string(), Some(IpAddr::V6(ip))),
            None => return Err(ToolError::InvalidArguments("the URL has no host".into())),
        };
        if !self.allowed.iter().any(|p| p.matches(&name)) {
            return Err(ToolError::Denied(format!(
                "host `{name}` is not allowed; allowed hosts: {}",
                self.settings.allowed_hosts.join(", ")
            )));
        }
        let addresses = match literal {
            Some(ip) => vec![ip],
            None => {
                let port = url.port_or_known_default().unwrap_or(80);
                let host = url.host_str().unwrap_or_default();
                let resolved = tokio::net::lookup_host((host, port)).await.map_err(|e| {
                    // The resolver's words can name this network's DNS servers or search
                    // domains: the log gets them, the tenant's task does not.
                    tracing::warn!(host = %name, error = %e, "http_get: resolution failed");
                    ToolError::Failed(format!("cannot resolve `{name}`"))
                })?;
                let mut ips: Vec<IpAddr> = Vec::new();
                for ip in resolved.map(|a| a.ip()) {
                    if !ips.contains(&ip) {
                        ips.push(ip);
                    }
                }
                ips
            }
        };
        if addresses.is_empty() {
            return Err(ToolError::Failed(format!("`{name}` has no addresses")));
        }
        if let Some(bad) = addresses.iter().find(|ip| !self.settings.address_policy.permits(**ip)) {
            // A name's private address is this network's business, not the tenant's; an
            // address the tenant wrote is theirs already.
            tracing::warn!(host = %name, address = %bad, "http_get: refusing a non-public address");
            let message = match literal {
                Some(_) => format!("{bad} is not a public address; refusing to connect"),
                None => format!("`{name}` resolves to an address that is not public; refusing to connect"),
            };
            return Err(ToolError::Denied(message));
        }
        Ok(addresses)
    }

    fn client(&self, url: &Url, addresses: &[IpAddr]) -> Result<reqwest::Client, ToolError> {
        let mut builder = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .no_proxy()
            .timeout(self.settings.timeout)
            .user_agent(concat!("agent-orchestrator/", env!("CARGO_PKG_VERSION"), " (http_get tool)"))
            .dns_resolver(NoDns);
        if let Some(Host::Domain(domain)) = url.host() {
            // Port 0: the URL's port is used; only the vetted addresses are.
            let pinned: Vec<SocketAddr> = addresses.iter().map(|ip| SocketAddr::new(*ip, 0)).collect();
            builder = builder.resolve_to_addrs(domain, &pinned);
        }
        builder.build().map_err(|e| ToolError::Failed(format!("cannot build the HTTP client: {}", error_chain(&e))))
    }
}

/// Refuses every name: the client may only use the addresses pinned with
/// `resolve_to_addrs`, so a name that somehow escaped the overrides is never looked up.
struct NoDns;

impl Resolve for NoDns {
    fn resolve(&self, name: Name) -> Resolving {
        let message = format!("`{}` was not vetted; http_get resolves names itself", name.as_str());
        Box::pin(async move { Err(message.into()) })
    }
}

#[derive(Deserialize)]
struct Args {
    url: String,
}

#[async_trait::async_trait]
impl Tool for HttpGet {
    fn name(&self) -> &str {
        NAME
    }

    fn description(&self) -> &str {
        "Fetches a URL with HTTP GET from an allowed host and returns the status, content type \
         and body (text, cut at a size limit). Redirects are not followed: a 3xx answer gives \
         the `location` to fetch next."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "url": { "type": "string", "minLength": 1, "maxLength": 2048, "description": "An http or https URL." }
            },
            "required": ["url"],
            "additionalProperties": false
        })
    }

    async fn call(&self, arguments: Value, _ctx: &ToolContext) -> Result<Value, ToolError> {
        let args: Args = serde_json::from_value(arguments).map_err(|e| ToolError::InvalidArguments(e.to_string()))?;
        let url = Url::parse(&args.url)
            .map_err(|e| ToolError::InvalidArguments(format!("`{}` is not a valid URL: {e}", args.url)))?;
        let addresses = self.vet(&url).await?;
        let client = self.client(&url, &addresses)?;
        let mut response = client.get(url.clone()).send().await.map_err(|e| request_error(&e, &self.settings))?;

        let status = response.status();
        let header_text = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let content_type = header_text(header::CONTENT_TYPE);
        let location = if status.is_redirection() { header_text(header::LOCATION) } else { None };

        let max = self.settings.max_bytes;
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(|e| request_error(&e, &self.settings))? {
            let room = max - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }

        let mut out = json!({
            "url": url.as_str(),
            "status": status.as_u16(),
            "content_type": content_type,
            "body": body_text(&body, truncated),
            "truncated": truncated,
        });
        if let Some(location) = location {
            out["location"] = json!(location);
        }
        Ok(out)
    }
}

/// The body as text: invalid UTF-8 is replaced, except a sequence cut by the size limit,
/// which is dropped.
fn body_text(body: &[u8], truncated: bool) -> String {
    let end = match std::str::from_utf8(body) {
        Err(e) if truncated && e.error_len().is_none() => e.valid_up_to(),
        _ => body.len(),
    };
    String::from_utf8_lossy(&body[..end]).into_owned()
}

fn request_error(e: &reqwest::Error, settings: &HttpGetSettings) -> ToolError {
    if e.is_timeout() {
        return ToolError::Failed(format!("the request timed out after {:?}", settings.timeout));
    }
    ToolError::Failed(format!("the request failed: {}", error_chain(e)))
}

/// An error and its sources, so "error sending request" says why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
