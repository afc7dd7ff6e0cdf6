//! gRPC through the gateway, ported from Kong's
//! `spec/02-integration/05-proxy/19-grpc_proxy_spec.lua` and
//! `21-grpc_plugins_triggering_spec.lua`, against a real tonic server
//! (`gw_tests::grpc`): routes with `protocols: [grpc]`/`[grpcs]`, services
//! `grpc://` (h2c) and `grpcs://` (h2 over TLS), all four call kinds with
//! trailers, Kong's 415/426 answers, and Kong-generated errors as gRPC
//! statuses (`grpc-status`/`grpc-message`, no body).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use gw_tests::gateway::Gateway;
use gw_tests::grpc::{BlockingClient, EchoRequest, EchoServer, Target, TRAILER_KEY};
use gw_tests::tls::SelfSigned;
use gw_tests::{free_port, request};
use tonic::Code;

struct Fixture {
    gw: Gateway,
    tls_port: u16,
    _echo: EchoServer,
    _echo_tls: EchoServer,
}

fn config(echo: u16, echo_tls: u16, dead: u16) -> String {
    format!(
        r#"_format_version: "3.0"
services:
- name: grpc
  url: grpc://127.0.0.1:{echo}
  routes:
  - name: grpc
    protocols: [grpc]
    hosts: [grpc]
  - name: grpc-authority-1
    protocols: [grpc]
    hosts: [grpc_authority_1.example]
    preserve_host: true
  - name: grpc-authority-2
    protocols: [grpc]
    hosts: [grpc_authority_2.example]
  - name: both
    protocols: [grpc, grpcs]
    hosts: [both]
- name: grpcs
  url: grpcs://127.0.0.1:{echo_tls}
  routes:
  - name: grpcs
    protocols: [grpcs]
    hosts: [grpcs]
- name: keyed
  url: grpc://127.0.0.1:{echo}
  routes:
  - name: keyed
    protocols: [grpc]
    hosts: [keyed]
  plugins:
  - name: key-auth
- name: slow
  url: grpc://127.0.0.1:{echo}
  read_timeout: 300
  routes:
  - name: slow
    protocols: [grpc]
    hosts: [slow]
- name: dead
  url: grpc://127.0.0.1:{dead}
  retries: 0
  routes:
  - name: dead
    protocols: [grpc]
    hosts: [dead]
- name: http
  url: http://127.0.0.1:{dead}
  routes:
  - name: terminated
    hosts: [terminated]
    plugins:
    - name: request-termination
      config:
        status_code: 403
        message: "nope"
"#
    )
}

fn fixture() -> Fixture {
    let echo = EchoServer::start().unwrap();
    let cert = SelfSigned::new("echo.test", &["echo.test"]);
    let echo_tls = EchoServer::start_tls(&cert.cert_pem, &cert.key_pem).unwrap();
    let tls_port = free_port();
    let listen = format!("127.0.0.1:{{PROXY_PORT}} http2, 127.0.0.1:{tls_port} http2 ssl");
    let gw = Gateway::start_with(
        &config(echo.port(), echo_tls.port(), free_port()),
        &[("KONG_PROXY_LISTEN", listen.as_str())],
    );
    assert!(gw_tests::wait_for_port(tls_port, Duration::from_secs(5)));
    Fixture {
        gw,
        tls_port,
        _echo: echo,
        _echo_tls: echo_tls,
    }
}

fn client(port: u16, authority: &str) -> BlockingClient {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    BlockingClient::new(
        Target::h2c(addr)
            .with_authority(authority)
            .with_timeout(Duration::from_secs(10)),
    )
    .unwrap()
}

fn tls_client(port: u16, authority: &str) -> BlockingClient {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    BlockingClient::new(
        Target::tls(addr)
            .with_authority(authority)
            .with_timeout(Duration::from_secs(10)),
    )
    .unwrap()
}

