//! The request path, wired to Pingora's phases in this one place:
//!
//! listener -> [`h1_front`] (head checks, body framing) -> router ->
//! (plugins: access) -> balancer -> upstream -> (plugins: response) -> log.
//!
//! Phase map: `request_filter` routes and answers what Kong answers itself
//! (404, 405, 413, 426, 503 ...); `upstream_peer` asks the balancer;
//! `upstream_request_filter` builds the upstream URI and headers;
//! `response_filter` adds Kong's response headers; `fail_to_proxy` turns
//! upstream failures into Kong's 502/504 bodies and a body the front refused
//! or that timed out into nginx's 400/413/408; `logging` writes the access
//! log.

pub mod ctx;
pub mod edge;
pub mod forwarded;
pub mod h1_chunked;
pub mod h1_front;
pub mod h1_guard;
pub mod h2_front;
pub mod hdr;
pub mod proxy_protocol;
pub mod response;

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderName};
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::l4::socket::SocketAddr as PSocketAddr;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result, RetryType};

use crate::access_log::AccessLog;
use crate::balancer::health::passive::Outcome;
use crate::balancer::{Balancer, HashInput};
use crate::plugins::pdk::{Exit, ExitBody};
use crate::plugins::runtime::{self as plugin_rt, PluginEnv};
use crate::router::{self, RequestInfo};
use crate::snapshot::{ConfigHandle, ServiceTarget};
use crate::stats::Stats;
use crate::upstream_tls;
use ctx::LocalError;
pub use ctx::RequestCtx;
use forwarded::TrustConfig;
use h1_guard::HeadLimits;
use response::ErrorFormat;

/// Which of Kong's `headers` / `headers_upstream` are switched on.
#[derive(Debug, Clone, Copy)]
pub struct HeaderToggles {
    pub server: bool,
    pub via: bool,
    pub proxy_latency: bool,
    pub response_latency: bool,
    pub upstream_latency: bool,
    pub upstream_status: bool,
    pub request_id: bool,
    pub upstream_request_id: bool,
}

impl Default for HeaderToggles {
    fn default() -> Self {
        HeaderToggles {
            server: true,
            via: true,
            proxy_latency: true,
            response_latency: true,
            upstream_latency: true,
            upstream_status: false,
            request_id: true,
            upstream_request_id: true,
        }
    }
}

/// Settings of the proxy path, derived from `KONG_*` settings at start.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    pub headers: HeaderToggles,
    pub trust: TrustConfig,
    pub error_default_type: ErrorFormat,
    pub head_limits: HeadLimits,
    /// `client_max_body_size` in bytes; 0 is unlimited (Kong's default).
    pub client_max_body_size: u64,
    /// `port_maps`: `(host_port, kong_port)` pairs, the port the client used
    /// for each listener port.
    pub port_maps: Vec<(u16, u16)>,
    /// `allow_debug_header`: honour the `Kong-Debug` request header.
    pub allow_debug_header: bool,
    /// nginx `client_header_timeout`.
    pub client_header_timeout: std::time::Duration,
    /// nginx `client_body_timeout`: the longest wait between two body reads.
    pub client_body_timeout: std::time::Duration,
    /// nginx `underscores_in_headers` (Kong: on).
    pub underscores_in_headers: bool,
    /// `upstream_keepalive_idle_timeout`: how long a pooled upstream
    /// connection may wait unused; `None` (Kong's 0) = no limit.
    pub upstream_idle_timeout: Option<std::time::Duration>,
    /// nginx `client_body_buffer_size`: bodies plugins can read.
    pub client_body_buffer_size: u64,
    /// nginx `send_timeout`: the longest wait between two writes to a client.
    pub send_timeout: std::time::Duration,
    /// nginx `keepalive_requests`: requests (HTTP/2: streams) per connection.
    pub keepalive_requests: u64,
    /// nginx `http2_max_concurrent_streams`.
    pub http2_max_concurrent_streams: u32,
    /// nginx `http2_body_preread_size`: a stream's initial window.
    pub http2_body_preread_size: u32,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            headers: HeaderToggles::default(),
            trust: TrustConfig::default(),
            error_default_type: ErrorFormat::Plain,
            head_limits: HeadLimits::default(),
            client_max_body_size: 0,
            port_maps: Vec::new(),
            allow_debug_header: false,
            client_header_timeout: std::time::Duration::from_secs(60),
            client_body_timeout: std::time::Duration::from_secs(60),
            underscores_in_headers: true,
            client_body_buffer_size: 8 * 1024,
            upstream_idle_timeout: Some(std::time::Duration::from_secs(60)),
            send_timeout: std::time::Duration::from_secs(60),
            keepalive_requests: 10_000,
            http2_max_concurrent_streams: 128,
            http2_body_preread_size: 64 * 1024,
        }
    }
}

