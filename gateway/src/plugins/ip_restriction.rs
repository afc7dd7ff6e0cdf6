//! The `ip-restriction` plugin (Kong's `kong/plugins/ip-restriction`):
//! refuses clients by IP address or CIDR range, `deny` checked before
//! `allow`, over the real client address (nginx's `$remote_addr` after
//! `trusted_ips` / `real_ip_header`).

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use config_sync::schema::{array, number, string, PluginSchema, Record};
use serde::Deserialize;
use serde_json::Value;

use super::{Exit, Instance, Kong, Phases, Plugin, PluginDef, VERSION};

pub const NAME: &str = "ip-restriction";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 990,
    version: VERSION,
    schema,
    build,
};

/// `typedefs.protocols { default = { "http", "https", "tcp", "tls", "grpc",
/// "grpcs" } }`: any protocol, the stream ones included by default.
const DEFAULT_PROTOCOLS: &[&str] = &["http", "https", "tcp", "tls", "grpc", "grpcs"];
const ALL_PROTOCOLS: &[&str] = &[
    "grpc",
    "grpcs",
    "http",
    "https",
    "tcp",
    "tls",
    "tls_passthrough",
    "udp",
];

fn schema() -> PluginSchema {
    let config = Record::new(vec![
        ("allow", array(string().custom(ip_or_cidr))),
        ("deny", array(string().custom(ip_or_cidr))),
        ("status", number()),
        ("message", string()),
    ]);
    PluginSchema {
        name: NAME,
        config,
        default_protocols: DEFAULT_PROTOCOLS,
        allowed_protocols: ALL_PROTOCOLS,
        no_consumer: false,
        no_route: false,
        no_service: false,
        entity_checks: vec![at_least_one_of_allow_deny],
    }
}

/// The plugin's `entity_checks = { { at_least_one_of = { "config.allow",
/// "config.deny" } } }`.
fn at_least_one_of_allow_deny(plugin: &serde_json::Map<String, Value>) -> Result<(), String> {
    let config = plugin.get("config");
    let set = |k: &str| {
        config
            .and_then(|c| c.get(k))
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    if set("allow") || set("deny") {
        Ok(())
    } else {
        Err("at least one of these fields must be non-empty: 'config.allow', 'config.deny'".into())
    }
}

/// `typedefs.ip_or_cidr`.
fn ip_or_cidr(v: &Value) -> Result<(), String> {
    match v.as_str() {
        Some(s) if parse_ip_or_cidr(s).is_some() => Ok(()),
        Some(s) => Err(format!("invalid ip or cidr range: '{s}'")),
        None => Ok(()),
    }
}

/// An address or range as Kong's `kong.tools.ip` accepts it: an IPv4 or
/// IPv6 address, optionally with a prefix written as a plain decimal
/// (`0`..`32` / `0`..`128`, no sign or leading zero). Host bits may be set
/// (`127.0.0.1/8`); the range is what the prefix covers.
fn parse_ip_or_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, p)) => (ip, Some(p)),
        None => (s, None),
    };
    let ip: IpAddr = ip.parse().ok()?;
    let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
    let len = match prefix {
        None => max,
        Some(p) => {
            let canonical = !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p == "0" || !p.starts_with('0'));
            let n: u8 = if canonical {
                p.parse().ok()?
            } else {
                return None;
            };
            if n > max {
                return None;
            }
            n
        }
    };
    Some((ip, len))
}

