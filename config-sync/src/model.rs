//! Typed Kong entities after parsing, flattening and validation.
//!
//! Every entity carries an id; foreign keys are plain ids. Defaults follow
//! Kong 3.x schemas (`kong/db/schema/entities/*.lua`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A fully parsed, flattened and validated declarative config.
///
/// Serializable so that the control-plane config cache can keep it as
/// validated (`cluster::cache`): a restart then skips validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeclarativeConfig {
    pub format_version: String,
    /// `_transform` (default true). False means rows are already transformed
    /// by a control plane, e.g. basic-auth passwords are already hashed.
    pub transform: bool,
    pub services: Vec<Service>,
    pub routes: Vec<Route>,
    pub upstreams: Vec<Upstream>,
    pub targets: Vec<Target>,
    pub plugins: Vec<Plugin>,
    pub consumers: Vec<Consumer>,
    pub credentials: Vec<Credential>,
    pub certificates: Vec<Certificate>,
    pub snis: Vec<Sni>,
    pub ca_certificates: Vec<CaCertificate>,
    /// The parsed input as given (not cached: nothing reads it back).
    #[serde(skip)]
    pub raw: Value,
}

/// Entities from which freeing a config is handed to another thread.
pub(crate) const FREE_ELSEWHERE_MIN: usize = 1_000;

impl Drop for DeclarativeConfig {
    /// A large config (its parsed input, every entity) takes milliseconds
    /// to free: a short-lived thread does it, so that whoever applied the
    /// config (a control-plane push, a reload) returns without waiting.
    fn drop(&mut self) {
        let entities = self.services.len()
            + self.routes.len()
            + self.plugins.len()
            + self.consumers.len()
            + self.credentials.len()
            + self.targets.len();
        if entities < FREE_ELSEWHERE_MIN {
            return;
        }
        let parts = (
            std::mem::take(&mut self.raw),
            std::mem::take(&mut self.services),
            std::mem::take(&mut self.routes),
            std::mem::take(&mut self.plugins),
            std::mem::take(&mut self.consumers),
            std::mem::take(&mut self.credentials),
            std::mem::take(&mut self.targets),
        );
        drop_elsewhere(parts);
    }
}

/// Frees `x` on a short-lived thread (a large parsed config takes
/// milliseconds to free). If no thread can start, it is freed here.
pub(crate) fn drop_elsewhere<T: Send + 'static>(x: T) {
    let _ = std::thread::Builder::new()
        .name("config-drop".into())
        .spawn(move || drop(x));
}

impl DeclarativeConfig {
    /// Same entities, `raw` aside: what a round trip through the cache
    /// must preserve.
    pub fn same_entities(&self, other: &DeclarativeConfig) -> bool {
        self.format_version == other.format_version
            && self.transform == other.transform
            && self.services == other.services
            && self.routes == other.routes
            && self.upstreams == other.upstreams
            && self.targets == other.targets
            && self.plugins == other.plugins
            && self.consumers == other.consumers
            && self.credentials == other.credentials
            && self.certificates == other.certificates
            && self.snis == other.snis
            && self.ca_certificates == other.ca_certificates
    }

    pub fn service(&self, id: &Uuid) -> Option<&Service> {
        self.services.iter().find(|s| &s.id == id)
    }

    pub fn route(&self, id: &Uuid) -> Option<&Route> {
        self.routes.iter().find(|r| &r.id == id)
    }

