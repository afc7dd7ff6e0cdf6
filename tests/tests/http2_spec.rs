//! HTTP/2 from clients: h2c (prior knowledge) and ALPN h2 on listeners
//! flagged `http2`, proxied to HTTP/1.1 upstreams with the same routing,
//! headers, plugins and errors as HTTP/1; and nginx's HTTP/2 limits against
//! the known attacks, each checked to leave the gateway serving a
//! well-behaved client on another connection.
//!
//! Well-behaved clients use the `h2` crate; attacks are written frame by
//! frame (`gw_tests::h2raw`), since a correct client library refuses to
//! send them.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use gw_tests::gateway::{fill_ports, Gateway, Recorder};
use gw_tests::h2raw::{self, Conn};
use gw_tests::tls::TlsOptions;
use gw_tests::{free_port, get};
use http::{Request, StatusCode};

const CONFIG: &str = r#"_format_version: "3.0"
services:
- name: up
  url: http://{UP0}
  routes:
  - name: r
    paths: ["/"]
- name: keyed
  url: http://{UP0}
  routes:
  - name: keyed
    paths: ["/keyed"]
    plugins:
    - name: key-auth
"#;

fn h2c_listen() -> Vec<(&'static str, &'static str)> {
    vec![("KONG_PROXY_LISTEN", "127.0.0.1:{PROXY_PORT} http2")]
}

fn start(up: &Recorder, env: &[(&str, &str)]) -> Gateway {
    let mut all = h2c_listen();
    all.extend_from_slice(env);
    Gateway::start_with(&fill_ports(CONFIG, &[up.port]), &all)
}

type Client = h2::client::SendRequest<Bytes>;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An h2c connection (prior knowledge) to `port`.
async fn h2c(port: u16) -> Client {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    client
}

