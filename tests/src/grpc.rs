//! A gRPC echo server and client for the gateway's gRPC specs and the gRPC
//! load benchmark, with tonic but without protoc: the messages derive
//! `prost::Message` by hand and the service plumbing is what tonic's code
//! generator would write (a `tower_service::Service` matching the path and
//! calling `tonic::server::Grpc`; `tonic::client::Grpc` on the client side).
//! The transport is hyper's own HTTP/2, so tonic needs none of its optional
//! features: h2c (prior knowledge) or h2 over TLS (ALPN `h2`, the
//! certificate not checked), with any `:authority`.
//!
//! The service, `grpc.test.Echo` ([`ECHO_PROTO`] is its schema):
//!
//! | method | path | kind |
//! |---|---|---|
//! | `Unary` | [`UNARY`] | `EchoRequest -> EchoReply` |
//! | `ServerStream` | [`SERVER_STREAM`] | `EchoRequest -> stream EchoReply` |
//! | `ClientStream` | [`CLIENT_STREAM`] | `stream EchoRequest -> EchoReply` |
//! | `Bidi` | [`BIDI`] | `stream EchoRequest -> stream EchoReply` |
//!
//! What an [`EchoRequest`] asks for:
//! - `message`: echoed back (`ClientStream`: all of them concatenated);
//! - `delay_ms`: sleep first (`ServerStream`: before each reply; for
//!   timeout specs);
//! - `fail_code` / `fail_message`: end the call with that gRPC status
//!   (`Unary`: instead of the reply, as a trailers-only response;
//!   `ServerStream`: after the `count` replies; `Bidi`: at that message);
//! - `trailer`: sent back as the trailing metadata entry [`TRAILER_KEY`]
//!   (also on an error status), so specs can see trailers get through;
//! - `count`: how many replies `ServerStream` sends (at least one).
//!
//! Each reply (the first one of a stream) carries in `metadata` every
//! request header the server received plus the pseudo-headers
//! `:authority`, `:scheme`, `:method` and `:path`; repeated headers are
//! joined with ", ".
//!
//! Servers: [`spawn_echo_server`] (h2c), [`spawn_echo_server_tls`] (h2 over
//! TLS), or [`EchoServer`] for synchronous specs (it owns its runtime).
//! Clients: [`Client`] (async, one h2 connection, cheap to clone: clones
//! multiplex on it), [`BlockingClient`] for synchronous specs, and the
//! one-shot [`unary`].
//!
//! Setup and calls report errors (`io::Error`, `tonic::Status`) rather than
//! panicking: the `grpc-echo` and `grpc-load` binaries use this module too.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use http::uri::{PathAndQuery, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::body::Body as GrpcBody;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

/// The service's full name.
pub const SERVICE: &str = "grpc.test.Echo";
pub const UNARY: &str = "/grpc.test.Echo/Unary";
pub const SERVER_STREAM: &str = "/grpc.test.Echo/ServerStream";
pub const CLIENT_STREAM: &str = "/grpc.test.Echo/ClientStream";
pub const BIDI: &str = "/grpc.test.Echo/Bidi";
/// The trailing metadata key an [`EchoRequest::trailer`] comes back in.
pub const TRAILER_KEY: &str = "x-echo-trailer";
/// The `user-agent` the client sends unless the call's metadata has one.
pub const USER_AGENT: &str = "gw-tests-grpc/0.1";

/// The schema the hand-written messages implement (for grpcurl and other
/// tools; nothing here compiles it).
pub const ECHO_PROTO: &str = r#"syntax = "proto3";
package grpc.test;

service Echo {
  rpc Unary(EchoRequest) returns (EchoReply);
  rpc ServerStream(EchoRequest) returns (stream EchoReply);
  rpc ClientStream(stream EchoRequest) returns (EchoReply);
  rpc Bidi(stream EchoRequest) returns (stream EchoReply);
}

message EchoRequest {
  string message = 1;
  uint32 delay_ms = 2;
  int32 fail_code = 3;
  string fail_message = 4;
  string trailer = 5;
  uint32 count = 6;
}

message EchoReply {
  string message = 1;
  map<string, string> metadata = 2;
  uint32 count = 3;
  uint32 index = 4;
}
"#;

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(uint32, tag = "2")]
    pub delay_ms: u32,
    #[prost(int32, tag = "3")]
    pub fail_code: i32,
    #[prost(string, tag = "4")]
    pub fail_message: String,
    #[prost(string, tag = "5")]
    pub trailer: String,
    #[prost(uint32, tag = "6")]
    pub count: u32,
}

