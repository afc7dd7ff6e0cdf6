//! `*_listen` values, following Kong's `conf_loader/listeners.lua`:
//! comma separated entries `<address>:<port> [flags...]`, or `off`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::values::split_list;

/// Flags accepted for http listeners, in Kong's order (also used verbatim
/// in the usage message).
const HTTP_FLAGS: [&str; 12] = [
    "ssl",
    "http2",
    "proxy_protocol",
    "deferred",
    "bind",
    "reuseport",
    "backlog=%d+",
    "ipv6only=on",
    "ipv6only=off",
    "so_keepalive=on",
    "so_keepalive=off",
    "so_keepalive=%w*:%w*:%d*",
];

/// One parsed listener entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    /// Normalized host as Kong/nginx write it: dotted IPv4, bracketed IPv6
    /// (`[::1]`), or a name such as `localhost` or `*`.
    pub ip: String,
    /// Set when `ip` is an IP literal.
    pub ip_addr: Option<IpAddr>,
    pub port: u16,
    pub ssl: bool,
    pub http2: bool,
    pub proxy_protocol: bool,
    pub deferred: bool,
    pub bind: bool,
    pub reuseport: bool,
    pub backlog: Option<u32>,
    pub ipv6only: Option<bool>,
    /// `on`, `off` or `idle:interval:count` as written after `so_keepalive=`.
    pub so_keepalive: Option<String>,
    /// The entry as written (trimmed).
    pub raw: String,
}

impl ListenAddr {
    /// Socket address for IP literals; `*` means all IPv4 addresses (as nginx).
    /// Host names (e.g. `localhost`) need resolving: use [`Self::bind_address`].
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.ip_addr {
            Some(ip) => Some(SocketAddr::new(ip, self.port)),
            None if self.ip == "*" => Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                self.port,
            )),
            None => None,
        }
    }

    /// `host:port` string accepted by `ToSocketAddrs` (names included).
    pub fn bind_address(&self) -> String {
        match self.socket_addr() {
            Some(sa) => sa.to_string(),
            None => format!("{}:{}", self.ip, self.port),
        }
    }

    /// Kong's normalized `listener` string: `ip:port flags...` (minus `http2`,
    /// which nginx now configures separately).
    pub fn listener(&self) -> String {
        let mut s = format!("{}:{}", self.ip, self.port);
        let mut push = |f: &str| {
            s.push(' ');
            s.push_str(f);
        };
        if self.ssl {
            push("ssl");
        }
        if self.proxy_protocol {
            push("proxy_protocol");
        }
        if self.deferred {
            push("deferred");
        }
        if self.bind {
            push("bind");
        }
        if self.reuseport {
            push("reuseport");
        }
        if let Some(b) = self.backlog {
            push(&format!("backlog={b}"));
        }
        if let Some(v6) = self.ipv6only {
            push(if v6 { "ipv6only=on" } else { "ipv6only=off" });
        }
        if let Some(k) = &self.so_keepalive {
            push(&format!("so_keepalive={k}"));
        }
        s
    }
}

/// Listen flags asking for what a listener may not serve, with what each
/// asks for. An entry carrying one its listener does not serve is refused
/// at load: served without it, a client would meet a listener other than
/// the one configured (a PROXY-protocol or TLS client gets a 400 from a
/// plain-HTTP listener). `proxy_listen` serves `ssl`, `proxy_protocol` and
/// `http2` ([`PROXY_SERVED`]: ALPN h2 on an `ssl` entry, h2c with prior
/// knowledge beside HTTP/1.1 on a plain one, as nginx's `http2 on`);
/// `status_listen` none of these.
/// The other flags are served: `reuseport`, `ipv6only` (socket options),
/// `bind` (every listener binds its own socket anyway), `so_keepalive=off`
/// (the default) and `backlog` (not applied: the accept queue is Pingora's
/// 65535, capped by `net.core.somaxconn` as nginx's is, so no shorter than
/// any `backlog` up to 65535 asks for).
const UNSUPPORTED_FLAGS: [(&str, &str); 5] = [
    ("ssl", "TLS termination"),
    ("http2", "HTTP/2"),
    ("proxy_protocol", "the PROXY protocol"),
    ("deferred", "deferred accept (TCP_DEFER_ACCEPT)"),
    ("so_keepalive", "TCP keepalive probes"),
];