/// The gateway's one `ProxyHttp` implementation.
pub struct KongProxy {
    pub config: ConfigHandle,
    pub options: Arc<ProxyOptions>,
    pub stats: Arc<Stats>,
    pub access_log: Option<AccessLog>,
    /// What plugins share across requests and config swaps.
    pub plugins: Arc<PluginEnv>,
    /// Set from SIGTERM (or `kong quit`) on: every response then carries
    /// `Connection: close`, so keep-alive clients leave between requests
    /// rather than have a request cut off when the listener closes.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

const MSG_NO_ROUTE: &str = "no Route matched with those values";
const MSG_NO_SERVICE: &str = "no Service found with those values";
const MSG_NO_PEER: &str = "failure to get a peer from the ring-balancer";
const MSG_NAME_RESOLUTION: &str = "name resolution failed";

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl KongProxy {
    /// Kong's `ctx.host_port`: `HOST_PORTS[server_port] or server_port`,
    /// where `port_maps` entries are `host_port:kong_port` and
    /// `HOST_PORTS[kong_port] = host_port` (a later entry for the same Kong
    /// port overwrites an earlier one, hence `rfind`).
    fn host_port(&self, listener_port: u16) -> u16 {
        self.options
            .port_maps
            .iter()
            .rfind(|(_, kong_port)| *kong_port == listener_port)
            .map(|(host_port, _)| *host_port)
            .unwrap_or(listener_port)
    }

    /// Sends a response Kong generates itself (`kong.response.exit`/`error`).
    async fn respond(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
        body: Option<(ErrorFormat, Bytes)>,
        extra: &[(&str, String)],
    ) -> Result<()> {
        let body = body.map(|(fmt, b)| (Some(fmt.content_type()), b));
        self.respond_raw(session, ctx, status, body, extra).await
    }

    /// [`Self::respond`] with any content type; the plugins' header and
    /// body filters run on it, as Kong runs them on its own answers.
    async fn respond_raw(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
        body: Option<(Option<&str>, Bytes)>,
        extra: &[(&str, String)],
    ) -> Result<()> {
        ctx.kong_status = Some(status);
        self.close_if_draining(session);
        let mut resp = ResponseHeader::build(status, Some(8))?;
        let head = session.req_header().method == http::Method::HEAD;
        let (content_type, mut bytes) = match body {
            Some((ct, b)) => (ct, Some(b)),
            None => (None, None),
        };
        if let Some(ct) = content_type {
            resp.insert_header("Content-Type", ct)?;
        }
        for (i, (name, value)) in extra.iter().enumerate() {
            // A name given again adds a line (an exit's multi-valued header).
            if extra[..i].iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                resp.append_header(name.to_string(), value.as_str())?;
            } else {
                resp.insert_header(name.to_string(), value.as_str())?;
            }
        }
        if session.as_downstream().is_http2() {
            response::grpc_answer(&session.req_header().headers, &mut resp, &mut bytes);
        }
        self.add_kong_response_headers(&mut resp, ctx);
        let snap = ctx.snapshot.clone();
        if let (Some(snap), true) = (&snap, ctx.plugins.is_some()) {
            plugin_rt::header_filter(&self.plugins, session, ctx, snap, &mut resp);
            if plugin_rt::has_body_filter(snap, ctx) {
                plugin_rt::body_filter(&self.plugins, session, ctx, snap, &mut bytes, true);
            }
            if plugin_rt::header_exited(ctx) {
                // A header_filter exit without a body: `Content-Length: 0`.
                bytes = None;
                ctx.kong_status = Some(resp.status.as_u16());
            }
        }
        let len = bytes.as_ref().map_or(0, Bytes::len);
        if status == 204 {
            // nginx's header filter: a 204 goes out without a body,
            // Content-Length or Content-Type.
            bytes = None;
            resp.remove_header(&header::CONTENT_LENGTH);
            resp.remove_header(&header::CONTENT_TYPE);
        } else if !resp.headers.contains_key(header::CONTENT_LENGTH) || bytes.is_some() {
            resp.insert_header("Content-Length", len.to_string())?;
        }
        let end = bytes.is_none() || head;
        session.write_response_header(Box::new(resp), end).await?;
        if !end {
            if let Some(b) = bytes {
                session.write_response_body(Some(b), true).await?;
            }
        }
        Ok(())
    }