impl EchoRequest {
    /// A request that only carries `message`.
    pub fn new(message: &str) -> EchoRequest {
        EchoRequest {
            message: message.to_string(),
            ..EchoRequest::default()
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub message: String,
    /// Request headers as the server saw them (see the module docs).
    #[prost(btree_map = "string, string", tag = "2")]
    pub metadata: BTreeMap<String, String>,
    /// `ClientStream`: messages received; streams: replies so far.
    #[prost(uint32, tag = "3")]
    pub count: u32,
    /// Position of this reply in a stream (0-based).
    #[prost(uint32, tag = "4")]
    pub index: u32,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send + 'static>>;
type Seen = BTreeMap<String, String>;

// ---------------------------------------------------------------------------
// Server.

/// The echo service as tonic's generated server code would be: routes by
/// path, unknown paths answer `UNIMPLEMENTED`. Serve it with hyper's h2
/// server (as [`spawn_echo_server`] does) or tonic's own.
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoService;

impl<B> tower_service::Service<http::Request<B>> for EchoService
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send + 'static,
{
    type Response = http::Response<GrpcBody>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let seen = seen_headers(&req);
        let path = req.uri().path().to_string();
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(ProstCodec::<EchoReply, EchoRequest>::default());
            // Unary and ClientStream go through the streaming entry points
            // (same frames on the wire) because tonic's unary ones cannot
            // add trailing metadata to a successful response.
            let resp = match path.as_str() {
                UNARY => grpc.server_streaming(UnarySvc(seen), req).await,
                SERVER_STREAM => grpc.server_streaming(ServerStreamSvc(seen), req).await,
                CLIENT_STREAM => grpc.streaming(ClientStreamSvc(seen), req).await,
                BIDI => grpc.streaming(BidiSvc(seen), req).await,
                _ => Status::unimplemented(format!("no method {path}")).into_http(),
            };
            Ok(resp)
        })
    }
}

fn seen_headers<B>(req: &http::Request<B>) -> Seen {
    let mut seen = Seen::new();
    if let Some(a) = req.uri().authority() {
        seen.insert(":authority".into(), a.to_string());
    }
    if let Some(s) = req.uri().scheme_str() {
        seen.insert(":scheme".into(), s.to_string());
    }
    seen.insert(":method".into(), req.method().to_string());
    if let Some(p) = req.uri().path_and_query() {
        seen.insert(":path".into(), p.to_string());
    }
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        seen.entry(k.as_str().to_string())
            .and_modify(|old| {
                old.push_str(", ");
                old.push_str(&v);
            })
            .or_insert(v);
    }
    seen
}

/// The metadata carrying `trailer` (empty when there is none; a value that
/// is no valid header value is left out).
fn trailer_metadata(trailer: &str) -> MetadataMap {
    let mut md = MetadataMap::new();
    if !trailer.is_empty() {
        if let Ok(v) = MetadataValue::try_from(trailer) {
            md.insert(TRAILER_KEY, v);
        }
    }
    md
}

/// How a call that asked for `fail_code`/`trailer` ends: an error status,
/// or (trailer only) an OK status with metadata, which tonic's encoder
/// writes as the trailers; `None`: plain OK.
fn end_status(fail_code: i32, fail_message: &str, trailer: &str) -> Option<Status> {
    let md = trailer_metadata(trailer);
    if fail_code != 0 {
        return Some(Status::with_metadata(
            Code::from(fail_code),
            fail_message,
            md,
        ));
    }
    if md.is_empty() {
        return None;
    }
    Some(Status::with_metadata(Code::Ok, "", md))
}

fn ending(
    replies: impl Stream<Item = Result<EchoReply, Status>> + Send + 'static,
    end: Option<Status>,
) -> ReplyStream {
    Box::pin(replies.chain(stream::iter(end.map(Err))))
}

async fn sleep_ms(ms: u32) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
    }
}

struct UnarySvc(Seen);

impl tower_service::Service<Request<EchoRequest>> for UnarySvc {
    type Response = Response<ReplyStream>;
    type Error = Status;
    type Future = BoxFuture<Result<Self::Response, Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
        let seen = std::mem::take(&mut self.0);
        Box::pin(async move {
            let req = req.into_inner();
            sleep_ms(req.delay_ms).await;
            let end = end_status(req.fail_code, &req.fail_message, &req.trailer);
            if let Some(status) = end.as_ref().filter(|s| s.code() != Code::Ok) {
                return Err(status.clone());
            }
            let reply = EchoReply {
                message: req.message,
                metadata: seen,
                count: 1,
                index: 0,
            };
            Ok(Response::new(ending(stream::iter([Ok(reply)]), end)))
        })
    }
}

struct ServerStreamSvc(Seen);

