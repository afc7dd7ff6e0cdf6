//! The sync v1 client: one WebSocket session at a time to the CP, and an
//! apply worker fed with the latest pushed frame.
//!
//! Kong's DP runs three threads per session (read, write, config); here the
//! session task reads and writes (a `select!` loop) and the apply worker runs
//! decode → validate → compile → swap on the blocking pool, so pings and
//! liveness keep going while a large config is applied. Only the newest
//! pushed frame is kept: pushes that arrive during an apply coalesce, as in
//! Kong.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Bytes, Message};
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

use super::protocol::{self, Inbound};
use super::tls::{self, ClusterTls, TlsError};
use super::{cache, lock, node_id, ClusterStatus, ConfigSink, Timings};
use crate::model::DeclarativeConfig;
use crate::settings::Settings;

const LOG: &str = "[clustering]";

/// Inflated-size cap: at least this much...
const MIN_INFLATE_CAP: usize = 256 << 20;
/// ...or this multiple of `cluster_max_payload` (which counts compressed
/// bytes; Kong's exports compress roughly 10-20x).
const INFLATE_RATIO: usize = 16;

/// Everything a session needs, resolved once at startup so that a bad
/// certificate is a startup error, not a retry loop.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `host:port` of the CP (IPv6 bracketed).
    pub authority: String,
    pub tls: ClusterTls,
    /// `/v1/outlet?node_id=…&node_hostname=…&node_version=…`
    pub path: String,
    pub node_id: Uuid,
    /// `cluster_max_payload`: largest frame accepted (compressed bytes).
    pub max_payload: usize,
    /// Largest inflated message accepted.
    pub inflate_cap: usize,
    /// Pre-encoded `basic_info` frame.
    pub basic_info: Vec<u8>,
    /// Send Konnect error reports for rejected configs.
    pub konnect_mode: bool,
    /// Where applied frames are persisted (`None`: not persisted).
    pub cache_path: Option<PathBuf>,
    /// What a cached validated config must have been written with
    /// ([`cache::stamp`]); otherwise it is validated again.
    pub cache_stamp: String,
    pub timings: Timings,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot persist the node id under '{path}': {source}")]
    NodeId {
        path: String,
        source: std::io::Error,
    },
}

/// `gethostname()` without unsafe code.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_string())
}

impl ClientOptions {
    /// `plugins`: `(name, version)` of every plugin this DP can run, as
    /// reported in `basic_info`. `node_version`: the Kong version we claim.
    pub fn from_settings(
        settings: &Settings,
        plugins: &[(String, String)],
        node_version: &str,
    ) -> Result<ClientOptions, SetupError> {
        let tls = tls::client_tls(settings)?;
        let node_id =
            node_id::load_or_create(&settings.prefix).map_err(|source| SetupError::NodeId {
                path: settings.prefix.display().to_string(),
                source,
            })?;
        let max_payload = usize::try_from(settings.cluster_max_payload).unwrap_or(usize::MAX);
        Ok(ClientOptions {
            authority: settings.cluster_control_plane.authority(),
            tls,
            path: format!(
                "{}{}",
                settings.cluster_control_plane.path,
                protocol::outlet_path(&node_id.to_string(), &hostname(), node_version)
            ),
            node_id,
            max_payload,
            inflate_cap: MIN_INFLATE_CAP.max(max_payload.saturating_mul(INFLATE_RATIO)),
            basic_info: protocol::basic_info(
                plugins,
                &settings.cluster_dp_labels,
                settings.redacted(),
            ),
            konnect_mode: settings.konnect_mode,
            cache_path: Some(cache::cache_path(&settings.prefix)),
            cache_stamp: cache::stamp(node_version, plugins),
            timings: Timings::default(),
        })
    }

    pub fn uri(&self) -> String {
        format!("wss://{}{}", self.authority, self.path)
    }

    fn ws_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .max_frame_size(Some(self.max_payload))
            .max_message_size(Some(self.max_payload))
    }
}

