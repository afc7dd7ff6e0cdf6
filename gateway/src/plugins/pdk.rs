//! The facade plugins see of a request: the parts of Kong's PDK (`kong.request`,
//! `kong.service.request`, `kong.response`, `kong.client`, `kong.ctx`,
//! `kong.log`) that the bundled plugins use. Plugins reach the request only
//! through it, never into listeners, the balancer or Pingora's session.

use std::any::Any;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderName;
use http::{HeaderMap, HeaderValue, Method};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde_json::Value;

use super::consumers::{ConsumerDb, ConsumerRt, CredentialRef, CredentialRt};
use super::runtime::{Compiled, PluginEnv};
use crate::metrics::RequestSample;
use crate::proxy::RequestCtx;
use crate::snapshot::{RouteRt, ServiceRt, Snapshot};

/// A response a plugin answers with instead of the upstream
/// (`kong.response.exit` / `kong.response.error`).
#[derive(Debug, Clone)]
pub struct Exit {
    pub status: u16,
    pub body: ExitBody,
    /// In order; a name given more than once sends every value (Kong: a
    /// table value, `{ ["Set-Cookie"] = { a, b } }`).
    pub headers: Vec<(String, String)>,
    /// Kong's `ngx.ctx.KONG_PROXIED = true` before the exit (proxy-cache's
    /// hit): Kong's header_filter then adds the proxied set (`Via`,
    /// `X-Kong-Upstream-Latency`, `X-Kong-Proxy-Latency`) instead of
    /// `X-Kong-Response-Latency`, and keeps a `Server` the exit carries.
    pub proxied: bool,
}

#[derive(Debug, Clone)]
pub enum ExitBody {
    /// No body.
    Empty,
    /// `exit(status, table)`: JSON with `Content-Type: application/json;
    /// charset=utf-8`, no `request_id`.
    Json(Value),
    /// `exit(status, string)`: as is; the content type comes from the
    /// headers, if any.
    Raw(Bytes),
    /// `error(status, message)`: Kong's error template in the negotiated
    /// type, with `request_id`.
    Error(String),
}

impl Exit {
    /// `kong.response.exit(status)`.
    pub fn status(status: u16) -> Exit {
        Exit {
            status,
            body: ExitBody::Empty,
            headers: Vec::new(),
            proxied: false,
        }
    }

    /// `kong.response.exit(status, { message = message })`.
    pub fn message(status: u16, message: impl Into<String>) -> Exit {
        Exit::json(status, serde_json::json!({ "message": message.into() }))
    }

    pub fn json(status: u16, body: Value) -> Exit {
        Exit {
            status,
            body: ExitBody::Json(body),
            headers: Vec::new(),
            proxied: false,
        }
    }

    pub fn raw(status: u16, body: impl Into<Bytes>) -> Exit {
        Exit {
            status,
            body: ExitBody::Raw(body.into()),
            headers: Vec::new(),
            proxied: false,
        }
    }

    /// `kong.response.error(status, message)`.
    pub fn error(status: u16, message: impl Into<String>) -> Exit {
        Exit {
            status,
            body: ExitBody::Error(message.into()),
            headers: Vec::new(),
            proxied: false,
        }
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Exit {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Answer as the service would have (see [`Exit::proxied`]).
    pub fn as_proxied(mut self) -> Exit {
        self.proxied = true;
        self
    }
}

/// A query argument as Kong's `kong.request.get_query()` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryArg {
    /// `?flag` (Lua `true`).
    Flag,
    One(String),
    /// Repeated.
    Many(Vec<String>),
}

/// One phase call of one plugin instance on one request.
pub struct Kong<'a> {
    env: &'a PluginEnv,
    session: &'a mut Session,
    ctx: &'a mut RequestCtx,
    snap: &'a Arc<Snapshot>,
    instance: u32,
    slot: usize,
}