    /// Sends a plugin's `kong.response.exit` / `error`.
    async fn send_exit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        exit: Exit,
    ) -> Result<()> {
        ctx.exit_proxied = exit.proxied;
        let extra: Vec<(&str, String)> = exit
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        match exit.body {
            ExitBody::Empty => {
                self.respond_raw(session, ctx, exit.status, None, &extra)
                    .await
            }
            ExitBody::Json(v) if response::is_grpc_request(session.req_header()) => {
                // Kong sends a table's `message` (in `grpc-message`) and
                // drops any other table: gRPC has no JSON bodies.
                let body = v
                    .get("message")
                    .and_then(|m| m.as_str())
                    .map(|m| (None, Bytes::from(m.to_string())));
                self.respond_raw(session, ctx, exit.status, body, &extra)
                    .await
            }
            ExitBody::Json(v) => {
                let body = Bytes::from(v.to_string());
                let ct = Some("application/json; charset=utf-8");
                self.respond_raw(session, ctx, exit.status, Some((ct, body)), &extra)
                    .await
            }
            ExitBody::Raw(b) => {
                self.respond_raw(session, ctx, exit.status, Some((None, b)), &extra)
                    .await
            }
            ExitBody::Error(message) => {
                self.pdk_error(session, ctx, exit.status, &message, &extra)
                    .await
            }
        }
    }

    /// Reads the request body for the plugins that asked for it, up to
    /// `client_body_buffer_size` (at most Pingora's 64 KiB retry buffer,
    /// which replays what was read to the upstream). A larger body is left
    /// to stream, and plugins see none, as in Kong when nginx has put it in
    /// a temp file.
    async fn read_body_for_plugins(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        const RETRY_BUFFER: u64 = 64 * 1024;
        let cap = self.options.client_body_buffer_size.min(RETRY_BUFFER);
        let declared = session
            .req_header()
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > cap) {
            return Ok(());
        }
        session.as_mut().enable_retry_buffering();
        let mut read = bytes::BytesMut::new();
        let mut complete = false;
        while (read.len() as u64) <= cap {
            match session.read_request_body().await? {
                Some(b) => read.extend_from_slice(&b),
                None => {
                    complete = true;
                    break;
                }
            }
        }
        let truncated = session.as_ref().retry_buffer_truncated();
        if let Some(run) = ctx.plugins.as_mut() {
            if complete {
                run.request_body = Some(read.freeze());
            } else if truncated {
                // Pingora will not replay what it could not keep: send it
                // ahead of the next chunk ourselves.
                run.pending_prefix = Some(read.freeze());
            }
        }
        Ok(())
    }

    /// Headers on responses Kong generates. After an upstream attempt (502,
    /// 504) Kong counts the request as proxied and sends the proxied set.
    fn add_kong_response_headers(&self, resp: &mut ResponseHeader, ctx: &RequestCtx) {
        let h = &self.options.headers;
        if ctx.exit_proxied && ctx.tries == 0 {
            // Kong's header_filter with KONG_PROXIED and no upstream: the
            // upstream status is the response's, nothing was waited for, and
            // a Server the exit carries (a cached upstream's) is kept.
            if h.upstream_status {
                let status = HeaderValue::from(resp.status.as_u16());
                let _ = resp.insert_header("X-Kong-Upstream-Status", status);
            }
            if h.upstream_latency {
                let _ = resp.insert_header("X-Kong-Upstream-Latency", HeaderValue::from(0u64));
            }
            if h.proxy_latency {
                let v = HeaderValue::from(millis(ctx.start.elapsed()));
                let _ = resp.insert_header("X-Kong-Proxy-Latency", v);
            }
            if h.via {
                let _ = resp.insert_header("Via", hdr::via("1.1"));
            }
            if h.server && !resp.headers.contains_key(header::SERVER) {
                let _ = resp.insert_header("Server", hdr::SERVER.clone());
            }
        } else if ctx.tries > 0 {
            if h.upstream_latency {
                let waited = ctx.upstream_start.map(|t| millis(t.elapsed())).unwrap_or(0);
                let _ = resp.insert_header("X-Kong-Upstream-Latency", HeaderValue::from(waited));
            }
            if h.proxy_latency {
                let v = HeaderValue::from(ctx.proxy_latency_ms.unwrap_or(0));
                let _ = resp.insert_header("X-Kong-Proxy-Latency", v);
            }
            if h.via {
                let _ = resp.insert_header("Via", hdr::via("1.1"));
            }
            if h.server {
                let _ = resp.insert_header("Server", hdr::SERVER.clone());
            }
        } else {
            if h.response_latency {
                let v = HeaderValue::from(millis(ctx.start.elapsed()));
                let _ = resp.insert_header("X-Kong-Response-Latency", v);
            }
            if h.server {
                let _ = resp.insert_header("Server", hdr::SERVER.clone());
            } else {
                resp.remove_header(&header::SERVER);
            }
        }
        if h.request_id {
            let _ = resp.insert_header("X-Kong-Request-Id", ctx.request_id.as_str());
        }
    }

    /// `allow_debug_header` + a `Kong-Debug` request header: name the matched
    /// route and service in the response (Kong's `router/utils.lua`).
    fn add_debug_headers(&self, resp: &mut ResponseHeader, ctx: &RequestCtx) {
        let Some(snap) = &ctx.snapshot else { return };
        if let Some(r) = ctx.route.and_then(|i| snap.routes.get(i)) {
            let _ = resp.insert_header("Kong-Route-Id", r.id.to_string());
            if let Some(n) = &r.name {
                let _ = resp.insert_header("Kong-Route-Name", n.as_str());
            }
        }
        if let Some(sv) = ctx.service.and_then(|i| snap.services.get(i)) {
            let _ = resp.insert_header("Kong-Service-Id", sv.id.to_string());
            if let Some(n) = &sv.name {
                let _ = resp.insert_header("Kong-Service-Name", n.as_str());
            }
        }
    }

    /// `kong.response.error(status, message)`: body type from `Accept`.
    async fn pdk_error(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
        message: &str,
        extra: &[(&str, String)],
    ) -> Result<()> {
        if response::is_grpc_request(session.req_header()) {
            // Kong: `application/grpc`, no body; the status in
            // `grpc-status` / `grpc-message`.
            let body = Some((Some(response::GRPC_CONTENT_TYPE), Bytes::new()));
            return self.respond_raw(session, ctx, status, body, extra).await;
        }
        let fmt = response::pdk_format(&session.req_header().headers);
        let body = response::render(fmt, message, &ctx.request_id);
        self.respond(session, ctx, status, Some((fmt, body)), extra)
            .await
    }

    /// nginx `error_page` answers (400, 405, 413, 414, 502, 504 ...).
    async fn nginx_error(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
    ) -> Result<()> {
        let fmt = response::nginx_error_format(
            &session.req_header().headers,
            self.options.error_default_type,
        );
        let status_sent = if status == 494 { 400 } else { status };
        if response::is_grpc_request(session.req_header()) {
            let body = Some((Some(response::GRPC_CONTENT_TYPE), Bytes::new()));
            return self.respond_raw(session, ctx, status_sent, body, &[]).await;
        }
        let message = response::nginx_message(status);
        let status = status_sent;
        let body = response::render(fmt, &message, &ctx.request_id);
        self.respond(session, ctx, status, Some((fmt, body)), &[])
            .await
    }

    /// Picks an upstream target for this try: (address, host name, port).
    /// Targets whose name does not resolve are skipped; `None` when no
    /// target can be had (Kong's "failure to get a peer").
    async fn pick_target(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        b: &Balancer,
    ) -> Option<(std::net::SocketAddr, String, u16)> {
        if ctx.balancer.hash_value.is_none() && b.hashes() {
            let req = session.req_header();
            let (raw, query) = raw_path_only(req.raw_path());
            let raw = String::from_utf8_lossy(raw);
            let path = router::normalize_path(&raw);
            let query = query.map(|q| String::from_utf8_lossy(q).into_owned());
            let v = b.hash_value(&HashInput {
                consumer: None,
                client_ip: ctx.client_ip,
                headers: &req.headers,
                path: &path,
                query: query.as_deref(),
                captures: &ctx.uri_captures,
            });
            ctx.balancer.hash_value = Some(v.value);
            ctx.balancer.set_cookie = v.set_cookie;
        }
        // Give back the previous try's least-connections slot first.
        ctx.balancer.guard = None;
        let mut skipped: Vec<usize> = Vec::new();
        for _ in 0..b.targets.len().max(1) {
            let mut avoid = ctx.balancer.tried.clone();
            avoid.extend_from_slice(&skipped);
            let picked = b.pick(ctx.balancer.hash_value.as_deref(), &avoid).ok()?;
            let t = b.targets.get(picked.index)?;
            match t.addr.resolve().await {
                Ok(addr) => {
                    ctx.balancer.target = Some(picked.index);
                    ctx.balancer.guard = picked.guard;
                    let name = b.host_header.clone().unwrap_or_else(|| t.addr.host.clone());
                    return Some((addr, name, t.addr.port));
                }
                // A failed name is out of the balancer until it resolves.
                Err(_) if !skipped.contains(&picked.index) => skipped.push(picked.index),
                Err(_) => return None,
            }
        }
        None
    }

    /// A try failed (connect, or while proxying): passive health learns
    /// of it and the next try avoids the target.
    fn try_failed(&self, ctx: &mut RequestCtx, etype: &ErrorType) {
        ctx.balancer.guard = None;
        if let Some(t) = ctx.try_log.last_mut() {
            let timeout = matches!(
                etype,
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            );
            t.failure = Some(("failed", if timeout { 504 } else { 502 }));
        }
        let Some(i) = ctx.balancer.target.take() else {
            return;
        };
        if let Some(b) = upstream_of(ctx) {
            b.report(i, Outcome::from_error(etype));
        }
        if !ctx.balancer.tried.contains(&i) {
            ctx.balancer.tried.push(i);
        }
    }

    /// The request is over: the last try's status feeds passive health and
    /// its time the latency algorithm.
    fn balancer_done(&self, ctx: &mut RequestCtx) {
        ctx.balancer.guard = None;
        let Some(i) = ctx.balancer.target.take() else {
            return;
        };
        let Some(b) = upstream_of(ctx) else { return };
        if let Some(status) = ctx.balancer.upstream_status {
            b.report(i, Outcome::Status(status));
            if let Some(t) = ctx.balancer.try_start {
                b.observe(i, t.elapsed());
            }
        }
    }

    /// During the drain, the response in hand is the connection's last.
    fn close_if_draining(&self, session: &mut Session) {
        if self.draining.load(Ordering::Relaxed) {
            session.set_keepalive(None);
        }
    }
}

/// The balancer of the request's service, if it targets an upstream.
fn upstream_of(ctx: &RequestCtx) -> Option<Arc<Balancer>> {
    let snapshot = ctx.snapshot.as_ref()?;
    match &snapshot.services.get(ctx.service?)?.target {
        ServiceTarget::Upstream(b) => Some(b.clone()),
        ServiceTarget::Host(_) => None,
    }
}

