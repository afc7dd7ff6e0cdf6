//! A front for HTTP/1 connections that applies nginx's request-head rules
//! ([`h1_guard`]) to the raw bytes BEFORE Pingora parses them.
//!
//! Pingora's own parser refuses some heads first (duplicate or signed
//! Content-Length, unknown Transfer-Encoding, obs-fold, bare CR, huge request
//! lines, absolute-form with a different Host ...) with a bare 400 of its own,
//! so `request_filter` never gets to answer as Kong does. [`H1Front`] wraps the
//! proxy app: per request it reads the head itself, answers a refused head
//! with Kong's error response and closes, and otherwise hands the connection
//! to Pingora with the bytes already read served first by [`Prefixed`].
//!
//! [`Prefixed`] also hands Pingora exactly one request at a time: the head,
//! then `Content-Length` body bytes, then nothing until the next head has
//! passed the front. So Pingora never reads past a request ("overread"),
//! which in 0.9.1 without its opt-in pipelining makes `HttpSession::reuse`
//! drop the connection (the pipelined request was never answered), and it
//! never sees the next request's bytes while idle-polling the current one
//! ("Sent data after end of body"). Pipelined requests therefore work and
//! every one of them is checked here. Chunked and `Upgrade` requests are
//! handed over unlimited (framing is Pingora's); a request pipelined behind
//! one of them closes the connection as before.
//!
//! Do not enable Pingora's pipelining (`set_pipelining_enabled`): its
//! pipelined prefix lives in `HttpPersistentSettings` where the front cannot
//! see it, and the front would then read the wrong bytes as the next head.
//!
//! [`h1_guard`]: super::h1_guard

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::ctx::new_request_id;
use super::h1_guard::{check_request_head, is_tchar, HeadInfo, HeadLimits, Reject};
use super::response::{self, ErrorFormat};
use super::{HeaderToggles, ProxyOptions};
use crate::kong::SERVER_TOKEN;

/// Socket read size while collecting a head.
const READ_CHUNK: usize = 8 * 1024;
/// First read of a head into an empty buffer, nginx's default
/// `client_header_buffer_size`: most heads fit, and an idle keep-alive
/// connection then holds 1 KiB instead of `READ_CHUNK` (or more) while it
/// waits. A longer head grows the buffer by `READ_CHUNK` steps.
const FIRST_READ: usize = 1024;
/// At most this many bytes of a pipelined request are buffered while the
/// current one is still being served; the rest waits in the socket.
const PIPELINE_MAX: usize = 64 * 1024;
/// nginx `send_timeout` for our own error answers.
const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx `lingering_timeout` / `lingering_time`: after an error answer the
/// rest of the request is read and dropped, so closing with unread data does
/// not make the kernel send a RST that would destroy the answer in flight.
const LINGER_TIMEOUT: Duration = Duration::from_secs(5);
const LINGER_TIME: Duration = Duration::from_secs(30);

/// `ServerApp` wrapper running the nginx head checks before Pingora's parser.
pub struct H1Front<A> {
    pub inner: Arc<A>,
    pub limits: HeadLimits,
    pub error_default_type: ErrorFormat,
    /// Which Kong headers go on our own error answers.
    pub headers: HeaderToggles,
    /// nginx `client_header_timeout`: the whole head must arrive within it.
    pub header_timeout: Duration,
    /// Idle wait for the next request on a kept-alive connection (Pingora's
    /// downstream keepalive, 60 s, which is also Kong's `keepalive_timeout`).
    pub keepalive_timeout: Duration,
}

impl<A> H1Front<A> {
    pub fn new(inner: A, options: &ProxyOptions) -> Self {
        H1Front {
            inner: Arc::new(inner),
            limits: options.head_limits,
            error_default_type: options.error_default_type,
            headers: options.headers,
            header_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(KEEPALIVE_SECS),
        }
    }
}

/// Pingora's default downstream keepalive, set on every new h1 session.
const KEEPALIVE_SECS: u64 = 60;

/// What reading the next head came to.
enum Head {
    /// A checked head waits in the [`Prefixed`] buffer.
    Ready,
    /// Client gone, idle timeout or shutdown: close quietly (as nginx does).
    Close,
    /// Answer with this error, then close.
    Refuse(Reject),
}