impl tower_service::Service<Request<EchoRequest>> for ServerStreamSvc {
    type Response = Response<ReplyStream>;
    type Error = Status;
    type Future = BoxFuture<Result<Self::Response, Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<EchoRequest>) -> Self::Future {
        let seen = std::mem::take(&mut self.0);
        Box::pin(async move {
            let req = req.into_inner();
            let count = req.count.max(1);
            let end = end_status(req.fail_code, &req.fail_message, &req.trailer);
            let (message, delay) = (req.message, req.delay_ms);
            let replies = stream::unfold((0u32, Some(seen)), move |(i, seen)| {
                let message = message.clone();
                async move {
                    if i >= count {
                        return None;
                    }
                    sleep_ms(delay).await;
                    let reply = EchoReply {
                        message,
                        metadata: seen.unwrap_or_default(),
                        count: i + 1,
                        index: i,
                    };
                    Some((Ok(reply), (i + 1, None)))
                }
            });
            Ok(Response::new(ending(replies, end)))
        })
    }
}

struct ClientStreamSvc(Seen);

impl tower_service::Service<Request<Streaming<EchoRequest>>> for ClientStreamSvc {
    type Response = Response<ReplyStream>;
    type Error = Status;
    type Future = BoxFuture<Result<Self::Response, Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Streaming<EchoRequest>>) -> Self::Future {
        let seen = std::mem::take(&mut self.0);
        Box::pin(async move {
            let mut inbound = req.into_inner();
            let (mut message, mut count, mut trailer) = (String::new(), 0u32, String::new());
            let mut fail = (0, String::new());
            while let Some(m) = inbound.message().await? {
                sleep_ms(m.delay_ms).await;
                message.push_str(&m.message);
                count += 1;
                if !m.trailer.is_empty() {
                    trailer = m.trailer;
                }
                if m.fail_code != 0 {
                    fail = (m.fail_code, m.fail_message);
                }
            }
            let end = end_status(fail.0, &fail.1, &trailer);
            if let Some(status) = end.as_ref().filter(|s| s.code() != Code::Ok) {
                return Err(status.clone());
            }
            let reply = EchoReply {
                message,
                metadata: seen,
                count,
                index: 0,
            };
            Ok(Response::new(ending(stream::iter([Ok(reply)]), end)))
        })
    }
}

struct BidiSvc(Seen);

impl tower_service::Service<Request<Streaming<EchoRequest>>> for BidiSvc {
    type Response = Response<ReplyStream>;
    type Error = Status;
    type Future = BoxFuture<Result<Self::Response, Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Streaming<EchoRequest>>) -> Self::Future {
        let mut seen = Some(std::mem::take(&mut self.0));
        Box::pin(async move {
            let mut inbound = req.into_inner();
            // Each message is answered as soon as it arrives, so a client
            // can play ping-pong: that only works through a proxy that
            // streams both ways.
            let (tx, rx) = mpsc::channel::<Result<EchoReply, Status>>(16);
            tokio::spawn(async move {
                let (mut index, mut trailer) = (0u32, String::new());
                loop {
                    let m = match inbound.message().await {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    };
                    sleep_ms(m.delay_ms).await;
                    if !m.trailer.is_empty() {
                        trailer = m.trailer.clone();
                    }
                    if let Some(status) = end_status(m.fail_code, &m.fail_message, &trailer)
                        .filter(|s| s.code() != Code::Ok)
                    {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                    let reply = EchoReply {
                        message: m.message,
                        metadata: seen.take().unwrap_or_default(),
                        count: index + 1,
                        index,
                    };
                    if tx.send(Ok(reply)).await.is_err() {
                        return;
                    }
                    index += 1;
                }
                if let Some(status) = end_status(0, "", &trailer) {
                    let _ = tx.send(Err(status)).await;
                }
            });
            let replies: ReplyStream = Box::pin(stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            }));
            Ok(Response::new(replies))
        })
    }
}

/// A running echo server; dropping it (or [`ServerHandle::shutdown`])
/// stops accepting and closes every connection.
pub struct ServerHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits for its accept loop to end.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The echo service over h2c (prior knowledge) on 127.0.0.1, a free port.
/// Must run inside a tokio runtime, which keeps serving it.
pub async fn spawn_echo_server() -> io::Result<(SocketAddr, ServerHandle)> {
    serve(TcpListener::bind("127.0.0.1:0").await?, None)
}

/// The echo service over TLS (ALPN `h2`) on 127.0.0.1, a free port, with
/// the given PEM certificate chain and key.
pub async fn spawn_echo_server_tls(
    cert_pem: &str,
    key_pem: &str,
) -> io::Result<(SocketAddr, ServerHandle)> {
    let acceptor = tls_acceptor(cert_pem, key_pem)?;
    serve(TcpListener::bind("127.0.0.1:0").await?, Some(acceptor))
}

/// Serves the echo service on an already bound listener (the `grpc-echo`
/// binary picks its own address).
pub fn serve_on(listener: TcpListener) -> io::Result<(SocketAddr, ServerHandle)> {
    serve(listener, None)
}

