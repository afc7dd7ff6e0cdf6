//! WebSocket proxying end to end: a tokio-tungstenite client talks through
//! the gateway to a tokio-tungstenite upstream started in the test.
//!
//! What Kong 3.10 does, and so what is checked here:
//! - `kong/runloop/handler.lua` (access, "Keep-Alive and WebSocket Protocol
//!   Upgrade Headers"): a request with `Upgrade: websocket` gets
//!   `var.upstream_connection = "keep-alive, Upgrade"` and
//!   `var.upstream_upgrade = "websocket"`, sent by `nginx_kong.lua`'s
//!   `proxy_set_header Connection $upstream_connection` and
//!   `proxy_set_header Upgrade $upstream_upgrade`, beside the usual
//!   `X-Forwarded-*` and `X-Real-IP`.
//! - After the `101`, nginx pipes bytes both ways
//!   (`ngx_http_upstream_process_upgraded`): frames, fragments and control
//!   frames pass untouched.
//! - Timeouts in that pipe (same function): the only read timer is on the
//!   upstream side, `ngx_add_timer(upstream->read, u->conf->read_timeout)`
//!   (the service's `read_timeout`, set by Kong's balancer with
//!   `set_timeouts`), and it is re-armed at the end of every pass, whichever
//!   side woke it: traffic in either direction keeps the tunnel open. There
//!   is no read timer on the client side (`client_body_timeout` plays no
//!   part), and write timers (`send_timeout`) only run while a write is
//!   blocked. When the read timer fires, "upstream timed out" finalizes the
//!   request: the header was sent, so both connections are just closed.
//! - The log phase runs once, after the tunnel ends, with status 101.
//!
//! Route protocols `ws`/`wss` are Kong Enterprise only: Kong OSS 3.10 does
//! not have them (`kong/constants.lua` `protocols_with_subsystem`), and
//! neither does this gateway, so WebSockets go over `http`/`https` routes.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gw_tests::gateway::{Gateway, TempDir};
use gw_tests::tls::TlsOptions;
use gw_tests::{free_port, Conn};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::client::Response as ClientResponse;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{accept_hdr_async, client_async, WebSocketStream};

/// Bound on every single wait in these tests.
const T: Duration = Duration::from_secs(10);

fn rt() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// The upstream.

/// What the upstream does once the handshake is done.
#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Echoes every text and binary message.
    Echo,
    /// Sends a ping first, then echoes.
    PingFirst,
    /// Sends a binary message as three frames first, then echoes.
    FragmentsFirst,
    /// Closes first with 4001 "upstream bye", then reads to the end.
    CloseFirst,
    /// Reads only (control replies aside, it never sends).
    Silent,
    /// Sends "tick N" every period, reads, never echoes.
    Tick(Duration),
    /// Sends 64 KiB binary messages as fast as it can, until that fails.
    Flood,
}

#[derive(Debug)]
enum Ev {
    Upgrade {
        target: String,
        headers: Vec<(String, String)>,
    },
    Msg(Message),
    /// The stream ended: `None` after a close handshake, else the error
    /// (e.g. the connection closed without one).
    Ended(Option<String>),
}

struct WsUpstream {
    port: u16,
    events: mpsc::UnboundedReceiver<Ev>,
}

impl WsUpstream {
    /// Listens on a free loopback port; its tasks die with the runtime.
    async fn start(mode: Mode) -> WsUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp, mode, tx.clone()));
            }
        });
        WsUpstream { port, events }
    }

    async fn next(&mut self) -> Ev {
        timeout(T, self.events.recv())
            .await
            .expect("upstream event in time")
            .expect("upstream running")
    }

    async fn upgrade(&mut self) -> (String, Vec<(String, String)>) {
        match self.next().await {
            Ev::Upgrade { target, headers } => (target, headers),
            e => panic!("expected the upgrade request, got {e:?}"),
        }
    }

    async fn msg(&mut self) -> Message {
        match self.next().await {
            Ev::Msg(m) => m,
            e => panic!("expected a message, got {e:?}"),
        }
    }

    async fn ended(&mut self) -> Option<String> {
        match self.next().await {
            Ev::Ended(e) => e,
            e => panic!("expected the end of the stream, got {e:?}"),
        }
    }
}