#[async_trait]
impl<A> ServerApp for H1Front<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // h2 (ALPN or h2c) and custom protocols stay entirely with the inner app.
        let opts = self.inner.server_options();
        let h2c = opts.is_some_and(|o| o.h2c) && stream.get_ssl_digest().is_none();
        let custom = opts.is_some_and(|o| o.force_custom);
        if h2c
            || custom
            || matches!(
                stream.selected_alpn_proto(),
                Some(ALPN::H2 | ALPN::Custom(_))
            )
        {
            return self.inner.process_new(stream, shutdown).await;
        }
        let reuse_limit = opts.and_then(|o| o.keepalive_request_limit);
        let mut shutdown = shutdown.clone();
        // Boxed once: Pingora takes the stream as `Box<dyn IO>` per request
        // and hands the same box back on reuse.
        let mut conn = Box::new(Prefixed::new(stream));
        let mut settings = None;
        let mut reused = false;
        loop {
            let started = Instant::now();
            match self
                .read_head(&mut conn, reused, &mut shutdown, started)
                .await
            {
                Head::Ready => {}
                Head::Close => return None,
                Head::Refuse(r) => {
                    self.refuse(&mut conn, r, started).await;
                    return None;
                }
            }
            let mut session = ServerSession::new_http1(conn);
            match settings.take() {
                Some(s) => pingora::apps::HttpPersistentSettings::apply_to_session(s, &mut session),
                // What Pingora's own h1 loop sets on a new connection.
                None if reused => {}
                None => {
                    let keepalive = (!*shutdown.borrow()).then_some(KEEPALIVE_SECS);
                    session.set_keepalive(keepalive);
                    session.set_keepalive_reuses_remaining(reuse_limit);
                }
            }
            let reusable = self.inner.process_new_http(session, &shutdown).await?;
            let (stream, next) = reusable.consume();
            conn = match stream.into_any().downcast::<Prefixed>() {
                Ok(c) => c,
                Err(_) => {
                    log::error!("h1 front: reused stream is not ours; closing");
                    return None;
                }
            };
            // Pingora reuses only after reading the whole body; anything else
            // would leave us out of step with the client.
            if conn.left.is_some_and(|n| n > 0) {
                log::warn!("h1 front: connection reused before the request body was read; closing");
                return None;
            }
            settings = next;
            reused = true;
        }
    }

    async fn cleanup(&self) {
        // Lets the proxy wake keep-alive reads blocked in Pingora on shutdown.
        ServerApp::cleanup(&*self.inner).await;
    }
}

impl<A> H1Front<A> {
    /// Reads until the end of the next request head, then checks it and
    /// prepares `conn` to hand exactly this request to Pingora.
    async fn read_head(
        &self,
        conn: &mut Prefixed,
        reused: bool,
        shutdown: &mut ShutdownWatch,
        started: Instant,
    ) -> Head {
        conn.left = Some(0);
        let wait = if reused && conn.buf.is_empty() {
            self.keepalive_timeout
        } else {
            self.header_timeout
        };
        // Pingora's coarse timer wheel (10 ms ticks), not tokio's: arming a
        // tokio timer that is earlier than the driver's next wake-up writes
        // to the runtime's eventfd, one extra syscall (and epoll wake-up)
        // per request on a keep-alive connection.
        let mut deadline = started + wait;
        let mut waiting_first_byte = reused && conn.buf.is_empty();
        // A buffer that grew for a long head is not kept across idle time.
        if conn.buf.is_empty() && conn.buf.capacity() > FIRST_READ {
            conn.buf = BytesMut::new();
        }
        let mut scanned = 0;
        loop {
            if conn.skip_empty_lines() {
                scanned = 0;
            }
            let buf = &conn.buf[..];
            match find_head_end(buf, scanned) {
                Some(end) if end > self.limits.total_max => {
                    return Head::Refuse(overflow(buf, &self.limits))
                }
                Some(end) => {
                    return match check_request_head(&buf[..end], &self.limits)
                        .and_then(|info| conn.admit(end, info))
                    {
                        Ok(()) => Head::Ready,
                        Err(r) => Head::Refuse(r),
                    }
                }
                None => scanned = buf.len().saturating_sub(2),
            }
            // nginx answers as soon as a line cannot fit its buffer.
            let request_line = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
            if buf.len() >= self.limits.total_max || request_line > self.limits.line_max + 1 {
                return Head::Refuse(overflow(buf, &self.limits));
            }
            if conn.eof {
                // nginx closes silently on a head cut short.
                return Head::Close;
            }
            if conn.buf.is_empty() && *shutdown.borrow() {
                return Head::Close;
            }
            let idle = conn.buf.is_empty();
            conn.buf.reserve(if idle { FIRST_READ } else { READ_CHUNK });
            let left = deadline.saturating_duration_since(Instant::now());
            let read = pingora::time::timeout(left, conn.inner.read_buf(&mut conn.buf));
            tokio::select! {
                biased;
                r = read => match r {
                    Ok(Ok(0)) => conn.eof = true,
                    Ok(Ok(_)) => {
                        if waiting_first_byte {
                            waiting_first_byte = false;
                            deadline = Instant::now() + self.header_timeout;
                        }
                    }
                    Ok(Err(e)) => {
                        log::debug!("h1 front: read error before request head: {e}");
                        return Head::Close;
                    }
                    Err(_) => {
                        log::debug!("h1 front: timed out waiting for a request head");
                        return Head::Close;
                    }
                },
                // An idle connection closes at shutdown; a head being read is finished.
                _ = shutdown.changed(), if idle => return Head::Close,
            }
        }
    }