fn tls_acceptor(cert_pem: &str, key_pem: &str) -> io::Result<tokio_rustls::TlsAcceptor> {
    let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())?
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no private key in PEM"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(io::Error::other)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> io::Result<(SocketAddr, ServerHandle)> {
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let mut accept_stop = stopped.clone();
    let task = tokio::spawn(async move {
        loop {
            let (sock, _) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    // Out of file descriptors and the like: try again.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                _ = accept_stop.changed() => return,
            };
            let _ = sock.set_nodelay(true);
            let stopped = stopped.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => serve_conn(sock, stopped).await,
                    Some(acceptor) => {
                        let handshake =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(sock));
                        if let Ok(Ok(tls)) = handshake.await {
                            serve_conn(tls, stopped).await;
                        }
                    }
                }
            });
        }
    });
    Ok((
        addr,
        ServerHandle {
            addr,
            stop,
            task: Some(task),
        },
    ))
}

async fn serve_conn<I>(io: I, mut stopped: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(|req: http::Request<Incoming>| {
        tower_service::Service::call(&mut EchoService, req)
    });
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), svc);
    tokio::select! {
        _ = conn => {}
        _ = stopped.changed() => {}
    }
}

/// The echo server for synchronous specs: owns a one-worker tokio runtime
/// that serves it until dropped.
pub struct EchoServer {
    handle: Option<ServerHandle>,
    rt: Option<tokio::runtime::Runtime>,
}

impl EchoServer {
    /// h2c on 127.0.0.1, a free port.
    pub fn start() -> io::Result<EchoServer> {
        let rt = runtime()?;
        let (_, handle) = rt.block_on(spawn_echo_server())?;
        Ok(EchoServer {
            handle: Some(handle),
            rt: Some(rt),
        })
    }

    /// TLS (ALPN h2) on 127.0.0.1, a free port.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> io::Result<EchoServer> {
        let rt = runtime()?;
        let (_, handle) = rt.block_on(spawn_echo_server_tls(cert_pem, key_pem))?;
        Ok(EchoServer {
            handle: Some(handle),
            rt: Some(rt),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle
            .as_ref()
            .map(ServerHandle::addr)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn port(&self) -> u16 {
        self.addr().port()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        // The handle first (its Drop signals the tasks), then the runtime.
        drop(self.handle.take());
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
}

// ---------------------------------------------------------------------------
// Client.

/// Where and how a [`Client`] connects.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// h2 over TLS (ALPN `h2`, any certificate accepted); else h2c.
    pub tls: bool,
    /// The `:authority` of every call (routing by host).
    pub authority: String,
    /// TLS server name; `None`: none sent.
    pub sni: Option<String>,
    /// Bound on connecting and on each whole call.
    pub timeout: Duration,
}

impl Target {
    /// h2c to `addr`, `:authority` = `addr`.
    pub fn h2c(addr: SocketAddr) -> Target {
        Target {
            addr,
            tls: false,
            authority: addr.to_string(),
            sni: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// TLS to `addr`, `:authority` = `addr`, no SNI.
    pub fn tls(addr: SocketAddr) -> Target {
        Target {
            tls: true,
            ..Target::h2c(addr)
        }
    }

    /// `http://HOST:PORT` (h2c) or `https://HOST:PORT` (TLS, SNI = HOST
    /// unless it is an IP address); a path is ignored.
    pub fn parse(url: &str) -> io::Result<Target> {
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{url}: {why}"));
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("scheme must be http or https")),
        };
        let auth = uri.authority().ok_or_else(|| bad("no host"))?;
        let port = auth.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        // IPv4 first: "localhost" may resolve to ::1 before 127.0.0.1, and
        // the servers under test listen on 127.0.0.1.
        let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| bad("host does not resolve"))?;
        let sni = (tls && host.parse::<std::net::IpAddr>().is_err()).then(|| host.to_string());
        Ok(Target {
            addr,
            tls,
            authority: auth.as_str().to_string(),
            sni,
            timeout: Duration::from_secs(30),
        })
    }

    /// Sends `authority` as `:authority` (and, over TLS, its host as SNI
    /// unless it is an IP address).
    pub fn with_authority(mut self, authority: &str) -> Target {
        self.authority = authority.to_string();
        if self.tls {
            let host = authority
                .parse::<http::uri::Authority>()
                .map(|a| a.host().to_string())
                .unwrap_or_else(|_| authority.to_string());
            self.sni = host.parse::<std::net::IpAddr>().is_err().then_some(host);
        }
        self
    }

    pub fn with_sni(mut self, sni: Option<&str>) -> Target {
        self.sni = sni.map(str::to_string);
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Target {
        self.timeout = timeout;
        self
    }

    fn origin(&self) -> Result<Uri, Status> {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.authority)
            .parse()
            .map_err(|e| Status::invalid_argument(format!("authority {:?}: {e}", self.authority)))
    }
}

/// A call's outcome: the message(s), the response headers and the
/// trailers (`grpc-status` included).
#[derive(Debug)]
pub struct Answer<T> {
    pub message: T,
    pub headers: MetadataMap,
    pub trailers: MetadataMap,
}

impl<T> Answer<T> {
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers.get(key).and_then(|v| v.to_str().ok())
    }