async fn serve(tcp: TcpStream, mode: Mode, tx: mpsc::UnboundedSender<Ev>) {
    let seen = tx.clone();
    // The callback's error type is tungstenite's, large or not.
    #[allow(clippy::result_large_err)]
    let record = move |req: &Request, resp: Response| {
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let _ = seen.send(Ev::Upgrade {
            target: req.uri().to_string(),
            headers,
        });
        Ok(resp)
    };
    let Ok(mut ws) = accept_hdr_async(tcp, record).await else {
        return;
    };
    match mode {
        Mode::PingFirst => {
            let _ = ws.send(Message::Ping("up-ping".into())).await;
        }
        Mode::FragmentsFirst => {
            let parts: [&[u8]; 3] = [&[1, 2, 3], &[4, 5], &[6]];
            for (i, part) in parts.iter().enumerate() {
                let op = if i == 0 { Data::Binary } else { Data::Continue };
                let frame = Frame::message(part.to_vec(), OpCode::Data(op), i == 2);
                let _ = ws.send(Message::Frame(frame)).await;
            }
        }
        Mode::Flood => {
            let chunk = bytes::Bytes::from(vec![0x5a; 64 << 10]);
            let end = loop {
                if let Err(e) = ws.send(Message::binary(chunk.clone())).await {
                    break e.to_string();
                }
            };
            let _ = tx.send(Ev::Ended(Some(end)));
            return;
        }
        Mode::CloseFirst => {
            let _ = ws
                .close(Some(CloseFrame {
                    code: CloseCode::Library(4001),
                    reason: "upstream bye".into(),
                }))
                .await;
        }
        _ => {}
    }
    let echo = !matches!(mode, Mode::Silent | Mode::Tick(_));
    let period = match mode {
        Mode::Tick(p) => p,
        _ => Duration::from_secs(3600),
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut n = 0u32;
    let end = loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(m)) => {
                    let data = m.is_text() || m.is_binary();
                    let _ = tx.send(Ev::Msg(m.clone()));
                    if echo && data {
                        if let Err(e) = ws.send(m).await {
                            break Some(e.to_string());
                        }
                    }
                }
                Some(Err(e)) => break Some(e.to_string()),
                None => break None,
            },
            _ = tick.tick(), if matches!(mode, Mode::Tick(_)) => {
                n += 1;
                if let Err(e) = ws.send(Message::text(format!("tick {n}"))).await {
                    break Some(e.to_string());
                }
            }
        }
    };
    let _ = tx.send(Ev::Ended(end));
}

/// A plain HTTP/1.1 keep-alive upstream: an `Upgrade` request to
/// `/forbidden` gets a 403, to `/ok` a 200 (both with a body); any other
/// request a 200 "plain". Returns the port and the request heads it got.
async fn http_upstream() -> (u16, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
                    buf.drain(..end + 4);
                    let upgrade = head.to_ascii_lowercase().contains("\r\nupgrade:");
                    let (status, body) = if !upgrade {
                        ("200 OK", "plain")
                    } else if head.contains(" /forbidden") {
                        ("403 Forbidden", "no websockets here")
                    } else {
                        ("200 OK", "not switching")
                    };
                    let _ = tx.send(head);
                    let resp = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
                        body.len()
                    );
                    if tcp.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, rx)
}

// ---------------------------------------------------------------------------
// The gateway and the client.

/// One service per `(route path, upstream port, extra service lines)`,
/// each with one `http, https` route; `plugins` is appended as is.
fn config(services: &[(&str, u16, &str)], plugins: &str) -> String {
    let mut y = String::from("_format_version: \"3.0\"\nservices:\n");
    for (i, (path, port, extra)) in services.iter().enumerate() {
        y.push_str(&format!(
            "- name: s{i}\n  url: http://127.0.0.1:{port}\n{extra}  routes:\n  - name: r{i}\n    protocols: [http, https]\n    paths: [\"{path}\"]\n"
        ));
    }
    y.push_str(plugins);
    y
}

async fn handshake<S>(stream: S, url: &str) -> (WebSocketStream<S>, ClientResponse)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    timeout(T, client_async(url, stream))
        .await
        .expect("handshake in time")
        .expect("handshake")
}

async fn connect(port: u16, path: &str) -> (WebSocketStream<TcpStream>, ClientResponse) {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    handshake(tcp, &format!("ws://127.0.0.1:{port}{path}")).await
}