/// What `proxy_listen` entries serve of [`UNSUPPORTED_FLAGS`].
pub(crate) const PROXY_SERVED: &[&str] = &["ssl", "proxy_protocol", "http2"];

impl ListenAddr {
    /// The flags of this entry that are not supported, as written, for a
    /// listener that serves the flags in `served`.
    pub fn unsupported_flags(&self, served: &[&str]) -> Vec<&'static str> {
        let set = |flag: &str| match flag {
            _ if served.contains(&flag) => false,
            "ssl" => self.ssl,
            "http2" => self.http2,
            "proxy_protocol" => self.proxy_protocol,
            "deferred" => self.deferred,
            "so_keepalive" => self.so_keepalive.as_deref().is_some_and(|k| k != "off"),
            _ => false,
        };
        UNSUPPORTED_FLAGS
            .iter()
            .filter(|(f, _)| set(f))
            .map(|(f, _)| *f)
            .collect()
    }
}

/// One refusal per entry of `name` that asks for an unsupported flag,
/// naming the entry, the flags and what they ask for.
pub(crate) fn unsupported(name: &str, listens: &[ListenAddr], served: &[&str]) -> Vec<String> {
    listens
        .iter()
        .filter_map(|l| {
            let flags = l.unsupported_flags(served);
            if flags.is_empty() {
                return None;
            }
            let what: Vec<String> = flags
                .iter()
                .map(|f| {
                    let asks = UNSUPPORTED_FLAGS
                        .iter()
                        .find(|(u, _)| u == f)
                        .map_or("", |(_, a)| *a);
                    format!("'{f}' ({asks})")
                })
                .collect();
            Some(format!(
                "{name} entry '{}': {} not supported yet; {}, remove {} from the entry",
                l.raw,
                what.join(", "),
                if served.is_empty() {
                    "this listener serves plain HTTP/1.1 only"
                } else {
                    "this gateway serves HTTP/1.1 and HTTP/2 listeners, with ssl and proxy_protocol"
                },
                if flags.len() == 1 { "it" } else { "them" },
            ))
        })
        .collect()
}

pub(crate) fn usage(name: &str) -> String {
    format!(
        "{name} must be of form: [off] | <ip>:<port> [{}], [... next entry ...]",
        HTTP_FLAGS.join("] [")
    )
}

/// Parses a whole `*_listen` value. `off` as the first entry means no
/// listeners; an empty value is an error (as Kong).
pub fn parse_listen(name: &str, value: &str) -> Result<Vec<ListenAddr>, String> {
    let entries = split_list(value);
    match entries.first() {
        None => return Err(usage(name)),
        Some(first) if first == "off" => return Ok(Vec::new()),
        Some(_) => {}
    }
    entries
        .iter()
        .map(|e| parse_entry(e).ok_or_else(|| usage(name)))
        .collect()
}

fn parse_entry(entry: &str) -> Option<ListenAddr> {
    let mut l = ListenAddr {
        ip: String::new(),
        ip_addr: None,
        port: 0,
        ssl: false,
        http2: false,
        proxy_protocol: false,
        deferred: false,
        bind: false,
        reuseport: false,
        backlog: None,
        ipv6only: None,
        so_keepalive: None,
        raw: entry.to_string(),
    };
    // Kong strips known flags wherever they appear and requires the rest to
    // be exactly one address.
    let mut address = None;
    for token in entry.split_whitespace() {
        if !apply_flag(&mut l, token)? && address.replace(token).is_some() {
            return None;
        }
    }
    let (ip, ip_addr, port) = parse_address(address?)?;
    l.ip = ip;
    l.ip_addr = ip_addr;
    l.port = port;
    Some(l)
}

