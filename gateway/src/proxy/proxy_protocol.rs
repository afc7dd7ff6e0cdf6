//! The PROXY protocol header (HAProxy's v1 text and v2 binary forms) that a
//! `proxy_protocol` listener reads first on every connection, before TLS
//! and before any HTTP byte. Parsing is the `ppp` crate's; this module only
//! adds nginx's limits and outcomes (`src/core/ngx_proxy_protocol.c`):
//!
//! * no header, a wrong signature, a malformed v1 line or a bad v2 field:
//!   the connection is closed ("broken header");
//! * a v1 line longer than 107 bytes (`NGX_PROXY_PROTOCOL_V1_MAX_HEADER`),
//!   or a v2 header larger than nginx's 4096-byte read buffer
//!   (`NGX_PROXY_PROTOCOL_MAX_HEADER`): closed;
//! * `UNKNOWN` (v1), the `LOCAL` command, a non-stream transport or an
//!   address family other than IPv4/IPv6 (v2): accepted without addresses,
//!   so the peer's address stays the client's.

use std::net::{IpAddr, SocketAddr};

use ppp::v1;
use ppp::v2;
use ppp::PartialResult;

/// nginx `NGX_PROXY_PROTOCOL_V1_MAX_HEADER`.
pub const V1_MAX_HEADER: usize = 107;
/// nginx `NGX_PROXY_PROTOCOL_MAX_HEADER`: the most a header may take.
pub const MAX_HEADER: usize = 4096;
/// The v2 signature and fixed part (signature, version/command,
/// family/transport, length).
const V2_FIXED: usize = 16;

/// The addresses a PROXY header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyAddrs {
    /// The client as the proxy in front saw it.
    pub src: SocketAddr,
    /// The address the client connected to on that proxy.
    pub dst: SocketAddr,
}

/// What the bytes read so far amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A header may still complete: read more (within [`MAX_HEADER`]).
    Incomplete,
    /// A whole header of `len` bytes; what follows is the next protocol's.
    Header {
        len: usize,
        addrs: Option<ProxyAddrs>,
    },
}

/// Why a connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokenHeader {
    #[error("broken header: {0}")]
    Broken(String),
    #[error("header is too large")]
    TooLarge,
}

