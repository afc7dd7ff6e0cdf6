//! Session behaviour over an in-memory duplex, with paused tokio time so
//! the 30 s / 45 s timers cost nothing.

use std::io::Write;
use std::sync::Mutex;

use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::*;
use crate::ParseOptions;

#[derive(Default)]
struct TestSink {
    hash: Mutex<Option<String>>,
    /// Hashes applied through the full path.
    applied: Mutex<Vec<String>>,
    /// Configs applied from the cache without validation.
    validated: Mutex<Vec<DeclarativeConfig>>,
}

impl ConfigSink for TestSink {
    fn apply(
        &self,
        config_table: crate::table::ConfigTable,
        hash: String,
    ) -> Result<Option<DeclarativeConfig>, String> {
        if config_table.get("invalid").is_some() {
            return Err("schema violation".into());
        }
        // Typed as the gateway would (without plugins) when the table is
        // a whole config: then it is cached typed, else as a frame only.
        let cfg = crate::parse_declarative_table(config_table, &ParseOptions::default()).ok();
        *lock(&self.hash) = Some(hash.clone());
        lock(&self.applied).push(hash);
        Ok(cfg)
    }

    fn apply_validated(&self, config: DeclarativeConfig, hash: String) -> Result<(), String> {
        lock(&self.validated).push(config);
        *lock(&self.hash) = Some(hash);
        Ok(())
    }

    fn current_hash(&self) -> Option<String> {
        lock(&self.hash).clone()
    }
}

fn dummy_tls() -> ClusterTls {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    ClusterTls {
        config: Arc::new(config),
        server_name: rustls::pki_types::ServerName::try_from("kong_clustering")
            .expect("name")
            .to_owned(),
    }
}

fn opts() -> ClientOptions {
    ClientOptions {
        authority: "127.0.0.1:1".into(),
        tls: dummy_tls(),
        path: protocol::outlet_path("id", "host", "3.10.0"),
        node_id: Uuid::nil(),
        max_payload: 4 << 20,
        inflate_cap: 1 << 20,
        basic_info: protocol::basic_info(&[], &[], serde_json::json!({})),
        konnect_mode: false,
        cache_path: None,
        cache_stamp: "test".into(),
        timings: Timings::default(),
    }
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).expect("gzip");
    e.finish().expect("gzip")
}

fn push(hash: &str, body: &str) -> Message {
    let msg = format!(
        r#"{{"type":"reconfigure","config_table":{body},"config_hash":"{hash}","hashes":{{}}}}"#
    );
    Message::Binary(Bytes::from(gzip(msg.as_bytes())))
}

type ServerWs = WebSocketStream<tokio::io::DuplexStream>;

async fn start(
    o: ClientOptions,
) -> (
    ServerWs,
    Arc<TestSink>,
    Arc<ClusterStatus>,
    tokio::task::JoinHandle<Result<(), LinkError>>,
) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let client_ws = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
    let server = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
    let sink = Arc::new(TestSink::default());
    let status = Arc::new(ClusterStatus::default());
    let client = Client::new(o, sink.clone(), status.clone());
    let shared = client.shared.clone();
    tokio::spawn(apply_worker(shared.clone(), client.frames_rx));
    let sess = tokio::spawn(async move { session(client_ws, &shared).await });
    (server, sink, status, sess)
}

async fn next(server: &mut ServerWs) -> Message {
    server.next().await.expect("stream open").expect("frame")
}

