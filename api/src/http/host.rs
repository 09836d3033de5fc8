//! DNS-rebinding guard for `AUTH=disabled`.
//!
//! Without keys every request acts as an admin, and the server relies on listening on
//! loopback only. A web page can still reach it: its attacker-controlled name is made to
//! resolve to 127.0.0.1 after the page loaded (DNS rebinding), and the browser then sends the
//! page's requests, with `Host: evil.example`, to this server as same-origin. So while auth
//! is disabled only requests naming a loopback host are served: `localhost` and any
//! `*.localhost` name (RFC 6761 reserves them for loopback; browsers resolve them locally and
//! no one can register them in public DNS), and the IP literals `127.0.0.0/8` and `[::1]`,
//! each with any port. Anything else answers 421 Misdirected Request. A request without any
//! host (HTTP/1.0) is served: a browser always sends one, so it is not a rebound page.

use axum::{
    extract::Request,
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::ApiError;

/// Serves the request only when it names a loopback host (see the module docs).
pub async fn loopback_only(request: Request, next: Next) -> Response {
    // HTTP/2 and absolute-form requests carry the authority in the URI; HTTP/1.1 in `Host`.
    let named = match request.uri().authority() {
        Some(authority) => Some(Ok(authority.as_str())),
        None => request.headers().get(header::HOST).map(|v| v.to_str()),
    };
    match named {
        None => next.run(request).await,
        Some(Ok(host)) if is_loopback(host) => next.run(request).await,
        Some(Ok(host)) => ApiError::MisdirectedHost { host: shorten(host) }.into_response(),
        Some(Err(_)) => ApiError::MisdirectedHost { host: "(not visible ASCII)".into() }.into_response(),
    }
}

/// Whether an authority (`host[:port]`, IPv6 in brackets) names this machine's loopback.
fn is_loopback(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.strip_prefix(':').is_some_and(is_port) => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
            }
            _ => return false,
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) if is_port(port) => host,
            Some(_) => return false,
            None => authority,
        },
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return ip.is_loopback();
    }
    host == "localhost" || (host.ends_with(".localhost") && host.len() > ".localhost".len())
}

/// At most 5 digits (an empty port, `host:`, is allowed by RFC 3986).
fn is_port(port: &str) -> bool {
    port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

/// The host as the problem shows it: the client's own value, bounded.
fn shorten(host: &str) -> String {
    host.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_names_and_addresses_pass_with_any_port() {
        for host in [
            "localhost",
            "localhost:8000",
            "LOCALHOST:1234",
            "localhost.",
            "app.localhost:3000",
            "127.0.0.1",
            "127.0.0.1:8000",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:8000",
        ] {
            assert!(is_loopback(host), "{host}");
        }
    }

    #[test]
    fn other_names_and_addresses_are_refused() {
        for host in [
            "evil.example:8000",
            "evil.example",
            "localhost.evil.example",
            "evillocalhost",
            ".localhost",
            "10.0.0.1:8000",
            "0.0.0.0:8000",
            "[::2]:8000",
            "[::1]x",
            "localhost:80:80",
            "localhost:http",
            "",
            "127.0.0.1.nip.io",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
