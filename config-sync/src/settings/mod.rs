//! Kong settings (`KONG_*` environment + optional kong.conf), resolved the
//! way Kong's `conf_loader` does: defaults < kong.conf < `KONG_<NAME>`.
//!
//! Only the subset of Kong's settings this gateway uses is recognised;
//! unknown kong.conf keys produce warnings, unknown `KONG_*` variables are
//! ignored (Kong has hundreds). Parsing never reads the process
//! environment or the filesystem: callers pass both in.

mod listen;
mod source;
mod ssl;
mod upstream_tls;
mod values;

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::{json, Map, Value};

pub use listen::{parse_listen, ListenAddr};
pub use source::ValueSource;
pub use ssl::{CipherSuite, SslSettings, TlsProtocol};
pub use upstream_tls::UpstreamTlsSettings;
pub use values::{
    parse_nginx_size, ErrorDefaultType, HeadersConfig, HostPort, LargeHeaderBuffers, LogLevel,
    LogTarget, TrustedIps, WorkerProcesses,
};

use source::{RawValue, Sources};

/// Every setting key we understand, with Kong's default (`None` = Kong's
/// `NONE`, i.e. unset).
const KEYS: &[(&str, Option<&str>)] = &[
    ("role", Some("traditional")),
    // Kong defaults to postgres; this gateway is DB-less only.
    ("database", Some("off")),
    ("declarative_config", None),
    ("declarative_config_string", None),
    ("prefix", Some("/usr/local/kong/")),
    ("log_level", Some("notice")),
    ("proxy_access_log", Some("logs/access.log")),
    ("proxy_error_log", Some("logs/error.log")),
    // Kong's default. `http2` is accepted on `ssl` entries, whose ALPN
    // offers only http/1.1 until HTTP/2 is served.
    (
        "proxy_listen",
        Some(
            "0.0.0.0:8000 reuseport backlog=16384, 0.0.0.0:8443 http2 ssl reuseport backlog=16384",
        ),
    ),
    // Kong serves its Admin API on 8001/8444; this gateway has none.
    ("admin_listen", Some("off")),
    (
        "status_listen",
        Some("127.0.0.1:8007 reuseport backlog=16384"),
    ),
    ("nginx_worker_processes", Some("auto")),
    // Alias target: when the user sets it, it wins over nginx_worker_processes.
    ("nginx_main_worker_processes", None),
    ("trusted_ips", None),
    ("real_ip_header", Some("X-Real-IP")),
    ("real_ip_recursive", Some("off")),
    // Alias targets of real_ip_header / real_ip_recursive.
    ("nginx_proxy_real_ip_header", None),
    ("nginx_proxy_real_ip_recursive", None),
    (
        "headers",
        Some("server_tokens, latency_tokens, X-Kong-Request-Id"),
    ),
    ("headers_upstream", Some("X-Kong-Request-Id")),
    ("error_default_type", Some("text/plain")),
    ("allow_debug_header", Some("off")),
    ("nginx_http_client_max_body_size", Some("0")),
    // Kong's `lua_shared_dict kong_db_cache` size: proxy-cache's memory
    // strategy stores there.
    ("mem_cache_size", Some("128m")),
    // Not in Kong's defaults (nginx's own defaults apply there).
    ("nginx_http_client_header_buffer_size", Some("1k")),
    // Kong's default (kong.conf.default): the largest request body plugins
    // can read (`kong.request.get_raw_body()`).
    ("nginx_http_client_body_buffer_size", Some("8k")),
    ("nginx_http_large_client_header_buffers", Some("4 8k")),
    // nginx's defaults; the `nginx_proxy_*` forms (Kong injects them into
    // the proxy server block) win over the `nginx_http_*` ones.
    ("nginx_http_client_header_timeout", Some("60s")),
    ("nginx_proxy_client_header_timeout", None),
    ("nginx_http_client_body_timeout", Some("60s")),
    ("nginx_proxy_client_body_timeout", None),
    // Kong's template sets `underscores_in_headers on`.
    ("nginx_http_underscores_in_headers", Some("on")),
    ("nginx_proxy_underscores_in_headers", None),
    // HTTP/2 and keep-alive (nginx's defaults, Kong's for keepalive_requests).
    ("nginx_http_http2_max_concurrent_streams", Some("128")),
    ("nginx_proxy_http2_max_concurrent_streams", None),
    ("nginx_http_http2_body_preread_size", Some("64k")),
    ("nginx_proxy_http2_body_preread_size", None),
    ("nginx_http_keepalive_requests", Some("10000")),
    ("nginx_proxy_keepalive_requests", None),
    ("nginx_http_send_timeout", Some("60s")),
    ("nginx_proxy_send_timeout", None),
    // nginx waits for in-flight requests without a bound; ours is 30 s
    // (Kubernetes' default termination grace period).
    ("nginx_main_worker_shutdown_timeout", Some("30s")),
    ("port_maps", None),
    ("cluster_control_plane", Some("127.0.0.1:8005")),
    ("cluster_server_name", None),
    ("cluster_cert", None),
    ("cluster_cert_key", None),
    ("cluster_ca_cert", None),
    ("cluster_mtls", Some("shared")),
    ("lua_ssl_trusted_certificate", Some("system")),
    ("cluster_max_payload", Some("16777216")),
    ("konnect_mode", Some("off")),
    ("cluster_telemetry_endpoint", None),
    ("cluster_telemetry_server_name", None),
    ("cluster_dp_labels", None),
    ("plugins", Some("bundled")),
    // Only Kong's default flavour is implemented; the others are refused.
    ("router_flavor", Some("traditional_compatible")),
    ("upstream_keepalive_pool_size", Some("512")),
    ("upstream_keepalive_max_requests", Some("10000")),
    ("upstream_keepalive_idle_timeout", Some("60")),
    // Downstream TLS (`ssl` proxy listeners), Kong's defaults; the
    // `nginx_http_*` forms are alias targets that win when set.
    ("ssl_cert", None),
    ("ssl_cert_key", None),
    ("ssl_cipher_suite", Some("intermediate")),
    ("ssl_ciphers", None),
    ("ssl_protocols", Some("TLSv1.2 TLSv1.3")),
    ("nginx_http_ssl_protocols", None),
    ("ssl_prefer_server_ciphers", Some("on")),
    ("nginx_http_ssl_prefer_server_ciphers", None),
    ("ssl_session_tickets", Some("on")),
    ("nginx_http_ssl_session_tickets", None),
    ("ssl_session_timeout", Some("1d")),
    ("nginx_http_ssl_session_timeout", None),
    ("ssl_session_cache_size", Some("10m")),
    // Upstream TLS defaults (settings/upstream_tls.rs): nginx's, unset by
    // Kong's template; `nginx_proxy_*` wins over `nginx_http_*`.
    ("nginx_http_proxy_ssl_verify", None),
    ("nginx_proxy_proxy_ssl_verify", None),
    ("nginx_http_proxy_ssl_verify_depth", None),
    ("nginx_proxy_proxy_ssl_verify_depth", None),
    ("nginx_http_proxy_ssl_trusted_certificate", None),
    ("nginx_proxy_proxy_ssl_trusted_certificate", None),
    ("client_ssl", Some("off")),
    ("client_ssl_cert", None),
    ("client_ssl_cert_key", None),
];