    pub fn trailer(&self, key: &str) -> Option<&str> {
        self.trailers.get(key).and_then(|v| v.to_str().ok())
    }
}

/// hyper's h2 connection as the `GrpcService` tonic's client drives.
#[derive(Clone)]
struct H2(SendRequest<GrpcBody>);

impl tower_service::Service<http::Request<GrpcBody>> for H2 {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = BoxFuture<Result<Self::Response, hyper::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<GrpcBody>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

/// One HTTP/2 connection to an echo service (directly or through a proxy).
/// Clones share the connection: their calls are multiplexed on it.
#[derive(Clone)]
pub struct Client {
    send: SendRequest<GrpcBody>,
    origin: Uri,
    timeout: Duration,
}

impl Client {
    /// Connects (and, over TLS, handshakes) within `target.timeout`; the
    /// connection is driven by a task on the current runtime.
    pub async fn connect(target: &Target) -> Result<Client, Status> {
        let origin = target.origin()?;
        let connecting = async {
            let tcp = TcpStream::connect(target.addr)
                .await
                .map_err(|e| Status::unavailable(format!("connect {}: {e}", target.addr)))?;
            let _ = tcp.set_nodelay(true);
            if target.tls {
                let tls = tls_connect(tcp, target.sni.as_deref()).await?;
                handshake(tls).await
            } else {
                handshake(tcp).await
            }
        };
        let send = tokio::time::timeout(target.timeout, connecting)
            .await
            .map_err(|_| Status::deadline_exceeded(format!("connecting to {}", target.addr)))??;
        Ok(Client {
            send,
            origin,
            timeout: target.timeout,
        })
    }

    /// False once the connection is gone (GOAWAY, closed).
    pub fn is_open(&self) -> bool {
        !self.send.is_closed()
    }

    /// `Unary`: one reply.
    pub async fn unary(
        &self,
        req: EchoRequest,
        metadata: &[(&str, &str)],
    ) -> Result<Answer<EchoReply>, Status> {
        self.unary_path(UNARY, req, metadata).await
    }

    /// A unary call to any `path` (routing specs: the echo server answers
    /// `UNIMPLEMENTED` to paths other than its own).
    pub async fn unary_path(
        &self,
        path: &str,
        req: EchoRequest,
        metadata: &[(&str, &str)],
    ) -> Result<Answer<EchoReply>, Status> {
        self.bounded(async {
            let (headers, mut body) = self.call(path, stream::iter([req]), metadata).await?;
            let message = body
                .message()
                .await?
                .ok_or_else(|| Status::internal("no reply message"))?;
            let trailers = trailers(&mut body).await?;
            Ok(Answer {
                message,
                headers,
                trailers,
            })
        })
        .await
    }

    /// `ServerStream`: every reply, in order.
    pub async fn server_stream(
        &self,
        req: EchoRequest,
        metadata: &[(&str, &str)],
    ) -> Result<Answer<Vec<EchoReply>>, Status> {
        self.bounded(async {
            let (headers, mut body) = self
                .call(SERVER_STREAM, stream::iter([req]), metadata)
                .await?;
            let mut replies = Vec::new();
            while let Some(m) = body.message().await? {
                replies.push(m);
            }
            let trailers = trailers(&mut body).await?;
            Ok(Answer {
                message: replies,
                headers,
                trailers,
            })
        })
        .await
    }

    /// `ClientStream`: sends every request, then reads the one reply.
    pub async fn client_stream(
        &self,
        reqs: Vec<EchoRequest>,
        metadata: &[(&str, &str)],
    ) -> Result<Answer<EchoReply>, Status> {
        self.bounded(async {
            let (headers, mut body) = self
                .call(CLIENT_STREAM, stream::iter(reqs), metadata)
                .await?;
            let message = body
                .message()
                .await?
                .ok_or_else(|| Status::internal("no reply message"))?;
            let trailers = trailers(&mut body).await?;
            Ok(Answer {
                message,
                headers,
                trailers,
            })
        })
        .await
    }

    /// `Bidi` as ping-pong: each request is sent only once the reply to
    /// the previous one arrived, which proves that both directions stream
    /// (a proxy buffering either one makes this time out).
    pub async fn bidi(
        &self,
        reqs: Vec<EchoRequest>,
        metadata: &[(&str, &str)],
    ) -> Result<Answer<Vec<EchoReply>>, Status> {
        self.bounded(async {
            let (tx, rx) = mpsc::channel::<EchoRequest>(1);
            let outbound =
                stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
            let mut reqs = reqs.into_iter();
            // The first request goes out with the headers: some servers
            // answer the headers only once a message arrived.
            let mut tx = Some(tx);
            if let (Some(first), Some(t)) = (reqs.next(), tx.as_ref()) {
                let _ = t.send(first).await;
            } else {
                tx = None;
            }
            let (headers, mut body) = self.call(BIDI, outbound, metadata).await?;
            let mut replies = Vec::new();
            while let Some(m) = body.message().await? {
                replies.push(m);
                match (reqs.next(), tx.as_ref()) {
                    (Some(next), Some(t)) => {
                        if t.send(next).await.is_err() {
                            tx = None;
                        }
                    }
                    // Half-close: the server ends its stream.
                    _ => tx = None,
                }
            }
            let trailers = trailers(&mut body).await?;
            Ok(Answer {
                message: replies,
                headers,
                trailers,
            })
        })
        .await
    }