async fn recv<S>(ws: &mut WebSocketStream<S>) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    timeout(T, ws.next())
        .await
        .expect("message in time")
        .expect("stream open")
        .expect("a message")
}

/// Reads the raw connection under `ws` until it closes; the bytes read
/// (nothing is expected once a close handshake is done or the gateway
/// dropped the tunnel) and how long it took.
async fn raw_until_closed<S>(ws: &mut WebSocketStream<S>) -> (Vec<u8>, Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match timeout(T, ws.get_mut().read(&mut buf)).await {
            Err(_) => panic!("connection still open after {T:?}; got {got:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, t0.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// `connections_active` on `/status` drops to 0 (bounded wait).
fn wait_no_connections(gw: &Gateway) {
    let n = |gw: &Gateway| gw.status()["server"]["connections_active"].as_u64();
    let deadline = Instant::now() + T;
    while Instant::now() < deadline && n(gw) != Some(0) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(n(gw), Some(0), "{}", gw.status());
}

/// Case 1's exchange and header checks, over `ws` (plain) or `wss`.
async fn echo_session<S>(
    mut ws: WebSocketStream<S>,
    resp: &ClientResponse,
    up: &mut WsUpstream,
    scheme: &str,
    listener_port: u16,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The client got the upstream's 101 with Kong's response headers.
    assert_eq!(resp.status(), 101);
    let h = resp.headers();
    assert_eq!(h.get("upgrade").unwrap(), "websocket", "{h:?}");
    let conn: Vec<_> = h.get_all("connection").iter().collect();
    assert_eq!(conn.len(), 1, "{h:?}");
    assert!(conn[0].as_bytes().eq_ignore_ascii_case(b"upgrade"), "{h:?}");
    assert!(h
        .get("via")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("kong/")));
    assert!(h.contains_key("x-kong-upstream-latency"), "{h:?}");
    assert!(h.contains_key("x-kong-proxy-latency"), "{h:?}");

    // What the upstream got: Kong's upgrade headers and forwarded headers.
    let (target, headers) = up.upgrade().await;
    assert_eq!(target, "/echo?x=1", "strip_path applies: {headers:?}");
    let one = |name: &str| {
        let v = header(&headers, name);
        assert_eq!(v.len(), 1, "{name}: {headers:?}");
        v[0].to_string()
    };
    assert_eq!(one("connection"), "keep-alive, Upgrade");
    assert_eq!(one("upgrade"), "websocket");
    assert_eq!(one("host"), format!("127.0.0.1:{}", up.port));
    assert_eq!(one("sec-websocket-version"), "13");
    assert_eq!(one("sec-websocket-key").len(), 24);
    assert_eq!(one("x-forwarded-for"), "127.0.0.1");
    assert_eq!(one("x-forwarded-proto"), scheme);
    assert_eq!(one("x-forwarded-host"), "127.0.0.1");
    assert_eq!(one("x-forwarded-port"), listener_port.to_string());
    assert_eq!(one("x-forwarded-path"), "/ws/echo");
    assert_eq!(one("x-forwarded-prefix"), "/ws");
    assert_eq!(one("x-real-ip"), "127.0.0.1");
    assert!(!one("x-kong-request-id").is_empty());

    // Text and binary, both ways.
    ws.send(Message::text("hello, upstream")).await.unwrap();
    assert_eq!(up.msg().await, Message::text("hello, upstream"));
    assert_eq!(recv(&mut ws).await, Message::text("hello, upstream"));
    let bin: Vec<u8> = vec![0, 1, 2, 0xfe, 0xff, b'\r', b'\n'];
    ws.send(Message::binary(bin.clone())).await.unwrap();
    assert_eq!(up.msg().await, Message::binary(bin.clone()));
    assert_eq!(recv(&mut ws).await, Message::binary(bin));

    ws.close(None).await.unwrap();
    assert!(matches!(recv(&mut ws).await, Message::Close(_)));
    assert!(matches!(up.msg().await, Message::Close(_)));
    assert_eq!(up.ended().await, None);
}

// ---------------------------------------------------------------------------
// 1. Messages and headers.

/// Text and binary messages are echoed both ways; the upstream sees the
/// upgrade with Kong's `Connection: keep-alive, Upgrade`,
/// `Upgrade: websocket` and forwarded headers; the client sees the `101`
/// with Kong's response headers.
#[test]
fn messages_are_echoed_and_the_upstream_gets_kongs_upgrade_headers() {
    let rt = rt();
    let mut up = rt.block_on(WsUpstream::start(Mode::Echo));
    let gw = Gateway::start(&config(&[("/ws", up.port, "")], ""));
    rt.block_on(async {
        let (ws, resp) = connect(gw.port, "/ws/echo?x=1").await;
        echo_session(ws, &resp, &mut up, "http", gw.port).await;
    });
    wait_no_connections(&gw);
}

/// Route protocols `ws` and `wss` are Kong Enterprise's: Kong OSS refuses
/// them in its schema, and so does the gateway.
#[test]
fn ws_route_protocols_are_refused_as_in_kong_oss() {
    for p in ["ws", "wss"] {
        let yml = format!(
            "_format_version: \"3.0\"\nservices:\n- name: s\n  url: http://127.0.0.1:9\n  routes:\n  - name: r\n    protocols: [{p}]\n    paths: [\"/ws\"]\n"
        );
        match Gateway::try_start(&yml) {
            Ok(_) => panic!("protocols: [{p}] accepted"),
            Err(out) => assert!(
                out.contains(
                    "expected one of: grpc, grpcs, http, https, tcp, tls, tls_passthrough, udp"
                ),
                "{out}"
            ),
        }
    }
}

// 2. Size and volume.

/// An 8 MiB binary message goes through intact both ways, then 2000 small
/// messages sent in a row arrive complete and in order.
#[test]
fn large_messages_and_many_small_ones_pass_intact() {
    let rt = rt();
    let mut up = rt.block_on(WsUpstream::start(Mode::Echo));
    let gw = Gateway::start(&config(&[("/ws", up.port, "")], ""));
    rt.block_on(async {
        let (mut ws, _) = connect(gw.port, "/ws").await;
        up.upgrade().await;
        let mut big = vec![0u8; 8 << 20];
        rand::thread_rng().fill(&mut big[..]);
        ws.send(Message::binary(big.clone())).await.unwrap();
        match up.msg().await {
            Message::Binary(b) => assert!(b[..] == big[..], "upstream got {} bytes", b.len()),
            m => panic!("{m:?}"),
        }
        match recv(&mut ws).await {
            Message::Binary(b) => assert!(b[..] == big[..], "client got {} bytes", b.len()),
            m => panic!("{m:?}"),
        }

        const N: usize = 2000;
        for i in 0..N {
            ws.feed(Message::text(format!("m{i}"))).await.unwrap();
        }
        ws.flush().await.unwrap();
        for i in 0..N {
            assert_eq!(up.msg().await, Message::text(format!("m{i}")));
        }
        for i in 0..N {
            assert_eq!(recv(&mut ws).await, Message::text(format!("m{i}")));
        }
        ws.close(None).await.unwrap();
        assert!(matches!(recv(&mut ws).await, Message::Close(_)));
    });
}

// 3. Fragmentation.

/// A message sent as several frames (a ping between them) arrives
/// reassembled at the other end, both ways; and the bytes of the upstream's
/// frames reach the client exactly as sent (the gateway does not touch
/// frames).
#[test]
fn fragmented_messages_pass_frame_by_frame() {
    let rt = rt();
    let mut echo = rt.block_on(WsUpstream::start(Mode::Echo));
    let mut frag = rt.block_on(WsUpstream::start(Mode::FragmentsFirst));
    let gw = Gateway::start(&config(
        &[("/ws", echo.port, ""), ("/frag", frag.port, "")],
        "",
    ));
    rt.block_on(async {
        // Client to upstream: text in three frames with a ping in between.
        let (mut ws, _) = connect(gw.port, "/ws").await;
        echo.upgrade().await;
        let text = |s: &'static str, op: Data, fin: bool| {
            Message::Frame(Frame::message(s.as_bytes().to_vec(), OpCode::Data(op), fin))
        };
        ws.send(text("Hello, ", Data::Text, false)).await.unwrap();
        ws.send(text("fragmented ", Data::Continue, false))
            .await
            .unwrap();
        ws.send(Message::Ping("mid".into())).await.unwrap();
        ws.send(text("world", Data::Continue, true)).await.unwrap();
        assert_eq!(echo.msg().await, Message::Ping("mid".into()));
        assert_eq!(echo.msg().await, Message::text("Hello, fragmented world"));
        assert_eq!(recv(&mut ws).await, Message::Pong("mid".into()));
        assert_eq!(
            recv(&mut ws).await,
            Message::text("Hello, fragmented world")
        );
        ws.close(None).await.unwrap();

        // Upstream to client: three frames, reassembled.
        let (mut ws, _) = connect(gw.port, "/frag").await;
        frag.upgrade().await;
        assert_eq!(recv(&mut ws).await, Message::binary(vec![1, 2, 3, 4, 5, 6]));
        ws.close(None).await.unwrap();
        assert!(matches!(recv(&mut ws).await, Message::Close(_)));
        assert!(matches!(frag.msg().await, Message::Close(_)));
        assert_eq!(frag.ended().await, None);

        // The same, read raw: the three frames byte for byte (FIN clear,
        // clear, set; binary then continuation opcodes).
        let mut tcp = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        tcp.write_all(
            b"GET /frag HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
        let want: &[u8] = &[0x02, 3, 1, 2, 3, 0x00, 2, 4, 5, 0x80, 1, 6];
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                if buf.len() >= end + 4 + want.len() {
                    break end + 4;
                }
            }
            let n = timeout(T, tcp.read(&mut chunk)).await.unwrap().unwrap();
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        assert_eq!(&buf[head_end..], want, "{head}");
        frag.upgrade().await;
    });
}

// 4. Ping and pong.

/// A client's ping gets the upstream's pong through the gateway, and an
/// upstream's ping gets the client's pong.
#[test]
fn pings_get_pongs_both_ways() {
    let rt = rt();
    let mut echo = rt.block_on(WsUpstream::start(Mode::Echo));
    let mut pinger = rt.block_on(WsUpstream::start(Mode::PingFirst));
    let gw = Gateway::start(&config(
        &[("/ws", echo.port, ""), ("/ping", pinger.port, "")],
        "",
    ));
    rt.block_on(async {
        let (mut ws, _) = connect(gw.port, "/ws").await;
        echo.upgrade().await;
        ws.send(Message::Ping("c-ping".into())).await.unwrap();
        assert_eq!(echo.msg().await, Message::Ping("c-ping".into()));
        assert_eq!(recv(&mut ws).await, Message::Pong("c-ping".into()));
        ws.close(None).await.unwrap();

        let (mut ws, _) = connect(gw.port, "/ping").await;
        pinger.upgrade().await;
        assert_eq!(recv(&mut ws).await, Message::Ping("up-ping".into()));
        // tungstenite answers the ping with the next write (after it).
        ws.send(Message::text("after")).await.unwrap();
        let got = [pinger.msg().await, pinger.msg().await];
        assert!(got.contains(&Message::Pong("up-ping".into())), "{got:?}");
        assert!(got.contains(&Message::text("after")), "{got:?}");
        assert_eq!(recv(&mut ws).await, Message::text("after"));
        ws.close(None).await.unwrap();
        assert!(matches!(recv(&mut ws).await, Message::Close(_)));
    });
}

// 5. Close handshakes and teardown.

/// A client's close (code and reason) reaches the upstream and its reply
/// comes back; an upstream's close reaches the client and the reply goes
/// back; a client that just disconnects is noticed upstream. Each time
/// both TCP connections end, and no connection stays open.
#[test]
fn close_handshakes_both_ways_end_both_connections() {
    let rt = rt();
    let mut echo = rt.block_on(WsUpstream::start(Mode::Echo));
    let mut closer = rt.block_on(WsUpstream::start(Mode::CloseFirst));
    let gw = Gateway::start(&config(
        &[("/ws", echo.port, ""), ("/close", closer.port, "")],
        "",
    ));
    rt.block_on(async {
        // Client-initiated.
        let (mut ws, _) = connect(gw.port, "/ws").await;
        echo.upgrade().await;
        let bye = CloseFrame {
            code: CloseCode::Library(4000),
            reason: "client bye".into(),
        };
        ws.close(Some(bye.clone())).await.unwrap();
        assert_eq!(echo.msg().await, Message::Close(Some(bye.clone())));
        assert_eq!(recv(&mut ws).await, Message::Close(Some(bye)));
        assert_eq!(echo.ended().await, None);
        let (rest, _) = raw_until_closed(&mut ws).await;
        assert!(rest.is_empty(), "{rest:?}");

        // Upstream-initiated.
        let (mut ws, _) = connect(gw.port, "/close").await;
        closer.upgrade().await;
        let bye = CloseFrame {
            code: CloseCode::Library(4001),
            reason: "upstream bye".into(),
        };
        assert_eq!(recv(&mut ws).await, Message::Close(Some(bye.clone())));
        // The reply is written as the stream is polled again.
        assert!(timeout(T, ws.next()).await.unwrap().is_none());
        assert_eq!(closer.msg().await, Message::Close(Some(bye)));
        assert_eq!(closer.ended().await, None);
        let (rest, _) = raw_until_closed(&mut ws).await;
        assert!(rest.is_empty(), "{rest:?}");

        // The client goes away without a close frame: the gateway closes
        // the upstream connection.
        let (mut ws, _) = connect(gw.port, "/ws").await;
        echo.upgrade().await;
        ws.send(Message::text("last")).await.unwrap();
        assert_eq!(echo.msg().await, Message::text("last"));
        drop(ws);
        assert!(echo.ended().await.is_some());
    });
    wait_no_connections(&gw);
}

// 6. Timeouts.

/// nginx's only read timer in an upgraded connection is the upstream
/// read's (`read_timeout`): a tunnel where nothing moves is closed after
/// about that long, both connections, without a byte more to the client.
#[test]
fn an_idle_tunnel_is_closed_after_read_timeout() {
    let rt = rt();
    let mut up = rt.block_on(WsUpstream::start(Mode::Echo));
    let gw = Gateway::start(&config(&[("/ws", up.port, "  read_timeout: 1000\n")], ""));
    rt.block_on(async {
        let (mut ws, _) = connect(gw.port, "/ws").await;
        up.upgrade().await;
        let (rest, took) = raw_until_closed(&mut ws).await;
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert!(up.ended().await.is_some());
    });
    wait_no_connections(&gw);
}

/// nginx re-arms the upstream read timer whenever the tunnel moves:
/// an upstream that sends every 300 ms keeps it open past 2 s with
/// `read_timeout: 1000`.
#[test]
fn upstream_traffic_keeps_a_tunnel_open_past_read_timeout() {
    let rt = rt();
    let mut up = rt.block_on(WsUpstream::start(Mode::Tick(Duration::from_millis(300))));
    let gw = Gateway::start(&config(&[("/ws", up.port, "  read_timeout: 1000\n")], ""));
    rt.block_on(async {
        let (mut ws, _) = connect(gw.port, "/ws").await;
        up.upgrade().await;
        let t0 = Instant::now();
        let mut n = 0;
        while t0.elapsed() < Duration::from_millis(2500) {
            n += 1;
            assert_eq!(recv(&mut ws).await, Message::text(format!("tick {n}")));
        }
        assert!(n >= 7, "{n}");
        ws.close(None).await.unwrap();
        loop {
            if let Message::Close(_) = recv(&mut ws).await {
                break;
            }
        }
    });
}

/// The timer is re-armed by client traffic as well (nginx re-arms it at
/// the end of every pass, whichever side woke it): a client that sends
/// every 300 ms to a silent upstream keeps the tunnel open past 2 s.
#[test]
fn client_traffic_keeps_a_tunnel_open_past_read_timeout() {
    let rt = rt();
    let mut up = rt.block_on(WsUpstream::start(Mode::Silent));
    let gw = Gateway::start(&config(&[("/ws", up.port, "  read_timeout: 1000\n")], ""));
    rt.block_on(async {
        let (mut ws, _) = connect(gw.port, "/ws").await;
        up.upgrade().await;
        for i in 0..9 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            ws.send(Message::text(format!("c{i}"))).await.unwrap();
            assert_eq!(up.msg().await, Message::text(format!("c{i}")));
        }
        ws.close(None).await.unwrap();
        assert!(matches!(recv(&mut ws).await, Message::Close(_)));
        assert!(matches!(up.msg().await, Message::Close(_)));
    });
}