/// Keys whose values are never echoed: not in the redacted dump, not in an
/// error or warning. Kong's `CONF_SENSITIVE` (kong/conf_loader/constants.lua)
/// whole, known to this gateway or not, so a key we add later is covered.
const SENSITIVE: &[&str] = &[
    "pg_password",
    "pg_ro_password",
    // A URL that may carry credentials.
    "proxy_server",
    "declarative_config_string",
    // A path, or the key itself inline or in base64.
    "cluster_cert_key",
    "ssl_cert_key",
    "client_ssl_cert_key",
    "admin_ssl_cert_key",
    "admin_gui_ssl_cert_key",
    "status_ssl_cert_key",
    "debug_ssl_cert_key",
];
const REDACTED: &str = "******";

/// Whether a setting's value must never be shown: Kong's list, plus any key
/// naming a key, password, token or secret. `key` as in kong.conf or as the
/// environment variable (`KONG_CLUSTER_CERT_KEY`).
pub fn is_sensitive(key: &str) -> bool {
    let key = key
        .strip_prefix("KONG_")
        .unwrap_or(key)
        .to_ascii_lowercase();
    SENSITIVE.contains(&key.as_str())
        || ["_key", "_password", "_token"]
            .iter()
            .any(|s| key.ends_with(s))
        || key.contains("secret")
}

/// `reason` with every trace of a sensitive `value` masked: the value, each
/// line of it, and each word of 4+ characters (parsers quote fragments,
/// e.g. one list entry).
fn scrub(reason: &str, value: &str) -> String {
    let mut parts: Vec<&str> = value
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '\'' | '"'))
        .filter(|p| p.len() >= 4)
        .collect();
    parts.extend(value.lines().map(str::trim).filter(|l| !l.is_empty()));
    if !value.trim().is_empty() {
        parts.push(value.trim());
    }
    parts.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let mut out = reason.to_string();
    for p in parts {
        out = out.replace(p, REDACTED);
    }
    out
}

const CLUSTER_MAX_PAYLOAD_MIN: u64 = 4_194_304;

/// Gateway role (`role`). `control_plane` is rejected at load time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    #[default]
    Traditional,
    DataPlane,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Traditional => "traditional",
            Role::DataPlane => "data_plane",
        }
    }
}

/// `cluster_mtls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClusterMtls {
    #[default]
    Shared,
    Pki,
}

impl ClusterMtls {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterMtls::Shared => "shared",
            ClusterMtls::Pki => "pki",
        }
    }
}