/// Parses the header at the start of `buf` (the bytes read so far).
pub fn parse(buf: &[u8]) -> Result<Parsed, BrokenHeader> {
    if buf.is_empty() {
        return Ok(Parsed::Incomplete);
    }
    let sig = v2::PROTOCOL_PREFIX;
    let n = buf.len().min(sig.len());
    if buf[..n] == sig[..n] {
        return parse_v2(buf);
    }
    parse_v1(buf)
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, BrokenHeader> {
    if buf.len() >= V2_FIXED {
        let declared = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if V2_FIXED + declared > MAX_HEADER {
            return Err(BrokenHeader::TooLarge);
        }
    }
    let header = match v2::Header::try_from(buf) {
        Ok(h) => h,
        Err(e) if e.is_incomplete() => return Ok(Parsed::Incomplete),
        Err(e) => return Err(BrokenHeader::Broken(e.to_string())),
    };
    let addrs = match (header.command, header.protocol, &header.addresses) {
        (v2::Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv4(a)) => Some(ProxyAddrs {
            src: SocketAddr::new(IpAddr::V4(a.source_address), a.source_port),
            dst: SocketAddr::new(IpAddr::V4(a.destination_address), a.destination_port),
        }),
        (v2::Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv6(a)) => Some(ProxyAddrs {
            src: SocketAddr::new(IpAddr::V6(a.source_address), a.source_port),
            dst: SocketAddr::new(IpAddr::V6(a.destination_address), a.destination_port),
        }),
        _ => None,
    };
    Ok(Parsed::Header {
        len: header.len(),
        addrs,
    })
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, BrokenHeader> {
    // A v1 line ends within 107 bytes; look no further.
    let window = &buf[..buf.len().min(V1_MAX_HEADER + 1)];
    let sig = v1::PROTOCOL_PREFIX.as_bytes();
    let n = window.len().min(sig.len());
    if window[..n] != sig[..n] || (window.len() > sig.len() && window[sig.len()] != b' ') {
        return Err(BrokenHeader::Broken("no PROXY header".to_string()));
    }
    // nginx judges the line once its CRLF is in (the first one ends it):
    // before that, whatever ppp makes of a part (a port cut short, a UTF-8
    // sequence cut in two, a lone LF it would take as the end) could be
    // undone by the next read. Found by fuzzing.
    if !window.windows(2).any(|w| w == b"\r\n") {
        return if window.len() > V1_MAX_HEADER {
            Err(BrokenHeader::TooLarge)
        } else {
            Ok(Parsed::Incomplete)
        };
    }
    let header = match v1::Header::try_from(window) {
        Ok(h) if h.header.ends_with("\r\n") => h,
        Ok(_) => return Err(BrokenHeader::Broken("line not ended by CRLF".to_string())),
        Err(v1::BinaryParseError::Parse(v1::ParseError::HeaderTooLong)) => {
            return Err(BrokenHeader::TooLarge)
        }
        Err(e) => return Err(BrokenHeader::Broken(e.to_string())),
    };
    let len = header.header.len();
    if len > V1_MAX_HEADER {
        return Err(BrokenHeader::TooLarge);
    }
    let addrs = match header.addresses {
        v1::Addresses::Tcp4(a) => Some(ProxyAddrs {
            src: SocketAddr::new(IpAddr::V4(a.source_address), a.source_port),
            dst: SocketAddr::new(IpAddr::V4(a.destination_address), a.destination_port),
        }),
        v1::Addresses::Tcp6(a) => Some(ProxyAddrs {
            src: SocketAddr::new(IpAddr::V6(a.source_address), a.source_port),
            dst: SocketAddr::new(IpAddr::V6(a.destination_address), a.destination_port),
        }),
        v1::Addresses::Unknown => None,
    };
    Ok(Parsed::Header { len, addrs })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut v = v2::PROTOCOL_PREFIX.to_vec();
        v.push(0x20 | cmd);
        v.push(fam);
        v.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn v1_lines() {
        let line = b"PROXY TCP4 192.168.0.1 127.0.0.1 56324 8000\r\nGET / HTTP/1.1\r\n";
        let Parsed::Header { len, addrs } = parse(line).unwrap() else {
            panic!("complete")
        };
        assert_eq!(&line[len..len + 3], b"GET");
        assert_eq!(addrs.unwrap().src, "192.168.0.1:56324".parse().unwrap());
        let six = b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n";
        let Parsed::Header { addrs, .. } = parse(six).unwrap() else {
            panic!("complete")
        };
        assert_eq!(addrs.unwrap().src, "[2001:db8::1]:1".parse().unwrap());
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\nGET"),
            Ok(Parsed::Header {
                len: 15,
                addrs: None
            })
        );
        // A lone LF does not end a line (nginx: CRLF); the line goes on to
        // its CRLF, as UNKNOWN's skip does.
        let lf = b"PROXY UNKNOWN fTCP4 \n\x00\r\nGET";
        assert_eq!(parse(&lf[..21]), Ok(Parsed::Incomplete));
        assert_eq!(
            parse(lf),
            Ok(Parsed::Header {
                len: 24,
                addrs: None
            })
        );
        // A UTF-8 sequence cut by a read is not yet an error.
        let mut utf8 = b"PROXY UNKNOWN \xca\xb4\r\n".to_vec();
        assert_eq!(parse(&utf8[..15]), Ok(Parsed::Incomplete));
        utf8.extend_from_slice(b"GET");
        assert!(matches!(parse(&utf8), Ok(Parsed::Header { len: 18, .. })));
        // Every prefix of a valid line waits for more.
        for i in 1..line.len().min(44) {
            assert_eq!(parse(&line[..i]), Ok(Parsed::Incomplete), "{i}");
        }
    }

    #[test]
    fn v1_refusals() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            // A lone LF ends nothing: the request's CRLF then does.
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nGET / HTTP/1.1\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n",
            b"\x16\x03\x01\x02\x00",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // Over 107 bytes without its end.
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(120, b'a');
        assert_eq!(parse(&long), Err(BrokenHeader::TooLarge));
    }

    #[test]
    fn v2_headers() {
        let mut body = vec![10, 0, 0, 1, 127, 0, 0, 1];
        body.extend_from_slice(&1234u16.to_be_bytes());
        body.extend_from_slice(&80u16.to_be_bytes());
        let mut h = v2(1, 0x11, &body);
        let len = h.len();
        h.extend_from_slice(b"GET /");
        let Parsed::Header { len: got, addrs } = parse(&h).unwrap() else {
            panic!("complete")
        };
        assert_eq!(got, len);
        assert_eq!(addrs.unwrap().src, "10.0.0.1:1234".parse().unwrap());
        for i in 1..len {
            assert_eq!(parse(&h[..i]), Ok(Parsed::Incomplete), "{i}");
        }
        // LOCAL: accepted, no address (nginx).
        let local = v2(0, 0x00, &[]);
        assert_eq!(
            parse(&local),
            Ok(Parsed::Header {
                len: 16,
                addrs: None
            })
        );
        // A wrong version, a length shorter than the addresses, too large.
        let mut bad = v2(1, 0x11, &body);
        bad[12] = 0x31;
        assert!(parse(&bad).is_err());
        assert!(parse(&v2(1, 0x11, &body[..4])).is_err());
        let mut big = v2(1, 0x11, &body);
        big[14..16].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(parse(&big), Err(BrokenHeader::TooLarge));
    }
}
