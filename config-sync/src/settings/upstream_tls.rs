//! Upstream TLS defaults: nginx's `proxy_ssl_*` directives as Kong injects
//! them, and Kong's `client_ssl` (`proxy_ssl_certificate`).
//!
//! Kong's template (`kong/templates/nginx_kong.lua`) sets none of
//! `proxy_ssl_verify`, `proxy_ssl_verify_depth` or
//! `proxy_ssl_trusted_certificate`; users inject them with
//! `nginx_http_<directive>` (the `http {}` block) or
//! `nginx_proxy_<directive>` (the proxy `server {}` block, which wins, as
//! nginx merges each directive on its own). Kong's own spec does exactly
//! that (`spec/02-integration/05-proxy/18-upstream_tls_spec.lua`:
//! `nginx_proxy_proxy_ssl_verify = "on"`). `proxy_ssl_name` and
//! `proxy_ssl_server_name` are fixed by the template's `location /`
//! (`$upstream_host`, `on`), so injecting them changes nothing there.
//!
//! Parsing reads no file: the gateway loads the certificates.

use super::{Loader, RawValue};

/// nginx's `proxy_ssl_verify_depth` default.
pub const DEFAULT_VERIFY_DEPTH: u32 = 1;

/// The upstream TLS defaults a service's own fields override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTlsSettings {
    /// nginx `proxy_ssl_verify` (off): verification for services whose
    /// `tls_verify` is null.
    pub proxy_ssl_verify: bool,
    /// nginx `proxy_ssl_verify_depth` (1). nginx puts it on the upstream
    /// SSL context only when `proxy_ssl_verify` is on
    /// (`ngx_http_proxy_set_ssl` -> `ngx_ssl_trusted_certificate`); off,
    /// OpenSSL's own limit applies to a service that turns `tls_verify` on.
    pub proxy_ssl_verify_depth: u32,
    /// nginx `proxy_ssl_trusted_certificate`, as written (nginx resolves a
    /// relative path against the prefix). Loaded only when
    /// `proxy_ssl_verify` is on, as nginx does; it is the trust store of
    /// services without `ca_certificates`.
    pub proxy_ssl_trusted_certificate: Option<String>,
    /// `client_ssl` on: `client_ssl_cert` and `client_ssl_cert_key` (a
    /// path, PEM or base64 PEM each), the client certificate for upstreams
    /// when neither the service nor its upstream has one.
    pub client_ssl_cert: Option<(String, String)>,
}

impl Default for UpstreamTlsSettings {
    fn default() -> Self {
        UpstreamTlsSettings {
            proxy_ssl_verify: false,
            proxy_ssl_verify_depth: DEFAULT_VERIFY_DEPTH,
            proxy_ssl_trusted_certificate: None,
            client_ssl_cert: None,
        }
    }
}

impl UpstreamTlsSettings {
    /// `proxy_ssl_trusted_certificate` joined to `prefix` when relative.
    pub fn trusted_certificate_path(&self, prefix: &std::path::Path) -> Option<std::path::PathBuf> {
        self.proxy_ssl_trusted_certificate
            .as_deref()
            .map(|p| prefix.join(p))
    }
}

/// nginx's `flag` values, case-insensitive (`ngx_conf_set_flag_slot`).
fn nginx_flag(directive: &str, v: &str) -> Result<bool, String> {
    if v.eq_ignore_ascii_case("on") {
        Ok(true)
    } else if v.eq_ignore_ascii_case("off") {
        Ok(false)
    } else {
        Err(format!(
            "invalid value \"{v}\" in \"{directive}\" directive, it must be \"on\" or \"off\""
        ))
    }
}

/// nginx's `number` values (`ngx_conf_set_num_slot`).
fn nginx_number(directive: &str, v: &str) -> Result<u32, String> {
    v.parse::<u32>()
        .map_err(|_| format!("\"{directive}\" directive invalid number"))
}

/// The `nginx_proxy_` form when set, else the `nginx_http_` one.
fn directive(l: &Loader, http: &'static str, proxy: &'static str) -> Option<RawValue> {
    let (raw, _) = l.raw_aliased(http, proxy);
    (!raw.value.is_empty()).then_some(raw)
}

