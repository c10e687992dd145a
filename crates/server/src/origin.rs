//! No cross-site use: a request from a web page of another origin (a
//! cross-site form POST needs no preflight) is refused 403 `forbidden`, and
//! on a loopback listener a `Host` that is not a loopback name (a
//! DNS-rebinding page) is refused 421 `misdirected_request`. Checked before
//! anything else about the request. Clients that send no `Origin` (curl,
//! the CLI, dikw-core's client) are unaffected.

use axum::http::{HeaderMap, StatusCode, header};

use crate::error::ApiError;

/// Whether the request may go on; the refusal if not.
pub(crate) fn verdict(
    config: &crate::ServerConfig,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> Result<(), ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_ascii_lowercase)
        .or_else(|| {
            uri.authority()
                .map(|authority| authority.as_str().to_ascii_lowercase())
        });
    let origin = headers
        .get(header::ORIGIN)
        .map(|origin| origin.to_str().unwrap_or("").trim().to_ascii_lowercase());
    // An origin the operator listed is allowed from any site.
    let listed = origin.as_deref().is_some_and(|origin| {
        config
            .allowed_origins
            .iter()
            .any(|listed| listed.trim_end_matches('/').eq_ignore_ascii_case(origin))
    });
    if !listed
        && headers
            .get("sec-fetch-site")
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return Err(forbidden(
            "cross-site requests are refused (Sec-Fetch-Site: cross-site)".to_owned(),
        ));
    }
    if let Some(origin) = origin.as_deref() {
        // Same scheme (this server's own), same host and port.
        let scheme = if config.tls.is_some() {
            "https://"
        } else {
            "http://"
        };
        let same = origin.starts_with(scheme)
            && host.as_deref().is_some_and(|host| {
                origin_authority(origin).is_some_and(|authority| same_authority(&authority, host))
            });
        if !listed && !same {
            return Err(forbidden(format!(
                "requests from origin {origin} are refused: it is not this server's origin; list it in allowed_origins to allow it"
            )));
        }
    }
    let check_host = config.loopback || !config.allowed_hosts.is_empty();
    // Fail closed: without a (readable) Host nothing is served when the Host
    // is checked.
    if check_host
        && !is_probe(uri.path())
        && !host
            .as_deref()
            .is_some_and(|host| host_allowed(config, host))
    {
        let host = host.as_deref().unwrap_or("(none)");
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected_request",
            format!(
                "host {host:?} is not served here{}; list it in allowed_hosts to allow it",
                if config.loopback {
                    " (this server listens on loopback: use localhost or 127.0.0.1)"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(())
}

/// Whether `path` is a health probe (a load balancer sends whatever
/// `Host` it likes): the table's probes are literal paths, compared as
/// they are (this runs for every request).
pub(crate) fn is_probe(path: &str) -> bool {
    crate::table::TABLE
        .iter()
        .any(|route| route.access == crate::table::Access::Probe && route.path == path)
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

/// `http://localhost:8765` → `localhost:8765`; the scheme's default port
/// is filled in (`https://x` → `x:443`). `None` for `null` or garbage.
fn origin_authority(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.split_once("://")?;
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return None;
    }
    let (_, port) = split_host(authority);
    Some(match port {
        Some(_) => authority.to_owned(),
        None => match scheme {
            "https" => format!("{authority}:443"),
            _ => format!("{authority}:80"),
        },
    })
}

/// Whether an origin's `host:port` is the request's `Host` (whose port
/// defaults to 80 when absent; a server behind TLS termination should list
/// its origin in `allowed_origins`).
fn same_authority(origin: &str, host: &str) -> bool {
    if origin == host {
        return true;
    }
    let (host_name, host_port) = split_host(host);
    let (origin_name, origin_port) = split_host(origin);
    host_port.is_none() && origin_name == host_name && matches!(origin_port, Some("80" | "443"))
}

/// `[::1]:8765` → (`[::1]`, `8765`); `localhost` → (`localhost`, none).
fn split_host(authority: &str) -> (&str, Option<&str>) {
    if let Some(end) = authority.rfind(']') {
        let (name, rest) = authority.split_at(end + 1);
        return (name, rest.strip_prefix(':'));
    }
    match authority.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (authority, None),
    }
}

fn host_allowed(config: &crate::ServerConfig, host: &str) -> bool {
    // The port is not compared with the one listened on: an SSH tunnel
    // (`ssh -L 9000:localhost:8765`) or a local proxy brings requests for
    // `localhost:9000`; the name is what DNS rebinding changes.
    let (name, _) = split_host(host);
    if config.loopback && matches!(name, "localhost" | "127.0.0.1" | "[::1]") {
        return true;
    }
    config
        .allowed_hosts
        .iter()
        .any(|listed| listed.eq_ignore_ascii_case(host) || listed.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_by_host_and_port() {
        assert_eq!(
            origin_authority("http://localhost:8765").as_deref(),
            Some("localhost:8765")
        );
        assert_eq!(
            origin_authority("https://x.test").as_deref(),
            Some("x.test:443")
        );
        assert_eq!(origin_authority("null"), None);
        assert!(same_authority("localhost:8765", "localhost:8765"));
        assert!(!same_authority("localhost:8765", "127.0.0.1:8765"));
        assert!(!same_authority("evil.test:8765", "localhost:8765"));
        assert!(same_authority("x.test:80", "x.test"));
        assert_eq!(split_host("[::1]:9"), ("[::1]", Some("9")));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_origin_s_scheme_and_port_count_and_the_host_s_name() {
        let config = crate::ServerConfig {
            loopback: true,
            ..crate::ServerConfig::default()
        };
        let uri: axum::http::Uri = "/v1/tasks".parse().unwrap();
        let ok = |pairs: &[(&'static str, &str)]| verdict(&config, &headers(pairs), &uri).is_ok();
        assert!(ok(&[("host", "localhost:8765")]));
        assert!(
            ok(&[("host", "localhost")]),
            "no port: the default route to us"
        );
        assert!(
            ok(&[("host", "localhost:9000")]),
            "a tunnel's or a proxy's port"
        );
        assert!(
            !ok(&[
                ("host", "localhost:9000"),
                ("origin", "http://localhost:8765")
            ]),
            "the origin's port is compared with the Host's"
        );
        assert!(ok(&[
            ("host", "localhost:8765"),
            ("origin", "http://localhost:8765")
        ]));
        assert!(
            !ok(&[
                ("host", "localhost:8765"),
                ("origin", "https://localhost:8765")
            ]),
            "https is another origin than this http server"
        );
        let status = verdict(&config, &headers(&[("host", "rebound.test:8765")]), &uri)
            .unwrap_err()
            .status();
        assert_eq!(status.as_u16(), 421);
    }
}