/// Ok(true) if `token` is a flag (applied), Ok(false) if not a flag;
/// `None` if it looks like a flag but has a bad value.
fn apply_flag(l: &mut ListenAddr, token: &str) -> Option<bool> {
    match token {
        "ssl" => l.ssl = true,
        "http2" => l.http2 = true,
        "proxy_protocol" => l.proxy_protocol = true,
        "deferred" => l.deferred = true,
        "bind" => l.bind = true,
        "reuseport" => l.reuseport = true,
        "ipv6only=on" => l.ipv6only = Some(true),
        "ipv6only=off" => l.ipv6only = Some(false),
        _ => {
            if let Some(n) = token.strip_prefix("backlog=") {
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                l.backlog = Some(n.parse().ok()?);
            } else if let Some(k) = token.strip_prefix("so_keepalive=") {
                if !valid_keepalive(k) {
                    return None;
                }
                l.so_keepalive = Some(k.to_string());
            } else {
                return Some(false);
            }
        }
    }
    Some(true)
}

/// `on`, `off`, or `[keepidle]:[keepintvl]:[keepcnt]` (Lua `%w*:%w*:%d*`).
fn valid_keepalive(v: &str) -> bool {
    if v == "on" || v == "off" {
        return true;
    }
    let parts: Vec<&str> = v.split(':').collect();
    match parts.as_slice() {
        [idle, intvl, cnt] => {
            idle.chars().all(|c| c.is_ascii_alphanumeric())
                && intvl.chars().all(|c| c.is_ascii_alphanumeric())
                && cnt.chars().all(|c| c.is_ascii_digit())
        }
        _ => false,
    }
}

/// Classifies like Kong's `hostname_type`: more than one colon → IPv6,
/// only digits and dots (ignoring the port colon) → IPv4, otherwise a name.
fn parse_address(addr: &str) -> Option<(String, Option<IpAddr>, u16)> {
    let colons = addr.matches(':').count();
    if colons > 1 {
        // IPv6 needs brackets to carry a port.
        let rest = addr.strip_prefix('[')?;
        let (host, port) = rest.split_once("]:")?;
        let ip: Ipv6Addr = host.parse().ok()?;
        return Some((format!("[{ip}]"), Some(IpAddr::V6(ip)), parse_port(port)?));
    }
    let (host, port) = addr.rsplit_once(':')?;
    let port = parse_port(port)?;
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let ip = parse_ipv4_lenient(host)?;
        return Some((ip.to_string(), Some(IpAddr::V4(ip)), port));
    }
    if host.is_empty() {
        return None;
    }
    Some((host.to_string(), None, port))
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