/// Result of handling one pushed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied {
        hash: String,
    },
    /// Same hash as the running config: nothing to do (Kong still pings).
    Unchanged {
        hash: String,
    },
    /// Not a `reconfigure` message.
    Ignored,
    Rejected {
        reason: String,
        /// Hash of the rejected config, when it got that far.
        hash: Option<String>,
    },
}

/// Decode → validate/compile/swap (via `sink`) → persist. Synchronous: runs
/// on the blocking pool, or at startup for the cache.
pub fn process_frame(
    frame: &[u8],
    sink: &dyn ConfigSink,
    status: &ClusterStatus,
    inflate_cap: usize,
    persist_to: Option<&std::path::Path>,
) -> Outcome {
    process_frame_stamped(frame, sink, status, inflate_cap, persist_to, "")
}

/// [`process_frame`], caching under `stamp` ([`ClientOptions::cache_stamp`]).
pub fn process_frame_stamped(
    frame: &[u8],
    sink: &dyn ConfigSink,
    status: &ClusterStatus,
    inflate_cap: usize,
    persist_to: Option<&std::path::Path>,
    stamp: &str,
) -> Outcome {
    let (outcome, persist) = apply_frame(frame, sink, status, inflate_cap);
    if let (Some(path), Some(p)) = (persist_to, persist) {
        p.write(path, stamp);
    }
    outcome
}

/// An applied config, to persist once the CP has been told (a ping).
struct Persist<'f> {
    frame: &'f [u8],
    hash: String,
    config: Option<DeclarativeConfig>,
}

impl Persist<'_> {
    fn write(self, path: &std::path::Path, stamp: &str) {
        let t = Instant::now();
        let bytes = cache::encode(stamp, &self.hash, self.frame, self.config.as_ref());
        match cache::write_atomic(path, &bytes) {
            Ok(()) => log::info!(
                "{LOG} persisted config to {} in {} ms",
                path.display(),
                t.elapsed().as_millis()
            ),
            Err(e) => log::error!("{LOG} cannot persist config to {}: {e}", path.display()),
        }
    }
}

fn apply_frame<'f>(
    frame: &'f [u8],
    sink: &dyn ConfigSink,
    status: &ClusterStatus,
    inflate_cap: usize,
) -> (Outcome, Option<Persist<'f>>) {
    let started = Instant::now();
    let reject = |reason: String, hash: Option<String>| {
        status.record_reject(&reason);
        Outcome::Rejected { reason, hash }
    };
    // A CP sends the same compressed bytes again for an unchanged config
    // (on every reconnect, e.g. right after a start from the cache): when
    // they are those of the last frame kept, their hash is known and, if it
    // is the running one, decoding them again would only find that out.
    let digest = status.frame_digest(frame);
    if let Some(hash) = status.known_frame(&digest) {
        if sink.current_hash().as_deref() == Some(hash.as_str()) {
            log::debug!("{LOG} config {hash} is already running");
            return (Outcome::Unchanged { hash }, None);
        }
    }
    let msg = match protocol::decode_frame(frame, inflate_cap) {
        Ok(Inbound::Reconfigure(m)) => m,
        Ok(Inbound::Other(t)) => {
            log::debug!("{LOG} ignoring message of type '{t}' from control plane");
            return (Outcome::Ignored, None);
        }
        Err(e) => return (reject(e.to_string(), None), None),
    };
    let decoded = started.elapsed();
    let hash = if protocol::is_empty_config(&msg.config_table) {
        protocol::EMPTY_HASH.to_string()
    } else {
        msg.config_hash
    };
    if sink.current_hash().as_deref() == Some(hash.as_str()) {
        log::debug!("{LOG} config {hash} is already running");
        status.remember_frame(digest, &hash);
        return (Outcome::Unchanged { hash }, None);
    }
    let config = match sink.apply(msg.config_table, hash.clone()) {
        Ok(c) => c,
        Err(e) => return (reject(e, Some(hash)), None),
    };
    status.remember_frame(digest, &hash);
    let took = started.elapsed();
    status.record_apply(&hash, took);
    log::info!(
        "{LOG} applied config {hash} in {} ms (inflate+parse {} ms, {} compressed bytes)",
        took.as_millis(),
        decoded.as_millis(),
        frame.len()
    );
    let persist = Persist {
        frame,
        hash: hash.clone(),
        config,
    };
    (Outcome::Applied { hash }, Some(persist))
}

