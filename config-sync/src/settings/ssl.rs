//! Kong's downstream TLS settings (`ssl_*`), served on `proxy_listen`
//! entries flagged `ssl`. Parsed the way Kong's `conf_loader` does; the
//! certificate files are not read here (the gateway reads and compiles them).

use std::time::Duration;

use super::values::{self, split_list};
use super::Loader;

/// `ssl_cipher_suite`: Kong's named suites (`kong/conf_loader/constants.lua`
/// `CIPHER_SUITES`), or `custom` for `ssl_ciphers` / `ssl_protocols`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CipherSuite {
    Modern,
    #[default]
    Intermediate,
    Old,
    Fips,
    Custom,
}

impl CipherSuite {
    pub fn as_str(self) -> &'static str {
        match self {
            CipherSuite::Modern => "modern",
            CipherSuite::Intermediate => "intermediate",
            CipherSuite::Old => "old",
            CipherSuite::Fips => "fips",
            CipherSuite::Custom => "custom",
        }
    }

    /// The suite's `protocols`; `None` for `custom` (then `ssl_protocols`).
    fn protocols(self) -> Option<&'static str> {
        match self {
            CipherSuite::Modern => Some("TLSv1.3"),
            CipherSuite::Intermediate => Some("TLSv1.2 TLSv1.3"),
            CipherSuite::Old => Some("TLSv1 TLSv1.1 TLSv1.2 TLSv1.3"),
            CipherSuite::Fips => Some("TLSv1.2"),
            CipherSuite::Custom => None,
        }
    }

    /// The suite's `ciphers` (OpenSSL names, TLS 1.2 and below).
    fn ciphers(self) -> Option<&'static str> {
        const INTERMEDIATE: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
            ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
            ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
            DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305";
        match self {
            CipherSuite::Modern | CipherSuite::Custom => None,
            CipherSuite::Intermediate => Some(INTERMEDIATE),
            CipherSuite::Old => Some(
                "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
                 ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
                 ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
                 DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305:\
                 ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:\
                 ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:\
                 ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA:DHE-RSA-AES128-SHA256:\
                 DHE-RSA-AES256-SHA256:AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256:\
                 AES256-SHA256:AES128-SHA:AES256-SHA:DES-CBC3-SHA",
            ),
            CipherSuite::Fips => Some("TLSv1.2+FIPS:kRSA+FIPS:!eNULL:!aNULL"),
        }
    }

    /// The suite's `prefer_server_ciphers`; `None` for `custom`.
    fn prefer_server_ciphers(self) -> Option<bool> {
        match self {
            CipherSuite::Modern | CipherSuite::Intermediate => Some(false),
            CipherSuite::Old | CipherSuite::Fips => Some(true),
            CipherSuite::Custom => None,
        }
    }
}

/// A TLS version named in `ssl_protocols` (nginx's tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsProtocol {
    SslV2,
    SslV3,
    TlsV1,
    TlsV1_1,
    TlsV1_2,
    TlsV1_3,
}

impl TlsProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsProtocol::SslV2 => "SSLv2",
            TlsProtocol::SslV3 => "SSLv3",
            TlsProtocol::TlsV1 => "TLSv1",
            TlsProtocol::TlsV1_1 => "TLSv1.1",
            TlsProtocol::TlsV1_2 => "TLSv1.2",
            TlsProtocol::TlsV1_3 => "TLSv1.3",
        }
    }

    fn parse(token: &str) -> Option<TlsProtocol> {
        Some(match token {
            "SSLv2" => TlsProtocol::SslV2,
            "SSLv3" => TlsProtocol::SslV3,
            "TLSv1" => TlsProtocol::TlsV1,
            "TLSv1.1" => TlsProtocol::TlsV1_1,
            "TLSv1.2" => TlsProtocol::TlsV1_2,
            "TLSv1.3" => TlsProtocol::TlsV1_3,
            _ => return None,
        })
    }

    /// Versions rustls speaks (1.2 and 1.3 only).
    pub fn served(self) -> bool {
        matches!(self, TlsProtocol::TlsV1_2 | TlsProtocol::TlsV1_3)
    }
}

/// The effective downstream TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SslSettings {
    /// `ssl_cert` entries as written: file paths, inline PEM or base64 PEM
    /// (Kong's `exists(cert) or try_decode_base64(cert)`). Empty: the
    /// gateway generates a self-signed default under `<prefix>/ssl`.
    pub cert: Vec<String>,
    /// `ssl_cert_key`, entry by entry with `cert`.
    pub cert_key: Vec<String>,
    pub cipher_suite: CipherSuite,
    /// OpenSSL cipher list for TLS 1.2 and below: the named suite's, or
    /// `ssl_ciphers` for `custom` (`None`: the library's default).
    pub ciphers: Option<String>,
    /// Effective protocols: the named suite's (Kong overrides
    /// `ssl_protocols` with them), or `ssl_protocols` for `custom`.
    pub protocols: Vec<TlsProtocol>,
    /// nginx `ssl_prefer_server_ciphers`: the named suite's, or the setting
    /// for `custom`.
    pub prefer_server_ciphers: bool,
    /// nginx `ssl_session_tickets`.
    pub session_tickets: bool,
    /// nginx `ssl_session_timeout`.
    pub session_timeout: Duration,
    /// `ssl_session_cache_size` in bytes (nginx's `shared:SSL:<size>`).
    pub session_cache_size: u64,
}