fn peer_ip(addr: Option<&PSocketAddr>) -> Option<IpAddr> {
    match addr? {
        PSocketAddr::Inet(sa) => Some(sa.ip()),
        _ => None,
    }
}

fn local_port(addr: Option<&PSocketAddr>) -> u16 {
    match addr {
        Some(PSocketAddr::Inet(sa)) => sa.port(),
        _ => 0,
    }
}

/// A plugin that drops `Content-Length` (a body it will change, e.g.
/// response-transformer) leaves the length unknown: nginx then answers an
/// HTTP/1.1 client chunked, where Pingora would close-delimit the body and
/// lose the connection.
fn chunk_if_unframed(session: &Session, resp: &mut ResponseHeader) -> Result<()> {
    let req = session.req_header();
    let bodiless = req.method == http::Method::HEAD
        || resp.status.is_informational()
        || matches!(resp.status.as_u16(), 204 | 304);
    if bodiless
        || req.version != http::Version::HTTP_11
        || session.as_downstream().as_http1().is_none()
        || resp.headers.contains_key(header::CONTENT_LENGTH)
        || resp.headers.contains_key(header::TRANSFER_ENCODING)
    {
        return Ok(());
    }
    resp.insert_header(header::TRANSFER_ENCODING, "chunked")
}

/// Header names a `Connection` header lists as hop-by-hop (Kong keeps
/// `keep-alive`, `close` and `upgrade` themselves out of that list).
/// Nearly every upstream response carries `Connection: keep-alive`, so the
/// common tokens are compared in place rather than lower-cased into a new
/// string each (`HeaderName::from_bytes` lower-cases the rest itself).
fn connection_listed(headers: &http::HeaderMap) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for v in headers.get_all(header::CONNECTION) {
        let Ok(s) = v.to_str() else { continue };
        for tok in s.split(',').map(str::trim) {
            if tok.is_empty()
                || tok.eq_ignore_ascii_case("keep-alive")
                || tok.eq_ignore_ascii_case("close")
                || tok.eq_ignore_ascii_case("upgrade")
            {
                continue;
            }
            if let Ok(n) = HeaderName::from_bytes(tok.as_bytes()) {
                out.push(n);
            }
        }
    }
    out
}

/// The path part of a request target (origin or absolute form), raw.
fn raw_path_only(raw: &[u8]) -> (&[u8], Option<&[u8]>) {
    let mut target = raw;
    // absolute-form: skip "scheme://authority"
    if !target.starts_with(b"/") {
        if let Some(i) = target.windows(3).position(|w| w == b"://") {
            let rest = &target[i + 3..];
            target = match rest.iter().position(|&b| b == b'/' || b == b'?') {
                Some(j) => &rest[j..],
                None => b"/",
            };
        }
    }
    match target.iter().position(|&b| b == b'?') {
        Some(i) => (&target[..i], Some(&target[i + 1..])),
        None => (target, None),
    }
}