    /// Writes Kong's error answer for a refused head, then closes the
    /// connection the way nginx does (FIN, then drain what the client sends).
    async fn refuse(&self, conn: &mut Prefixed, r: Reject, started: Instant) {
        log::info!("refused request: {}", r.reason);
        let fmt = error_format(&conn.buf, self.error_default_type);
        let head_only = conn.buf.starts_with(b"HEAD ");
        let answer = self.error_answer(r.status, fmt, head_only, started);
        let io = &mut conn.inner;
        let write = async {
            io.write_all(&answer).await?;
            io.flush().await
        };
        match tokio::time::timeout(SEND_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                log::debug!("h1 front: failed to send error answer: {e}");
                return;
            }
            Err(_) => return,
        }
        let _ = AsyncWriteExt::shutdown(io).await;
        let end = tokio::time::Instant::now() + LINGER_TIME;
        loop {
            conn.buf.clear();
            conn.buf.reserve(READ_CHUNK);
            let until = end.min(tokio::time::Instant::now() + LINGER_TIMEOUT);
            match tokio::time::timeout_at(until, conn.inner.read_buf(&mut conn.buf)).await {
                Ok(Ok(n)) if n > 0 => continue,
                _ => break,
            }
        }
    }

    /// The full answer: status line, headers and body, as Kong's error
    /// handler (or nginx itself, for statuses Kong leaves alone) sends it.
    fn error_answer(
        &self,
        status: u16,
        fmt: ErrorFormat,
        head_only: bool,
        started: Instant,
    ) -> Vec<u8> {
        let request_id = new_request_id();
        // Kong's error_page list; other statuses keep nginx's own page.
        let kong = matches!(
            status,
            400 | 404 | 405 | 408 | 411 | 412 | 413 | 414 | 417 | 494 | 500..=504
        ) && status != 501;
        let (content_type, body) = if kong {
            let message = response::nginx_message(status);
            (
                fmt.content_type(),
                response::render(fmt, &message, &request_id),
            )
        } else {
            let title = format!("{status} {}", reason_phrase(status));
            let page = format!(
                "<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n<hr><center>openresty</center>\r\n</body>\r\n</html>\r\n"
            );
            ("text/html", Bytes::from(page))
        };
        // nginx sends its internal 494 as 400.
        let status = if status == 494 { 400 } else { status };
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT");
        let mut out = format!(
            "HTTP/1.1 {status} {}\r\nDate: {date}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
            reason_phrase(status),
            body.len()
        );
        let h = &self.headers;
        if h.response_latency {
            out.push_str(&format!(
                "X-Kong-Response-Latency: {}\r\n",
                started.elapsed().as_millis()
            ));
        }
        if h.server {
            out.push_str(&format!("Server: {SERVER_TOKEN}\r\n"));
        }
        if h.request_id {
            out.push_str(&format!("X-Kong-Request-Id: {request_id}\r\n"));
        }
        out.push_str("\r\n");
        let mut out = out.into_bytes();
        if !head_only {
            out.extend_from_slice(&body);
        }
        out
    }
}

/// nginx's reason phrases for the statuses the front sends.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        408 => "Request Time-out",
        414 => "Request-URI Too Large",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        s => http::StatusCode::from_u16(s)
            .ok()
            .and_then(|c| c.canonical_reason())
            .unwrap_or("Error"),
    }
}