    async fn bounded<T>(&self, call: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!("no answer within {:?}", self.timeout))
            })?
    }

    async fn call<S>(
        &self,
        path: &str,
        reqs: S,
        metadata: &[(&str, &str)],
    ) -> Result<(MetadataMap, Streaming<EchoReply>), Status>
    where
        S: Stream<Item = EchoRequest> + Send + 'static,
    {
        let mut grpc = tonic::client::Grpc::with_origin(H2(self.send.clone()), self.origin.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
        let mut request = Request::new(reqs);
        let md = request.metadata_mut();
        for (k, v) in metadata {
            let key = MetadataKey::from_bytes(k.as_bytes())
                .map_err(|_| Status::invalid_argument(format!("metadata key {k:?}")))?;
            let value = MetadataValue::try_from(*v)
                .map_err(|_| Status::invalid_argument(format!("metadata value {v:?}")))?;
            md.append(key, value);
        }
        if !md.contains_key("user-agent") {
            md.insert("user-agent", MetadataValue::from_static(USER_AGENT));
        }
        let codec = ProstCodec::<EchoRequest, EchoReply>::default();
        let path = PathAndQuery::try_from(path)
            .map_err(|_| Status::invalid_argument(format!("path {path:?}")))?;
        let resp = grpc.streaming(request, path, codec).await?;
        let (headers, body, _) = resp.into_parts();
        Ok((headers, body))
    }
}

async fn trailers(body: &mut Streaming<EchoReply>) -> Result<MetadataMap, Status> {
    Ok(body.trailers().await?.unwrap_or_default())
}

async fn handshake<I>(io: I) -> Result<SendRequest<GrpcBody>, Status>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| Status::unavailable(format!("h2 handshake: {e}")))?;
    tokio::spawn(async move {
        // Its error (the peer went away) surfaces in the calls.
        let _ = conn.await;
    });
    Ok(send)
}

async fn tls_connect(
    tcp: TcpStream,
    sni: Option<&str>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Status> {
    let opts = crate::tls::TlsOptions {
        sni: sni.map(str::to_string),
        alpn: vec![b"h2".to_vec()],
        ..crate::tls::TlsOptions::default()
    };
    let mut config = (*opts.config()).clone();
    // No SNI extension when there is no name (rustls needs a name anyway).
    config.enable_sni = sni.is_some();
    let name = match sni {
        Some(s) => ServerName::try_from(s.to_string())
            .map_err(|_| Status::invalid_argument(format!("server name {s:?}")))?,
        None => ServerName::from(std::net::IpAddr::from([127, 0, 0, 1])),
    };
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| Status::unavailable(format!("TLS handshake: {e}")))?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
        return Err(Status::unavailable("the server did not select ALPN h2"));
    }
    Ok(tls)
}

/// One `Unary` call on a fresh connection to `url` (`http://` h2c,
/// `https://` TLS), with `authority` as `:authority` when given.
pub async fn unary(
    url: &str,
    authority: Option<&str>,
    req: EchoRequest,
    metadata: &[(&str, &str)],
) -> Result<Answer<EchoReply>, Status> {
    let mut target = Target::parse(url).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if let Some(a) = authority {
        target = target.with_authority(a);
    }
    Client::connect(&target).await?.unary(req, metadata).await
}

/// [`Client`] for synchronous specs: owns a one-worker runtime (which also
/// keeps the connection serviced between calls), connects on first use and
/// again after the connection went away.
pub struct BlockingClient {
    target: Target,
    client: Option<Client>,
    rt: tokio::runtime::Runtime,
}

impl BlockingClient {
    pub fn new(target: Target) -> io::Result<BlockingClient> {
        Ok(BlockingClient {
            target,
            client: None,
            rt: runtime()?,
        })
    }