pub(super) fn load(l: &mut Loader) -> UpstreamTlsSettings {
    let mut out = UpstreamTlsSettings::default();
    let verify = directive(
        l,
        "nginx_http_proxy_ssl_verify",
        "nginx_proxy_proxy_ssl_verify",
    );
    if let Some(raw) = &verify {
        out.proxy_ssl_verify = l.parse_raw(raw, |v| nginx_flag("proxy_ssl_verify", v));
    }
    if let Some(raw) = directive(
        l,
        "nginx_http_proxy_ssl_verify_depth",
        "nginx_proxy_proxy_ssl_verify_depth",
    ) {
        out.proxy_ssl_verify_depth = l
            .parse_raw(&raw, |v| {
                nginx_number("proxy_ssl_verify_depth", v).map(Some)
            })
            .unwrap_or(DEFAULT_VERIFY_DEPTH);
    }
    out.proxy_ssl_trusted_certificate = directive(
        l,
        "nginx_http_proxy_ssl_trusted_certificate",
        "nginx_proxy_proxy_ssl_trusted_certificate",
    )
    .map(|raw| raw.value);
    if out.proxy_ssl_verify && out.proxy_ssl_trusted_certificate.is_none() {
        if let Some(raw) = &verify {
            // nginx refuses to start so (ngx_http_proxy_set_ssl).
            l.error(
                raw,
                "no proxy_ssl_trusted_certificate for proxy_ssl_verify".to_string(),
            );
        }
    }

    let client_ssl = l.get("client_ssl", super::values::parse_bool);
    if client_ssl {
        let cert = l.opt_string("client_ssl_cert");
        let key = l.opt_string("client_ssl_cert_key");
        // Kong's words (kong/conf_loader/parse.lua); with neither, nginx
        // would refuse its empty `proxy_ssl_certificate`.
        match (cert, key) {
            (Some(c), Some(k)) => out.client_ssl_cert = Some((c, k)),
            (Some(_), None) => {
                let raw = l.raw("client_ssl_cert_key");
                l.error(&raw, "client_ssl_cert_key must be specified".to_string());
            }
            (None, _) => {
                let raw = l.raw("client_ssl_cert");
                l.error(&raw, "client_ssl_cert must be specified".to_string());
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::{Settings, SettingsError};
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let env = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load(None, env)
    }

    fn reasons(e: SettingsError) -> Vec<String> {
        e.errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn nginx_defaults() {
        let s = load(&[]).unwrap();
        assert_eq!(s.upstream_tls, UpstreamTlsSettings::default());
        assert!(!s.upstream_tls.proxy_ssl_verify);
        assert_eq!(s.upstream_tls.proxy_ssl_verify_depth, 1);
    }

    #[test]
    fn the_proxy_block_wins_over_the_http_block() {
        let s = load(&[
            ("KONG_NGINX_HTTP_PROXY_SSL_VERIFY", "off"),
            ("KONG_NGINX_PROXY_PROXY_SSL_VERIFY", "on"),
            ("KONG_NGINX_HTTP_PROXY_SSL_TRUSTED_CERTIFICATE", "ca.crt"),
            ("KONG_NGINX_HTTP_PROXY_SSL_VERIFY_DEPTH", "3"),
        ])
        .unwrap();
        let u = &s.upstream_tls;
        assert!(u.proxy_ssl_verify);
        assert_eq!(u.proxy_ssl_verify_depth, 3);
        assert_eq!(
            u.trusted_certificate_path(std::path::Path::new("/p")),
            Some(std::path::PathBuf::from("/p/ca.crt"))
        );
        // Directives are merged one by one: the http block's depth stays.
        let s = load(&[
            ("KONG_NGINX_HTTP_PROXY_SSL_VERIFY", "on"),
            (
                "KONG_NGINX_HTTP_PROXY_SSL_TRUSTED_CERTIFICATE",
                "/etc/ca.crt",
            ),
            ("KONG_NGINX_PROXY_PROXY_SSL_VERIFY_DEPTH", "0"),
        ])
        .unwrap();
        assert!(s.upstream_tls.proxy_ssl_verify);
        assert_eq!(s.upstream_tls.proxy_ssl_verify_depth, 0);
        assert_eq!(
            s.upstream_tls
                .trusted_certificate_path(std::path::Path::new("/p")),
            Some(std::path::PathBuf::from("/etc/ca.crt"))
        );
    }

    #[test]
    fn nginx_refusals() {
        let e = reasons(load(&[("KONG_NGINX_PROXY_PROXY_SSL_VERIFY", "on")]).unwrap_err());
        assert_eq!(
            e,
            ["KONG_NGINX_PROXY_PROXY_SSL_VERIFY: no proxy_ssl_trusted_certificate for proxy_ssl_verify"]
        );
        let e = reasons(load(&[("KONG_NGINX_PROXY_PROXY_SSL_VERIFY", "true")]).unwrap_err());
        assert_eq!(
            e,
            ["KONG_NGINX_PROXY_PROXY_SSL_VERIFY: invalid value \"true\" in \"proxy_ssl_verify\" directive, it must be \"on\" or \"off\""]
        );
        let e = reasons(load(&[("KONG_NGINX_HTTP_PROXY_SSL_VERIFY_DEPTH", "-1")]).unwrap_err());
        assert_eq!(
            e,
            ["KONG_NGINX_HTTP_PROXY_SSL_VERIFY_DEPTH: \"proxy_ssl_verify_depth\" directive invalid number"]
        );
        // nginx flags are case-insensitive.
        let s = load(&[
            ("KONG_NGINX_PROXY_PROXY_SSL_VERIFY", "ON"),
            ("KONG_NGINX_PROXY_PROXY_SSL_TRUSTED_CERTIFICATE", "ca.crt"),
        ])
        .unwrap();
        assert!(s.upstream_tls.proxy_ssl_verify);
    }

    #[test]
    fn client_ssl_needs_both_halves() {
        let s = load(&[
            ("KONG_CLIENT_SSL", "on"),
            ("KONG_CLIENT_SSL_CERT", "/c.crt"),
            ("KONG_CLIENT_SSL_CERT_KEY", "/c.key"),
        ])
        .unwrap();
        assert_eq!(
            s.upstream_tls.client_ssl_cert,
            Some(("/c.crt".to_string(), "/c.key".to_string()))
        );
        assert_eq!(s.redacted()["client_ssl_cert_key"], "******");
        // Off: the certificate is not used (Kong's template skips it).
        let s = load(&[("KONG_CLIENT_SSL_CERT", "/c.crt")]).unwrap();
        assert_eq!(s.upstream_tls.client_ssl_cert, None);
        let e = reasons(
            load(&[
                ("KONG_CLIENT_SSL", "on"),
                ("KONG_CLIENT_SSL_CERT", "/c.crt"),
            ])
            .unwrap_err(),
        );
        assert_eq!(
            e,
            ["client_ssl_cert_key: client_ssl_cert_key must be specified"]
        );
        let e = reasons(load(&[("KONG_CLIENT_SSL", "on")]).unwrap_err());
        assert_eq!(e, ["client_ssl_cert: client_ssl_cert must be specified"]);
    }
}