#[async_trait]
impl ProxyHttp for KongProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    // Pingora's default adds its response-compression module at level 0,
    // where it changes nothing (no compression, no decompression) but still
    // costs a module context and two boxed filter calls per request.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // HTTP/1 connections and requests are counted by the front, where
        // nginx counts them; anything else (h2) is counted here.
        if session.as_downstream().as_http1().is_none() {
            self.stats.requests_total.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        ctx.counted_in_flight = true;

        // The raw head was checked against nginx's rules by the HTTP/1 front
        // (`h1_front`) before Pingora parsed it, and the front frames the
        // body, so Pingora has seen nothing unchecked. client_body_timeout
        // is Pingora's read timeout for the body (per read, as nginx's).
        session.set_read_timeout(Some(self.options.client_body_timeout));
        // nginx send_timeout: a client that stops reading (or holds an
        // HTTP/2 window shut) is dropped instead of holding the request.
        session.set_write_timeout(Some(self.options.send_timeout));
        // HTTP/2 names the host in `:authority`; nginx's `$host` and the
        // `Host` Kong forwards come from it when no Host field was sent.
        if session.as_downstream().is_http2() {
            let req = session.req_header_mut();
            if !req.headers.contains_key(header::HOST) {
                if let Some(a) = req.uri.authority().cloned() {
                    if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                        req.insert_header(header::HOST, v)?;
                    }
                }
            }
            // What the HTTP/1 front checks that HTTP/2 does not: nginx
            // ignores the same field names, and parses `:path` with the
            // same rules (400 above the root or on a bad escape).
            let underscores = self.options.underscores_in_headers;
            let dropped: Vec<HeaderName> = req
                .headers
                .keys()
                .filter(|n| h1_front::dropped_field(n.as_str().as_bytes(), underscores))
                .cloned()
                .collect();
            for name in dropped {
                req.remove_header(&name);
            }
            let (path, _) = raw_path_only(req.raw_path());
            if let Err(e) = router::check_request_path(path) {
                log::info!("refused an HTTP/2 request: {}", e.reason());
                self.nginx_error(session, ctx, 400).await?;
                return Ok(true);
            }
        }

        // The request keeps the snapshot it was routed with, for its whole
        // life (also for the answers Kong generates itself below, on which
        // Kong runs the global plugins' header_filter, body_filter and log:
        // `Kong.handle_error` and the collected-iterator fallback).
        let snapshot = self.config.load();
        ctx.snapshot = Some(snapshot.clone());
        // The transport's facts (TLS session, PROXY header), and the client
        // address as nginx's realip module sets it before any phase runs:
        // a trusted peer's PROXY source or header value, else the peer.
        ctx.conn = edge::conn_info(session);
        let req = session.req_header();
        let peer = peer_ip(session.as_downstream().client_addr());
        let trust = &self.options.trust;
        ctx.peer_ip = peer;
        ctx.trusted = peer.is_some_and(|ip| trust.is_trusted(ip));
        let proxy_src = ctx.conn.as_ref().and_then(|c| c.proxy).map(|p| p.src.ip());
        ctx.client_ip = peer.map(|ip| trust.real_ip(ip, &req.headers, proxy_src));
        if req.method == http::Method::TRACE {
            session.set_keepalive(None);
            plugin_rt::start_without_route(&snapshot, ctx);
            self.nginx_error(session, ctx, 405).await?;
            return Ok(true);
        }
        if self.options.client_max_body_size > 0 {
            let too_big = req
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|n| n > self.options.client_max_body_size);
            if too_big {
                session.set_keepalive(None);
                plugin_rt::start_without_route(&snapshot, ctx);
                self.nginx_error(session, ctx, 413).await?;
                return Ok(true);
            }
        }

        // Kong's rewrite phase: global plugins, before routing.
        if let Some(exit) = plugin_rt::rewrite(&self.plugins, session, ctx, &snapshot).await {
            self.send_exit(session, ctx, exit).await?;
            return Ok(true);
        }

        let req = session.req_header();
        let (raw_path, _) = raw_path_only(req.raw_path());
        let raw_path = String::from_utf8_lossy(raw_path);
        let path = router::normalize_path(&raw_path);
        let listener_port = local_port(session.as_downstream().server_addr());
        ctx.host_port = self.host_port(listener_port);
        let host = req.headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let tls = ctx.conn.as_ref().and_then(|c| c.tls.as_ref());
        let info = RequestInfo {
            method: req.method.as_str(),
            host,
            listener_port: ctx.host_port,
            path: &path,
            headers: &req.headers,
            sni: tls.and_then(|t| t.sni.as_deref()),
            https: tls.is_some(),
        };
        let Some(m) = snapshot.router.find(&info) else {
            // Kong runs the global plugins' later phases on its 404.
            plugin_rt::start_without_route(&snapshot, ctx);
            self.pdk_error(session, ctx, 404, MSG_NO_ROUTE, &[]).await?;
            return Ok(true);
        };
        let Some(route) = snapshot.routes.get(m.index) else {
            self.pdk_error(session, ctx, 404, MSG_NO_ROUTE, &[]).await?;
            return Ok(true);
        };
        ctx.route = Some(m.index);
        ctx.uri_captures = m.captures.clone();
        ctx.debug_header =
            self.options.allow_debug_header && req.headers.contains_key("kong-debug");

        // Forwarded facts, decided once (Kong's access.before): `$scheme`,
        // or a trusted client's X-Forwarded-Proto kept as sent (a shared
        // `Bytes`, no copy).
        let scheme = if tls.is_some() {
            hdr::HTTPS.clone()
        } else {
            hdr::HTTP.clone()
        };
        let fwd_proto = if ctx.trusted {
            req.headers
                .get(hdr::known::X_FORWARDED_PROTO.name())
                .filter(|v| v.to_str().is_ok())
                .cloned()
                .unwrap_or(scheme)
        } else {
            scheme
        };

        // An https-only route over plain http answers 426 or redirects
        // (Kong's access.before: only the global plugins see the answer).
        if route.https_only && fwd_proto != "https" {
            plugin_rt::start_without_route(&snapshot, ctx);
            let code = route.https_redirect_status_code;
            if code == 426 {
                let extra = [
                    ("Connection", "Upgrade".to_string()),
                    ("Upgrade", "TLS/1.2, HTTP/1.1".to_string()),
                ];
                self.pdk_error(session, ctx, 426, "Please use HTTPS protocol", &extra)
                    .await?;
            } else {
                let fwd_host = if ctx.trusted {
                    req.headers
                        .get("x-forwarded-host")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                } else {
                    None
                }
                .unwrap_or_else(|| forwarded::nginx_host(host));
                let location = format!(
                    "https://{}{}",
                    fwd_host,
                    String::from_utf8_lossy(req.raw_path())
                );
                self.respond(session, ctx, code, None, &[("Location", location)])
                    .await?;
            }
            return Ok(true);
        }
        // Kong's gRPC checks (access.before), in its order: a gRPC route
        // takes only gRPC, only over HTTP/2, and a grpcs-only one only
        // over TLS (answered the gRPC way).
        if route.grpc {
            let is_grpc = req
                .headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
            if !is_grpc || req.version != http::Version::HTTP_2 {
                plugin_rt::start_without_route(&snapshot, ctx);
                if !is_grpc {
                    self.pdk_error(
                        session,
                        ctx,
                        415,
                        "Non-gRPC request matched gRPC route",
                        &[],
                    )
                    .await?;
                } else {
                    let extra = [
                        ("Connection", "Upgrade".to_string()),
                        ("Upgrade", "HTTP/2".to_string()),
                    ];
                    self.pdk_error(session, ctx, 426, "Please use HTTP2 protocol", &extra)
                        .await?;
                }
                return Ok(true);
            }
            if route.grpcs_only && fwd_proto != "https" {
                plugin_rt::start_without_route(&snapshot, ctx);
                let extra = [
                    ("Content-Type", "application/grpc".to_string()),
                    ("grpc-status", "1".to_string()),
                    (
                        "grpc-message",
                        "gRPC request matched gRPCs route".to_string(),
                    ),
                ];
                self.respond_raw(session, ctx, 200, None, &extra).await?;
                return Ok(true);
            }
        }

        // A serviceless route still runs its plugins: Kong answers 503 after them.
        let service = route
            .service
            .and_then(|i| snapshot.services.get(i).map(|s| (i, s)));
        if let Some((service_idx, service)) = service {
            ctx.service = Some(service_idx);
            // Upstream URI: Kong's path_handling v0 on the normalized path,
            // re-escaped, with the query string forwarded verbatim. Set
            // before the plugins run, as Kong's `$upstream_uri`, so they can
            // change it.
            let stripped = if route.strip_path {
                m.matched_prefix.as_str()
            } else {
                "/"
            };
            let uri =
                router::upstream_uri_v0(&path, stripped, route.strip_path, service.path.as_deref());
            // `escape_uri` borrows when nothing needs escaping: keep `uri` then.
            let mut upstream_uri = match router::escape_uri(&uri) {
                std::borrow::Cow::Borrowed(_) => uri,
                std::borrow::Cow::Owned(escaped) => escaped,
            };
            let (_, query) = raw_path_only(req.raw_path());
            if let Some(q) = query {
                upstream_uri.push('?');
                upstream_uri.push_str(&String::from_utf8_lossy(q));
            }
            ctx.upstream_uri = upstream_uri;
            if route.strip_path && stripped != "/" && !stripped.is_empty() {
                ctx.forwarded_prefix = Some(stripped.to_string());
            }
            ctx.preserve_host = route.preserve_host;
            ctx.retries_left = service.retries;
        }
        ctx.forwarded_proto = fwd_proto;

        // Kong's access phase: the route's plugin chain, resolved when the
        // config was compiled. Routes without plugins skip all of it.
        if let Some(chain) = snapshot.plugins.route_chain(m.index) {
            plugin_rt::enter_route(ctx, chain);
            if plugin_rt::needs_body(&snapshot, chain) {
                self.read_body_for_plugins(session, ctx).await?;
            }
            if let Some(exit) = plugin_rt::access(&self.plugins, session, ctx, &snapshot).await {
                self.send_exit(session, ctx, exit).await?;
                return Ok(true);
            }
        }
        if ctx.service.is_none() {
            self.pdk_error(session, ctx, 503, MSG_NO_SERVICE, &[])
                .await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let (Some(snapshot), Some(si)) = (ctx.snapshot.clone(), ctx.service) else {
            return Error::e_explain(ErrorType::InternalError, "no service selected");
        };
        let Some(service) = snapshot.services.get(si) else {
            return Error::e_explain(ErrorType::InternalError, "service index out of range");
        };
        // Timed for the log serializer's `tries`, only when plugins run.
        let began = ctx
            .plugins
            .is_some()
            .then(|| (Instant::now(), std::time::SystemTime::now()));
        let (addr, host_name, port) = match &service.target {
            ServiceTarget::Upstream(b) => match self.pick_target(session, ctx, b).await {
                Some(picked) => picked,
                None => {
                    ctx.local_error = Some(LocalError::pdk(503, MSG_NO_PEER));
                    return Error::e_explain(ErrorType::HTTPStatus(503), MSG_NO_PEER);
                }
            },
            ServiceTarget::Host(t) => match t.resolve().await {
                Ok(a) => (a, t.host.clone(), t.port),
                Err(_) => {
                    ctx.local_error = Some(LocalError::pdk(503, MSG_NAME_RESOLUTION));
                    return Error::e_explain(ErrorType::HTTPStatus(503), MSG_NAME_RESOLUTION);
                }
            },
        };
        let now = Instant::now();
        ctx.balancer.try_start = Some(now);
        ctx.balancer.upstream_status = None;
        ctx.tries += 1;
        if ctx.upstream_start.is_none() {
            ctx.upstream_start = Some(now);
        }
        if let Some((t0, wall)) = began {
            // A stale pooled connection retried for free (no failure
            // recorded) is the same try.
            if ctx.try_log.last().is_some_and(|t| t.failure.is_none()) {
                ctx.try_log.pop();
            }
            ctx.try_log.push(ctx::TryRecord {
                start: wall,
                latency: now.saturating_duration_since(t0),
                addr,
                failure: None,
            });
        }
        ctx.upstream_addr = Some(addr);
        // Only used without `preserve_host`: an unusable value fails there.
        ctx.upstream_host = if port == service.scheme.default_port() {
            hdr::text(&host_name).ok()
        } else {
            hdr::host_port(&host_name, port).ok()
        };
        let mut peer = match &service.tls {
            Some(tls) => {
                // Kong's `proxy_ssl_name $upstream_host`: the SNI and the
                // name verified are the Host the upstream gets.
                let host = if ctx.preserve_host {
                    session.req_header().headers.get(header::HOST)
                } else {
                    ctx.upstream_host.as_ref()
                };
                let host = host.and_then(|v| v.to_str().ok()).unwrap_or("");
                let name = match upstream_tls::ssl_name(host) {
                    // No Host at all: no SNI (an IP name sends none).
                    "" => addr.ip().to_string(),
                    n => n.to_string(),
                };
                let mut peer = HttpPeer::new(addr, true, name);
                // Patched Pingora: the config compiled for these settings,
                // and a pool of their own (Kong's pool key has them too).
                peer.options.rustls_client_config = Some(tls.config.clone());
                peer.group_key = tls.group_key;
                peer
            }
            None => HttpPeer::new(addr, false, String::new()),
        };
        if service.grpc {
            // grpc: h2c with prior knowledge; grpcs: ALPN h2 (Kong's
            // `grpc_pass`). Either way only HTTP/2.
            peer.options.alpn = pingora::protocols::ALPN::H2;
        }
        peer.options.connection_timeout = Some(service.connect_timeout);
        peer.options.read_timeout = Some(service.read_timeout);
        peer.options.write_timeout = Some(service.write_timeout);
        peer.options.idle_timeout = self.options.upstream_idle_timeout;
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.try_failed(ctx, e.etype());
        // Nothing was sent: Kong (nginx proxy_next_upstream error timeout)
        // tries the next peer while retries remain.
        if ctx.retries_left > 0 {
            ctx.retries_left -= 1;
            e.set_retry(true);
        } else {
            e.set_retry(false);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if *e.esource() != ErrorSource::Upstream {
            e.set_retry(false);
            return e;
        }
        // A pooled connection the upstream had already closed is no
        // verdict on the target: Pingora retries those for free.
        let stale_pooled = client_reused && matches!(e.retry, RetryType::ReusedOnly);
        if !stale_pooled {
            self.try_failed(ctx, e.etype());
        }
        // nginx's proxy_next_upstream: only before the response header
        // arrived, never a non-idempotent request once sent, and never a
        // body that can no longer be replayed.
        let replayable = ctx.upstream_header_at.is_none()
            && session.response_written().is_none()
            && session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        if replayable && stale_pooled {
            e.set_retry(true);
        } else if replayable && ctx.retries_left > 0 {
            ctx.retries_left -= 1;
            e.set_retry(true);
        } else {
            e.set_retry(false);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        upstream.set_raw_path(ctx.upstream_uri.as_bytes())?;
        // About ten headers go in below: grow each map once, not step by step.
        upstream.try_reserve(12)?;
        // A body a plugin replaced goes out with its own length.
        if let Some(new) = ctx.plugins.as_ref().and_then(|r| r.replaced_body()) {
            upstream.remove_header(&header::TRANSFER_ENCODING);
            upstream.insert_header(header::CONTENT_LENGTH, new.len().to_string())?;
        }
        let req = session.req_header();

        // Hop-by-hop: Pingora has already removed the standard fields and
        // what the client's Connection header names; `Proxy` (httpoxy) is
        // left to us.
        let websocket = req
            .headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        upstream.remove_header(&hdr::PROXY);
        if upstream.version == http::Version::HTTP_2 {
            // No connection options in HTTP/2 (a gRPC service).
        } else if websocket {
            upstream.insert_header("Connection", "keep-alive, Upgrade")?;
            upstream.insert_header("Upgrade", "websocket")?;
        } else {
            upstream.insert_header(&hdr::known::CONNECTION, hdr::KEEP_ALIVE_VALUE.clone())?;
        }
        ctx.client_te_trailers = req
            .headers
            .get(header::TE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("trailers"));
        if ctx.client_te_trailers {
            upstream.insert_header("TE", "trailers")?;
        }

        // Pingora strips these as hop-by-hop; Kong (nginx) forwards them.
        for name in [header::PROXY_AUTHORIZATION, header::PROXY_AUTHENTICATE] {
            for v in req.headers.get_all(&name) {
                upstream.append_header(name.clone(), v.clone())?;
            }
        }

        if !ctx.preserve_host {
            // Set by `upstream_peer` for this try (one call each per try).
            match ctx.upstream_host.take() {
                Some(h) => upstream.insert_header(&hdr::known::HOST, h)?,
                None => {
                    return Error::e_explain(
                        ErrorType::InvalidHTTPHeader,
                        "invalid value while insert",
                    )
                }
            }
        }

        // A trusted client's forwarded value is passed on as sent: cloning
        // the parsed `HeaderValue` shares its bytes instead of copying them.
        let incoming = |name: &HeaderName| -> Option<HeaderValue> {
            if !ctx.trusted {
                return None;
            }
            req.headers
                .get(name)
                .filter(|v| v.to_str().is_ok())
                .cloned()
        };
        let client = match ctx.client_ip {
            Some(ip) => hdr::ip(ip)?,
            None => HeaderValue::from_static(""),
        };
        // X-Forwarded-For: the client's list (all its lines) plus the peer,
        // or just the client address when it sent none.
        let mut xff: Vec<u8> = Vec::new();
        for v in req.headers.get_all(hdr::known::X_FORWARDED_FOR.name()) {
            if let Ok(s) = v.to_str() {
                if !xff.is_empty() {
                    xff.extend_from_slice(b", ");
                }
                xff.extend_from_slice(s.as_bytes());
            }
        }
        let xff = if xff.is_empty() {
            client.clone()
        } else {
            xff.extend_from_slice(b", ");
            if let Some(ip) = ctx.peer_ip {
                hdr::push_ip(&mut xff, ip);
            }
            hdr::value(Bytes::from(xff))?
        };
        let fwd_host = match incoming(hdr::known::X_FORWARDED_HOST.name()) {
            Some(v) => v,
            None => {
                let host_hdr = req.headers.get(header::HOST).and_then(|v| v.to_str().ok());
                hdr::value(Bytes::from(forwarded::nginx_host(host_hdr)))?
            }
        };
        let fwd_port = incoming(hdr::known::X_FORWARDED_PORT.name())
            .unwrap_or_else(|| hdr::number(u64::from(ctx.host_port)));
        let fwd_path = match incoming(hdr::known::X_FORWARDED_PATH.name()) {
            Some(v) => v,
            None => {
                let (p, _) = raw_path_only(req.raw_path());
                hdr::text(&String::from_utf8_lossy(p))?
            }
        };
        let fwd_prefix = match incoming(hdr::known::X_FORWARDED_PREFIX.name()) {
            Some(v) => Some(v),
            None => match &ctx.forwarded_prefix {
                Some(p) => Some(hdr::text(p)?),
                None => None,
            },
        };
        let version = match req.version {
            http::Version::HTTP_10 => "1.0",
            http::Version::HTTP_2 => "2",
            _ => "1.1",
        };
        let via = match req.headers.get(header::VIA).filter(|v| v.to_str().is_ok()) {
            Some(v) => hdr::via_appended(v.as_bytes(), version)?,
            None => hdr::via(version),
        };

        upstream.insert_header(&hdr::known::X_FORWARDED_FOR, xff)?;
        upstream.insert_header(&hdr::known::X_FORWARDED_PROTO, ctx.forwarded_proto.clone())?;
        upstream.insert_header(&hdr::known::X_FORWARDED_HOST, fwd_host)?;
        upstream.insert_header(&hdr::known::X_FORWARDED_PORT, fwd_port)?;
        upstream.insert_header(&hdr::known::X_FORWARDED_PATH, fwd_path)?;
        match fwd_prefix {
            Some(p) => upstream.insert_header(&hdr::known::X_FORWARDED_PREFIX, p)?,
            None => {
                upstream.remove_header(hdr::known::X_FORWARDED_PREFIX.name());
            }
        }
        upstream.insert_header(&hdr::known::X_REAL_IP, client)?;
        upstream.insert_header(&hdr::known::VIA, via)?;
        if self.options.headers.upstream_request_id {
            upstream.insert_header(&hdr::known::X_KONG_REQUEST_ID, hdr::text(&ctx.request_id)?)?;
        }
        ctx.proxy_latency_ms = Some(millis(ctx.start.elapsed()));
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // client_max_body_size on an HTTP/2 body without Content-Length
        // (HTTP/1 chunked bodies are counted by the front).
        let max = self.options.client_max_body_size;
        if max > 0 && session.body_bytes_read() as u64 > max && session.as_downstream().is_http2() {
            let refused = h1_front::BodyRefused(h1_guard::Reject {
                status: 413,
                reason: "client intended to send too large body",
            });
            let e = Error::because(
                ErrorType::ReadError,
                "request body over client_max_body_size",
                std::io::Error::other(refused),
            );
            return Err(e.into_down());
        }
        let Some(run) = ctx.plugins.as_mut() else {
            return Ok(());
        };
        // A plugin's cap on the streamed body (request-size-limiting):
        // counted on what the client sent, so replays do not count twice.
        // `fail_to_proxy` answers with the plugin's exit.
        if run
            .body_limit
            .as_ref()
            .is_some_and(|(max, _)| session.body_bytes_read() as u64 > *max)
        {
            return Error::e_explain(
                ErrorType::Custom("plugin body limit"),
                "request body over a plugin's limit",
            );
        }
        if let Some(new) = run.replaced_body() {
            // The whole body was read before access: this is Pingora's
            // replay of it (on every try), which the plugins' body replaces.
            *body = Some(new.clone());
        } else if let Some(prefix) = run.pending_prefix.take() {
            let mut joined = bytes::BytesMut::from(&prefix[..]);
            if let Some(b) = body.as_ref() {
                joined.extend_from_slice(b);
            }
            *body = Some(joined.freeze());
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if let (Some(snap), true) = (ctx.snapshot.clone(), ctx.plugins.is_some()) {
            plugin_rt::body_filter(&self.plugins, session, ctx, &snap, body, end_of_stream);
            if plugin_rt::header_exited(ctx) {
                // Answered in header_filter with `Content-Length: 0`.
                *body = None;
            }
        }
        Ok(None)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if ctx.upstream_header_at.is_none() {
            ctx.upstream_header_at = Some(Instant::now());
        }
        ctx.balancer.upstream_status = Some(_upstream_response.status.as_u16());
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.proxied = true;
        self.close_if_draining(session);
        let h = self.options.headers;
        // Kong's own headers go in below: grow each map once.
        resp.try_reserve(8)?;
        if resp.status != http::StatusCode::SWITCHING_PROTOCOLS {
            for n in connection_listed(&resp.headers) {
                resp.remove_header(&n);
            }
            resp.remove_header(&header::CONNECTION);
            resp.remove_header(&hdr::KEEP_ALIVE);
            resp.remove_header(&header::UPGRADE);
        } else {
            // A tunnel: nginx sets no client read timer on an upgraded
            // connection (`ngx_http_upstream_process_upgraded`), only the
            // upstream's read_timeout bounds it, not client_body_timeout.
            session.set_read_timeout(None);
        }
        if !ctx.client_te_trailers {
            resp.remove_header(&header::TRAILER);
        }
        // Kong's header_filter: plugins, then Kong's own headers.
        if let (Some(snap), true) = (ctx.snapshot.clone(), ctx.plugins.is_some()) {
            plugin_rt::header_filter(&self.plugins, session, ctx, &snap, resp);
            if plugin_rt::header_exited(ctx) {
                // A plugin's `kong.response.exit` ended Kong's header_filter
                // (`ngx.exit(ngx.OK)`): what `header_filter.before` set
                // stays (the upstream's status, the hash cookie), none of
                // `.after`'s headers (latencies, Via, Server, request id).
                if h.upstream_status {
                    if let Some(s) = ctx.balancer.upstream_status {
                        resp.insert_header(
                            &hdr::known::X_KONG_UPSTREAM_STATUS,
                            hdr::number(u64::from(s)),
                        )?;
                    }
                }
                if let Some(cookie) = &ctx.balancer.set_cookie {
                    resp.append_header(header::SET_COOKIE, cookie.as_str())?;
                }
                return Ok(());
            }
            chunk_if_unframed(session, resp)?;
        }
        if h.upstream_status {
            let status = hdr::number(u64::from(resp.status.as_u16()));
            resp.insert_header(&hdr::known::X_KONG_UPSTREAM_STATUS, status)?;
        }
        if h.upstream_latency {
            let waited = match (ctx.upstream_start, ctx.upstream_header_at) {
                (Some(a), Some(b)) => millis(b.saturating_duration_since(a)),
                _ => 0,
            };
            resp.insert_header(&hdr::known::X_KONG_UPSTREAM_LATENCY, hdr::number(waited))?;
        }
        if h.proxy_latency {
            resp.insert_header(
                &hdr::known::X_KONG_PROXY_LATENCY,
                hdr::number(ctx.proxy_latency_ms.unwrap_or(0)),
            )?;
        }
        if h.via {
            // Kong: the HTTP version spoken to the upstream (2 for gRPC).
            let grpc = ctx
                .service
                .and_then(|i| ctx.snapshot.as_ref()?.services.get(i).map(|s| s.grpc))
                .unwrap_or(false);
            let version = if grpc { "2" } else { "1.1" };
            let via = match resp.headers.get(header::VIA).filter(|v| v.to_str().is_ok()) {
                Some(v) => hdr::via_appended(v.as_bytes(), version)?,
                None => hdr::via(version),
            };
            resp.insert_header(&hdr::known::VIA, via)?;
        }
        if h.server && !resp.headers.contains_key(header::SERVER) {
            resp.insert_header(&hdr::known::SERVER, hdr::SERVER.clone())?;
        }
        if h.request_id {
            resp.insert_header(&hdr::known::X_KONG_REQUEST_ID, hdr::text(&ctx.request_id)?)?;
        }
        if ctx.debug_header {
            self.add_debug_headers(resp, ctx);
        }
        if let Some(cookie) = &ctx.balancer.set_cookie {
            resp.append_header(header::SET_COOKIE, cookie.as_str())?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy
    where
        Self::CTX: Send + Sync,
    {
        let already_sent = session.response_written().is_some();
        // The body passed a plugin's cap while it streamed: Kong's plugin
        // read the whole body before proxying and answered with its exit,
        // so this is answered as never proxied.
        let over_limit = ctx.plugins.as_mut().and_then(|run| {
            let over = run
                .body_limit
                .as_ref()
                .is_some_and(|(max, _)| session.body_bytes_read() as u64 > *max);
            if over {
                run.body_limit.take().map(|(_, exit)| exit)
            } else {
                None
            }
        });
        if let Some(exit) = over_limit {
            let status = exit.status;
            ctx.tries = 0;
            if !already_sent {
                session.set_keepalive(None);
                if let Err(err) = self.send_exit(session, ctx, exit).await {
                    log::debug!("failed to send error response: {err}");
                }
            }
            return FailToProxy {
                error_code: status,
                can_reuse_downstream: false,
            };
        }
        // The front refused the body while it was being read (bad chunked
        // framing, too large): nginx's 400 or 413.
        let client_fault = h1_front::request_body_refusal(e).or_else(|| {
            (*e.esource() == ErrorSource::Downstream && *e.etype() == ErrorType::ReadTimedout)
                .then_some(h1_guard::Reject {
                    status: 408,
                    reason: "client timed out sending the request body",
                })
        });
        if let Some(r) = client_fault {
            log::info!("refused request body: {}", r.reason);
            // Kong reads a body before it tries the upstream (request
            // buffering), so it answers these as never proxied.
            ctx.tries = 0;
            if !already_sent {
                session.set_keepalive(None);
                if let Err(err) = self.nginx_error(session, ctx, r.status).await {
                    log::debug!("failed to send error response: {err}");
                }
            }
            return FailToProxy {
                error_code: r.status,
                can_reuse_downstream: false,
            };
        }
        let code = if let Some(le) = ctx.local_error.take() {
            if !already_sent {
                if let Err(err) = self
                    .pdk_error(session, ctx, le.status, le.message, &[])
                    .await
                {
                    log::debug!("failed to send error response: {err}");
                }
            }
            le.status
        } else {
            let status = match (e.esource(), e.etype()) {
                (_, ErrorType::HTTPStatus(code)) => *code,
                (ErrorSource::Upstream, ErrorType::ConnectTimedout)
                | (ErrorSource::Upstream, ErrorType::ReadTimedout)
                | (ErrorSource::Upstream, ErrorType::WriteTimedout) => 504,
                (ErrorSource::Upstream, _) => 502,
                (
                    ErrorSource::Downstream,
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
                ) => 0,
                (ErrorSource::Downstream, _) => 400,
                (ErrorSource::Internal | ErrorSource::Unset, ErrorType::ConnectTimedout) => 504,
                (ErrorSource::Internal | ErrorSource::Unset, ErrorType::ConnectRefused) => 502,
                _ => 500,
            };
            if status > 0 && !already_sent {
                if let Err(err) = self.nginx_error(session, ctx, status).await {
                    log::debug!("failed to send error response: {err}");
                }
            }
            status
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        self.balancer_done(ctx);
        if ctx.counted_in_flight {
            self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(log) = &self.access_log {
            log.record(session, ctx);
        }
        if let (Some(snap), true) = (ctx.snapshot.clone(), ctx.plugins.is_some()) {
            plugin_rt::log(&self.plugins, session, ctx, &snap);
        }
    }
}