#[test]
fn grpc_calls_of_every_kind_are_proxied_with_trailers() {
    let f = fixture();
    let mut c = client(f.gw.port, "grpc");
    // "proxies grpc"
    let a = c
        .unary(
            EchoRequest {
                trailer: "t-1".into(),
                ..EchoRequest::new("hello")
            },
            &[("x-meta", "m")],
        )
        .unwrap();
    assert_eq!(a.message.message, "hello");
    assert_eq!(a.trailer(TRAILER_KEY), Some("t-1"));
    assert_eq!(a.trailer("grpc-status"), Some("0"));
    let seen = &a.message.metadata;
    assert_eq!(seen.get("x-meta").map(String::as_str), Some("m"));
    assert_eq!(seen.get("te").map(String::as_str), Some("trailers"));
    assert!(seen.get("x-forwarded-for").is_some());
    assert_eq!(
        seen.get("x-forwarded-proto").map(String::as_str),
        Some("http")
    );
    assert!(
        seen.get("via").is_some_and(|v| v.starts_with("2 kong/")),
        "{seen:?}"
    );
    // Kong's response headers, with Via naming HTTP/2 to the upstream.
    assert!(
        a.header("via").is_some_and(|v| v.starts_with("2 kong/")),
        "{:?}",
        a.headers
    );
    assert!(a.header("x-kong-upstream-latency").is_some());
    // "proxies grpc, streaming response"
    let a = c
        .server_stream(
            EchoRequest {
                count: 5,
                trailer: "t-2".into(),
                ..EchoRequest::new("s")
            },
            &[],
        )
        .unwrap();
    assert_eq!(a.message.len(), 5);
    assert_eq!(a.trailer(TRAILER_KEY), Some("t-2"));
    // "proxies grpc, streaming request"
    let reqs = (0..4).map(|i| EchoRequest::new(&format!("{i}"))).collect();
    let a = c.client_stream(reqs, &[]).unwrap();
    assert_eq!(a.message.message, "0123");
    assert_eq!(a.message.count, 4);
    // "proxies grpc, streaming request/response": ping-pong proves that
    // neither direction is buffered.
    let reqs = (0..6).map(|i| EchoRequest::new(&format!("b{i}"))).collect();
    let a = c.bidi(reqs, &[]).unwrap();
    let got: Vec<String> = a.message.iter().map(|r| r.message.clone()).collect();
    assert_eq!(got, ["b0", "b1", "b2", "b3", "b4", "b5"]);
    // An error status from the server reaches the client, trailers too.
    let err = c
        .unary(
            EchoRequest {
                fail_code: Code::NotFound as i32,
                fail_message: "no such thing".into(),
                trailer: "t-err".into(),
                ..EchoRequest::new("x")
            },
            &[],
        )
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "no such thing");
    assert_eq!(
        err.metadata()
            .get(TRAILER_KEY)
            .and_then(|v| v.to_str().ok()),
        Some("t-err")
    );
    // Many calls multiplexed on one connection.
    for i in 0..20 {
        let m = format!("m{i}");
        assert_eq!(
            c.unary(EchoRequest::new(&m), &[]).unwrap().message.message,
            m
        );
    }
}

#[test]
fn grpcs_routes_and_services() {
    let f = fixture();
    // "proxies grpcs": h2 over TLS from the client and to the upstream.
    let mut c = tls_client(f.tls_port, "grpcs");
    let a = c.unary(EchoRequest::new("secure"), &[]).unwrap();
    assert_eq!(a.message.message, "secure");
    assert_eq!(
        a.message.metadata.get(":scheme").map(String::as_str),
        Some("https")
    );
    assert_eq!(
        a.message
            .metadata
            .get("x-forwarded-proto")
            .map(String::as_str),
        Some("https")
    );
    let a = c
        .server_stream(
            EchoRequest {
                count: 3,
                ..EchoRequest::new("s")
            },
            &[],
        )
        .unwrap();
    assert_eq!(a.message.len(), 3);
    // A route with both protocols serves both.
    assert!(tls_client(f.tls_port, "both")
        .unary(EchoRequest::new("x"), &[])
        .is_ok());
    assert!(client(f.gw.port, "both")
        .unary(EchoRequest::new("x"), &[])
        .is_ok());
    // "grpc on grpcs route": Kong answers 200 with grpc-status 1.
    let err = client(f.gw.port, "grpcs")
        .unary(EchoRequest::new("x"), &[])
        .unwrap_err();
    assert_eq!(err.code(), Code::Cancelled);
    assert_eq!(err.message(), "gRPC request matched gRPCs route");
}