/// One problem with one key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct FieldError {
    /// The key as the user wrote it: `KONG_PROXY_LISTEN` for environment
    /// values, `proxy_listen` for kong.conf (and defaults).
    pub key: String,
    pub origin: ValueSource,
    pub reason: String,
}

/// All problems found while loading settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Kong configuration: {}", join_errors(.errors))]
pub struct SettingsError {
    pub errors: Vec<FieldError>,
}

fn join_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Resolved settings. Field names follow Kong's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub role: Role,
    /// Always `"off"` once loaded.
    pub database: String,
    pub declarative_config: Option<PathBuf>,
    pub declarative_config_string: Option<String>,
    /// As written (Kong makes it absolute against the cwd; we leave that to
    /// the caller so parsing does not depend on process state).
    pub prefix: PathBuf,
    pub log_level: LogLevel,
    pub proxy_access_log: LogTarget,
    pub proxy_error_log: LogTarget,
    pub proxy_listen: Vec<ListenAddr>,
    pub status_listen: Vec<ListenAddr>,
    /// Always empty once loaded: there is no Admin API, and any other
    /// value than `off` is refused.
    pub admin_listen: Vec<ListenAddr>,
    /// `nginx_main_worker_processes` if the user set it, else
    /// `nginx_worker_processes` (Kong's alias rule).
    pub nginx_worker_processes: WorkerProcesses,
    pub trusted_ips: Vec<IpNet>,
    /// `unix:` appeared in `trusted_ips`.
    pub trusted_ips_unix: bool,
    /// Effective header (`nginx_proxy_real_ip_header` overrides), or
    /// `proxy_protocol` (the address from a `proxy_protocol` listener's header).
    pub real_ip_header: String,
    pub real_ip_recursive: bool,
    pub headers: HeadersConfig,
    pub headers_upstream_request_id: bool,
    pub error_default_type: ErrorDefaultType,
    pub allow_debug_header: bool,
    /// `None` = unlimited (nginx `0`).
    pub nginx_http_client_max_body_size: Option<u64>,
    /// Bytes.
    pub nginx_http_client_header_buffer_size: u64,
    /// Bytes: bodies up to this size are readable by plugins.
    pub nginx_http_client_body_buffer_size: u64,
    /// Bytes: the size of Kong's `kong_db_cache` / `kong_core_db_cache`
    /// shared dicts (proxy-cache's memory strategy).
    pub mem_cache_size: u64,
    pub nginx_http_large_client_header_buffers: LargeHeaderBuffers,
    /// nginx `client_header_timeout`: the whole request head must arrive within it.
    pub client_header_timeout: Duration,
    /// nginx `client_body_timeout`: the longest wait between two reads of a body.
    pub client_body_timeout: Duration,
    /// nginx `underscores_in_headers` (Kong: on). Off drops every request
    /// header whose name holds `_`.
    pub underscores_in_headers: bool,
    /// nginx `http2_max_concurrent_streams`: streams one HTTP/2 connection
    /// may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
    pub http2_max_concurrent_streams: u32,
    /// nginx `http2_body_preread_size`: a stream's initial receive window
    /// (SETTINGS_INITIAL_WINDOW_SIZE).
    pub http2_body_preread_size: u32,
    /// nginx `keepalive_requests` (Kong: 10000): requests one connection
    /// may carry, HTTP/1 requests or HTTP/2 streams; 0 is refused.
    pub keepalive_requests: u64,
    /// nginx `send_timeout`: the longest wait between two writes to a
    /// client (a client that reads nothing, or holds an HTTP/2 window shut).
    pub send_timeout: Duration,
    /// nginx `worker_shutdown_timeout`: how long a graceful shutdown waits
    /// for open connections to finish.
    pub worker_shutdown_timeout: Duration,
    /// `(host_port, kong_port)` pairs.
    pub port_maps: Vec<(u16, u16)>,
    pub cluster_control_plane: HostPort,
    pub cluster_server_name: Option<String>,
    /// Path or inline PEM/base64, as Kong accepts; not read here.
    pub cluster_cert: Option<String>,
    pub cluster_cert_key: Option<String>,
    pub cluster_ca_cert: Option<String>,
    pub cluster_mtls: ClusterMtls,
    /// Raw entries; `system` means the OS bundle.
    pub lua_ssl_trusted_certificate: Vec<String>,
    pub cluster_max_payload: u64,
    pub konnect_mode: bool,
    pub cluster_telemetry_endpoint: Option<HostPort>,
    pub cluster_telemetry_server_name: Option<String>,
    pub cluster_dp_labels: Vec<(String, String)>,
    /// Raw list (`bundled` is left for the gateway to expand); empty when
    /// `off`.
    pub plugins: Vec<String>,
    pub upstream_keepalive_pool_size: u64,
    pub upstream_keepalive_max_requests: u64,
    pub upstream_keepalive_idle_timeout: u64,
    /// Downstream TLS for `ssl` proxy listeners (`ssl_*`).
    pub ssl: SslSettings,
    /// Upstream TLS defaults (`proxy_ssl_*`, `client_ssl`).
    pub upstream_tls: UpstreamTlsSettings,
    /// Non-fatal notes (e.g. unknown kong.conf keys).
    pub warnings: Vec<String>,
}