/// A head that did not end within the buffers: 414 while the request line
/// is still the culprit, else nginx's 494 (sent as 400).
fn overflow(buf: &[u8], limits: &HeadLimits) -> Reject {
    let line_len = buf.iter().position(|&b| b == b'\n').map(|i| {
        if i > 0 && buf[i - 1] == b'\r' {
            i - 1
        } else {
            i
        }
    });
    match line_len {
        Some(n) if n <= limits.line_max => Reject {
            status: 494,
            reason: "request header too large",
        },
        _ => Reject {
            status: 414,
            reason: "request line too long",
        },
    }
}

/// End of the head (just past its empty line): `\n\n` or `\n\r\n`, searched
/// from `from` so a head arriving in pieces is scanned about once.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from.min(buf.len());
    while let Some(p) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + p;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The lines of a head without their line ends, request line first.
fn head_lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    raw.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// `name: value` of a field line; `None` for anything else.
fn field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    Some((&line[..colon], trim_ows(&line[colon + 1..])))
}

/// Body type of an error answer from the head read so far: `Accept`, else
/// `Content-Type`, else the configured default (Kong's error handler). Only
/// complete lines count; a cut-off value could name the wrong type.
fn error_format(raw: &[u8], default: ErrorFormat) -> ErrorFormat {
    let Some(last_nl) = raw.iter().rposition(|&b| b == b'\n') else {
        return default;
    };
    let mut accept = None;
    let mut content_type = None;
    for line in head_lines(&raw[..last_nl]).skip(1) {
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = field(line) else {
            continue;
        };
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        if accept.is_none() && name.eq_ignore_ascii_case(b"accept") {
            accept = Some(value);
        } else if content_type.is_none() && name.eq_ignore_ascii_case(b"content-type") {
            content_type = Some(value);
        }
    }
    accept
        .or(content_type)
        .map(response::response_type)
        .unwrap_or(default)
}

/// Names a `Connection` header may not nominate. Pingora refuses the whole
/// request for host and X-Forwarded-{For,Host,Proto} (and for tokens that
/// are not tokens); nginx accepts them. Kong sets its own forwarded headers
/// anyway, and a nominated framing header must never unframe the body, so
/// these nominations are dropped instead (reliability doc §2, hop-by-hop).
fn protected_nomination(token: &[u8]) -> bool {
    const PREFIX: &[u8] = b"x-forwarded-";
    !token.iter().all(|&b| is_tchar(b))
        || token.eq_ignore_ascii_case(b"host")
        || token.eq_ignore_ascii_case(b"content-length")
        || token.eq_ignore_ascii_case(b"transfer-encoding")
        || token.eq_ignore_ascii_case(b"x-real-ip")
        || (token.len() > PREFIX.len() && token[..PREFIX.len()].eq_ignore_ascii_case(PREFIX))
}

fn connection_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|t| !t.is_empty())
}

/// An absolute-form target split for the origin-form rewrite.
struct AbsoluteTarget<'a> {
    method: &'a [u8],
    authority: &'a [u8],
    path: &'a [u8],
    version: &'a [u8],
}

const BAD_AUTHORITY: Reject = Reject {
    status: 400,
    reason: "invalid authority in request target",
};

/// `Some` for an absolute-form request line (the guard has checked its shape).
fn absolute_target(request_line: &[u8]) -> Result<Option<AbsoluteTarget<'_>>, Reject> {
    let mut parts = request_line.splitn(3, |&b| b == b' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Ok(None);
    };
    if target.first() == Some(&b'/') {
        return Ok(None);
    }
    let Some(sep) = target.windows(3).position(|w| w == b"://") else {
        return Ok(None);
    };
    let rest = &target[sep + 3..];
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    // nginx's host rules: no userinfo, no empty labels; then RFC 3986 syntax.
    if authority.is_empty()
        || authority.contains(&b'@')
        || authority.starts_with(b".")
        || authority.windows(2).any(|w| w == b"..")
        || http::uri::Authority::try_from(authority).is_err()
    {
        return Err(BAD_AUTHORITY);
    }
    Ok(Some(AbsoluteTarget {
        method,
        authority,
        path: &rest[end..],
        version,
    }))
}

/// Pingora's parser takes at most 256 fields (pingora-core v1/common.rs
/// `MAX_HEADERS`) and answers more with its bare 400; nginx has no count
/// limit, but a Kong-shaped 400 beats Pingora's.
const PINGORA_MAX_HEADERS: usize = 256;

const TOO_MANY_FIELDS: Reject = Reject {
    status: 400,
    reason: "too many header fields",
};

/// Facts about a checked head that decide how it is handed to Pingora.
struct Plan {
    upgrade: bool,
    rewritten: Option<BytesMut>,
}