/// A list of ranges, matched like `resty.ipmatcher`: an IPv4 client only
/// against IPv4 entries, an IPv6 one only against IPv6 entries.
#[derive(Debug, Default)]
struct Matcher {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl Matcher {
    fn new(list: &[String]) -> Result<Matcher, String> {
        let mut m = Matcher::default();
        for s in list {
            match parse_ip_or_cidr(s) {
                Some((IpAddr::V4(ip), len)) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                    m.v4.push((u32::from(ip) & mask, mask));
                }
                Some((IpAddr::V6(ip), len)) => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                    m.v6.push((u128::from(ip) & mask, mask));
                }
                None => return Err(format!("invalid ip or cidr range: '{s}'")),
            }
        }
        Ok(m)
    }

    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    fn matches(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => {
                let ip = u32::from(ip);
                self.v4.iter().any(|&(net, mask)| ip & mask == net)
            }
            IpAddr::V6(ip) => {
                let ip = u128::from(ip);
                self.v6.iter().any(|&(net, mask)| ip & mask == net)
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct Config {
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
    status: Option<f64>,
    message: Option<String>,
}

fn build(i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Config = serde_json::from_value(i.config.clone()).map_err(|e| e.to_string())?;
    Ok(Arc::new(IpRestriction {
        allow: Matcher::new(conf.allow.as_deref().unwrap_or_default())?,
        deny: Matcher::new(conf.deny.as_deref().unwrap_or_default())?,
        status: conf.status,
        message: conf.message,
    }))
}

struct IpRestriction {
    allow: Matcher,
    deny: Matcher,
    status: Option<f64>,
    message: Option<String>,
}

impl IpRestriction {
    /// `do_exit`: `kong.response.error(status or 403, message or "IP address
    /// not allowed: <remote_addr>")`.
    fn refuse(&self, ip: IpAddr) -> Exit {
        let message = match &self.message {
            Some(m) => m.clone(),
            None => format!("IP address not allowed: {ip}"),
        };
        log::warn!("{message}");
        match self.status {
            None => Exit::error(403, message),
            // `kong.response.error` takes 400..599 only; anything else is
            // an error in the handler, which Kong turns into a 500.
            Some(s) if s.fract() == 0.0 && (400.0..=599.0).contains(&s) => {
                Exit::error(s as u16, message)
            }
            Some(s) => {
                log::error!("ip-restriction: status {s} is not an error status (400 to 599)");
                Exit::error(500, "An unexpected error occurred")
            }
        }
    }
}

#[async_trait]
impl Plugin for IpRestriction {
    fn phases(&self) -> Phases {
        Phases::ACCESS
    }

    async fn access(&self, kong: &mut Kong<'_>) -> Result<(), Exit> {
        let Some(ip) = kong.client_ip() else {
            return Err(Exit::error(
                403,
                "Cannot identify the client IP address, unix domain sockets are not supported.",
            ));
        };
        if !self.deny.is_empty() && self.deny.matches(ip) {
            return Err(self.refuse(ip));
        }
        if !self.allow.is_empty() && !self.allow.matches(ip) {
            return Err(self.refuse(ip));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use config_sync::schema::validate_record;
    use serde_json::json;

    fn errors(v: Value) -> Vec<(String, String)> {
        match validate_record(&schema().config, &v, "config") {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|e| (e.path, e.message)).collect(),
        }
    }

    fn entity_check(config: Value) -> Result<(), String> {
        let c = validate_record(&schema().config, &config, "config").unwrap();
        let mut plugin = serde_json::Map::new();
        plugin.insert("config".into(), c);
        at_least_one_of_allow_deny(&plugin)
    }

    #[test]
    fn schema_matches_kongs_spec() {
        // 01-schema_spec.lua
        for ok in [
            json!({"allow": ["127.0.0.1/32", "127.0.0.2/32"]}),
            json!({"allow": ["127.0.0.1/32", "127.0.0.2/32"], "status": 403, "message": "Forbidden"}),
            json!({"allow": ["127.0.0.1/8"]}),
            json!({"deny": ["127.0.0.1/32", "127.0.0.2/32"]}),
            json!({"deny": ["127.0.0.2/32"], "allow": ["127.0.0.1/32"]}),
            json!({"allow": ["::/0", "::/1", "::/128"]}),
        ] {
            assert_eq!(errors(ok.clone()), vec![], "{ok}");
            assert!(entity_check(ok).is_ok());
        }
        assert_eq!(
            errors(json!({"allow": 12})),
            vec![("config.allow".into(), "expected an array".into())]
        );
        assert_eq!(
            errors(json!({"deny": 12})),
            vec![("config.deny".into(), "expected an array".into())]
        );
        assert_eq!(
            errors(json!({"allow": ["127.0.0.1/32", "127.0.0.2/32", "hello"]})),
            vec![(
                "config.allow.3".into(),
                "invalid ip or cidr range: 'hello'".into()
            )]
        );
        let bad = [
            "0.0.0.0/a",
            "0.0.0.0/-1",
            "0.0.0.0/33",
            "::/a",
            "::/-1",
            "::/129",
            "::1/129",
        ];
        let got = errors(json!({ "deny": bad }));
        assert_eq!(got.len(), bad.len());
        for (i, b) in bad.iter().enumerate() {
            assert_eq!(got[i].0, format!("config.deny.{}", i + 1));
            assert_eq!(got[i].1, format!("invalid ip or cidr range: '{b}'"));
        }
        assert_eq!(
            entity_check(json!({"deny": [], "allow": []})).unwrap_err(),
            "at least one of these fields must be non-empty: 'config.allow', 'config.deny'"
        );
        assert!(entity_check(json!({})).is_err());
    }

    #[test]
    fn prefixes_are_plain_decimals() {
        assert!(parse_ip_or_cidr("10.0.0.0/08").is_none());
        assert!(parse_ip_or_cidr("10.0.0.0/+8").is_none());
        assert!(parse_ip_or_cidr("10.0.0.0/").is_none());
        assert_eq!(
            parse_ip_or_cidr("10.0.0.0/0"),
            Some(("10.0.0.0".parse().unwrap(), 0))
        );
        assert_eq!(parse_ip_or_cidr("::1").map(|(_, l)| l), Some(128));
    }

    #[test]
    fn matching_follows_family_and_prefix() {
        let list = |v: &[&str]| {
            Matcher::new(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let m = list(&["127.0.0.1/8", "fe80::/8"]);
        assert!(m.matches(ip("127.200.0.1")));
        assert!(!m.matches(ip("128.0.0.1")));
        assert!(m.matches(ip("fe80::1")));
        assert!(m.matches(ip("feff::1")));
        assert!(!m.matches(ip("::1")));
        // No cross-family matching: a v4-mapped v6 address is v6.
        assert!(!m.matches(ip("::ffff:127.0.0.1")));
        let all = list(&["0.0.0.0/0"]);
        assert!(all.matches(ip("8.8.8.8")));
        assert!(!all.matches(ip("::1")));
        assert!(list(&["::/0"]).matches(ip("::1")));
        assert!(list(&["127.0.0.1"]).matches(ip("127.0.0.1")));
        assert!(!list(&["127.0.0.1"]).matches(ip("127.0.0.2")));
    }
}