#[test]
fn authority_follows_preserve_host() {
    let f = fixture();
    let echo = f._echo.port();
    // "proxies :authority header if `preserve_host` is set"
    let a = client(f.gw.port, "grpc_authority_1.example")
        .unary(EchoRequest::new("x"), &[])
        .unwrap();
    assert_eq!(
        a.message.metadata.get(":authority").map(String::as_str),
        Some("grpc_authority_1.example")
    );
    // "sets default :authority header if `preserve_host` isn't set"
    let a = client(f.gw.port, "grpc_authority_2.example")
        .unary(EchoRequest::new("x"), &[])
        .unwrap();
    assert_eq!(
        a.message.metadata.get(":authority").cloned(),
        Some(format!("127.0.0.1:{echo}"))
    );
}

#[test]
fn non_grpc_and_non_http2_requests_on_grpc_routes() {
    let f = fixture();
    // "non-http2 request on grpc route": 426 with Connection/Upgrade.
    let r = request(
        f.gw.port,
        "POST",
        "/",
        &[("Host", "grpc"), ("Content-Type", "application/grpc")],
        b"",
    );
    assert_eq!(r.status, 426);
    assert_eq!(r.json()["message"], "Please use HTTP2 protocol");
    assert!(r
        .header_all("connection")
        .iter()
        .any(|v| v.contains("Upgrade")));
    assert_eq!(r.header("upgrade"), Some("HTTP/2"));
    // "non-grpc request on grpc route (no content-type / non-grpc
    // content-type)": 415, in JSON, over HTTP/2 as over HTTP/1.
    let r = request(f.gw.port, "POST", "/", &[("Host", "grpc")], b"");
    assert_eq!(r.status, 415);
    assert_eq!(r.json()["message"], "Non-gRPC request matched gRPC route");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", f.gw.port))
            .await
            .unwrap();
        let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        for ct in [None, Some("application/json")] {
            let mut req = http::Request::builder().method("POST").uri("http://grpc/");
            if let Some(ct) = ct {
                req = req.header("content-type", ct);
            }
            let (resp, _) = h2.send_request(req.body(()).unwrap(), true).unwrap();
            let resp = resp.await.unwrap();
            assert_eq!(resp.status(), 415);
            let mut body = resp.into_body();
            let mut bytes = Vec::new();
            while let Some(chunk) = body.data().await {
                bytes.extend_from_slice(&chunk.unwrap());
            }
            let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(json["message"], "Non-gRPC request matched gRPC route");
        }
    });
}

#[test]
fn kong_errors_are_grpc_statuses() {
    let f = fixture();
    // No route: 404 -> NotFound (Kong's HTTP_TO_GRPC_STATUS).
    let err = client(f.gw.port, "nowhere")
        .unary(EchoRequest::new("x"), &[])
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    // A plugin's error: key-auth's 401 -> Unauthenticated, Kong's message
    // replaced by the status name (`kong.response.error` on gRPC).
    let err = client(f.gw.port, "keyed")
        .unary(EchoRequest::new("x"), &[])
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    // An exit with a message (request-termination): the message travels
    // in grpc-message.
    let err = client(f.gw.port, "terminated")
        .unary(EchoRequest::new("x"), &[])
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(err.message(), "nope");
    // Upstream down: 502 -> Internal.
    let err = client(f.gw.port, "dead")
        .unary(EchoRequest::new("x"), &[])
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    // read_timeout: 504 -> DeadlineExceeded.
    let err = client(f.gw.port, "slow")
        .unary(
            EchoRequest {
                delay_ms: 2000,
                ..EchoRequest::new("x")
            },
            &[],
        )
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    // The gateway is fine afterwards.
    assert!(client(f.gw.port, "grpc")
        .unary(EchoRequest::new("x"), &[])
        .is_ok());
}