fn is_known(key: &str) -> bool {
    KEYS.iter().any(|(k, _)| *k == key)
}

fn default_of(key: &str) -> Option<&'static str> {
    KEYS.iter().find(|(k, _)| *k == key).and_then(|(_, d)| *d)
}

/// Resolves raw values and accumulates errors.
struct Loader {
    sources: Sources,
    errors: Vec<FieldError>,
}

impl Loader {
    /// Effective value: user value, else Kong default (`NONE` → "").
    fn raw(&self, key: &'static str) -> RawValue {
        self.sources
            .user(key)
            .unwrap_or_else(|| Self::default_raw(key))
    }

    fn default_raw(key: &'static str) -> RawValue {
        RawValue {
            value: default_of(key).unwrap_or_default().to_string(),
            source: ValueSource::Default,
            display_key: key.to_string(),
        }
    }

    /// Kong alias rule: a user-set `target` wins over `key`, whatever their
    /// sources (env/file) are. Returns the value and the key it belongs to.
    fn raw_aliased(&self, key: &'static str, target: &'static str) -> (RawValue, &'static str) {
        match self.sources.user(target) {
            Some(v) => (v, target),
            None => (self.raw(key), key),
        }
    }

    /// Every loader error goes through here: a sensitive value is masked
    /// whatever the parser put in its reason.
    fn error(&mut self, raw: &RawValue, reason: String) {
        let reason = if is_sensitive(&raw.display_key) {
            scrub(&reason, &raw.value)
        } else {
            reason
        };
        self.errors.push(FieldError {
            key: raw.display_key.clone(),
            origin: raw.source.clone(),
            reason,
        });
    }

    fn parse_raw<T: Default>(
        &mut self,
        raw: &RawValue,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        match f(&raw.value) {
            Ok(v) => v,
            Err(reason) => {
                self.error(raw, reason);
                T::default()
            }
        }
    }

    /// Parses `key` with `f(name, value)`; on error records it and returns a
    /// placeholder (load fails anyway).
    fn get<T: Default>(
        &mut self,
        key: &'static str,
        f: impl FnOnce(&str, &str) -> Result<T, String>,
    ) -> T {
        let raw = self.raw(key);
        self.parse_raw(&raw, |v| f(key, v))
    }

    fn get_multi<T: Default>(
        &mut self,
        key: &'static str,
        f: impl FnOnce(&str, &str) -> Result<T, Vec<String>>,
    ) -> T {
        let raw = self.raw(key);
        match f(key, &raw.value) {
            Ok(v) => v,
            Err(reasons) => {
                for r in reasons {
                    self.error(&raw, r);
                }
                T::default()
            }
        }
    }

    fn opt_string(&self, key: &'static str) -> Option<String> {
        let v = self.raw(key).value;
        (!v.is_empty()).then_some(v)
    }

    fn list(&self, key: &'static str) -> Vec<String> {
        values::split_list(&self.raw(key).value)
    }
}