impl<'a> Kong<'a> {
    pub(crate) fn new(
        env: &'a PluginEnv,
        session: &'a mut Session,
        ctx: &'a mut RequestCtx,
        snap: &'a Arc<Snapshot>,
        instance: u32,
        slot: usize,
    ) -> Kong<'a> {
        Kong {
            env,
            session,
            ctx,
            snap,
            instance,
            slot,
        }
    }

    // -- the running instance and the process -------------------------------

    /// The instance being run.
    pub fn instance(&self) -> &Compiled {
        &self.snap.plugins.instances[self.instance as usize]
    }

    pub fn env(&self) -> &PluginEnv {
        self.env
    }

    /// `kong.node.get_id()`.
    pub fn node_id(&self) -> &str {
        self.env.metrics.node_id()
    }

    /// Per-request state of this instance (created on first use).
    pub fn state<T: Any + Send + Sync + Default>(&mut self) -> &mut T {
        let Some(run) = self.ctx.plugins.as_mut() else {
            // Phases only run with a plugin run; this cannot happen.
            unreachable!("plugin phase without a plugin run")
        };
        if run.state.len() <= self.slot {
            run.state.resize_with(self.slot + 1, || None);
        }
        let slot = &mut run.state[self.slot];
        if !slot.as_ref().is_some_and(|b| b.is::<T>()) {
            *slot = Some(Box::new(T::default()));
        }
        match slot.as_mut().and_then(|b| b.downcast_mut::<T>()) {
            Some(t) => t,
            None => unreachable!("state slot holds the type just stored"),
        }
    }

    // -- kong.request ---------------------------------------------------------

    pub fn method(&self) -> &Method {
        &self.session.req_header().method
    }

    /// The request's HTTP version (of nginx's `$request` line).
    pub fn request_version(&self) -> http::Version {
        self.session.req_header().version
    }

    /// The request target as sent (path and query).
    pub fn raw_target(&self) -> String {
        String::from_utf8_lossy(self.session.req_header().raw_path()).into_owned()
    }

    /// `kong.request.get_path()`: the normalized path, without the query.
    pub fn path(&self) -> String {
        let raw = self.session.req_header().raw_path();
        let path = raw.split(|&b| b == b'?').next().unwrap_or_default();
        crate::router::normalize_path(&String::from_utf8_lossy(path)).into_owned()
    }

    /// `kong.request.get_raw_query()`.
    pub fn raw_query(&self) -> String {
        let raw = self.session.req_header().raw_path();
        match raw.iter().position(|&b| b == b'?') {
            Some(i) => String::from_utf8_lossy(&raw[i + 1..]).into_owned(),
            None => String::new(),
        }
    }

    /// `kong.request.get_query_arg(name)`, decoded.
    pub fn query_arg(&self, name: &str) -> Option<QueryArg> {
        let q = self.raw_query();
        let mut found: Vec<Option<String>> = Vec::new();
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = match pair.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (pair, None),
            };
            if decode(k) == name {
                found.push(v.map(decode));
            }
        }
        match found.len() {
            0 => None,
            1 => Some(match found.pop().flatten() {
                Some(v) => QueryArg::One(v),
                None => QueryArg::Flag,
            }),
            _ => Some(QueryArg::Many(
                found.into_iter().map(Option::unwrap_or_default).collect(),
            )),
        }
    }

    /// The request headers as the client sent them.
    pub fn headers(&self) -> &HeaderMap {
        &self.session.req_header().headers
    }

    /// `kong.request.get_header(name)`: the first value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers().get(name).and_then(|v| v.to_str().ok())
    }

    /// `kong.client.get_forwarded_ip()`: the client address after
    /// `trusted_ips` / `real_ip_header`.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.ctx.client_ip
    }

    /// `kong.client.get_ip()`: the peer's address.
    pub fn peer_ip(&self) -> Option<IpAddr> {
        self.ctx.peer_ip
    }

    /// `kong.request.get_forwarded_scheme()`.
    pub fn forwarded_scheme(&self) -> &str {
        self.ctx.forwarded_proto.to_str().unwrap_or("http")
    }

    /// `kong.request.get_scheme()` (nginx's `$scheme`).
    pub fn scheme(&self) -> &'static str {
        let tls = self
            .session
            .as_downstream()
            .digest()
            .is_some_and(|d| d.ssl_digest.is_some());
        if tls {
            "https"
        } else {
            "http"
        }
    }

    /// nginx's `$server_addr` / `$server_port`: where the client connected.
    pub fn server_addr(&self) -> Option<std::net::SocketAddr> {
        match self.session.as_downstream().server_addr()? {
            pingora::protocols::l4::socket::SocketAddr::Inet(sa) => Some(*sa),
            _ => None,
        }
    }

    /// nginx's `$connection` / `$connection_requests`, as correlation-id's
    /// tracker reads them: the client connection's kernel socket cookie
    /// (unique while the host runs) and a per-connection count that each
    /// call advances.
    pub fn count_connection_request(&self) -> Option<(u64, usize)> {
        let digest = self.session.as_downstream().digest()?;
        let socket = digest.socket_digest.as_ref()?;
        Some((socket.socket_cookie().unwrap_or(0), socket.count_request()))
    }

    /// Caps a request body that streams to the upstream (one too large to
    /// read before access): once more than `max` bytes came from the
    /// client, the request fails with `exit` (sent if no response started).
    /// `Err(exit)` at once when more than `max` were read already.
    pub fn limit_request_body(&mut self, max: u64, exit: Exit) -> Result<(), Exit> {
        if self.session.body_bytes_read() as u64 > max {
            return Err(exit);
        }
        if let Some(run) = self.ctx.plugins.as_mut() {
            run.body_limit = Some((max, exit));
        }
        Ok(())
    }

    /// The request body, when a plugin of this request asked for it
    /// ([`super::Plugin::needs_request_body`]) and it fitted in
    /// `client_body_buffer_size` (Kong: `nil` for a body in a temp file).
    pub fn request_body(&self) -> Option<&Bytes> {
        self.ctx.plugins.as_ref()?.request_body.as_ref()
    }

    /// `kong.request.get_id()`.
    pub fn request_id(&self) -> &str {
        &self.ctx.request_id
    }

    /// Regex captures of the matched route.
    pub fn uri_captures(&self) -> &[(Option<String>, String)] {
        &self.ctx.uri_captures
    }

    // -- kong.service.request (what goes upstream) ----------------------------

    /// `kong.service.request.set_header`.
    pub fn set_upstream_header(&mut self, name: &str, value: &str) {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            let _ = self.session.req_header_mut().insert_header(n, v);
        }
    }

    /// `kong.service.request.add_header`.
    pub fn add_upstream_header(&mut self, name: &str, value: &str) {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            let _ = self.session.req_header_mut().append_header(n, v);
        }
    }

    /// `kong.service.request.clear_header`.
    pub fn clear_upstream_header(&mut self, name: &str) {
        self.session.req_header_mut().remove_header(name);
    }

    /// `kong.service.request.set_header(name, value)` with a string or an
    /// array, as nginx applies it: the first line keeps the name as the
    /// client spelled it (nginx replaces it in place), new lines take
    /// `name` as given, `""` is sent as `" "` (`normalize_multi_header`),
    /// an empty array removes the header, and `host` also becomes the
    /// upstream Host (Kong's `upstream_host`, as `preserve_host` would).
    pub fn set_upstream_header_values(&mut self, name: &str, values: &[String]) {
        let Ok(hname) = HeaderName::from_bytes(name.as_bytes()) else {
            return;
        };
        let req = self.session.req_header_mut();
        let spelled = req
            .case_header_iter()
            .find(|(k, _)| k.as_slice().eq_ignore_ascii_case(name.as_bytes()))
            .map(|(k, _)| String::from_utf8_lossy(k.as_slice()).into_owned());
        req.remove_header(&hname);
        for (i, v) in values.iter().enumerate() {
            let v = if v.is_empty() { " " } else { v.as_str() };
            let Ok(hv) = HeaderValue::from_str(v) else {
                continue;
            };
            let n = match (&spelled, i) {
                (Some(s), 0) => s.clone(),
                _ => name.to_string(),
            };
            let _ = req.append_header(n, hv);
        }
        if hname == http::header::HOST && !values.is_empty() {
            self.ctx.preserve_host = true;
        }
    }

    /// The path and query the upstream gets (Kong's `$upstream_uri`).
    pub fn upstream_uri(&self) -> &str {
        &self.ctx.upstream_uri
    }

    /// `kong.service.request.set_path` / `set_raw_query`: replaces
    /// `$upstream_uri` as a whole (path plus optional `?query`).
    pub fn set_upstream_uri(&mut self, uri: String) {
        self.ctx.upstream_uri = uri;
    }

    /// `kong.service.request.set_raw_body`: the upstream gets this body
    /// (with a matching `Content-Length`) instead of the client's.
    pub fn set_upstream_body(&mut self, body: Bytes) {
        if let Some(run) = self.ctx.plugins.as_mut() {
            run.new_body = Some(body);
        }
    }

    /// `kong.service.request.set_method`.
    pub fn set_upstream_method(&mut self, method: Method) {
        self.session.req_header_mut().set_method(method);
    }

    // -- kong.response ---------------------------------------------------------

    /// `kong.response.set_header` in access: set on whatever response goes out.
    pub fn set_response_header(&mut self, name: &str, value: &str) {
        self.response_header(name, value, false);
    }

    /// `kong.response.add_header` in access.
    pub fn add_response_header(&mut self, name: &str, value: &str) {
        self.response_header(name, value, true);
    }

    fn response_header(&mut self, name: &str, value: &str, append: bool) {
        let (Ok(_), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            return;
        };
        if let Some(run) = self.ctx.plugins.as_mut() {
            if !append {
                run.response_headers
                    .retain(|(k, _, _)| !k.eq_ignore_ascii_case(name));
            }
            // As spelled: nginx sends `ngx.header` names as given.
            run.response_headers.push((name.to_string(), v, append));
        }
    }

    /// `kong.response.exit(status)` (no body, no headers) in header_filter:
    /// the response goes out with `status`, `Content-Length: 0` and none of
    /// the upstream's body; the later plugins' header_filter and Kong's own
    /// `header_filter.after` headers are skipped, as `send`'s
    /// `ngx.exit(ngx.OK)` ends Kong's header_filter there
    /// (`kong/pdk/response.lua` 739-807), and the response counts as Kong's
    /// (`KONG_EXITED`: `source` is no longer the service).
    pub fn exit_header_filter(&mut self, resp: &mut ResponseHeader, status: u16) {
        if resp.set_status(status).is_err() {
            return;
        }
        let _ = resp.set_reason_phrase(None);
        resp.remove_header(&http::header::TRANSFER_ENCODING);
        let _ = resp.insert_header(http::header::CONTENT_LENGTH, "0");
        self.ctx.proxied = false;
        if let Some(run) = self.ctx.plugins.as_mut() {
            run.header_exit = true;
            run.exited = true;
        }
    }

    /// Status of the response going out (header_filter and later).
    pub fn response_status(&self) -> Option<u16> {
        self.session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(self.ctx.kong_status)
    }

    /// `kong.response.get_source()`: the upstream answered (`service`), or
    /// Kong did (`kong`; exits and errors).
    pub fn response_from_service(&self) -> bool {
        self.ctx.proxied
    }

    /// The response head as sent to the client (log phase): what
    /// `ngx.resp.get_headers()` reads.
    pub fn response_written(&self) -> Option<&ResponseHeader> {
        self.session.response_written()
    }

    /// nginx's `$remote_addr`: the client address after `trusted_ips` /
    /// `real_ip_header`, or the peer's when the request ended before that
    /// was decided (no route matched).
    pub fn remote_addr(&self) -> Option<IpAddr> {
        self.ctx.client_ip.or(self.ctx.peer_ip).or_else(|| {
            match self.session.as_downstream().client_addr()? {
                pingora::protocols::l4::socket::SocketAddr::Inet(sa) => Some(sa.ip()),
                _ => None,
            }
        })
    }

    // -- routing ---------------------------------------------------------------

    pub fn route(&self) -> Option<&RouteRt> {
        self.snap.routes.get(self.ctx.route?)
    }

    pub fn service(&self) -> Option<&ServiceRt> {
        self.snap.services.get(self.ctx.service?)
    }

    // -- kong.client: consumers and credentials -------------------------------

    pub fn consumers(&self) -> &ConsumerDb {
        &self.snap.consumers
    }

    /// `kong.client.get_consumer()`.
    pub fn consumer(&self) -> Option<&ConsumerRt> {
        let i = self.ctx.plugins.as_ref()?.consumer?;
        self.snap.consumers.get(i)
    }

    /// The consumer's index in [`Kong::consumers`].
    pub fn consumer_index(&self) -> Option<u32> {
        self.ctx.plugins.as_ref()?.consumer
    }

    /// `kong.client.get_credential()`.
    pub fn credential(&self) -> Option<&CredentialRt> {
        let r = self.ctx.plugins.as_ref()?.credential?;
        self.snap.consumers.credential(r)
    }

    pub fn credential_ref(&self) -> Option<CredentialRef> {
        self.ctx.plugins.as_ref()?.credential
    }

    /// `kong.client.authenticate(consumer, credential)`.
    pub fn authenticate(&mut self, consumer: Option<u32>, credential: Option<CredentialRef>) {
        if let Some(run) = self.ctx.plugins.as_mut() {
            run.consumer = consumer;
            run.credential = credential;
        }
    }

    /// `ctx.authenticated_groups`.
    pub fn authenticated_groups(&self) -> Option<&[String]> {
        self.ctx.plugins.as_ref()?.authenticated_groups.as_deref()
    }

    pub fn set_authenticated_groups(&mut self, groups: Option<Vec<String>>) {
        if let Some(run) = self.ctx.plugins.as_mut() {
            run.authenticated_groups = groups;
        }
    }

    // -- kong.ctx.shared and kong.log -----------------------------------------

    /// `kong.ctx.shared`.
    pub fn shared(&mut self) -> &mut std::collections::HashMap<String, Value> {
        match self.ctx.plugins.as_mut() {
            Some(run) => &mut run.shared,
            None => unreachable!("plugin phase without a plugin run"),
        }
    }

    /// `kong.log.set_serialize_value(key, value)` (dotted keys nest).
    pub fn set_serialize_value(&mut self, key: &str, value: Value) {
        let Some(run) = self.ctx.plugins.as_mut() else {
            return;
        };
        let mut parts: Vec<&str> = key.split('.').collect();
        let Some(last) = parts.pop() else { return };
        let mut map = &mut run.serialize;
        for p in parts {
            let entry = map
                .entry(p.to_string())
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(serde_json::Map::new());
            }
            map = match entry.as_object_mut() {
                Some(m) => m,
                None => return,
            };
        }
        map.insert(last.to_string(), value);
    }

    /// The values set with [`Kong::set_serialize_value`].
    pub fn serialize_values(&self) -> Option<&serde_json::Map<String, Value>> {
        self.ctx.plugins.as_ref().map(|r| &r.serialize)
    }

    /// What the log phase knows about the request, in Kong's units (for
    /// metrics). Approximations: body bytes are counted as decoded (chunk
    /// framing is not counted), and the response head size is recomputed
    /// from the header sent.
    pub fn sample(&self) -> RequestSample {
        let now = Instant::now();
        let ctx = &*self.ctx;
        let written = self.session.response_written();
        // Nothing written and no status of our own: the client went away
        // (nginx logs 499).
        let status = written
            .map(|r| r.status.as_u16())
            .or(ctx.kong_status)
            .unwrap_or(499);
        let proxied = ctx.tries > 0;
        let kong_ms = if proxied {
            ctx.proxy_latency_ms
                .or_else(|| {
                    ctx.upstream_start
                        .map(|t| ms(t.saturating_duration_since(ctx.start)))
                })
                .unwrap_or(0)
        } else {
            ms(now.saturating_duration_since(ctx.start))
        };
        let upstream_ms = match (proxied, ctx.upstream_start) {
            (true, Some(a)) => {
                let b = ctx.upstream_header_at.unwrap_or(now);
                Some(ms(b.saturating_duration_since(a)))
            }
            _ => None,
        };
        let head_in = self
            .session
            .as_downstream()
            .as_http1()
            .map_or(0, |h| h.get_headers_raw_bytes().len());
        let ingress = (head_in + self.session.body_bytes_read()) as u64;
        let egress = written.map_or(0, response_head_len) + self.session.body_bytes_sent() as u64;
        RequestSample {
            status,
            from_service: ctx.proxied,
            kong_ms,
            upstream_ms,
            request_ms: ms(now.saturating_duration_since(ctx.start)),
            ingress_bytes: ingress,
            egress_bytes: egress,
        }
    }

    /// The request context (for the log serializer and metrics).
    pub(crate) fn ctx(&self) -> &RequestCtx {
        self.ctx
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Size of a response head as nginx writes it (status line, headers, CRLF).
fn response_head_len(resp: &pingora::http::ResponseHeader) -> u64 {
    // "HTTP/1.1 200 " + reason + CRLF
    let reason = resp.status.canonical_reason().map_or(0, str::len);
    let mut n = 13 + reason + 2;
    for (name, value) in resp.headers.iter() {
        n += name.as_str().len() + 2 + value.len() + 2;
    }
    (n + 2) as u64
}

/// Percent-decodes a query component (`+` is a space, as nginx's args).
fn decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn response_head_len_counts_status_line_and_headers() {
        let mut r = pingora::http::ResponseHeader::build(200, None).unwrap();
        r.insert_header("Content-Length", "2").unwrap();
        // "HTTP/1.1 200 OK\r\n" + "content-length: 2\r\n" + "\r\n"
        assert_eq!(response_head_len(&r), 17 + 19 + 2);
    }

    #[test]
    fn query_components_decode_like_nginx_args() {
        assert_eq!(decode("a+b%20c"), "a b c");
        assert_eq!(decode("%zz"), "%zz");
    }
}