/// Decides whether the head needs rewriting (absolute-form target, protected
/// `Connection` nominations) and builds the rewrite only then: RFC 9112
/// §3.2.2 lets the target's authority win over Host, which is what nginx
/// does; Pingora instead refuses a Host that differs from it.
fn plan_head(raw: &[u8]) -> Result<Plan, Reject> {
    let mut lines = head_lines(raw);
    let request_line = lines.next().unwrap_or_default();
    let absolute = absolute_target(request_line)?;
    let mut upgrade = false;
    let mut rewrite = absolute.is_some();
    let mut fields = 0;
    for line in head_lines(raw).skip(1).take_while(|l| !l.is_empty()) {
        fields += 1;
        if fields > PINGORA_MAX_HEADERS {
            return Err(TOO_MANY_FIELDS);
        }
        // Only `Upgrade` and `Connection` matter here: skip the other lines
        // by their first byte instead of splitting each at its colon.
        if !matches!(line.first(), Some(b'u' | b'U' | b'c' | b'C')) {
            continue;
        }
        let Some((name, value)) = field(line) else {
            continue;
        };
        if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade = true;
        } else if name.eq_ignore_ascii_case(b"connection")
            && connection_tokens(value).any(protected_nomination)
        {
            rewrite = true;
        }
    }
    if !rewrite {
        return Ok(Plan {
            upgrade,
            rewritten: None,
        });
    }
    let mut out = BytesMut::with_capacity(raw.len() + 32);
    match &absolute {
        Some(t) => {
            out.put_slice(t.method);
            out.put_u8(b' ');
            if t.path.first() != Some(&b'/') {
                out.put_u8(b'/');
            }
            out.put_slice(t.path);
            out.put_u8(b' ');
            out.put_slice(t.version);
        }
        None => out.put_slice(request_line),
    }
    out.put_slice(b"\r\n");
    let mut host_written = false;
    for line in lines.take_while(|l| !l.is_empty()) {
        match field(line) {
            Some((name, _)) if absolute.is_some() && name.eq_ignore_ascii_case(b"host") => {
                if let Some(t) = &absolute {
                    out.put_slice(b"Host: ");
                    out.put_slice(t.authority);
                    host_written = true;
                }
            }
            Some((name, value)) if name.eq_ignore_ascii_case(b"connection") => {
                let mut kept = connection_tokens(value).filter(|t| !protected_nomination(t));
                let Some(first) = kept.next() else {
                    continue;
                };
                out.put_slice(b"Connection: ");
                out.put_slice(first);
                for t in kept {
                    out.put_slice(b", ");
                    out.put_slice(t);
                }
            }
            _ => out.put_slice(line),
        }
        out.put_slice(b"\r\n");
    }
    if let (Some(t), false) = (&absolute, host_written) {
        out.put_slice(b"Host: ");
        out.put_slice(t.authority);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    Ok(Plan {
        upgrade,
        rewritten: Some(out),
    })
}

/// The client connection as Pingora sees it: bytes the front already read
/// come first, and reads stop at the end of the current request.
pub struct Prefixed {
    inner: Stream,
    /// A rewritten head, served before `buf`.
    head: Bytes,
    /// Bytes read from the client and not yet handed to Pingora.
    buf: BytesMut,
    /// Bytes of the current request still to hand over; `None` is no limit.
    left: Option<u64>,
    /// The client closed its sending side.
    eof: bool,
}

impl Prefixed {
    pub fn new(inner: Stream) -> Self {
        Prefixed {
            inner,
            head: Bytes::new(),
            buf: BytesMut::new(),
            left: Some(0),
            eof: false,
        }
    }

    /// nginx ignores empty lines before a request line. Returns whether any
    /// were dropped. A lone CR stays (it may be a CRLF still arriving, and a
    /// bare CR is refused by the guard).
    fn skip_empty_lines(&mut self) -> bool {
        let mut n = 0;
        loop {
            match &self.buf[n..] {
                [b'\n', ..] => n += 1,
                [b'\r', b'\n', ..] => n += 2,
                _ => break,
            }
        }
        self.buf.advance(n);
        n > 0
    }