/// Applies the persisted config, if any, through `sink`. `Ok(None)`: no
/// cache (or caching disabled). A config this build validated before is
/// applied without validating it again (see [`cache`]); anything else is
/// decoded and validated in full, as a push.
pub fn load_cached(
    opts: &ClientOptions,
    sink: &dyn ConfigSink,
    status: &ClusterStatus,
) -> Result<Option<String>, String> {
    let Some(path) = &opts.cache_path else {
        return Ok(None);
    };
    // The typed config is larger than the frame it came from.
    let limit = (opts.max_payload as u64).saturating_add(opts.inflate_cap as u64);
    let bytes =
        cache::read(path, limit).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    let started = Instant::now();
    let frame = match cache::decode(bytes, &opts.cache_stamp) {
        cache::Cached::Validated {
            hash,
            frame,
            config,
        } => match sink.apply_validated(*config, hash.clone()) {
            Ok(()) => {
                status.remember_frame(status.frame_digest(&frame), &hash);
                status.record_apply(&hash, started.elapsed());
                return Ok(Some(hash));
            }
            Err(e) => {
                log::warn!("{LOG} {}: {e}; validating it in full", path.display());
                frame
            }
        },
        cache::Cached::Frame { frame, why } => {
            log::info!(
                "{LOG} persisted config {}: {why}; validating it in full",
                path.display()
            );
            frame
        }
    };
    match process_frame(&frame, sink, status, opts.inflate_cap, None) {
        Outcome::Applied { hash } | Outcome::Unchanged { hash } => Ok(Some(hash)),
        Outcome::Ignored => Err(format!("{} holds no reconfigure message", path.display())),
        Outcome::Rejected { reason, .. } => Err(format!("{}: {reason}", path.display())),
    }
}