/// `client_body_timeout` does not bound a tunnel (nginx sets no read
/// timer on the client side of an upgraded connection): with a 1 s
/// client_body_timeout and `read_timeout: 3000`, an idle tunnel lives
/// about 3 s.
#[test]
fn client_body_timeout_does_not_bound_a_tunnel() {
    let rt = rt();
    let mut up = rt.block_on(WsUpstream::start(Mode::Echo));
    let gw = Gateway::start_with(
        &config(&[("/ws", up.port, "  read_timeout: 3000\n")], ""),
        &[("KONG_NGINX_HTTP_CLIENT_BODY_TIMEOUT", "1s")],
    );
    rt.block_on(async {
        let (mut ws, _) = connect(gw.port, "/ws").await;
        up.upgrade().await;
        let (rest, took) = raw_until_closed(&mut ws).await;
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
        assert!(
            took >= Duration::from_millis(2500) && took < Duration::from_secs(8),
            "{took:?}"
        );
        assert!(up.ended().await.is_some());
    });
}

/// The client side's only timer is nginx's `send_timeout`, while a write
/// to the client is blocked: a client that stops reading while the
/// upstream keeps sending is dropped after it, and so is the upstream
/// connection (`read_timeout` is the default 60 s here).
#[test]
fn a_client_that_stops_reading_is_dropped_after_send_timeout() {
    let rt = rt();
    let mut up = rt.block_on(WsUpstream::start(Mode::Flood));
    let gw = Gateway::start_with(
        &config(&[("/ws", up.port, "")], ""),
        &[("KONG_NGINX_HTTP_SEND_TIMEOUT", "1s")],
    );
    rt.block_on(async {
        let (_ws, _) = connect(gw.port, "/ws").await;
        up.upgrade().await;
        let t0 = Instant::now();
        // The upstream's writes fail once the gateway dropped its side.
        assert!(up.ended().await.is_some());
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(800), "{took:?}");
    });
    wait_no_connections(&gw);
}