    /// Lets the checked head at `buf[..end]` and its body through.
    fn admit(&mut self, end: usize, info: HeadInfo) -> Result<(), Reject> {
        let plan = plan_head(&self.buf[..end])?;
        let head_len = match plan.rewritten {
            Some(h) => {
                self.buf.advance(end);
                let len = h.len();
                self.head = h.freeze();
                len
            }
            None => end,
        };
        // Chunked framing and upgraded tunnels are Pingora's to delimit.
        self.left = if info.chunked || plan.upgrade {
            None
        } else {
            Some(
                info.content_length
                    .unwrap_or(0)
                    .saturating_add(head_len as u64),
            )
        };
        Ok(())
    }

    /// A read by Pingora past the end of the current request. Bytes of the
    /// next request are kept for the front; only a close (with nothing
    /// pending) is reported, so Pingora still notices a client going away.
    /// When the buffer is full, or a close follows a pipelined request, no
    /// waker is registered: Pingora only idle-polls here next to its
    /// upstream work, which wakes the task.
    fn poll_boundary(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.eof && self.buf.len() < PIPELINE_MAX {
            // Usually this only learns "nothing yet" (or EOF): no big buffer.
            let want = if self.buf.is_empty() {
                FIRST_READ
            } else {
                READ_CHUNK
            };
            self.buf.reserve(want);
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.inner), cx, &mut self.buf) {
                Poll::Ready(Ok(0)) => self.eof = true,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.eof && self.buf.is_empty() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

impl fmt::Debug for Prefixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prefixed")
            .field("inner", &self.inner)
            .field("buffered", &(self.head.len() + self.buf.len()))
            .field("left", &self.left)
            .finish()
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let room = match this.left {
            Some(0) => return this.poll_boundary(cx),
            Some(n) => usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(out.remaining()),
            None => out.remaining(),
        };
        let n = if !this.head.is_empty() {
            let n = room.min(this.head.len());
            out.put_slice(&this.head[..n]);
            this.head.advance(n);
            n
        } else if !this.buf.is_empty() {
            let n = room.min(this.buf.len());
            out.put_slice(&this.buf[..n]);
            this.buf.advance(n);
            n
        } else if this.eof {
            0
        } else if room == out.remaining() {
            let before = out.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
            out.filled().len() - before
        } else {
            // Never read past the request: the next one must meet the front first.
            let n = {
                let mut part = ReadBuf::new(out.initialize_unfilled_to(room));
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
                part.filled().len()
            };
            out.advance(n);
            n
        };
        if let Some(left) = this.left.as_mut() {
            *left = left.saturating_sub(n as u64);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Prefixed {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for Prefixed {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Prefixed {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Prefixed {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Prefixed {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for Prefixed {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for Prefixed {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let buffered = if self.head.is_empty() {
            &self.buf[..]
        } else {
            &self.head[..]
        };
        if buffered.is_empty() {
            return self.inner.try_peek(buf).await;
        }
        // Only a peek the buffer fully answers; partial peeks are "unsupported".
        match buffered.get(..buf.len()) {
            Some(b) => {
                buf.copy_from_slice(b);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use pingora::apps::{HttpPersistentSettings, ReusedHttpStream};
    use pingora::http::ResponseHeader;
    use tokio::io::DuplexStream;

    fn front() -> Arc<H1Front<Echo>> {
        Arc::new(H1Front::new(Echo, &ProxyOptions::default()))
    }

    /// A minimal HTTP app: answers 200 with the request target as body,
    /// reading (and so draining) the request body first.
    struct Echo;

    #[async_trait]
    impl HttpServerApp for Echo {
        async fn process_new_http(
            self: &Arc<Self>,
            mut session: ServerSession,
            _shutdown: &ShutdownWatch,
        ) -> Option<ReusedHttpStream> {
            if !session.read_request().await.ok()? {
                return None;
            }
            let req = session.req_header();
            let mut body = format!(
                "{} {} host={}",
                req.method,
                String::from_utf8_lossy(req.raw_path()),
                req.headers
                    .get("host")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
            );
            if let Some(c) = req.headers.get("connection").and_then(|v| v.to_str().ok()) {
                body.push_str(&format!(" connection={c}"));
            }
            while let Some(b) = session.read_request_body().await.ok()? {
                body.push_str(&format!(" body={}", String::from_utf8_lossy(&b)));
            }
            let mut resp = ResponseHeader::build(200, None).unwrap();
            resp.insert_header("Content-Length", body.len().to_string())
                .unwrap();
            session.write_response_header(Box::new(resp)).await.ok()?;
            session
                .write_response_body(Bytes::from(body), true)
                .await
                .ok()?;
            let settings = HttpPersistentSettings::for_session(&session);
            let reusable = session.finish().await.ok()??;
            Some(ReusedHttpStream::from_reusable_stream(reusable, settings))
        }
    }

    /// Runs the front on one end of an in-memory pipe; returns the other.
    fn serve(front: Arc<H1Front<Echo>>) -> (DuplexStream, tokio::sync::watch::Sender<bool>) {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            front.process_new(Box::new(server), &rx).await;
        });
        (client, tx)
    }

    /// Reads responses until `n` complete ones (by Content-Length) arrived.
    async fn read_responses(c: &mut DuplexStream, n: usize) -> Vec<(u16, String, String)> {
        let mut raw = Vec::new();
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while out.len() < n {
            let got = tokio::time::timeout(Duration::from_secs(5), c.read(&mut chunk))
                .await
                .expect("response in time")
                .unwrap();
            if got == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..got]);
            loop {
                let text = String::from_utf8_lossy(&raw).into_owned();
                let Some(end) = text.find("\r\n\r\n") else {
                    break;
                };
                let head = &text[..end];
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if raw.len() < end + 4 + len {
                    break;
                }
                let status = head[9..12].parse().unwrap();
                let body = text[end + 4..end + 4 + len].to_string();
                out.push((status, head.to_string(), body));
                raw.drain(..end + 4 + len);
            }
        }
        out
    }

    #[tokio::test]
    async fn valid_requests_pass_and_pipelining_is_served_in_order() {
        let (mut c, _tx) = serve(front());
        c.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let r = read_responses(&mut c, 1).await;
        assert_eq!(r[0].2, "GET /a host=x");
        // Three requests in one write, one with a body that looks like a head.
        c.write_all(
            b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nGET /\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\nGET /d HTTP/1.1\r\nHost: y\r\n\r\n",
        )
        .await
        .unwrap();
        let r = read_responses(&mut c, 3).await;
        let bodies: Vec<&str> = r.iter().map(|x| x.2.as_str()).collect();
        assert_eq!(
            bodies,
            [
                "POST /b host=x body=GET /",
                "GET /c host=x",
                "GET /d host=y"
            ]
        );
    }

    #[tokio::test]
    async fn a_bad_pipelined_head_gets_kongs_answer_after_the_good_one() {
        let (mut c, _tx) = serve(front());
        c.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\nAccept: application/json\r\n\r\nhello")
            .await
            .unwrap();
        let r = read_responses(&mut c, 2).await;
        assert_eq!(r[0].0, 200);
        assert_eq!(r[1].0, 400);
        assert!(r[1].1.contains("Server: kong/3.10.0"), "{}", r[1].1);
        assert!(r[1].1.contains("Connection: close"), "{}", r[1].1);
        let v: serde_json::Value = serde_json::from_str(&r[1].2).unwrap();
        assert_eq!(v["message"], "Bad request");
        // Then the connection closes.
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn refusals_carry_kong_shape_and_status() {
        let cases: [(&[u8], u16, &str); 5] = [
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
                501,
                "<title>501 Not Implemented</title>",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n",
                400,
                "Bad request\nrequest_id: ",
            ),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n",
                400,
                "Bad request\nrequest_id: ",
            ),
            (
                b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
                505,
                "505 HTTP Version Not Supported",
            ),
            (
                b"GET http://u@h/ HTTP/1.1\r\nHost: x\r\n\r\n",
                400,
                "Bad request",
            ),
        ];
        for (req, status, body) in cases {
            let (mut c, _tx) = serve(front());
            c.write_all(req).await.unwrap();
            let r = read_responses(&mut c, 1).await;
            assert_eq!(r[0].0, status, "{}", String::from_utf8_lossy(req));
            assert!(r[0].2.contains(body), "{}", r[0].2);
            assert!(r[0].1.contains("\r\nX-Kong-Request-Id: "), "{}", r[0].1);
        }
    }

    #[tokio::test]
    async fn chunked_request_then_pipelined_one_is_not_broken() {
        let (mut c, _tx) = serve(front());
        c.write_all(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /n HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // The first is answered; the second is answered or the connection
        // closes (Pingora delimits chunked bodies and may read ahead).
        let r = read_responses(&mut c, 2).await;
        assert_eq!((r[0].0, r[0].2.as_str()), (200, "POST /c host=x body=abc"));
        if let Some(second) = r.get(1) {
            assert_eq!(second.2, "GET /n host=x");
        }
    }

    #[tokio::test]
    async fn more_fields_than_pingora_takes_get_kongs_400() {
        let (mut c, _tx) = serve(front());
        let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..300 {
            req.push_str(&format!("X-{i}: v\r\n"));
        }
        req.push_str("\r\n");
        c.write_all(req.as_bytes()).await.unwrap();
        let r = read_responses(&mut c, 1).await;
        assert_eq!(r[0].0, 400);
        assert!(r[0].2.starts_with("Bad request\n"), "{}", r[0].2);
    }

    #[tokio::test]
    async fn oversize_heads_are_414_or_too_large() {
        let (mut c, _tx) = serve(front());
        let line = format!("GET /{} HTTP/1.1\r\n", "a".repeat(9000));
        c.write_all(line.as_bytes()).await.unwrap();
        let r = read_responses(&mut c, 1).await;
        assert_eq!(r[0].0, 414);
        assert!(r[0].2.starts_with("URI too long\n"), "{}", r[0].2);

        let (mut c, _tx) = serve(front());
        let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\n");
        for i in 0..5 {
            req.push_str(&format!("X-{i}: {}\r\n", "b".repeat(8000)));
        }
        c.write_all(req.as_bytes()).await.unwrap();
        let r = read_responses(&mut c, 1).await;
        assert_eq!(r[0].0, 400);
        assert!(r[0].1.contains("text/html"), "{}", r[0].1);
        assert!(
            r[0].2.contains("Request header or cookie too large"),
            "{}",
            r[0].2
        );
    }

    #[tokio::test]
    async fn absolute_form_and_protected_nominations_are_rewritten() {
        let (mut c, _tx) = serve(front());
        c.write_all(b"GET http://other.invalid:9/p?q=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Forwarded-For, Host, X-Secret\r\n\r\nGET http://h.test HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let r = read_responses(&mut c, 2).await;
        assert_eq!(
            r[0].2,
            "GET /p?q=1 host=other.invalid:9 connection=keep-alive, X-Secret"
        );
        assert_eq!(r[1].2, "GET / host=h.test");
    }

    #[tokio::test]
    async fn prefixed_serves_one_request_then_waits() {
        let (mut client, server) = tokio::io::duplex(4096);
        let mut p = Prefixed::new(Box::new(server));
        p.buf
            .put_slice(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET");
        let head_len = p.buf.len() - 6;
        p.left = Some(head_len as u64 + 3);
        let mut out = vec![0u8; 100];
        let n = p.read(&mut out).await.unwrap();
        assert_eq!(
            &out[..n],
            &b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"[..]
        );
        // At the boundary: the next request's bytes are not handed out.
        let pending = tokio::time::timeout(Duration::from_millis(50), p.read(&mut out)).await;
        assert!(pending.is_err());
        client.write_all(b" /").await.unwrap();
        let pending = tokio::time::timeout(Duration::from_millis(50), p.read(&mut out)).await;
        assert!(pending.is_err());
        assert_eq!(&p.buf[..], b"GET /");
        // A close with a pipelined request pending is not reported to Pingora.
        drop(client);
        let pending = tokio::time::timeout(Duration::from_millis(50), p.read(&mut out)).await;
        assert!(pending.is_err());
        assert!(p.eof);
    }

    #[tokio::test]
    async fn idle_close_is_reported_at_the_boundary() {
        let (client, server) = tokio::io::duplex(4096);
        let mut p = Prefixed::new(Box::new(server));
        drop(client);
        let mut out = [0u8; 8];
        assert_eq!(p.read(&mut out).await.unwrap(), 0);
    }

    #[test]
    fn head_end_and_overflow() {
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest", 0),
            Some(27)
        );
        assert_eq!(find_head_end(b"GET / HTTP/1.0\n\n", 0), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n", 0), None);
        let l = HeadLimits::default();
        assert_eq!(overflow(b"GET /aaaa", &l).status, 414);
        assert_eq!(overflow(b"GET / HTTP/1.1\r\nX: aaaa", &l).status, 494);
    }

    #[test]
    fn error_format_reads_complete_lines_only() {
        let d = ErrorFormat::Plain;
        assert_eq!(
            error_format(b"GET / HTTP/1.1\r\nAccept: application/json\r\n", d),
            ErrorFormat::Json
        );
        assert_eq!(
            error_format(b"GET / HTTP/1.1\r\nContent-Type: text/html\r\n\r\n", d),
            ErrorFormat::Html
        );
        assert_eq!(
            error_format(b"GET / HTTP/1.1\r\nAccept: application/js", d),
            d
        );
    }
}
