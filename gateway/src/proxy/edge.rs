//! The transport steps of `proxy_listen` entries flagged `proxy_protocol`
//! and/or `ssl`, run on each accepted connection before the HTTP/1 front:
//!
//! 1. `proxy_protocol`: the PROXY header ([`super::proxy_protocol`]) is read
//!    off the raw TCP stream within `client_header_timeout` (nginx waits
//!    that long for a connection's first bytes); a missing or broken header
//!    closes the connection, as nginx does. Bytes read past the header go
//!    back to the stream (`rewind`) for the next step.
//! 2. `ssl`: the TLS handshake (rustls, through Pingora's `Acceptor`) with
//!    the certificate [`crate::tls::SniResolver`] picks from the live
//!    snapshot, bounded by the same timeout.
//!
//! Pingora's listeners stay plain TCP: a per-listener TLS acceptor in
//! Pingora takes one fixed certificate set up at start, runs its pre-TLS
//! hook on TLS listeners only, and cannot tell the application what the
//! hook read. Here both steps belong to the connection's own task, and
//! what they learn (SNI, TLS version and cipher, PROXY addresses) travels
//! with the stream as a [`ConnInfo`] the proxy reads per request.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use config_sync::settings::ListenAddr;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::l4::socket::SocketAddr as PSocketAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Ssl, Stream};
use tokio::io::AsyncReadExt;

use super::proxy_protocol::{self, Parsed, ProxyAddrs, MAX_HEADER};

/// What the transport told about one connection, for its whole life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnInfo {
    /// Set on `ssl` listeners.
    pub tls: Option<TlsInfo>,
    /// The PROXY header's addresses (`None`: no header, or one without
    /// addresses such as `UNKNOWN` / `LOCAL`).
    pub proxy: Option<ProxyAddrs>,
}

/// The negotiated TLS session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// The client's SNI (lower case), nginx's `$ssl_server_name`.
    pub sni: Option<String>,
    /// `TLSv1.2` / `TLSv1.3` (nginx's `$ssl_protocol`).
    pub version: &'static str,
    /// rustls's suite name.
    pub cipher: &'static str,
}

/// The flags of one proxy listener.
#[derive(Debug, Clone)]
struct ListenerFlags {
    /// `None`: any local address (wildcard bind or a host name).
    ip: Option<IpAddr>,
    port: u16,
    ssl: bool,
    proxy_protocol: bool,
    http2: bool,
}

/// What a connection came to after its listener's steps.
pub struct Accepted {
    pub stream: Stream,
    pub info: Option<Arc<ConnInfo>>,
    /// The listener is flagged `http2`: on TLS, ALPN may have chosen h2;
    /// on plain TCP, a client may open with the h2c preface.
    pub http2: bool,
}

/// The transport steps for every proxy listener that has any.
pub struct Edge {
    listeners: Vec<ListenerFlags>,
    tls: Option<Acceptor>,
    /// The same TLS setup with ALPN offering h2 first, for `http2` listeners.
    tls_h2: Option<Acceptor>,
    /// nginx `client_header_timeout`: the PROXY header and the handshake
    /// must each arrive within it.
    timeout: Duration,
}

impl Edge {
    /// `None` when no listener is flagged `ssl`, `proxy_protocol` or
    /// `http2`. `tls` must be given when one is flagged `ssl`.
    pub fn new(
        listens: &[ListenAddr],
        tls: Option<Arc<rustls::ServerConfig>>,
        timeout: Duration,
    ) -> Option<Edge> {
        let listeners: Vec<ListenerFlags> = listens
            .iter()
            .filter(|l| l.ssl || l.proxy_protocol || l.http2)
            .map(|l| ListenerFlags {
                ip: l.ip_addr.filter(|ip| !ip.is_unspecified()),
                port: l.port,
                ssl: l.ssl,
                proxy_protocol: l.proxy_protocol,
                http2: l.http2,
            })
            .collect();
        if listeners.is_empty() {
            return None;
        }
        let tls_h2 = tls.as_ref().map(|c| {
            let mut h2 = (**c).clone();
            // nginx with `http2 on` offers h2, then http/1.1.
            h2.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Acceptor::from_server_config(Arc::new(h2))
        });
        Some(Edge {
            listeners,
            tls: tls.map(Acceptor::from_server_config),
            tls_h2,
            timeout,
        })
    }

    /// The listener a connection came in on: an exact address first, then
    /// a wildcard one on the same port. Entries without flags are not
    /// here: a connection matching none is plain.
    fn flags_for(&self, local: SocketAddr) -> Option<&ListenerFlags> {
        let ip = canonical(local.ip());
        let port = local.port();
        self.listeners
            .iter()
            .find(|l| l.port == port && l.ip.is_some_and(|a| canonical(a) == ip))
            .or_else(|| {
                self.listeners
                    .iter()
                    .find(|l| l.port == port && l.ip.is_none())
            })
    }