    pub fn upstream_by_name(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// True when the config holds no entity at all (Kong then reports the
    /// all-zero hash rather than the control plane's).
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.routes.is_empty()
            && self.upstreams.is_empty()
            && self.targets.is_empty()
            && self.plugins.is_empty()
            && self.consumers.is_empty()
            && self.credentials.is_empty()
            && self.certificates.is_empty()
            && self.snis.is_empty()
            && self.ca_certificates.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub id: Uuid,
    pub name: Option<String>,
    pub protocol: String,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
    pub retries: u32,
    pub connect_timeout: u64,
    pub write_timeout: u64,
    pub read_timeout: u64,
    pub enabled: bool,
    pub tags: Vec<String>,
    pub tls_verify: Option<bool>,
    pub tls_verify_depth: Option<u32>,
    pub client_certificate: Option<Uuid>,
    pub ca_certificates: Vec<Uuid>,
}

/// One `sources` / `destinations` element of a stream route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CidrPort {
    /// IP address or CIDR range, as written.
    pub ip: Option<String>,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub id: Uuid,
    pub name: Option<String>,
    pub protocols: Vec<String>,
    pub methods: Vec<String>,
    /// `None` when absent/null, `Some(vec![])` for an explicit `[]`: the
    /// router gives the latter plain-host priority.
    pub hosts: Option<Vec<String>>,
    pub paths: Vec<String>,
    /// Header name to accepted values, in config order.
    pub headers: Vec<(String, Vec<String>)>,
    pub snis: Vec<String>,
    pub sources: Vec<CidrPort>,
    pub destinations: Vec<CidrPort>,
    pub strip_path: bool,
    pub preserve_host: bool,
    pub request_buffering: bool,
    pub response_buffering: bool,
    pub regex_priority: i64,
    pub path_handling: String,
    pub https_redirect_status_code: u16,
    pub service: Option<Uuid>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upstream {
    pub id: Uuid,
    pub name: String,
    pub algorithm: String,
    pub hash_on: String,
    pub hash_fallback: String,
    pub hash_on_header: Option<String>,
    pub hash_fallback_header: Option<String>,
    pub hash_on_cookie: Option<String>,
    pub hash_on_cookie_path: String,
    pub hash_on_query_arg: Option<String>,
    pub hash_fallback_query_arg: Option<String>,
    pub hash_on_uri_capture: Option<String>,
    pub hash_fallback_uri_capture: Option<String>,
    pub slots: u32,
    pub host_header: Option<String>,
    pub use_srv_name: bool,
    pub client_certificate: Option<Uuid>,
    pub healthchecks: Healthchecks,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Healthchecks {
    pub active: ActiveHealthcheck,
    pub passive: PassiveHealthcheck,
    /// Percentage (0..100) of healthy weight below which the upstream is
    /// considered unhealthy.
    pub threshold: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveHealthcheck {
    /// Kong's `type` field: tcp, http, https, grpc, grpcs.
    pub check_type: String,
    /// Seconds.
    pub timeout: f64,
    pub concurrency: u32,
    pub http_path: String,
    pub https_sni: Option<String>,
    pub https_verify_certificate: bool,
    pub headers: Vec<(String, Vec<String>)>,
    pub healthy: ActiveHealthy,
    pub unhealthy: ActiveUnhealthy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveHealthy {
    /// Seconds between probes of healthy targets; 0 disables probing.
    pub interval: f64,
    pub http_statuses: Vec<u16>,
    pub successes: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveUnhealthy {
    pub interval: f64,
    pub http_statuses: Vec<u16>,
    pub tcp_failures: u8,
    pub timeouts: u8,
    pub http_failures: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassiveHealthcheck {
    pub check_type: String,
    pub healthy: PassiveHealthy,
    pub unhealthy: PassiveUnhealthy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassiveHealthy {
    pub http_statuses: Vec<u16>,
    pub successes: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassiveUnhealthy {
    pub http_statuses: Vec<u16>,
    pub tcp_failures: u8,
    pub timeouts: u8,
    pub http_failures: u8,
}

impl Default for Healthchecks {
    fn default() -> Self {
        Healthchecks {
            active: ActiveHealthcheck::default(),
            passive: PassiveHealthcheck::default(),
            threshold: 0.0,
        }
    }
}

impl Default for ActiveHealthcheck {
    fn default() -> Self {
        ActiveHealthcheck {
            check_type: "http".into(),
            timeout: 1.0,
            concurrency: 10,
            http_path: "/".into(),
            https_sni: None,
            https_verify_certificate: true,
            headers: Vec::new(),
            healthy: ActiveHealthy::default(),
            unhealthy: ActiveUnhealthy::default(),
        }
    }
}

impl Default for ActiveHealthy {
    fn default() -> Self {
        ActiveHealthy {
            interval: 0.0,
            http_statuses: vec![200, 302],
            successes: 0,
        }
    }
}

impl Default for ActiveUnhealthy {
    fn default() -> Self {
        ActiveUnhealthy {
            interval: 0.0,
            http_statuses: vec![429, 404, 500, 501, 502, 503, 504, 505],
            tcp_failures: 0,
            timeouts: 0,
            http_failures: 0,
        }
    }
}

impl Default for PassiveHealthcheck {
    fn default() -> Self {
        PassiveHealthcheck {
            check_type: "http".into(),
            healthy: PassiveHealthy::default(),
            unhealthy: PassiveUnhealthy::default(),
        }
    }
}

impl Default for PassiveHealthy {
    fn default() -> Self {
        PassiveHealthy {
            http_statuses: vec![
                200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305,
                306, 307, 308,
            ],
            successes: 0,
        }
    }
}

impl Default for PassiveUnhealthy {
    fn default() -> Self {
        PassiveUnhealthy {
            http_statuses: vec![429, 500, 503],
            tcp_failures: 0,
            timeouts: 0,
            http_failures: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub id: Uuid,
    pub upstream: Uuid,
    /// Normalised `host:port` (default port 8000, IPv6 in brackets).
    pub target: String,
    pub weight: u32,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plugin {
    pub id: Uuid,
    pub name: String,
    pub instance_name: Option<String>,
    pub enabled: bool,
    /// Plugin configuration as validated by the plugin's schema (Kong's
    /// defaults filled in).
    pub config: Value,
    pub service: Option<Uuid>,
    pub route: Option<Uuid>,
    pub consumer: Option<Uuid>,
    pub protocols: Vec<String>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consumer {
    pub id: Uuid,
    pub username: Option<String>,
    pub custom_id: Option<String>,
    pub tags: Vec<String>,
}

/// A plugin-owned consumer credential (key-auth key, ACL group, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credential {
    /// DAO table name: keyauth_credentials, basicauth_credentials,
    /// jwt_secrets, hmacauth_credentials, acls, oauth2_credentials,
    /// mtls_auth_credentials.
    pub kind: String,
    pub id: Uuid,
    pub consumer: Uuid,
    /// The remaining columns as given (without id and consumer).
    pub fields: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    pub id: Uuid,
    pub cert: String,
    pub key: String,
    pub cert_alt: Option<String>,
    pub key_alt: Option<String>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sni {
    pub id: Uuid,
    pub name: String,
    pub certificate: Uuid,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaCertificate {
    pub id: Uuid,
    pub cert: String,
    pub cert_digest: Option<String>,
    pub tags: Vec<String>,
}