// 7. No 101, no tunnel.

/// An upgrade request the upstream answers without `101` (403 or 200) gets
/// that answer as a normal response, without `Upgrade`, and the connection
/// stays HTTP: the next request on it is served normally. (The raw-front
/// side, bytes after such a request checked as a request, is in
/// http1_hardening.rs.)
#[test]
fn a_non_101_answer_to_an_upgrade_is_a_normal_response() {
    let rt = rt();
    let (port, mut heads) = rt.block_on(http_upstream());
    let gw = Gateway::start(&config(&[("/", port, "")], ""));
    // tungstenite sees the refusal.
    let err = rt
        .block_on(async {
            let tcp = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
            timeout(
                T,
                client_async(format!("ws://127.0.0.1:{}/forbidden", gw.port), tcp),
            )
            .await
            .unwrap()
        })
        .map(|_| ())
        .expect_err("refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 403),
        e => panic!("{e:?}"),
    }
    let head = rt.block_on(async { timeout(T, heads.recv()).await.unwrap().unwrap() });
    assert!(
        head.contains("\r\nConnection: keep-alive, Upgrade\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nUpgrade: websocket\r\n"), "{head}");

    for (path, status, body) in [
        ("/forbidden", 403, "no websockets here"),
        ("/ok", 200, "not switching"),
    ] {
        let mut c = Conn::open(gw.port);
        let upgrade = [
            ("Host", "127.0.0.1"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ];
        let r = c.request("GET", path, &upgrade, b"").expect(path);
        assert_eq!(r.status, status, "{path}");
        assert_eq!(r.body_str(), body, "{path}");
        assert!(r.header("upgrade").is_none(), "{path}: {:?}", r.headers);
        assert!(
            !r.header_all("connection")
                .iter()
                .any(|v| v.to_ascii_lowercase().contains("upgrade")),
            "{path}: {:?}",
            r.headers
        );
        let r = c
            .request("GET", "/next", &[("Host", "127.0.0.1")], b"")
            .expect("second request on the connection");
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body_str(), "plain", "{path}");
    }
}