/// Why a session ended (or never started).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("websocket: {0}")]
    Ws(#[from] tungstenite::Error),
    #[error("timed out during {0}")]
    Timeout(&'static str),
    #[error("did not receive any frame from control plane within {0:?}")]
    Silence(Duration),
    #[error("control plane closed the connection")]
    Closed,
}

/// State shared by the sessions and the apply worker.
struct Shared {
    opts: ClientOptions,
    sink: Arc<dyn ConfigSink>,
    status: Arc<ClusterStatus>,
    /// Latest pushed frame; the apply worker takes it.
    frames: watch::Sender<Option<Bytes>>,
    /// Signalled after each successful (or no-op) apply: ping now.
    applied: Notify,
    /// A Konnect error report waiting to be sent.
    report: Mutex<Option<Vec<u8>>>,
    report_ready: Notify,
}

/// The control-plane link. [`Client::run`] never returns.
pub struct Client {
    shared: Arc<Shared>,
    frames_rx: watch::Receiver<Option<Bytes>>,
}

impl Client {
    pub fn new(
        opts: ClientOptions,
        sink: Arc<dyn ConfigSink>,
        status: Arc<ClusterStatus>,
    ) -> Client {
        let (frames, frames_rx) = watch::channel(None);
        Client {
            shared: Arc::new(Shared {
                opts,
                sink,
                status,
                frames,
                applied: Notify::new(),
                report: Mutex::new(None),
                report_ready: Notify::new(),
            }),
            frames_rx,
        }
    }

    /// Connects, runs sessions and reconnects forever.
    pub async fn run(self) {
        let shared = self.shared;
        tokio::spawn(apply_worker(shared.clone(), self.frames_rx));
        let uri = shared.opts.uri();
        loop {
            let t = &shared.opts.timings;
            let delay = reconnect_delay(t.reconnect_min, t.reconnect_max);
            match connect(&shared.opts).await {
                Ok(ws) => {
                    log::info!("{LOG} connected to control plane {uri}");
                    match session(ws, &shared).await {
                        Ok(()) => log::info!("{LOG} connection to control plane closed"),
                        Err(e) => log::error!(
                            "{LOG} connection to control plane broken: {e} (reconnecting after {} ms)",
                            delay.as_millis()
                        ),
                    }
                }
                Err(e) => log::warn!(
                    "{LOG} connection to control plane {uri} failed: {e} (retrying after {} ms)",
                    delay.as_millis()
                ),
            }
            shared.status.set_connected(false);
            tokio::time::sleep(delay).await;
        }
    }
}

/// Kong: `math.random(5, 10)` whole seconds.
fn reconnect_delay(min: Duration, max: Duration) -> Duration {
    if max <= min {
        return min;
    }
    if min.subsec_nanos() == 0 && max.subsec_nanos() == 0 {
        let s = rand::thread_rng().gen_range(min.as_secs()..=max.as_secs());
        return Duration::from_secs(s);
    }
    let ms = rand::thread_rng().gen_range(min.as_millis()..=max.as_millis());
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

async fn with_timeout<T, E>(
    d: Duration,
    what: &'static str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, LinkError>
where
    LinkError: From<E>,
{
    match tokio::time::timeout(d, f).await {
        Ok(r) => r.map_err(LinkError::from),
        Err(_) => Err(LinkError::Timeout(what)),
    }
}

/// TCP, TLS (client cert), WebSocket upgrade without extensions.
async fn connect(
    opts: &ClientOptions,
) -> Result<WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>, LinkError> {
    let io = opts.timings.io_timeout;
    let tcp = with_timeout(io, "connect", TcpStream::connect(&opts.authority)).await?;
    tcp.set_nodelay(true)?;
    let connector = tokio_rustls::TlsConnector::from(opts.tls.config.clone());
    let tls = with_timeout(
        io,
        "TLS handshake",
        connector.connect(opts.tls.server_name.clone(), tcp),
    )
    .await?;
    let request = opts.uri().into_client_request()?;
    let (ws, _resp) = with_timeout(
        io,
        "websocket handshake",
        tokio_tungstenite::client_async_with_config(request, tls, Some(opts.ws_config())),
    )
    .await?;
    Ok(ws)
}

/// One session: basic_info, then pings and reading until an error, a close
/// or 45 s of silence.
async fn session<S>(ws: WebSocketStream<S>, shared: &Shared) -> Result<(), LinkError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let t = &shared.opts.timings;
    let (mut tx, mut rx) = ws.split();
    let basic_info = Message::Binary(Bytes::from(shared.opts.basic_info.clone()));
    with_timeout(t.io_timeout, "sending basic_info", tx.send(basic_info)).await?;
    shared.status.set_connected(true);

    // The first ping goes right after basic_info, before any frame is read
    // (the select below would otherwise race it against a pushed config).
    let mut last_logged_hash = String::new();
    send_ping(&mut tx, shared, &mut last_logged_hash).await?;
    let mut next_ping = tokio::time::Instant::now() + t.ping_interval;
    let mut last_seen = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next_ping) => {
                send_ping(&mut tx, shared, &mut last_logged_hash).await?;
                next_ping = tokio::time::Instant::now() + t.ping_interval;
            }
            _ = shared.applied.notified() => {
                send_ping(&mut tx, shared, &mut last_logged_hash).await?;
                next_ping = tokio::time::Instant::now() + t.ping_interval;
            }
            _ = shared.report_ready.notified() => {
                let report = lock(&shared.report).take();
                if let Some(r) = report {
                    with_timeout(t.io_timeout, "sending error report", tx.send(Message::Binary(Bytes::from(r)))).await?;
                }
            }
            r = tokio::time::timeout_at(last_seen + t.ping_wait, rx.next()) => {
                let msg = match r {
                    Err(_) => return Err(LinkError::Silence(t.ping_wait)),
                    Ok(None) => return Err(LinkError::Closed),
                    Ok(Some(m)) => m?,
                };
                last_seen = tokio::time::Instant::now();
                shared.status.set_connected(true);
                match msg {
                    Message::Binary(b) => {
                        log::debug!("{LOG} received a {}-byte config frame", b.len());
                        shared.frames.send_replace(Some(b));
                    }
                    Message::Close(_) => return Ok(()),
                    Message::Pong(_) => log::trace!("{LOG} received pong frame from control plane"),
                    // tungstenite answers pings itself; a Kong CP never sends them.
                    Message::Ping(_) => {}
                    Message::Text(_) | Message::Frame(_) => {
                        log::info!("{LOG} received unknown (text) frame from control plane; ignored");
                    }
                }
            }
        }
    }
}