impl Settings {
    /// conf_file: contents of kong.conf if given (-c). env: the process environment pairs.
    pub fn load(
        conf_file: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, SettingsError> {
        let mut warnings = Vec::new();
        let sources = Sources::collect(conf_file, env, is_known, &mut warnings);
        let mut l = Loader {
            sources,
            errors: Vec::new(),
        };

        let role_raw = l.raw("role");
        let role = l.parse_raw(&role_raw, |v| match v {
            "traditional" => Ok(Role::Traditional),
            "data_plane" => Ok(Role::DataPlane),
            "control_plane" => Err(
                "this gateway is a data plane; role 'control_plane' is not supported".to_string(),
            ),
            _ => Err(values::enum_error(
                "role",
                v,
                &["data_plane", "control_plane", "traditional"],
            )),
        });

        let db_raw = l.raw("database");
        let database = l.parse_raw(&db_raw, |v| match v {
            "off" => Ok(v.to_string()),
            // Kong's data-plane wording, since that is the check users know.
            "postgres" | "cassandra" if role == Role::DataPlane => Err(
                "only in-memory storage can be used when role = \"data_plane\"\nHint: set database = off in your kong.conf"
                    .to_string(),
            ),
            "postgres" | "cassandra" => Err(format!(
                "database '{v}' is not supported: this gateway only runs DB-less (database = off) with declarative configuration"
            )),
            _ => Err(values::enum_error("database", v, &["postgres", "cassandra", "off"])),
        });

        let declarative_config = l.opt_string("declarative_config").map(PathBuf::from);
        let declarative_config_string = l.opt_string("declarative_config_string");
        let prefix = l.get("prefix", |name, v| {
            // Drop trailing slashes (Kong's default has one) but keep "/".
            match v.trim_end_matches('/') {
                "" if v.is_empty() => Err(format!("{name} must not be empty")),
                "" => Ok(PathBuf::from("/")),
                p => Ok(PathBuf::from(p)),
            }
        });
        let log_level = l.get("log_level", values::parse_log_level);
        let proxy_access_log = l.get("proxy_access_log", values::parse_log_target);
        let proxy_error_log = l.get("proxy_error_log", values::parse_log_target);
        let proxy_listen = l.get("proxy_listen", parse_listen);
        let status_listen = l.get("status_listen", parse_listen);
        let admin_listen = l.get("admin_listen", parse_listen);
        // Refused rather than served differently: see listen::UNSUPPORTED_FLAGS.
        for (key, listens, served) in [
            ("proxy_listen", &proxy_listen, listen::PROXY_SERVED),
            ("status_listen", &status_listen, &[][..]),
        ] {
            let raw = l.raw(key);
            for reason in listen::unsupported(key, listens, served) {
                l.error(&raw, reason);
            }
        }
        if !admin_listen.is_empty() {
            let raw = l.raw("admin_listen");
            l.error(
                &raw,
                "admin_listen must be 'off': this gateway has no Admin API (a data plane is configured by its declarative file or its control plane)"
                    .to_string(),
            );
        }

        let (wp_raw, wp_name) =
            l.raw_aliased("nginx_worker_processes", "nginx_main_worker_processes");
        let nginx_worker_processes =
            l.parse_raw(&wp_raw, |v| values::parse_worker_processes(wp_name, v));

        let trusted = l.get_multi("trusted_ips", values::parse_trusted_ips);

        let (rih_raw, rih_name) = l.raw_aliased("real_ip_header", "nginx_proxy_real_ip_header");
        let real_ip_header = l.parse_raw(&rih_raw, |v| {
            let ok = !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic() && b != b':');
            if ok {
                Ok(v.to_string())
            } else {
                Err(format!("{rih_name} must be a header name, got '{v}'"))
            }
        });
        let (rir_raw, rir_name) =
            l.raw_aliased("real_ip_recursive", "nginx_proxy_real_ip_recursive");
        let real_ip_recursive = l.parse_raw(&rir_raw, |v| values::parse_bool(rir_name, v));

        let headers = l.get_multi("headers", values::parse_headers);
        let headers_upstream_request_id =
            l.get_multi("headers_upstream", values::parse_headers_upstream);
        let error_default_type = l.get("error_default_type", values::parse_error_default_type);
        let allow_debug_header = l.get("allow_debug_header", values::parse_bool);

        let max_body = l.get("nginx_http_client_max_body_size", values::parse_size);
        let nginx_http_client_max_body_size = (max_body != 0).then_some(max_body);
        let nginx_http_client_body_buffer_size =
            l.get("nginx_http_client_body_buffer_size", values::parse_size);
        let mem_cache_size = l.get("mem_cache_size", values::parse_size);
        let nginx_http_client_header_buffer_size =
            l.get("nginx_http_client_header_buffer_size", |n, v| {
                values::parse_size(n, v).and_then(|s| {
                    if s == 0 {
                        Err(format!("{n} must be greater than 0"))
                    } else {
                        Ok(s)
                    }
                })
            });
        let nginx_http_large_client_header_buffers = l.get(
            "nginx_http_large_client_header_buffers",
            values::parse_large_header_buffers,
        );

        let timeout = |l: &mut Loader, key: &'static str, proxy: &'static str| {
            let (raw, name) = l.raw_aliased(key, proxy);
            l.parse_raw(&raw, |v| values::parse_nginx_time_setting(name, v))
        };
        let client_header_timeout = timeout(
            &mut l,
            "nginx_http_client_header_timeout",
            "nginx_proxy_client_header_timeout",
        );
        let client_body_timeout = timeout(
            &mut l,
            "nginx_http_client_body_timeout",
            "nginx_proxy_client_body_timeout",
        );
        let (raw, name) = l.raw_aliased(
            "nginx_http_underscores_in_headers",
            "nginx_proxy_underscores_in_headers",
        );
        let underscores_in_headers = l.parse_raw(&raw, |v| values::parse_bool(name, v));
        let bounded = |name: &str, v: u64, min: u64, max: u64| {
            if (min..=max).contains(&v) {
                Ok(v)
            } else {
                Err(format!("{name} must be between {min} and {max}"))
            }
        };
        let (raw, name) = l.raw_aliased(
            "nginx_http_http2_max_concurrent_streams",
            "nginx_proxy_http2_max_concurrent_streams",
        );
        let http2_max_concurrent_streams = l.parse_raw(&raw, |v| {
            let n = values::parse_uint(name, v)?;
            bounded(name, n, 1, u64::from(u32::MAX)).map(|n| n as u32)
        });
        let (raw, name) = l.raw_aliased(
            "nginx_http_http2_body_preread_size",
            "nginx_proxy_http2_body_preread_size",
        );
        // RFC 9113: a window is at most 2^31-1 bytes.
        let http2_body_preread_size = l.parse_raw(&raw, |v| {
            let n = values::parse_size(name, v)?;
            bounded(name, n, 0, (1 << 31) - 1).map(|n| n as u32)
        });
        let (raw, name) = l.raw_aliased(
            "nginx_http_keepalive_requests",
            "nginx_proxy_keepalive_requests",
        );
        let keepalive_requests = l.parse_raw(&raw, |v| {
            let n = values::parse_uint(name, v)?;
            bounded(name, n, 1, u64::MAX)
        });
        let send_timeout = timeout(
            &mut l,
            "nginx_http_send_timeout",
            "nginx_proxy_send_timeout",
        );
        let worker_shutdown_timeout = l.get(
            "nginx_main_worker_shutdown_timeout",
            values::parse_nginx_time_setting,
        );

        let port_maps = l.get_multi("port_maps", |_, v| values::parse_port_maps(v));

        let cluster_control_plane = l.get("cluster_control_plane", values::parse_host_port);
        let cluster_server_name = l.opt_string("cluster_server_name");
        let cluster_cert = l.opt_string("cluster_cert");
        let cluster_cert_key = l.opt_string("cluster_cert_key");
        let cluster_ca_cert = l.opt_string("cluster_ca_cert");
        let cluster_mtls = l.get("cluster_mtls", |name, v| match v {
            "shared" => Ok(ClusterMtls::Shared),
            "pki" => Ok(ClusterMtls::Pki),
            _ => Err(values::enum_error(name, v, &["shared", "pki"])),
        });
        let lua_ssl_trusted_certificate = l.list("lua_ssl_trusted_certificate");
        let cluster_max_payload = l.get("cluster_max_payload", |name, v| {
            let n = values::parse_uint(name, v)?;
            if n < CLUSTER_MAX_PAYLOAD_MIN {
                return Err(format!(
                    "{name} must be {CLUSTER_MAX_PAYLOAD_MIN} (4MB) or greater"
                ));
            }
            Ok(n)
        });
        let konnect_mode = l.get("konnect_mode", values::parse_bool);
        let cluster_telemetry_endpoint = l.get("cluster_telemetry_endpoint", |name, v| {
            if v.is_empty() {
                Ok(None)
            } else {
                values::parse_host_port(name, v).map(Some)
            }
        });
        let cluster_telemetry_server_name = l.opt_string("cluster_telemetry_server_name");
        let cluster_dp_labels = l.get("cluster_dp_labels", values::parse_labels);

        // As Kong: "off" first disables all, "off" elsewhere is skipped.
        // `traditional` ranks routes differently (port-specific hosts,
        // submatch weights) and `expressions` routes by `expression`: with
        // either, this gateway would route otherwise than Kong.
        l.get("router_flavor", |name, v| match v {
            "traditional_compatible" => Ok(()),
            "traditional" | "expressions" => Err(format!(
                "{name}: '{v}' is not supported yet (only traditional_compatible, Kong's default)"
            )),
            _ => Err(values::enum_error(
                name,
                v,
                &["traditional", "traditional_compatible", "expressions"],
            )),
        });
        let plugin_list = l.list("plugins");
        let plugins = if plugin_list.first().is_some_and(|p| p == "off") {
            Vec::new()
        } else {
            plugin_list.into_iter().filter(|p| p != "off").collect()
        };

        let upstream_keepalive_pool_size =
            l.get("upstream_keepalive_pool_size", values::parse_uint);
        let upstream_keepalive_max_requests =
            l.get("upstream_keepalive_max_requests", values::parse_uint);
        let upstream_keepalive_idle_timeout =
            l.get("upstream_keepalive_idle_timeout", values::parse_uint);
        let ssl_enabled = proxy_listen.iter().any(|p| p.ssl);
        let ssl = ssl::load(&mut l, ssl_enabled, &mut warnings);
        let upstream_tls = upstream_tls::load(&mut l);

        // Cross-checks, as Kong's check_and_parse.
        if role == Role::DataPlane {
            if cluster_cert.is_none() || cluster_cert_key.is_none() {
                l.error(
                    &role_raw,
                    "cluster certificate and key must be provided to use Hybrid mode".to_string(),
                );
            }
            let pl_raw = l.raw("proxy_listen");
            if proxy_listen.is_empty() && !l.errors.iter().any(|e| e.key == pl_raw.display_key) {
                l.error(
                    &pl_raw,
                    "proxy_listen must be specified when role = \"data_plane\"".to_string(),
                );
            }
        } else if !cluster_dp_labels.is_empty() {
            let raw = l.raw("cluster_dp_labels");
            l.error(
                &raw,
                "cluster_dp_labels can only be used when role = \"data_plane\"".to_string(),
            );
        }

        if !l.errors.is_empty() {
            return Err(SettingsError { errors: l.errors });
        }

        Ok(Settings {
            role,
            database,
            declarative_config,
            declarative_config_string,
            prefix,
            log_level,
            proxy_access_log,
            proxy_error_log,
            proxy_listen,
            status_listen,
            admin_listen,
            nginx_worker_processes,
            trusted_ips: trusted.nets,
            trusted_ips_unix: trusted.unix,
            real_ip_header,
            real_ip_recursive,
            headers,
            headers_upstream_request_id,
            error_default_type,
            allow_debug_header,
            nginx_http_client_max_body_size,
            nginx_http_client_header_buffer_size,
            nginx_http_client_body_buffer_size,
            mem_cache_size,
            nginx_http_large_client_header_buffers,
            client_header_timeout,
            client_body_timeout,
            underscores_in_headers,
            http2_max_concurrent_streams,
            http2_body_preread_size,
            keepalive_requests,
            send_timeout,
            worker_shutdown_timeout,
            port_maps,
            cluster_control_plane,
            cluster_server_name,
            cluster_cert,
            cluster_cert_key,
            cluster_ca_cert,
            cluster_mtls,
            lua_ssl_trusted_certificate,
            cluster_max_payload,
            konnect_mode,
            cluster_telemetry_endpoint,
            cluster_telemetry_server_name,
            cluster_dp_labels,
            plugins,
            upstream_keepalive_pool_size,
            upstream_keepalive_max_requests,
            upstream_keepalive_idle_timeout,
            ssl,
            upstream_tls,
            warnings,
        })
    }