// 8. wss.

/// Case 1 over the TLS listener.
#[test]
fn wss_messages_are_echoed_through_the_tls_listener() {
    let rt = rt();
    let mut up = rt.block_on(WsUpstream::start(Mode::Echo));
    let tls = free_port();
    let listen = format!("127.0.0.1:{{PROXY_PORT}}, 127.0.0.1:{tls} ssl");
    let gw = Gateway::start_with(
        &config(&[("/ws", up.port, "")], ""),
        &[("KONG_PROXY_LISTEN", &listen)],
    );
    rt.block_on(async {
        let tcp = TcpStream::connect(("127.0.0.1", tls)).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(TlsOptions::default().config());
        let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let stream = timeout(T, connector.connect(name, tcp))
            .await
            .unwrap()
            .unwrap();
        let (ws, resp) = handshake(stream, &format!("wss://127.0.0.1:{tls}/ws/echo?x=1")).await;
        echo_session(ws, &resp, &mut up, "https", tls).await;
    });
    wait_no_connections(&gw);
}

// 9. Logging.

/// A WebSocket session is logged once, when the tunnel ends, with status
/// 101: in the access log and in prometheus' `kong_http_requests_total`
/// (Kong's log phase runs after the tunnel; nginx keeps `$status` 101
/// also when the tunnel ends on a timeout).
#[test]
fn a_websocket_session_is_logged_once_with_101_when_it_ends() {
    let rt = rt();
    let mut up = rt.block_on(WsUpstream::start(Mode::Echo));
    let mut idle = rt.block_on(WsUpstream::start(Mode::Silent));
    let dir = TempDir::new("ws-log");
    let log = dir.path().join("access.log");
    let gw = Gateway::start_with(
        &config(
            &[
                ("/ws", up.port, ""),
                ("/idle", idle.port, "  read_timeout: 1000\n"),
            ],
            "plugins:\n- name: prometheus\n  config: {status_code_metrics: true}\n",
        ),
        &[("KONG_PROXY_ACCESS_LOG", log.to_str().unwrap())],
    );
    let series = |s: &str, r: &str| {
        format!(
            "kong_http_requests_total{{service=\"{s}\",route=\"{r}\",code=\"101\",source=\"service\",workspace=\"default\",consumer=\"\"}}"
        )
    };
    let value = |body: &str, series: &str| -> Option<f64> {
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    };
    let scrape = |gw: &Gateway| {
        let r = gw.status_get("/metrics");
        assert_eq!(r.status, 200);
        r.body_str()
    };
    let log_lines = |needle: &str| -> usize {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    };
    let wait = |ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + T;
        while !ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let (mut ws, _) = rt.block_on(connect(gw.port, "/ws"));
    rt.block_on(async {
        up.upgrade().await;
        ws.send(Message::text("x")).await.unwrap();
        assert_eq!(up.msg().await, Message::text("x"));
        assert_eq!(recv(&mut ws).await, Message::text("x"));
    });
    // Nothing is logged while the tunnel is open.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(value(&scrape(&gw), &series("s0", "r0")), None);
    assert_eq!(log_lines("\"GET /ws HTTP/1.1\""), 0);
    rt.block_on(async {
        ws.close(None).await.unwrap();
        assert!(matches!(recv(&mut ws).await, Message::Close(_)));
        assert_eq!(up.msg().await, Message::Close(None));
    });
    wait(&|| value(&scrape(&gw), &series("s0", "r0")).is_some());
    wait(&|| log_lines("\"GET /ws HTTP/1.1\" 101 ") > 0);
    assert_eq!(value(&scrape(&gw), &series("s0", "r0")), Some(1.0));
    assert_eq!(log_lines("\"GET /ws HTTP/1.1\""), 1);
    assert_eq!(log_lines("\"GET /ws HTTP/1.1\" 101 "), 1);

    // A tunnel closed by read_timeout: still 101, once.
    rt.block_on(async {
        let (mut ws, _) = connect(gw.port, "/idle").await;
        idle.upgrade().await;
        let (rest, _) = raw_until_closed(&mut ws).await;
        assert!(rest.is_empty());
    });
    wait(&|| value(&scrape(&gw), &series("s1", "r1")).is_some());
    wait(&|| log_lines("\"GET /idle HTTP/1.1\"") > 0);
    let body = scrape(&gw);
    assert_eq!(value(&body, &series("s1", "r1")), Some(1.0), "{body}");
    assert!(
        !body.contains("route=\"r1\",code=\"504\""),
        "{}",
        body.lines()
            .filter(|l| l.starts_with("kong_http_requests_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(log_lines("\"GET /idle HTTP/1.1\" 101 "), 1);
}