/// Kong accepts (and normalizes away) leading zeros such as `127.000.0.1`,
/// which std's parser rejects.
fn parse_ipv4_lenient(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for o in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 {
            return None;
        }
        *o = p.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kong_default_proxy_listen() {
        let v = parse_listen(
            "proxy_listen",
            "0.0.0.0:8000 reuseport backlog=16384, 0.0.0.0:8443 http2 ssl reuseport backlog=16384",
        )
        .expect("valid");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].ip, "0.0.0.0");
        assert_eq!(v[0].port, 8000);
        assert!(v[0].reuseport && !v[0].ssl && !v[0].http2);
        assert_eq!(v[0].backlog, Some(16384));
        assert_eq!(v[0].raw, "0.0.0.0:8000 reuseport backlog=16384");
        assert!(v[1].ssl && v[1].http2 && v[1].reuseport);
        assert_eq!(
            v[1].socket_addr(),
            Some("0.0.0.0:8443".parse().expect("addr"))
        );
        assert_eq!(v[1].listener(), "0.0.0.0:8443 ssl reuseport backlog=16384");
    }

    #[test]
    fn ipv6_and_names() {
        let v = parse_listen(
            "proxy_listen",
            "[::1]:8000 ssl, [::]:8001 ipv6only=on, localhost:9000, *:80",
        )
        .expect("valid");
        assert_eq!(v[0].ip, "[::1]");
        assert_eq!(
            v[0].socket_addr(),
            Some("[::1]:8000".parse().expect("addr"))
        );
        assert_eq!(v[1].ipv6only, Some(true));
        assert_eq!(v[1].bind_address(), "[::]:8001");
        assert_eq!(v[2].ip, "localhost");
        assert_eq!(v[2].ip_addr, None);
        assert_eq!(v[2].socket_addr(), None);
        assert_eq!(v[2].bind_address(), "localhost:9000");
        assert_eq!(
            v[3].socket_addr(),
            Some("0.0.0.0:80".parse().expect("addr"))
        );
    }

    #[test]
    fn all_flags_and_ordering() {
        let v = parse_listen(
            "status_listen",
            "ssl 127.000.0.1:8100 proxy_protocol deferred bind so_keepalive=30m::10 ipv6only=off",
        )
        .expect("valid");
        let l = &v[0];
        assert_eq!(l.ip, "127.0.0.1");
        assert!(l.ssl && l.proxy_protocol && l.deferred && l.bind);
        assert_eq!(l.so_keepalive.as_deref(), Some("30m::10"));
        assert_eq!(l.ipv6only, Some(false));
    }

    #[test]
    fn off_and_empty() {
        assert_eq!(parse_listen("admin_listen", "off"), Ok(vec![]));
        assert_eq!(
            parse_listen("admin_listen", " off , 0.0.0.0:8001"),
            Ok(vec![])
        );
        assert!(parse_listen("admin_listen", "").is_err());
        assert!(parse_listen("admin_listen", " , ").is_err());
    }

    #[test]
    fn invalid_entries() {
        let bad = [
            "0.0.0.0",
            "0.0.0.0:",
            ":8000",
            "0.0.0.0:99999",
            "256.0.0.1:80",
            "1.2.3:80",
            "::1:8000",
            "[::1]",
            "[zz::1]:80",
            "0.0.0.0:8000 foo",
            "0.0.0.0:8000 0.0.0.0:8001",
            "0.0.0.0:8000 backlog=",
            "0.0.0.0:8000 backlog=-1",
            "0.0.0.0:8000 so_keepalive=yes",
            "0.0.0.0:8000 SSL",
            "0.0.0.0:8000, nope",
        ];
        for b in bad {
            assert!(parse_listen("proxy_listen", b).is_err(), "{b}");
        }
    }

    #[test]
    fn unsupported_flags_are_named_per_entry() {
        let v = parse_listen(
            "proxy_listen",
            "0.0.0.0:8000 reuseport backlog=16384 bind ipv6only=off so_keepalive=off, \
             0.0.0.0:8443 http2 ssl, 0.0.0.0:8001 proxy_protocol, \
             0.0.0.0:8002 deferred so_keepalive=on",
        )
        .expect("valid syntax");
        assert!(v[0].unsupported_flags(&[]).is_empty());
        assert_eq!(v[1].unsupported_flags(&[]), vec!["ssl", "http2"]);
        assert_eq!(v[2].unsupported_flags(&[]), vec!["proxy_protocol"]);
        assert_eq!(
            v[3].unsupported_flags(&[]),
            vec!["deferred", "so_keepalive"]
        );
        // status_listen serves none of them.
        let reasons = unsupported("status_listen", &v, &[]);
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert_eq!(
            reasons[0],
            "status_listen entry '0.0.0.0:8443 http2 ssl': 'ssl' (TLS termination), 'http2' (HTTP/2) \
             not supported yet; this listener serves plain HTTP/1.1 only, remove them from the entry"
        );
        assert!(
            reasons[1].starts_with(
                "status_listen entry '0.0.0.0:8001 proxy_protocol': 'proxy_protocol' (the PROXY protocol) not supported yet"
            ),
            "{}",
            reasons[1]
        );
        assert!(reasons[1].ends_with("remove it from the entry"));
        // proxy_listen serves ssl, proxy_protocol and http2 (h2c without ssl).
        assert!(v[1].unsupported_flags(PROXY_SERVED).is_empty());
        assert!(v[2].unsupported_flags(PROXY_SERVED).is_empty());
        let reasons = unsupported("proxy_listen", &v, PROXY_SERVED);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        let h2c = parse_listen("proxy_listen", "0.0.0.0:8000 http2").expect("valid");
        assert!(h2c[0].unsupported_flags(PROXY_SERVED).is_empty());
    }

    #[test]
    fn usage_message_matches_kong() {
        let err = parse_listen("proxy_listen", "junk").expect_err("invalid");
        assert_eq!(
            err,
            "proxy_listen must be of form: [off] | <ip>:<port> [ssl] [http2] [proxy_protocol] \
             [deferred] [bind] [reuseport] [backlog=%d+] [ipv6only=on] [ipv6only=off] \
             [so_keepalive=on] [so_keepalive=off] [so_keepalive=%w*:%w*:%d*], [... next entry ...]"
        );
    }
}