/// Kong's `04-file-log` "logs to file #grpc" / "#grpcs", and the
/// prometheus plugin counting gRPC calls as any other request.
#[test]
fn grpc_calls_are_logged_and_counted() {
    let echo = EchoServer::start().unwrap();
    let cert = SelfSigned::new("echo.test", &["echo.test"]);
    let echo_tls = EchoServer::start_tls(&cert.cert_pem, &cert.key_pem).unwrap();
    let dir = gw_tests::gateway::TempDir::new("grpc-log");
    let log = dir.path().join("file.log");
    let log_s = log.display().to_string();
    let yml = format!(
        r#"_format_version: "3.0"
plugins:
- name: prometheus
  config: {{ status_code_metrics: true }}
services:
- name: grpc-service
  url: grpc://127.0.0.1:{}
  routes:
  - name: grpc-route
    protocols: [grpc]
    hosts: [tcp_logging_grpc.test]
    plugins:
    - name: file-log
      config: {{ path: "{log_s}", reopen: true }}
    - name: response-transformer
      config: {{ add: {{ headers: ["x-added:yes"] }} }}
- name: grpcs-service
  url: grpcs://127.0.0.1:{}
  routes:
  - name: grpcs-route
    protocols: [grpcs]
    hosts: [tcp_logging_grpcs.test]
    plugins:
    - name: file-log
      config: {{ path: "{log_s}", reopen: true }}
"#,
        echo.port(),
        echo_tls.port()
    );
    let tls_port = free_port();
    let listen = format!("127.0.0.1:{{PROXY_PORT}} http2, 127.0.0.1:{tls_port} http2 ssl");
    let gw = Gateway::start_with(&yml, &[("KONG_PROXY_LISTEN", listen.as_str())]);
    assert!(gw_tests::wait_for_port(tls_port, Duration::from_secs(5)));
    let a = client(gw.port, "tcp_logging_grpc.test")
        .unary(EchoRequest::new("x"), &[("file-log-uuid", "uuid-1")])
        .unwrap();
    // header_filter ran (response-transformer).
    assert_eq!(a.header("x-added"), Some("yes"));
    tls_client(tls_port, "tcp_logging_grpcs.test")
        .unary(EchoRequest::new("y"), &[("file-log-uuid", "uuid-2")])
        .unwrap();
    let mut entries: Vec<serde_json::Value> = Vec::new();
    for _ in 0..100 {
        entries = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if entries.len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(entries.len(), 2, "{entries:?}");
    for (e, uuid) in entries.iter().zip(["uuid-1", "uuid-2"]) {
        assert_eq!(e["client_ip"], "127.0.0.1");
        assert_eq!(e["request"]["headers"]["file-log-uuid"], uuid);
        assert_eq!(e["request"]["method"], "POST");
        assert_eq!(e["response"]["status"], 200);
    }
    assert_eq!(entries[0]["service"]["protocol"], "grpc");
    assert_eq!(entries[1]["service"]["protocol"], "grpcs");
    let metrics = gw.status_get("/metrics").body_str();
    for (svc, route) in [
        ("grpc-service", "grpc-route"),
        ("grpcs-service", "grpcs-route"),
    ] {
        let series = format!(
            r#"kong_http_requests_total{{service="{svc}",route="{route}",code="200",source="service",workspace="default",consumer=""}} 1"#
        );
        assert!(metrics.contains(&series), "{series} not in\n{metrics}");
    }
}