    /// `proxy_access_log` with relative paths joined to `prefix`.
    pub fn proxy_access_log_path(&self) -> Option<PathBuf> {
        self.proxy_access_log.resolved_path(&self.prefix)
    }

    /// `proxy_error_log` with relative paths joined to `prefix`.
    pub fn proxy_error_log_path(&self) -> Option<PathBuf> {
        self.proxy_error_log.resolved_path(&self.prefix)
    }

    /// Kong-style map of the effective settings (like Kong's `process_conf`)
    /// with sensitive values replaced by `******`.
    pub fn redacted(&self) -> Value {
        fn listens(v: &[ListenAddr]) -> Value {
            if v.is_empty() {
                json!(["off"])
            } else {
                json!(v.iter().map(|l| l.raw.clone()).collect::<Vec<_>>())
            }
        }
        fn opt<T: ToString>(v: &Option<T>) -> Value {
            v.as_ref()
                .map_or(Value::Null, |s| Value::String(s.to_string()))
        }
        let h = &self.headers;
        let mut header_names = Vec::new();
        for (on, name) in [
            (h.server, "Server"),
            (h.via, "Via"),
            (h.proxy_latency, "X-Kong-Proxy-Latency"),
            (h.response_latency, "X-Kong-Response-Latency"),
            (h.admin_latency, "X-Kong-Admin-Latency"),
            (h.upstream_latency, "X-Kong-Upstream-Latency"),
            (h.upstream_status, "X-Kong-Upstream-Status"),
            (h.request_id, "X-Kong-Request-Id"),
        ] {
            if on {
                header_names.push(name);
            }
        }
        if header_names.is_empty() {
            header_names.push("off");
        }
        let mut trusted: Vec<String> = self.trusted_ips.iter().map(ToString::to_string).collect();
        if self.trusted_ips_unix {
            trusted.push("unix:".to_string());
        }

        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        put("role", json!(self.role.as_str()));
        put("database", json!(self.database));
        put(
            "declarative_config",
            opt(&self.declarative_config.as_ref().map(|p| p.display())),
        );
        put(
            "declarative_config_string",
            opt(&self.declarative_config_string),
        );
        put("prefix", json!(self.prefix.display().to_string()));
        put("log_level", json!(self.log_level.as_str()));
        put(
            "proxy_access_log",
            json!(self.proxy_access_log.as_conf_string()),
        );
        put(
            "proxy_error_log",
            json!(self.proxy_error_log.as_conf_string()),
        );
        put("proxy_listen", listens(&self.proxy_listen));
        put("status_listen", listens(&self.status_listen));
        put("admin_listen", listens(&self.admin_listen));
        put(
            "nginx_worker_processes",
            json!(self.nginx_worker_processes.to_string()),
        );
        put("trusted_ips", json!(trusted));
        put("real_ip_header", json!(self.real_ip_header));
        put(
            "real_ip_recursive",
            json!(if self.real_ip_recursive { "on" } else { "off" }),
        );
        put("headers", json!(header_names));
        put(
            "headers_upstream",
            json!([if self.headers_upstream_request_id {
                "X-Kong-Request-Id"
            } else {
                "off"
            }]),
        );
        put(
            "error_default_type",
            json!(self.error_default_type.as_str()),
        );
        put("allow_debug_header", json!(self.allow_debug_header));
        put(
            "nginx_http_client_max_body_size",
            json!(self.nginx_http_client_max_body_size.unwrap_or(0)),
        );
        put(
            "nginx_http_client_header_buffer_size",
            json!(self.nginx_http_client_header_buffer_size),
        );
        put(
            "nginx_http_client_body_buffer_size",
            json!(self.nginx_http_client_body_buffer_size),
        );
        put("mem_cache_size", json!(self.mem_cache_size));
        put(
            "nginx_http_large_client_header_buffers",
            json!(format!(
                "{} {}",
                self.nginx_http_large_client_header_buffers.number,
                self.nginx_http_large_client_header_buffers.size
            )),
        );
        put(
            "nginx_http_client_header_timeout",
            json!(format!("{}ms", self.client_header_timeout.as_millis())),
        );
        put(
            "nginx_http_client_body_timeout",
            json!(format!("{}ms", self.client_body_timeout.as_millis())),
        );
        put(
            "nginx_http_underscores_in_headers",
            json!(if self.underscores_in_headers {
                "on"
            } else {
                "off"
            }),
        );
        put(
            "nginx_main_worker_shutdown_timeout",
            json!(format!("{}ms", self.worker_shutdown_timeout.as_millis())),
        );
        put(
            "port_maps",
            json!(self
                .port_maps
                .iter()
                .map(|(h, k)| format!("{h}:{k}"))
                .collect::<Vec<_>>()),
        );
        put(
            "cluster_control_plane",
            json!(self.cluster_control_plane.raw),
        );
        put("cluster_server_name", opt(&self.cluster_server_name));
        put("cluster_cert", opt(&self.cluster_cert));
        put("cluster_cert_key", opt(&self.cluster_cert_key));
        put("cluster_ca_cert", opt(&self.cluster_ca_cert));
        put("cluster_mtls", json!(self.cluster_mtls.as_str()));
        put(
            "lua_ssl_trusted_certificate",
            json!(self.lua_ssl_trusted_certificate),
        );
        put("cluster_max_payload", json!(self.cluster_max_payload));
        put("konnect_mode", json!(self.konnect_mode));
        put(
            "cluster_telemetry_endpoint",
            opt(&self
                .cluster_telemetry_endpoint
                .as_ref()
                .map(|h| h.raw.clone())),
        );
        put(
            "cluster_telemetry_server_name",
            opt(&self.cluster_telemetry_server_name),
        );
        put(
            "cluster_dp_labels",
            json!(self
                .cluster_dp_labels
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()),
        );
        put("plugins", json!(self.plugins));
        put(
            "upstream_keepalive_pool_size",
            json!(self.upstream_keepalive_pool_size),
        );
        put(
            "upstream_keepalive_max_requests",
            json!(self.upstream_keepalive_max_requests),
        );
        put(
            "upstream_keepalive_idle_timeout",
            json!(self.upstream_keepalive_idle_timeout),
        );
        put("ssl_cert", json!(self.ssl.cert));
        put("ssl_cert_key", json!(self.ssl.cert_key));
        put("ssl_cipher_suite", json!(self.ssl.cipher_suite.as_str()));
        put("ssl_ciphers", opt(&self.ssl.ciphers));
        put(
            "ssl_protocols",
            json!(self
                .ssl
                .protocols
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(" ")),
        );
        put(
            "ssl_prefer_server_ciphers",
            json!(self.ssl.prefer_server_ciphers),
        );
        put("ssl_session_tickets", json!(self.ssl.session_tickets));
        put(
            "ssl_session_timeout",
            json!(format!("{}ms", self.ssl.session_timeout.as_millis())),
        );
        put("ssl_session_cache_size", json!(self.ssl.session_cache_size));
        let u = &self.upstream_tls;
        let flag = |on: bool| json!(if on { "on" } else { "off" });
        put("nginx_proxy_proxy_ssl_verify", flag(u.proxy_ssl_verify));
        put(
            "nginx_proxy_proxy_ssl_verify_depth",
            json!(u.proxy_ssl_verify_depth.to_string()),
        );
        put(
            "nginx_proxy_proxy_ssl_trusted_certificate",
            opt(&u.proxy_ssl_trusted_certificate),
        );
        put("client_ssl", json!(u.client_ssl_cert.is_some()));
        put(
            "client_ssl_cert",
            opt(&u.client_ssl_cert.as_ref().map(|(c, _)| c.clone())),
        );
        put(
            "client_ssl_cert_key",
            opt(&u.client_ssl_cert.as_ref().map(|(_, k)| k.clone())),
        );

        for (k, v) in m.iter_mut() {
            if is_sensitive(k) && !v.is_null() {
                *v = json!(REDACTED);
            }
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests;