    /// `BlockingClient::new(Target::parse(url)?.with_authority(authority))`.
    pub fn to(url: &str, authority: Option<&str>) -> io::Result<BlockingClient> {
        let mut target = Target::parse(url)?;
        if let Some(a) = authority {
            target = target.with_authority(a);
        }
        BlockingClient::new(target)
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The connection, made if there is none (or it closed).
    pub fn connect(&mut self) -> Result<Client, Status> {
        if let Some(c) = self.client.as_ref().filter(|c| c.is_open()) {
            return Ok(c.clone());
        }
        let c = self.rt.block_on(Client::connect(&self.target))?;
        self.client = Some(c.clone());
        Ok(c)
    }

    /// Drops the connection: the next call opens a new one.
    pub fn disconnect(&mut self) {
        self.client = None;
    }

    pub fn unary(
        &mut self,
        req: EchoRequest,
        metadata: &[(&str, &str)],
    ) -> Result<Answer<EchoReply>, Status> {
        let c = self.connect()?;
        self.rt.block_on(c.unary(req, metadata))
    }

    pub fn unary_path(
        &mut self,
        path: &str,
        req: EchoRequest,
        metadata: &[(&str, &str)],
    ) -> Result<Answer<EchoReply>, Status> {
        let c = self.connect()?;
        self.rt.block_on(c.unary_path(path, req, metadata))
    }

    pub fn server_stream(
        &mut self,
        req: EchoRequest,
        metadata: &[(&str, &str)],
    ) -> Result<Answer<Vec<EchoReply>>, Status> {
        let c = self.connect()?;
        self.rt.block_on(c.server_stream(req, metadata))
    }

    pub fn client_stream(
        &mut self,
        reqs: Vec<EchoRequest>,
        metadata: &[(&str, &str)],
    ) -> Result<Answer<EchoReply>, Status> {
        let c = self.connect()?;
        self.rt.block_on(c.client_stream(reqs, metadata))
    }

    pub fn bidi(
        &mut self,
        reqs: Vec<EchoRequest>,
        metadata: &[(&str, &str)],
    ) -> Result<Answer<Vec<EchoReply>>, Status> {
        let c = self.connect()?;
        self.rt.block_on(c.bidi(reqs, metadata))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn req(message: &str) -> EchoRequest {
        EchoRequest::new(message)
    }

    #[tokio::test]
    async fn unary_round_trip_with_metadata_and_trailer() {
        let (addr, _server) = spawn_echo_server().await.unwrap();
        let target = Target::h2c(addr).with_authority("echo.example.com");
        let client = Client::connect(&target).await.unwrap();
        let mut r = req("hello");
        r.trailer = "t-value".into();
        let a = client.unary(r, &[("x-custom", "c1")]).await.unwrap();
        assert_eq!(a.message.message, "hello");
        let md = &a.message.metadata;
        assert_eq!(md[":authority"], "echo.example.com");
        assert_eq!(md[":scheme"], "http");
        assert_eq!(md[":path"], UNARY);
        assert_eq!(md["content-type"], "application/grpc");
        assert_eq!(md["te"], "trailers");
        assert_eq!(md["user-agent"], USER_AGENT);
        assert_eq!(md["x-custom"], "c1");
        assert_eq!(a.header("content-type"), Some("application/grpc"));
        assert_eq!(a.trailer(TRAILER_KEY), Some("t-value"));
        assert_eq!(a.trailer("grpc-status"), Some("0"));
        // A second call multiplexed on the same connection.
        let b = client.clone().unary(req("again"), &[]).await.unwrap();
        assert_eq!(b.message.message, "again");
        assert_eq!(b.trailer(TRAILER_KEY), None);
    }

    #[tokio::test]
    async fn unary_error_status_and_delay() {
        let (addr, _server) = spawn_echo_server().await.unwrap();
        let client = Client::connect(&Target::h2c(addr)).await.unwrap();
        let mut r = req("x");
        r.fail_code = Code::PermissionDenied as i32;
        r.fail_message = "nope".into();
        r.trailer = "on-error".into();
        let st = client.unary(r, &[]).await.unwrap_err();
        assert_eq!(st.code(), Code::PermissionDenied);
        assert_eq!(st.message(), "nope");
        assert_eq!(
            st.metadata().get(TRAILER_KEY).and_then(|v| v.to_str().ok()),
            Some("on-error")
        );
        // delay_ms against the client's own bound.
        let slow = Client::connect(&Target::h2c(addr).with_timeout(Duration::from_millis(100)))
            .await
            .unwrap();
        let mut r = req("slow");
        r.delay_ms = 2000;
        let st = slow.unary(r, &[]).await.unwrap_err();
        assert_eq!(st.code(), Code::DeadlineExceeded);
        let mut r = req("fast enough");
        r.delay_ms = 20;
        assert_eq!(
            client.unary(r, &[]).await.unwrap().message.message,
            "fast enough"
        );
    }

    #[tokio::test]
    async fn server_stream_client_stream_and_bidi() {
        let (addr, _server) = spawn_echo_server().await.unwrap();
        let client = Client::connect(&Target::h2c(addr)).await.unwrap();

        let mut r = req("s");
        r.count = 3;
        r.trailer = "st".into();
        let a = client.server_stream(r, &[]).await.unwrap();
        let idx: Vec<u32> = a.message.iter().map(|m| m.index).collect();
        assert_eq!(idx, [0, 1, 2]);
        assert!(a.message.iter().all(|m| m.message == "s"));
        assert!(a.message[0].metadata.contains_key(":authority"));
        assert_eq!(a.trailer(TRAILER_KEY), Some("st"));

        // An error after the replies: the status comes in the trailers.
        let mut r = req("e");
        r.count = 2;
        r.fail_code = Code::Aborted as i32;
        r.fail_message = "mid-stream".into();
        let st = client.server_stream(r, &[]).await.unwrap_err();
        assert_eq!((st.code(), st.message()), (Code::Aborted, "mid-stream"));

        let mut last = req("c");
        last.trailer = "cs".into();
        let a = client
            .client_stream(vec![req("a"), req("b"), last], &[])
            .await
            .unwrap();
        assert_eq!((a.message.message.as_str(), a.message.count), ("abc", 3));
        assert_eq!(a.trailer(TRAILER_KEY), Some("cs"));

        let a = client
            .bidi(vec![req("1"), req("2"), req("3")], &[("x-b", "y")])
            .await
            .unwrap();
        let got: Vec<&str> = a.message.iter().map(|m| m.message.as_str()).collect();
        assert_eq!(got, ["1", "2", "3"]);
        assert_eq!(a.message[0].metadata["x-b"], "y");
        assert_eq!(a.trailer("grpc-status"), Some("0"));

        let mut bad = req("2");
        bad.fail_code = Code::ResourceExhausted as i32;
        let st = client.bidi(vec![req("1"), bad], &[]).await.unwrap_err();
        assert_eq!(st.code(), Code::ResourceExhausted);
    }

    #[tokio::test]
    async fn unknown_method_is_unimplemented() {
        let (addr, _server) = spawn_echo_server().await.unwrap();
        let client = Client::connect(&Target::h2c(addr)).await.unwrap();
        let st = client
            .unary_path("/grpc.test.Echo/Nope", req("x"), &[])
            .await
            .unwrap_err();
        assert_eq!(st.code(), Code::Unimplemented);
    }

    #[tokio::test]
    async fn tls_round_trip_with_sni_authority() {
        let cert = crate::tls::SelfSigned::new("echo.test", &["echo.test"]);
        let (addr, _server) = spawn_echo_server_tls(&cert.cert_pem, &cert.key_pem)
            .await
            .unwrap();
        let url = format!("https://127.0.0.1:{}", addr.port());
        let mut r = req("secure");
        r.trailer = "tt".into();
        let a = unary(&url, Some("echo.test"), r, &[]).await.unwrap();
        assert_eq!(a.message.message, "secure");
        assert_eq!(a.message.metadata[":scheme"], "https");
        assert_eq!(a.message.metadata[":authority"], "echo.test");
        assert_eq!(a.trailer(TRAILER_KEY), Some("tt"));
        // h2c against a TLS port fails cleanly, within the bound.
        let plain = Target::h2c(addr).with_timeout(Duration::from_secs(5));
        let st = match Client::connect(&plain).await {
            Ok(c) => c.unary(req("x"), &[]).await.unwrap_err(),
            Err(st) => st,
        };
        assert_ne!(st.code(), Code::Ok);
    }

    #[test]
    fn blocking_server_and_client() {
        let server = EchoServer::start().unwrap();
        let mut client = BlockingClient::to(
            &format!("http://127.0.0.1:{}", server.port()),
            Some("h.test"),
        )
        .unwrap();
        let a = client.unary(req("sync"), &[]).unwrap();
        assert_eq!(a.message.message, "sync");
        assert_eq!(a.message.metadata[":authority"], "h.test");
        let mut r = req("n");
        r.count = 2;
        assert_eq!(client.server_stream(r, &[]).unwrap().message.len(), 2);
        assert_eq!(
            client
                .client_stream(vec![req("x"), req("y")], &[])
                .unwrap()
                .message
                .message,
            "xy"
        );
        assert_eq!(client.bidi(vec![req("p")], &[]).unwrap().message.len(), 1);
        drop(server);
        // The server is gone: calls fail, within the bound.
        client.disconnect();
        assert!(client.unary(req("gone"), &[]).is_err());
    }

    #[test]
    fn target_parse() {
        let t = Target::parse("http://127.0.0.1:8080/ignored").unwrap();
        assert_eq!(
            (t.tls, t.authority.as_str(), t.addr.port()),
            (false, "127.0.0.1:8080", 8080)
        );
        let t = Target::parse("https://localhost:8443").unwrap();
        assert!(t.tls);
        assert_eq!(t.sni.as_deref(), Some("localhost"));
        let t = Target::parse("https://127.0.0.1:1")
            .unwrap()
            .with_authority("api.test:443");
        assert_eq!(
            (t.authority.as_str(), t.sni.as_deref()),
            ("api.test:443", Some("api.test"))
        );
        assert!(Target::parse("ftp://127.0.0.1:1").is_err());
    }
}