    /// Runs the listener's steps; `None` when the connection is to close.
    /// Boxed by the caller: its state (the handshake's) is freed once done
    /// instead of being part of the connection's task for its whole life.
    pub async fn accept(&self, stream: Stream) -> Option<Accepted> {
        let plain = |stream| {
            Some(Accepted {
                stream,
                info: None,
                http2: false,
            })
        };
        let local = match stream
            .get_socket_digest()
            .and_then(|d| d.local_addr().cloned())
        {
            Some(PSocketAddr::Inet(sa)) => sa,
            _ => return plain(stream),
        };
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().cloned());
        let Some(flags) = self.flags_for(local) else {
            return plain(stream);
        };
        if !flags.ssl && !flags.proxy_protocol {
            return Some(Accepted {
                stream,
                info: None,
                http2: flags.http2,
            });
        }
        let mut l4 = match stream.into_any().downcast::<L4Stream>() {
            Ok(s) => s,
            Err(_) => {
                log::error!("edge: a proxy connection is not a TCP stream; closing");
                return None;
            }
        };
        let peer = || peer.as_ref().map_or_else(String::new, ToString::to_string);
        let proxy = if flags.proxy_protocol {
            match tokio::time::timeout(self.timeout, read_proxy_header(&mut l4)).await {
                Ok(Ok(addrs)) => addrs,
                Ok(Err(e)) => {
                    log::warn!("PROXY protocol from {}: {e}; closing", peer());
                    return None;
                }
                Err(_) => {
                    log::info!(
                        "PROXY protocol from {}: no header within {:?}; closing",
                        peer(),
                        self.timeout
                    );
                    return None;
                }
            }
        } else {
            None
        };
        if !flags.ssl {
            let info = proxy.map(|p| {
                Arc::new(ConnInfo {
                    tls: None,
                    proxy: Some(p),
                })
            });
            return Some(Accepted {
                stream: l4,
                info,
                http2: flags.http2,
            });
        }
        let acceptor = if flags.http2 { &self.tls_h2 } else { &self.tls };
        let Some(acceptor) = acceptor else {
            log::error!("edge: ssl listener without a TLS configuration; closing");
            return None;
        };
        let tls = match tokio::time::timeout(self.timeout, acceptor.tls_handshake(*l4)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                // A client's failure (nginx logs these at info level).
                log::info!("TLS handshake with {} failed: {e}", peer());
                return None;
            }
            Err(_) => {
                log::info!(
                    "TLS handshake with {} timed out after {:?}",
                    peer(),
                    self.timeout
                );
                return None;
            }
        };
        let info = tls.get_ssl().map(|t| TlsInfo {
            sni: t.server_name().map(str::to_string),
            version: nginx_protocol(t.version().unwrap_or("")),
            cipher: t.current_cipher_name().unwrap_or(""),
        });
        let info = ConnInfo { tls: info, proxy };
        Some(Accepted {
            stream: Box::new(tls),
            info: Some(Arc::new(info)),
            http2: flags.http2,
        })
    }
}

/// Reads a whole PROXY header; what was read past it is put back.
async fn read_proxy_header(l4: &mut L4Stream) -> Result<Option<ProxyAddrs>, String> {
    // The common v1 line and v2 IPv4/IPv6 headers fit in one small read.
    let mut buf: Vec<u8> = Vec::with_capacity(232);
    loop {
        match proxy_protocol::parse(&buf) {
            Ok(Parsed::Header { len, addrs }) => {
                if let Some(rest) = buf.get(len..) {
                    l4.rewind(rest);
                }
                return Ok(addrs);
            }
            Ok(Parsed::Incomplete) => {}
            Err(e) => return Err(e.to_string()),
        }
        if buf.len() >= MAX_HEADER {
            return Err("header is too large".to_string());
        }
        let room = (MAX_HEADER - buf.len()).min(1024);
        let start = buf.len();
        buf.resize(start + room, 0);
        let n = l4
            .read(&mut buf[start..])
            .await
            .map_err(|e| format!("read error: {e}"))?;
        buf.truncate(start + n);
        if n == 0 {
            return Err(if buf.is_empty() {
                "closed before sending a header".to_string()
            } else {
                "closed in the middle of the header".to_string()
            });
        }
    }
}

/// nginx's `$ssl_protocol` spelling of rustls's version names.
fn nginx_protocol(rustls: &'static str) -> &'static str {
    match rustls {
        "TLSv1_2" => "TLSv1.2",
        "TLSv1_3" => "TLSv1.3",
        other => other,
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The transport facts of the connection a request came on (`None`: a
/// plain listener without `proxy_protocol`).
pub fn conn_info(session: &pingora::proxy::Session) -> Option<Arc<ConnInfo>> {
    let downstream = session.as_downstream();
    if downstream.is_http2() {
        return super::h2_front::conn_info(downstream.digest()?);
    }
    downstream
        .stream()?
        .as_any()
        .downcast_ref::<super::h1_front::Prefixed>()?
        .conn_info()
}