/// An h2 connection over TLS, ALPN `h2` (no certificate checks).
async fn h2_tls(port: u16) -> Result<Client, String> {
    let mut opts = TlsOptions::sni("example.com");
    opts.alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(opts.config());
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("example.com").unwrap();
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    if alpn.as_deref() != Some(b"h2") {
        return Err(format!("ALPN chose {alpn:?}"));
    }
    let (client, conn) = h2::client::handshake(tls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(client)
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

async fn send(
    client: &mut Client,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Answer, h2::Error> {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(()).unwrap();
    let mut c = client.clone().ready().await?;
    let (resp, mut stream) = c.send_request(req, body.is_none())?;
    if let Some(b) = body {
        stream.send_data(Bytes::copy_from_slice(b), true)?;
    }
    let resp = resp.await?;
    let (parts, mut recv) = resp.into_parts();
    let mut body = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        body.extend_from_slice(&chunk);
    }
    *client = c;
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

async fn get_h2(client: &mut Client, uri: &str) -> Answer {
    send(client, "GET", uri, &[], None).await.unwrap()
}

#[test]
fn h2c_requests_are_routed_and_forwarded_like_http1() {
    let up = Recorder::start();
    let gw = start(&up, &[]);
    rt().block_on(async {
        let mut c = h2c(gw.port).await;
        let uri = format!("http://example.com:{}/a/b?x=1", gw.port);
        let a = send(&mut c, "GET", &uri, &[("x-custom", "1")], None)
            .await
            .unwrap();
        assert_eq!(a.status, 200);
        assert!(a.header("x-kong-request-id").is_some());
        assert!(a.header("via").is_some_and(|v| v.contains("kong/")));
        // Several requests on the one connection.
        for _ in 0..5 {
            assert_eq!(get_h2(&mut c, &uri).await.status, 200);
        }
        // A body goes through (HTTP/2 DATA to an HTTP/1.1 upstream).
        let a = send(
            &mut c,
            "POST",
            &uri,
            &[("content-type", "text/plain")],
            Some(b"hello h2"),
        )
        .await
        .unwrap();
        assert_eq!(a.status, 200);
    });
    let r = up.last();
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/a/b?x=1");
    assert_eq!(r.body, b"hello h2");
    // Kong's upstream headers: the host from :authority, Via with the
    // client's HTTP version.
    assert_eq!(r.header("x-forwarded-host"), Some("example.com"));
    assert_eq!(r.header("x-forwarded-proto"), Some("http"));
    assert_eq!(r.header("x-forwarded-path"), Some("/a/b"));
    assert!(
        r.header("via").is_some_and(|v| v.starts_with("2 kong/")),
        "{:?}",
        r.header("via")
    );
    assert_eq!(
        r.header("host"),
        Some(format!("127.0.0.1:{}", up.port).as_str())
    );
    assert_eq!(up.requests()[0].header("x-custom"), Some("1"));
}

#[test]
fn http1_still_served_on_an_http2_listener() {
    let up = Recorder::start();
    let gw = start(&up, &[]);
    // nginx's `http2 on` sniffs the preface: HTTP/1 clients keep working,
    // short requests included.
    let r = get(gw.port, "/x", &[]);
    assert_eq!(r.status, 200);
    let raw =
        gw_tests::raw_request(gw.port, b"GET / HTTP/1.0\r\n\r\n", Duration::from_secs(5)).unwrap();
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
}

#[test]
fn h2c_is_not_served_on_a_listener_without_http2() {
    let up = Recorder::start();
    let gw = Gateway::start(&fill_ports(CONFIG, &[up.port]));
    let mut conn = Conn::connect(gw.port, &[]).unwrap();
    // The preface is an HTTP/1 request line nginx refuses.
    let (closed, _) = conn.closed_within(Duration::from_secs(5));
    assert!(closed);
    assert_eq!(up.count(), 0);
    assert_eq!(get(gw.port, "/", &[]).status, 200);
}

#[test]
fn alpn_h2_on_an_http2_ssl_listener_only() {
    let up = Recorder::start();
    let tls_h2 = free_port();
    let tls_h1 = free_port();
    let listen =
        format!("127.0.0.1:{{PROXY_PORT}}, 127.0.0.1:{tls_h2} http2 ssl, 127.0.0.1:{tls_h1} ssl");
    let _gw = Gateway::start_with(
        &fill_ports(CONFIG, &[up.port]),
        &[("KONG_PROXY_LISTEN", listen.as_str())],
    );
    assert!(gw_tests::wait_for_port(tls_h2, Duration::from_secs(5)));
    rt().block_on(async {
        let mut c = h2_tls(tls_h2).await.unwrap();
        let a = get_h2(&mut c, "https://example.com/tls").await;
        assert_eq!(a.status, 200);
        // Without `http2` the listener speaks HTTP/1.1 only.
        let err = h2_tls(tls_h1).await.err().unwrap();
        assert!(
            err.contains("ALPN chose Some([104, 116, 116, 112, 47, 49, 46, 49])"),
            "{err}"
        );
    });
    let r = up.last();
    assert_eq!(r.header("x-forwarded-proto"), Some("https"));
    assert_eq!(
        r.header("x-forwarded-port"),
        Some(tls_h2.to_string().as_str())
    );
    // A client offering only http/1.1 still gets it on the h2 listener.
    let mut client =
        gw_tests::tls::TlsClient::connect(tls_h2, &TlsOptions::sni("example.com")).unwrap();
    assert_eq!(client.alpn().as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(client.get("example.com", "/h1", &[]).status, 200);
}

#[test]
fn proxy_protocol_and_sni_reach_h2_requests() {
    // The transport's facts (PROXY addresses, TLS SNI) hold for every
    // stream of an HTTP/2 connection.
    let up = Recorder::start();
    let tls = free_port();
    let yml = format!(
        "{}\n- name: by-sni\n  url: http://{{UP0}}/sni\n  routes:\n  - name: by-sni\n    protocols: [https]\n    hosts: [sni.example]\n    snis: [sni.example]\n",
        CONFIG.trim_end()
    );
    let listen =
        format!("127.0.0.1:{{PROXY_PORT}} http2 proxy_protocol, 127.0.0.1:{tls} http2 ssl");
    let gw = Gateway::start_with(
        &fill_ports(&yml, &[up.port]),
        &[
            ("KONG_PROXY_LISTEN", listen.as_str()),
            ("KONG_TRUSTED_IPS", "127.0.0.1"),
            ("KONG_REAL_IP_HEADER", "proxy_protocol"),
        ],
    );
    assert!(gw_tests::wait_for_port(tls, Duration::from_secs(5)));
    rt().block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
            .await
            .unwrap();
        tcp.write_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n")
            .await
            .unwrap();
        let (c, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let mut c = c;
        for _ in 0..2 {
            assert_eq!(get_h2(&mut c, "http://example.com/pp").await.status, 200);
        }
    });
    assert!(up
        .requests()
        .iter()
        .all(|r| r.header("x-real-ip") == Some("203.0.113.7")));
    rt().block_on(async {
        let mut opts = TlsOptions::sni("sni.example");
        opts.alpn = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(opts.config());
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", tls))
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("sni.example").unwrap();
        let stream = connector.connect(name, tcp).await.unwrap();
        let (mut c, conn) = h2::client::handshake(stream).await.unwrap();
        tokio::spawn(conn);
        let a = get_h2(&mut c, "https://sni.example/x").await;
        assert_eq!(a.status, 200);
    });
    assert_eq!(up.last().target, "/sni/x");
}

#[test]
fn kong_answers_and_plugins_over_h2() {
    let up = Recorder::start();
    let gw = Gateway::start_with(
        &fill_ports(
            &CONFIG.replace(r#"    paths: ["/"]"#, r#"    paths: ["/open"]"#),
            &[up.port],
        ),
        &h2c_listen(),
    );
    rt().block_on(async {
        let mut c = h2c(gw.port).await;
        // No route: Kong's JSON 404.
        let a = get_h2(&mut c, "http://example.com/nothing").await;
        assert_eq!(a.status, 404);
        assert_eq!(a.json()["message"], "no Route matched with those values");
        assert!(a.header("x-kong-response-latency").is_some());
        // key-auth runs the same way.
        let a = get_h2(&mut c, "http://example.com/keyed").await;
        assert_eq!(a.status, 401);
        assert_eq!(a.json()["message"], "No API key found in request");
        assert!(a.header("www-authenticate").is_some());
        // TRACE is refused as over HTTP/1.
        let a = send(&mut c, "TRACE", "http://example.com/open", &[], None)
            .await
            .unwrap();
        assert_eq!(a.status, 405);
    });
    assert_eq!(up.count(), 0);
    let metrics = gw.status_get("/metrics").body_str();
    assert!(metrics.contains("kong_nginx_requests_total"), "{metrics}");
}

#[test]
fn max_concurrent_streams_follows_the_setting() {
    let up = Recorder::start();
    let gw = start(
        &up,
        &[("KONG_NGINX_HTTP_HTTP2_MAX_CONCURRENT_STREAMS", "3")],
    );
    let mut conn = Conn::connect(gw.port, &[]).unwrap();
    let settings = conn.handshake().unwrap();
    assert!(
        settings
            .settings()
            .contains(&(h2raw::SETTINGS_MAX_CONCURRENT_STREAMS, 3)),
        "{:?}",
        settings.settings()
    );
    // Four streams left open (no END_STREAM): the fourth is refused.
    let block = h2raw::get_block("example.com", "/slow");
    for i in 0..4u32 {
        conn.headers(1 + 2 * i, &block, false).unwrap();
    }
    let refused = conn.wait_for(Duration::from_secs(5), |f| f.kind == h2raw::RST_STREAM);
    let refused = refused.expect("a RST_STREAM for the stream over the limit");
    assert_eq!(refused.stream, 7);
    // REFUSED_STREAM (0x7) or PROTOCOL_ERROR (0x1), as RFC 9113 5.1.2 allows.
    assert!(
        matches!(refused.rst_code(), Some(0x7 | 0x1)),
        "{:?}",
        refused.rst_code()
    );
    // Kong's default is nginx's 128.
    drop(conn);
    let gw2 = start(&up, &[]);
    let mut conn = Conn::connect(gw2.port, &[]).unwrap();
    let settings = conn.handshake().unwrap();
    assert!(settings
        .settings()
        .contains(&(h2raw::SETTINGS_MAX_CONCURRENT_STREAMS, 128)));
}

/// A well-behaved client on its own connection is still served.
fn still_serves(port: u16) {
    rt().block_on(async {
        let mut c = h2c(port).await;
        let a = tokio::time::timeout(
            Duration::from_secs(10),
            get_h2(&mut c, "http://example.com/anything/ok"),
        )
        .await
        .expect("a well-behaved client is answered in time");
        assert_eq!(a.status, 200);
    });
    assert_eq!(get(port, "/anything/ok-h1", &[]).status, 200);
}

#[test]
fn rapid_reset_is_bounded_per_connection() {
    // CVE-2023-44487: open a stream and reset it at once, many times. The
    // connection carries at most keepalive_requests streams, then GOAWAY.
    let up = Recorder::start();
    let gw = start(&up, &[("KONG_NGINX_HTTP_KEEPALIVE_REQUESTS", "100")]);
    let mut conn = Conn::connect(gw.port, &[]).unwrap();
    conn.handshake().unwrap();
    let block = h2raw::get_block("example.com", "/reset");
    let mut batch = Vec::new();
    let mut sent = 0u32;
    for i in 0..2000u32 {
        let id = 1 + 2 * i;
        batch.extend_from_slice(&h2raw::frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS | h2raw::END_STREAM,
            id,
            &block,
        ));
        batch.extend_from_slice(&h2raw::rst_stream(id, 0x8));
        if batch.len() > 32 * 1024 {
            if conn.send(&batch).is_err() {
                break;
            }
            batch.clear();
        }
        sent = i + 1;
    }
    let _ = conn.send(&batch);
    let (closed, goaways) = conn.closed_within(Duration::from_secs(10));
    assert!(
        closed || !goaways.is_empty(),
        "the attacking connection is ended"
    );
    assert!(sent > 100);
    // The upstream saw at most the connection's budget of requests.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        up.count() <= 100,
        "{} requests reached the upstream",
        up.count()
    );
    still_serves(gw.port);
}

#[test]
fn keepalive_requests_ends_an_h2_connection_with_goaway() {
    let up = Recorder::start();
    let gw = start(&up, &[("KONG_NGINX_HTTP_KEEPALIVE_REQUESTS", "3")]);
    rt().block_on(async {
        let mut c = h2c(gw.port).await;
        for _ in 0..3 {
            assert_eq!(get_h2(&mut c, "http://example.com/k").await.status, 200);
        }
        // The connection drained: a fourth request on it fails.
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            send(&mut c, "GET", "http://example.com/k", &[], None),
        )
        .await
        .unwrap();
        assert!(r.is_err());
    });
    assert_eq!(up.count(), 3);
    still_serves(gw.port);
}

#[test]
fn continuation_flood_is_cut_off() {
    // CVE-2024-27316 class: a header block that never ends, in endless
    // CONTINUATION frames. It is bounded by the header list size.
    let up = Recorder::start();
    let gw = start(&up, &[]);
    let mut conn = Conn::connect(gw.port, &[]).unwrap();
    conn.handshake().unwrap();
    let mut block = h2raw::get_block("example.com", "/cont");
    conn.send(&h2raw::frame(h2raw::HEADERS, 0, 1, &block))
        .unwrap();
    block.clear();
    for i in 0..200 {
        h2raw::literal(&mut block, format!("x-flood-{i}").as_bytes(), &[b'a'; 200]);
    }
    let mut alive = true;
    let started = Instant::now();
    for _ in 0..20_000 {
        if conn
            .send(&h2raw::frame(h2raw::CONTINUATION, 0, 1, &block))
            .is_err()
        {
            alive = false;
            break;
        }
        if started.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    let (closed, goaway) = conn.closed_within(Duration::from_secs(5));
    eprintln!("continuation flood: alive {alive}, closed {closed}, {goaway:?}");
    assert!(!alive || closed, "the flooding connection is closed");
    assert_eq!(up.count(), 0);
    still_serves(gw.port);
}

#[test]
fn hpack_bomb_is_refused() {
    // One 4 KiB field enters the HPACK table, then is referenced with one
    // byte each: 16 KiB of frame expand to 64 MiB of headers.
    let up = Recorder::start();
    let gw = start(&up, &[]);
    let mut conn = Conn::connect(gw.port, &[]).unwrap();
    conn.handshake().unwrap();
    let mut block = h2raw::get_block("example.com", "/bomb");
    h2raw::literal_indexed(&mut block, b"x-bomb", &[b'b'; 4000]);
    for _ in 0..16_000 {
        h2raw::indexed(&mut block, 62);
    }
    // Split to the default max frame size.
    let chunks: Vec<&[u8]> = block.chunks(16_384).collect();
    for (i, c) in chunks.iter().enumerate() {
        let last = i + 1 == chunks.len();
        let flags = if last {
            h2raw::END_HEADERS | h2raw::END_STREAM
        } else {
            0
        };
        let kind = if i == 0 {
            h2raw::HEADERS
        } else {
            h2raw::CONTINUATION
        };
        if conn.send(&h2raw::frame(kind, flags, 1, c)).is_err() {
            break;
        }
    }
    // Refused: a 431, a stream reset, or the connection closed.
    let answer = conn.wait_for(Duration::from_secs(5), |f| {
        f.stream == 1 && (f.kind == h2raw::HEADERS || f.kind == h2raw::RST_STREAM)
            || f.kind == h2raw::GOAWAY
    });
    eprintln!("hpack bomb answered with {answer:?}");
    let answer = answer.map(|mut f| {
        f.payload.truncate(64);
        f
    });
    assert!(
        answer.is_some(),
        "the bomb was neither answered nor refused"
    );
    if let Some(f) = &answer {
        if f.kind == h2raw::HEADERS {
            // `:status` 431 is not in the static table: a literal.
            assert!(f.payload.windows(3).any(|w| w == b"431"), "{f:?}");
        }
    }
    assert_eq!(up.count(), 0);
    still_serves(gw.port);
}

/// Sends `frames` as fast as the socket takes them for `secs` without
/// reading anything back; returns how many went out.
fn flood(conn: &mut Conn, frame: &[u8], secs: u64) -> usize {
    let mut batch = Vec::new();
    for _ in 0..1000 {
        batch.extend_from_slice(frame);
    }
    conn.sock
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        if std::io::Write::write_all(&mut conn.sock, &batch).is_err() {
            break;
        }
        sent += 1000;
    }
    sent
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn settings_and_ping_floods_do_not_grow_without_bound() {
    // Frames that each ask for an acknowledgement, sent without reading
    // one back: the answers must not pile up in the gateway.
    let up = Recorder::start();
    let gw = start(&up, &[]);
    let before = rss_kib(gw.proc.pid());
    for kind in ["settings", "ping"] {
        let mut conn = Conn::connect(gw.port, &[]).unwrap();
        let frame = match kind {
            "settings" => h2raw::settings(&[(h2raw::SETTINGS_INITIAL_WINDOW_SIZE, 65_535)]),
            _ => h2raw::frame(h2raw::PING, 0, 0, b"12345678"),
        };
        let sent = flood(&mut conn, &frame, 3);
        assert!(sent > 0);
        still_serves(gw.port);
        drop(conn);
    }
    let after = rss_kib(gw.proc.pid());
    // Generous: the point is no growth with the number of frames sent
    // (hundreds of thousands here).
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

#[test]
fn a_client_holding_its_window_shut_is_dropped_after_send_timeout() {
    // A zero window: the client asks for a large response and never lets
    // it flow. nginx's send_timeout ends the stream; others are served.
    let (mut httpbin, hb_port) = gw_tests::start_httpbin("h2-zero-window");
    let gw = Gateway::start_with(
        &fill_ports(CONFIG, &[hb_port]),
        &[
            ("KONG_PROXY_LISTEN", "127.0.0.1:{PROXY_PORT} http2"),
            ("KONG_NGINX_HTTP_SEND_TIMEOUT", "1s"),
        ],
    );
    let mut conn = Conn::connect(gw.port, &[(h2raw::SETTINGS_INITIAL_WINDOW_SIZE, 0)]).unwrap();
    conn.handshake().unwrap();
    conn.headers(1, &h2raw::get_block("example.com", "/bytes/1000000"), true)
        .unwrap();
    still_serves(gw.port);
    let started = Instant::now();
    let ended = conn.wait_for(Duration::from_secs(10), |f| {
        (f.stream == 1 && f.kind == h2raw::RST_STREAM) || f.kind == h2raw::GOAWAY
    });
    assert!(ended.is_some(), "the stalled stream was not ended");
    assert!(started.elapsed() < Duration::from_secs(10));
    still_serves(gw.port);
    httpbin.kill();
}

#[test]
fn sigterm_lets_open_h2_streams_finish_then_exits() {
    // Graceful stop with an HTTP/2 client mid-request: GOAWAY, the stream
    // in flight is answered, the connection closes, the process exits.
    let (mut httpbin, hb_port) = gw_tests::start_httpbin("h2-sigterm");
    let mut gw = Gateway::start_with(
        &fill_ports(CONFIG, &[hb_port]),
        &[
            ("KONG_PROXY_LISTEN", "127.0.0.1:{PROXY_PORT} http2"),
            ("KONG_DRAIN_DELAY", "0"),
        ],
    );
    let port = gw.port;
    let pending = std::thread::spawn(move || {
        rt().block_on(async {
            let mut c = h2c(port).await;
            get_h2(&mut c, "http://example.com/delay/1").await.status
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(gw.proc.signal("TERM"));
    assert_eq!(pending.join().unwrap(), 200);
    let started = Instant::now();
    let status = gw.proc.wait_exit(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    httpbin.kill();
}

#[test]
fn http1_front_rules_that_apply_to_h2_hold() {
    // nginx parses an HTTP/2 :path and ignores field names by the same
    // rules as HTTP/1; client_max_body_size holds without Content-Length.
    let up = Recorder::start();
    let gw = start(&up, &[("KONG_NGINX_HTTP_CLIENT_MAX_BODY_SIZE", "10")]);
    rt().block_on(async {
        let mut c = h2c(gw.port).await;
        for path in ["/../x", "/a/%2e%2e/%2e%2e/x", "/%zz", "/a%00b"] {
            let a = get_h2(&mut c, &format!("http://example.com{path}")).await;
            assert_eq!(a.status, 400, "{path}");
        }
        let a = send(
            &mut c,
            "GET",
            "http://example.com/fields",
            &[
                ("x_forwarded_for", "6.6.6.6"),
                ("transfer_encoding", "chunked"),
                ("api_key", "kept"),
                ("x.dotted", "dropped"),
            ],
            None,
        )
        .await
        .unwrap();
        assert_eq!(a.status, 200);
        // Too large, announced or not.
        let a = send(
            &mut c,
            "POST",
            "http://example.com/big",
            &[("content-length", "20")],
            Some(b"01234567890123456789"),
        )
        .await
        .unwrap();
        assert_eq!(a.status, 413);
        let a = send(
            &mut c,
            "POST",
            "http://example.com/big",
            &[],
            Some(b"01234567890123456789"),
        )
        .await
        .unwrap();
        assert_eq!(a.status, 413);
        let a = send(
            &mut c,
            "POST",
            "http://example.com/small",
            &[],
            Some(b"0123"),
        )
        .await
        .unwrap();
        assert_eq!(a.status, 200);
    });
    let targets: Vec<String> = up.requests().iter().map(|r| r.target.clone()).collect();
    assert_eq!(targets, ["/fields", "/small"]);
    let r = &up.requests()[0];
    assert_eq!(r.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(r.header("api_key"), Some("kept"));
    assert!(r.header("x_forwarded_for").is_none() && r.header("transfer_encoding").is_none());
    assert!(r.header("x.dotted").is_none());
}
