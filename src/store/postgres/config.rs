//! Connection settings: the libpq-style URL, its TLS parameters (which the driver does
//! not parse itself), and printing them without the password.

use std::path::PathBuf;
use std::time::Duration;

use percent_encoding::percent_decode_str;

use crate::store::StoreError;

/// How to reach the database. Built by the caller from flags and environment.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://` or `postgresql://` URL in libpq form, including `sslmode`
    /// (disable | prefer | require | verify-ca | verify-full), `sslrootcert` and
    /// `application_name`.
    pub url: String,
    /// Overrides any password in the URL (from PGPASSWORD or a file).
    pub password: Option<String>,
    /// Most connections the pool opens.
    pub pool_size: usize,
    /// How long to keep trying to connect at start, and to wait for a connection later.
    pub connect_timeout: Duration,
    /// Server-side limit on each statement (`statement_timeout`), also the base of the
    /// client-side deadline on every operation.
    pub statement_timeout: Duration,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// `sslmode` as libpq defines it; the driver itself knows only the first three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// TLS when the server offers it, no certificate check; plaintext otherwise.
    Prefer,
    /// TLS or fail, no certificate check.
    Require,
    /// TLS, certificate chain checked against the root certificates, host name not.
    VerifyCa,
    /// TLS, certificate chain and host name checked.
    VerifyFull,
}

/// A URL split into what the driver parses and the TLS settings it does not.
#[derive(Debug)]
pub struct ParsedUrl {
    pub config: tokio_postgres::Config,
    pub ssl_mode: SslMode,
    pub root_cert: Option<PathBuf>,
}

/// Parse `options.url`, apply the password override and per-connection settings.
///
/// Error messages never quote the URL: it may carry a password.
pub fn parse(options: &PostgresOptions) -> Result<ParsedUrl, StoreError> {
    let url = options.url.trim();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(StoreError::engine(
            "the PostgreSQL URL must start with postgres:// or postgresql://",
        ));
    }
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    // libpq's default is prefer; so is the driver's.
    let mut ssl_mode = SslMode::Prefer;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decoded = percent_decode_str(value).decode_utf8_lossy();
        match name {
            "sslmode" => {
                ssl_mode = match decoded.as_ref() {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(StoreError::engine(format!(
                            "unknown sslmode {other:?} (expected disable, prefer, require, \
                             verify-ca or verify-full)"
                        )));
                    }
                }
            }
            "sslrootcert" => root_cert = Some(PathBuf::from(decoded.as_ref())),
            _ => kept.push(pair),
        }
    }
    // verify-ca and verify-full are "require" to the driver; the TLS connector checks.
    kept.push(match ssl_mode {
        SslMode::Disable => "sslmode=disable",
        SslMode::Prefer => "sslmode=prefer",
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "sslmode=require",
    });
    let rebuilt = format!("{base}?{}", kept.join("&"));
    let mut config: tokio_postgres::Config = rebuilt.parse().map_err(|e| {
        // The driver's parse errors name the parameter, never the URL.
        StoreError::engine(format!("invalid PostgreSQL URL: {e}"))
    })?;
    if let Some(password) = &options.password {
        config.password(password.as_bytes());
    }
    if config.get_application_name().is_none() {
        config.application_name("tidemark");
    }
    // Sent in the startup packet, so every pooled connection has it without a round trip.
    let timeout_ms = options.statement_timeout.as_millis().max(1);
    let extra = format!("-c statement_timeout={timeout_ms}");
    let merged = match config.get_options() {
        Some(existing) if !existing.is_empty() => format!("{existing} {extra}"),
        _ => extra,
    };
    config.options(&merged);
    config.connect_timeout(options.connect_timeout);
    // A dead peer that sends no reset is noticed in seconds, not hours.
    config.keepalives_idle(Duration::from_secs(10));
    config.keepalives_interval(Duration::from_secs(2));
    config.keepalives_retries(3);
    Ok(ParsedUrl {
        config,
        ssl_mode,
        root_cert,
    })
}

/// `host:port/dbname` of the first host, for logs and `location()`; never the password.
pub fn location(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let dbname = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{dbname}")
}

/// The URL with any password (in the user-info part or a `password=` parameter)
/// replaced by `<redacted>`.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = String::with_capacity(url.len());
    match base.split_once("://") {
        Some((scheme, rest)) => {
            out.push_str(scheme);
            out.push_str("://");
            // The user info ends at the last '@' before the path.
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((userinfo, hosts)) => {
                    match userinfo.split_once(':') {
                        Some((user, _password)) => {
                            out.push_str(user);
                            out.push_str(":<redacted>");
                        }
                        None => out.push_str(userinfo),
                    }
                    out.push('@');
                    out.push_str(hosts);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str("<not a URL>"),
    }
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some(("password", _)) => "password=<redacted>".to_string(),
                _ => pair.to_string(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(url: &str) -> PostgresOptions {
        PostgresOptions {
            url: url.to_string(),
            password: None,
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn debug_never_prints_a_password() {
        let mut o = options("postgres://app:hunter2@db.example:5433/sessions?password=swordfish");
        o.password = Some("correct-horse".into());
        let shown = format!("{o:?}");
        for secret in ["hunter2", "swordfish", "correct-horse"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("app:<redacted>@db.example:5433/sessions"),
            "{shown}"
        );
    }

    #[test]
    fn tls_parameters_are_taken_out_before_the_driver_parses() {
        let parsed = parse(&options(
            "postgresql://u@h:6543/d?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        ))
        .unwrap();
        assert_eq!(parsed.ssl_mode, SslMode::VerifyFull);
        assert_eq!(parsed.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            parsed.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(parsed.config.get_application_name(), Some("x"));
        assert_eq!(location(&parsed.config), "h:6543/d");
    }

    #[test]
    fn the_password_option_overrides_the_urls() {
        let mut o = options("postgres://u:old@h/d");
        o.password = Some("new".into());
        let parsed = parse(&o).unwrap();
        assert_eq!(parsed.config.get_password(), Some(&b"new"[..]));
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_them() {
        for url in ["mysql://u:pw@h/d", "postgres://u:pw@h/d?sslmode=bogus"] {
            let err = parse(&options(url)).unwrap_err().to_string();
            assert!(!err.contains("pw@"), "{err}");
        }
    }
}