#[tokio::test(start_paused = true)]
async fn basic_info_first_then_ping_every_30s() {
    let (mut server, _sink, status, _sess) = start(opts()).await;
    match next(&mut server).await {
        Message::Binary(b) => {
            let v: Value = serde_json::from_slice(&b).expect("json");
            assert_eq!(v["type"], "basic_info");
        }
        other => panic!("first frame must be basic_info, got {other:?}"),
    }
    let t0 = tokio::time::Instant::now();
    assert_eq!(
        next(&mut server).await,
        Message::Ping(Bytes::from_static(protocol::EMPTY_HASH.as_bytes()))
    );
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "first ping is immediate"
    );
    assert!(status.connected());
    let t1 = tokio::time::Instant::now();
    assert!(matches!(next(&mut server).await, Message::Ping(_)));
    let waited = t1.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn ping_after_apply_carries_new_hash_and_rejects_keep_old() {
    let (mut server, sink, status, _sess) = start(opts()).await;
    let _basic = next(&mut server).await;
    let _ping = next(&mut server).await;
    let h1 = "11111111111111111111111111111111";
    server
        .send(push(h1, r#"{"services":[{"host":"a"}]}"#))
        .await
        .expect("send");
    let t0 = tokio::time::Instant::now();
    assert_eq!(
        next(&mut server).await,
        Message::Ping(Bytes::from(h1.as_bytes().to_vec()))
    );
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "ping right after apply"
    );
    assert_eq!(sink.current_hash().as_deref(), Some(h1));

    // Garbage and invalid configs: old hash stays, link stays up.
    server
        .send(Message::Binary(Bytes::from_static(b"not gzip")))
        .await
        .expect("send");
    server
        .send(push(
            "22222222222222222222222222222222",
            r#"{"invalid":true}"#,
        ))
        .await
        .expect("send");
    let t1 = tokio::time::Instant::now();
    assert_eq!(
        next(&mut server).await,
        Message::Ping(Bytes::from(h1.as_bytes().to_vec()))
    );
    assert!(
        t1.elapsed() >= Duration::from_secs(29),
        "no extra ping after a reject"
    );
    assert!(status.rejected_total() >= 1);
    assert_eq!(lock(&sink.applied).len(), 1);

    // Same hash again: not re-applied, but pinged at once.
    server
        .send(push(h1, r#"{"services":[{"host":"a"}]}"#))
        .await
        .expect("send");
    let t2 = tokio::time::Instant::now();
    assert!(matches!(next(&mut server).await, Message::Ping(_)));
    assert!(t2.elapsed() < Duration::from_secs(1));
    assert_eq!(lock(&sink.applied).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn silence_for_45s_ends_the_session() {
    let (mut server, _sink, _status, sess) = start(opts()).await;
    let _basic = next(&mut server).await;
    let _ping = next(&mut server).await; // auto-pong answered here
    let t0 = tokio::time::Instant::now();
    // Stop reading: no more pongs reach the client.
    let r = sess.await.expect("join");
    assert!(matches!(r, Err(LinkError::Silence(_))), "{r:?}");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(44) && waited <= Duration::from_secs(46),
        "{waited:?}"
    );
    drop(server);
}

#[tokio::test(start_paused = true)]
async fn close_frame_ends_the_session_cleanly() {
    let (mut server, _sink, _status, sess) = start(opts()).await;
    let _basic = next(&mut server).await;
    server.close(None).await.expect("close");
    // Drain so the close handshake completes.
    while let Some(Ok(_)) = server.next().await {}
    let r = sess.await.expect("join");
    assert!(matches!(r, Ok(()) | Err(LinkError::Closed)), "{r:?}");
}

#[test]
fn reconnect_delay_is_whole_seconds_5_to_10() {
    for _ in 0..200 {
        let d = reconnect_delay(Duration::from_secs(5), Duration::from_secs(10));
        assert!(d >= Duration::from_secs(5) && d <= Duration::from_secs(10));
        assert_eq!(d.subsec_nanos(), 0);
    }
    assert_eq!(
        reconnect_delay(Duration::from_millis(200), Duration::from_millis(200)),
        Duration::from_millis(200)
    );
}

#[test]
fn process_frame_persists_and_cache_reloads() {
    let dir = std::env::temp_dir().join(format!("cs-client-{}", Uuid::new_v4()));
    let path = dir.join("cache.gz");
    let sink = TestSink::default();
    let status = ClusterStatus::default();
    let Message::Binary(frame) = push(
        "33333333333333333333333333333333",
        r#"{"services":[{"host":"a"}]}"#,
    ) else {
        unreachable!()
    };
    let out = process_frame(&frame, &sink, &status, 1 << 20, Some(&path));
    assert_eq!(
        out,
        Outcome::Applied {
            hash: "33333333333333333333333333333333".into()
        }
    );
    let mut o = opts();
    o.cache_path = Some(path.clone());
    let fresh = TestSink::default();
    let loaded = load_cached(&o, &fresh, &status).expect("load");
    assert_eq!(loaded.as_deref(), Some("33333333333333333333333333333333"));
    assert_eq!(fresh.current_hash(), loaded);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The cache keeps the validated config: a start applies it without
/// validating again, unless any byte of the file changed, in which case
/// the frame is decoded and validated in full (and refused if damaged).
#[test]
fn a_cached_validated_config_is_trusted_only_while_whole() {
    let dir = std::env::temp_dir().join(format!("cs-client-{}", Uuid::new_v4()));
    let path = dir.join("cache.gz");
    let hash = "77777777777777777777777777777777";
    let body = r#"{"_format_version":"3.0","services":[{"name":"s","host":"a","routes":[{"name":"r","paths":["/a","~/u/\\d+$"]}]}]}"#;
    let Message::Binary(frame) = push(hash, body) else {
        unreachable!()
    };
    let status = ClusterStatus::default();
    let out = process_frame_stamped(
        &frame,
        &TestSink::default(),
        &status,
        1 << 20,
        Some(&path),
        "test",
    );
    assert_eq!(out, Outcome::Applied { hash: hash.into() });
    let mut o = opts();
    o.cache_path = Some(path.clone());
    let expected = crate::parse_declarative_str(body, &ParseOptions::default()).expect("valid");

    // Whole and ours: applied as validated, no decoding or validation.
    let fresh = TestSink::default();
    let status = ClusterStatus::default();
    assert_eq!(
        load_cached(&o, &fresh, &status).expect("load").as_deref(),
        Some(hash)
    );
    assert!(lock(&fresh.applied).is_empty());
    let validated = lock(&fresh.validated);
    assert_eq!(validated.len(), 1);
    assert!(validated[0].same_entities(&expected));
    drop(validated);
    assert_eq!(status.last_hash().as_deref(), Some(hash));
    // The CP's same frame after the start is known without decoding it.
    assert_eq!(
        process_frame(&frame, &fresh, &status, 0, None),
        Outcome::Unchanged { hash: hash.into() }
    );

    // Written with other plugins or by another build: validated in full.
    let other = ClientOptions {
        cache_stamp: "other".into(),
        ..o.clone()
    };
    let fresh = TestSink::default();
    let status = ClusterStatus::default();
    assert_eq!(
        load_cached(&other, &fresh, &status)
            .expect("load")
            .as_deref(),
        Some(hash)
    );
    assert_eq!(*lock(&fresh.applied), vec![hash.to_string()]);
    assert!(lock(&fresh.validated).is_empty());

    let good = std::fs::read(&path).expect("read");
    let at = good
        .windows(frame.len())
        .position(|w| w == &frame[..])
        .expect("the frame is in the file");
    // A flipped byte in the validated part: the frame is validated again.
    let mut bad = good.clone();
    let last = bad.len() - 3;
    bad[last] ^= 0x20;
    std::fs::write(&path, &bad).expect("write");
    let fresh = TestSink::default();
    let status = ClusterStatus::default();
    assert_eq!(
        load_cached(&o, &fresh, &status).expect("load").as_deref(),
        Some(hash)
    );
    assert_eq!(*lock(&fresh.applied), vec![hash.to_string()]);
    assert!(lock(&fresh.validated).is_empty());
    // A flipped byte in the frame: the full path refuses it.
    let mut bad = good.clone();
    bad[at + frame.len() / 2] ^= 0x01;
    std::fs::write(&path, &bad).expect("write");
    let fresh = TestSink::default();
    let status = ClusterStatus::default();
    assert!(load_cached(&o, &fresh, &status).is_err());
    assert_eq!(fresh.current_hash(), None);
    assert!(lock(&fresh.validated).is_empty());
    // Not a cache at all.
    std::fs::write(&path, b"GWCACHE1 but nothing else").expect("write");
    assert!(load_cached(&o, &TestSink::default(), &status).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn empty_config_reports_zero_hash() {
    let sink = TestSink::default();
    let status = ClusterStatus::default();
    let Message::Binary(frame) = push(
        "44444444444444444444444444444444",
        r#"{"_format_version":"3.0","workspaces":[{"name":"default"}]}"#,
    ) else {
        unreachable!()
    };
    let out = process_frame(&frame, &sink, &status, 1 << 20, None);
    assert_eq!(
        out,
        Outcome::Applied {
            hash: protocol::EMPTY_HASH.into()
        }
    );
}

#[test]
fn the_same_frame_again_is_not_decoded_again() {
    let sink = TestSink::default();
    let status = ClusterStatus::default();
    let frame = |hash: &str, body: &str| match push(hash, body) {
        Message::Binary(b) => b,
        _ => unreachable!(),
    };
    let a = frame(
        "55555555555555555555555555555555",
        r#"{"services":[{"host":"a"}]}"#,
    );
    let b = frame(
        "66666666666666666666666666666666",
        r#"{"services":[{"host":"b"}]}"#,
    );
    let applied = |hash: &str| Outcome::Applied { hash: hash.into() };
    let unchanged = |hash: &str| Outcome::Unchanged { hash: hash.into() };
    assert_eq!(
        process_frame(&a, &sink, &status, 1 << 20, None),
        applied("55555555555555555555555555555555")
    );
    // An inflate cap of 0 would reject anything that gets decoded: the
    // same bytes are recognised before that.
    assert_eq!(
        process_frame(&a, &sink, &status, 0, None),
        unchanged("55555555555555555555555555555555")
    );
    assert_eq!(
        process_frame(&b, &sink, &status, 1 << 20, None),
        applied("66666666666666666666666666666666")
    );
    // `a` is no longer the running config: decoded (and applied) again.
    assert!(matches!(
        process_frame(&a, &sink, &status, 0, None),
        Outcome::Rejected { .. }
    ));
    assert_eq!(
        process_frame(&a, &sink, &status, 1 << 20, None),
        applied("55555555555555555555555555555555")
    );
    // The running hash changed behind the link's back (a reload): the
    // kept frame no longer proves anything.
    *lock(&sink.hash) = Some("77777777777777777777777777777777".into());
    assert_eq!(
        process_frame(&a, &sink, &status, 1 << 20, None),
        applied("55555555555555555555555555555555")
    );
    assert_eq!(lock(&sink.applied).len(), 4);
}