/// `ssl_protocols` tokens (space separated, as nginx's directive).
fn parse_protocols(name: &str, value: &str) -> Result<Vec<TlsProtocol>, String> {
    let mut out = Vec::new();
    for token in value.split_whitespace() {
        match TlsProtocol::parse(token) {
            Some(p) if !out.contains(&p) => out.push(p),
            Some(_) => {}
            None => {
                return Err(format!(
                    "{name} has an invalid value: '{token}' (SSLv2, SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3)"
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(format!("{name} must name at least one protocol"));
    }
    if !out.iter().any(|p| p.served()) {
        return Err(format!(
            "{name} '{value}': none of these protocols is served (this gateway speaks TLSv1.2 and TLSv1.3)"
        ));
    }
    out.sort();
    Ok(out)
}

/// Reads the `ssl_*` keys. `ssl_enabled`: a proxy listener has `ssl`
/// (Kong checks the certificate pair only then).
pub(super) fn load(l: &mut Loader, ssl_enabled: bool, warnings: &mut Vec<String>) -> SslSettings {
    let cert_raw = l.raw("ssl_cert");
    let key_raw = l.raw("ssl_cert_key");
    let cert = split_list(&cert_raw.value);
    let cert_key = split_list(&key_raw.value);
    if ssl_enabled {
        // kong/conf_loader/parse.lua, same checks and wording.
        if !cert.is_empty() && cert_key.is_empty() {
            l.error(&key_raw, "ssl_cert_key must be specified".to_string());
        } else if !cert_key.is_empty() && cert.is_empty() {
            l.error(&cert_raw, "ssl_cert must be specified".to_string());
        } else if cert.len() != cert_key.len() {
            l.error(
                &cert_raw,
                format!(
                    "ssl_cert was specified {} times while ssl_cert_key was specified {} times",
                    cert.len(),
                    cert_key.len()
                ),
            );
        }
    }

    let cipher_suite = l.get("ssl_cipher_suite", |name, v| match v {
        "modern" => Ok(CipherSuite::Modern),
        "intermediate" => Ok(CipherSuite::Intermediate),
        "old" => Ok(CipherSuite::Old),
        "fips" => Ok(CipherSuite::Fips),
        "custom" => Ok(CipherSuite::Custom),
        _ => Err(format!("{name}: Undefined cipher suite {v}")),
    });
    let (proto_raw, proto_name) = l.raw_aliased("ssl_protocols", "nginx_http_ssl_protocols");
    let (prefer_raw, prefer_name) = l.raw_aliased(
        "ssl_prefer_server_ciphers",
        "nginx_http_ssl_prefer_server_ciphers",
    );
    let (protocols, ciphers, prefer_server_ciphers) = match cipher_suite.protocols() {
        Some(suite_protocols) => {
            // Kong: a named suite overrides `nginx_http_ssl_protocols` and
            // `ssl_prefer_server_ciphers` (parse.lua); said, not silent.
            for (raw, name) in [(&proto_raw, proto_name), (&prefer_raw, prefer_name)] {
                if raw.source != super::ValueSource::Default {
                    warnings.push(format!(
                        "{name} is ignored: ssl_cipher_suite '{}' sets it (only 'custom' uses it)",
                        cipher_suite.as_str()
                    ));
                }
            }
            let protocols =
                parse_protocols("ssl_cipher_suite", suite_protocols).unwrap_or_default();
            (
                protocols,
                cipher_suite.ciphers().map(str::to_string),
                cipher_suite.prefer_server_ciphers().unwrap_or(false),
            )
        }
        None => {
            let protocols = l.parse_raw(&proto_raw, |v| parse_protocols(proto_name, v));
            let prefer = l.parse_raw(&prefer_raw, |v| values::parse_bool(prefer_name, v));
            (protocols, l.opt_string("ssl_ciphers"), prefer)
        }
    };

    let (raw, name) = l.raw_aliased("ssl_session_tickets", "nginx_http_ssl_session_tickets");
    let session_tickets = l.parse_raw(&raw, |v| values::parse_bool(name, v));
    let (raw, name) = l.raw_aliased("ssl_session_timeout", "nginx_http_ssl_session_timeout");
    let session_timeout = l.parse_raw(&raw, |v| values::parse_nginx_time_setting(name, v));
    let session_cache_size = l.get("ssl_session_cache_size", values::parse_size);

    SslSettings {
        cert,
        cert_key,
        cipher_suite,
        ciphers,
        protocols,
        prefer_server_ciphers,
        session_tickets,
        session_timeout,
        session_cache_size,
    }
}
