//! Where webhooks may go. A callback URL is checked:
//! - at submission ([`parse_callback_url`]): an `http` or `https` URL with a host, at most
//!   [`MAX_CALLBACK_URL_CHARS`] characters, and not a literal private, loopback or
//!   link-local address (nor `localhost`);
//! - at each delivery, an IP literal again ([`check_literal_host`]: the policy may have
//!   changed since), and a name by [`VettingResolver`]: the sender resolves it itself and
//!   refuses it if *any* of its addresses is not public, and the connection uses exactly
//!   the vetted addresses, so a DNS answer that changes in between (rebinding) is never used.
//!
//! All of it is off with `WEBHOOK_ALLOW_PRIVATE=true`, for local development and tests.
//! The address classification is the `http_get` tool's ([`agents::tools::is_forbidden`]).

use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// The longest callback URL accepted.
pub const MAX_CALLBACK_URL_CHARS: usize = 2000;

/// Which addresses webhooks may be sent to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetPolicy {
    /// Also loopback, private and link-local addresses (`WEBHOOK_ALLOW_PRIVATE`).
    pub allow_private: bool,
}

impl TargetPolicy {
    /// Whether a connection to `ip` is allowed.
    pub fn permits(self, ip: IpAddr) -> bool {
        self.allow_private || !agents::tools::is_forbidden(ip)
    }
}

/// Why a callback URL is refused; the message completes "callback_url: …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("must be at most {MAX_CALLBACK_URL_CHARS} characters")]
    TooLong,
    #[error("must be an absolute http or https URL ({0})")]
    Unparsable(String),
    #[error("must use http or https, not `{0}`")]
    Scheme(String),
    #[error("must name a host")]
    NoHost,
    #[error("must not point at a private, loopback or link-local address ({0})")]
    Private(String),
    #[error("`{host}` resolves to {ip}, which is not a public address")]
    ResolvesPrivate { host: String, ip: IpAddr },
    #[error("`{0}` has no address")]
    NoAddress(String),
}

/// Checks a callback URL at submission and returns it normalised.
pub fn parse_callback_url(raw: &str, policy: TargetPolicy) -> Result<Url, TargetError> {
    let raw = raw.trim();
    if raw.chars().count() > MAX_CALLBACK_URL_CHARS {
        return Err(TargetError::TooLong);
    }
    let url = Url::parse(raw).map_err(|e| TargetError::Unparsable(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetError::Scheme(url.scheme().to_owned()));
    }
    check_literal_host(&url, policy)?;
    if let Some(Host::Domain(name)) = url.host() {
        // Resolved at delivery anyway; refusing the obvious name here gives a clear 422.
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !policy.allow_private && (name == "localhost" || name.ends_with(".localhost")) {
            return Err(TargetError::Private(name));
        }
    }
    if url.as_str().chars().count() > MAX_CALLBACK_URL_CHARS {
        return Err(TargetError::TooLong); // normalisation (percent-encoding) may lengthen it
    }
    Ok(url)
}

/// Refuses a URL without a host or whose host is a non-public IP literal. Names are left to
/// the resolver, which sees every name the sender connects to.
pub fn check_literal_host(url: &Url, policy: TargetPolicy) -> Result<(), TargetError> {
    let ip = match url.host() {
        None | Some(Host::Domain("")) => return Err(TargetError::NoHost),
        Some(Host::Domain(_)) => return Ok(()),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
    };
    if policy.permits(ip) { Ok(()) } else { Err(TargetError::Private(ip.to_string())) }
}

/// The sender's DNS: resolves with the system resolver and fails the lookup when any
/// address is refused by the policy. reqwest connects only to the addresses returned here.
#[derive(Debug, Clone, Copy)]
pub struct VettingResolver {
    pub policy: TargetPolicy,
}

impl Resolve for VettingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = vet(&host, policy).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Resolves `host` (port 0: reqwest sets the URL's port) and applies the policy.
pub async fn vet(
    host: &str,
    policy: TargetPolicy,
) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
    if addrs.is_empty() {
        return Err(Box::new(TargetError::NoAddress(host.to_owned())));
    }
    if let Some(bad) = addrs.iter().find(|a| !policy.permits(a.ip())) {
        return Err(Box::new(TargetError::ResolvesPrivate { host: host.to_owned(), ip: bad.ip() }));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: TargetPolicy = TargetPolicy { allow_private: false };
    const LOCAL: TargetPolicy = TargetPolicy { allow_private: true };

    #[test]
    fn only_public_http_urls_pass_the_strict_policy() {
        assert!(parse_callback_url("https://hooks.example.com/orchestrator?x=1", STRICT).is_ok());
        assert!(parse_callback_url("http://93.184.216.34:8080/hook", STRICT).is_ok());
        assert!(matches!(parse_callback_url("ftp://example.com/x", STRICT), Err(TargetError::Scheme(_))));
        assert!(matches!(parse_callback_url("not a url", STRICT), Err(TargetError::Unparsable(_))));
        assert!(matches!(parse_callback_url("mailto:a@example.com", STRICT), Err(TargetError::Scheme(_))));
        for private in [
            "http://127.0.0.1:9000/hook",
            "http://10.1.2.3/",
            "http://192.168.0.10/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:8000/",
            "http://api.localhost./",
            "http://0.0.0.0/",
        ] {
            assert!(matches!(parse_callback_url(private, STRICT), Err(TargetError::Private(_))), "{private}");
            assert!(parse_callback_url(private, LOCAL).is_ok(), "{private} with private targets allowed");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_CALLBACK_URL_CHARS));
        assert_eq!(parse_callback_url(&long, STRICT), Err(TargetError::TooLong));
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_private_addresses() {
        let refused = vet("localhost", STRICT).await.unwrap_err().to_string();
        assert!(refused.contains("not a public address"), "{refused}");
        let allowed = vet("localhost", LOCAL).await.unwrap();
        assert!(allowed.iter().all(|a| a.ip().is_loopback()), "{allowed:?}");
    }
}