async fn send_ping<W>(
    tx: &mut W,
    shared: &Shared,
    last_logged: &mut String,
) -> Result<(), LinkError>
where
    W: futures_util::Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let hash = shared.sink.current_hash();
    let payload = protocol::ping_payload(hash.as_deref());
    let shown = String::from_utf8_lossy(&payload).into_owned();
    with_timeout(
        shared.opts.timings.io_timeout,
        "sending ping",
        tx.send(Message::Ping(Bytes::from(payload))),
    )
    .await?;
    if shown != *last_logged {
        log::info!("{LOG} sent ping frame to control plane with hash: {shown}");
        *last_logged = shown;
    }
    Ok(())
}

async fn apply_worker(shared: Arc<Shared>, mut rx: watch::Receiver<Option<Bytes>>) {
    while rx.changed().await.is_ok() {
        let Some(frame) = rx.borrow_and_update().clone() else {
            continue;
        };
        let s = shared.clone();
        let frame_ = frame.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let (outcome, persist) =
                apply_frame(&frame_, s.sink.as_ref(), &s.status, s.opts.inflate_cap);
            // Owned, to outlive this task (the frame is shared, not copied).
            let persist = persist.map(|p| (p.hash, p.config));
            (outcome, persist)
        })
        .await;
        let outcome = match outcome {
            Ok((outcome, persist)) => {
                if matches!(outcome, Outcome::Applied { .. } | Outcome::Unchanged { .. }) {
                    // Ping first: the CP sees the new hash without waiting
                    // for the cache write, which comes next, before the
                    // next frame is taken (no older config can overwrite a
                    // newer one in the cache).
                    shared.applied.notify_one();
                }
                if let (Some((hash, config)), Some(path)) =
                    (persist, shared.opts.cache_path.clone())
                {
                    let s = shared.clone();
                    let written = tokio::task::spawn_blocking(move || {
                        Persist {
                            frame: &frame,
                            hash,
                            config,
                        }
                        .write(&path, &s.opts.cache_stamp)
                    })
                    .await;
                    if let Err(e) = written {
                        log::error!("{LOG} config persist task failed: {e}");
                    }
                }
                Ok(outcome)
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(Outcome::Applied { .. } | Outcome::Unchanged { .. }) => {}
            Ok(Outcome::Ignored) => {}
            Ok(Outcome::Rejected { reason, hash }) => {
                log::error!(
                    "{LOG} unable to update running config: {reason}; keeping config {}",
                    shared
                        .sink
                        .current_hash()
                        .unwrap_or_else(|| protocol::EMPTY_HASH.to_string())
                );
                if shared.opts.konnect_mode {
                    let hash = hash.unwrap_or_else(|| protocol::EMPTY_HASH.to_string());
                    *lock(&shared.report) = Some(protocol::error_report(&reason, &hash));
                    shared.report_ready.notify_one();
                }
            }
            Err(e) => log::error!("{LOG} config apply task failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
