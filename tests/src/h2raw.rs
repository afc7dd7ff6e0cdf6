//! HTTP/2 frames written and read by hand, for the abuse specs: a
//! well-behaved client library refuses to send what these attacks send
//! (CONTINUATION floods, resets in bulk, HPACK bombs, unread SETTINGS).
//! Blocking std sockets with read timeouts; loopback only.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// SETTINGS identifiers.
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// One frame as read.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A GOAWAY's error code.
    pub fn goaway_code(&self) -> Option<u32> {
        (self.kind == GOAWAY && self.payload.len() >= 8).then(|| {
            u32::from_be_bytes([
                self.payload[4],
                self.payload[5],
                self.payload[6],
                self.payload[7],
            ])
        })
    }

    /// A RST_STREAM's error code.
    pub fn rst_code(&self) -> Option<u32> {
        (self.kind == RST_STREAM && self.payload.len() >= 4).then(|| {
            u32::from_be_bytes([
                self.payload[0],
                self.payload[1],
                self.payload[2],
                self.payload[3],
            ])
        })
    }

    /// SETTINGS parameters (id, value).
    pub fn settings(&self) -> Vec<(u16, u32)> {
        if self.kind != SETTINGS {
            return Vec::new();
        }
        self.payload
            .chunks_exact(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect()
    }
}

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn settings(params: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in params {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &p)
}

pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

pub fn window_update(stream: u32, inc: u32) -> Vec<u8> {
    frame(WINDOW_UPDATE, 0, stream, &inc.to_be_bytes())
}

/// An HPACK integer with an `n`-bit prefix, the first byte's high bits
/// set to `high`.
pub fn hpack_int(out: &mut Vec<u8>, high: u8, n: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(high | v as u8);
        return;
    }
    out.push(high | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

fn hpack_str(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// A literal field without indexing (new name).
pub fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    hpack_str(out, name);
    hpack_str(out, value);
}

/// A literal field with incremental indexing (enters the dynamic table).
pub fn literal_indexed(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x40);
    hpack_str(out, name);
    hpack_str(out, value);
}

/// An indexed field (static table 1..=61, dynamic from 62).
pub fn indexed(out: &mut Vec<u8>, index: usize) {
    hpack_int(out, 0x80, 7, index);
}

/// The header block of a GET for `path` at `authority`.
pub fn get_block(authority: &str, path: &str) -> Vec<u8> {
    let mut b = Vec::new();
    indexed(&mut b, 2); // :method GET
    indexed(&mut b, 6); // :scheme http
    literal(&mut b, b":path", path.as_bytes());
    literal(&mut b, b":authority", authority.as_bytes());
    b
}

/// A raw HTTP/2 client connection.
pub struct Conn {
    pub sock: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects, sends the preface and `settings`, and acknowledges the
    /// server's SETTINGS once it arrives (see [`Conn::handshake`]).
    pub fn connect(port: u16, params: &[(u16, u32)]) -> std::io::Result<Conn> {
        let sock = TcpStream::connect(("127.0.0.1", port))?;
        sock.set_nodelay(true)?;
        let mut c = Conn {
            sock,
            buf: Vec::new(),
        };
        let mut hello = PREFACE.to_vec();
        hello.extend_from_slice(&settings(params));
        c.send(&hello)?;
        Ok(c)
    }

    /// Reads until the server's first SETTINGS, ACKs it, and returns it.
    pub fn handshake(&mut self) -> Option<Frame> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let f = self.read_frame(Duration::from_secs(5))?;
            if f.kind == SETTINGS && f.flags & ACK == 0 {
                self.send(&frame(SETTINGS, ACK, 0, &[])).ok()?;
                return Some(f);
            }
        }
        None
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.sock.write_all(bytes)
    }

    /// Sends HEADERS (END_HEADERS, and END_STREAM if `end`).
    pub fn headers(&mut self, stream: u32, block: &[u8], end: bool) -> std::io::Result<()> {
        let flags = END_HEADERS | if end { END_STREAM } else { 0 };
        self.send(&frame(HEADERS, flags, stream, block))
    }

    /// The next frame, or `None` on timeout, close or error.
    pub fn read_frame(&mut self, timeout: Duration) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([
                            self.buf[5],
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    return Some(f);
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            let mut chunk = [0u8; 16 * 1024];
            match self.sock.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return None,
            }
        }
    }

    /// Reads frames until `pred` matches one (returned), the connection
    /// closes or `timeout` passes (`None`). Answers PINGs on the way.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Frame) -> bool,
    ) -> Option<Frame> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let f = self.read_frame(left)?;
            if pred(&f) {
                return Some(f);
            }
        }
    }

    /// Whether the server closed the connection (EOF or reset) within
    /// `timeout`, draining whatever it sends until then. GOAWAY frames
    /// seen on the way are returned.
    pub fn closed_within(&mut self, timeout: Duration) -> (bool, Vec<Frame>) {
        let deadline = Instant::now() + timeout;
        let mut goaways = Vec::new();
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return (false, goaways);
            };
            if self.buf.len() >= 9 {
                if let Some(f) = self.read_frame(Duration::from_millis(1)) {
                    if f.kind == GOAWAY {
                        goaways.push(f);
                    }
                    continue;
                }
            }
            if self
                .sock
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .is_err()
            {
                return (true, goaways);
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.sock.read(&mut chunk) {
                Ok(0) => return (true, goaways),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return (false, goaways)
                }
                Err(_) => return (true, goaways),
            }
        }
    }
}
