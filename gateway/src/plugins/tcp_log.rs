//! The `tcp-log` plugin (Kong's `kong/plugins/tcp-log`): each request's
//! serialized log entry, as one JSON line, written to `host:port` over TCP
//! (TLS when `tls`, SNI `tls_sni`, the certificate not verified), from a
//! task of its own (Kong: `ngx.timer.at(0, log, ...)`), never from the
//! request. Connections are kept for `keepalive` ms and reused, as Kong's
//! cosocket pool does (the TLS handshake only on a new connection).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use config_sync::schema::{boolean, integer, number, string, PluginSchema, Record, PROTOCOLS_HTTP};
use config_sync::validate::validate_host;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::http_log::PROTOCOLS_ALL;
use super::log_io::{self, LogIo};
use super::{log_serializer, Instance, Kong, Phases, Plugin, PluginDef, VERSION};

pub const NAME: &str = "tcp-log";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 7,
    version: VERSION,
    schema,
    build,
};

/// `typedefs.host`: a host name or IP, without a port.
pub fn host_field() -> config_sync::schema::Field {
    string().custom(|v: &Value| match v.as_str() {
        Some(h) => validate_host(h),
        None => Ok(()),
    })
}

/// `typedefs.port`.
pub fn port_field() -> config_sync::schema::Field {
    integer().between(0.0, 65535.0)
}

fn schema() -> PluginSchema {
    PluginSchema {
        name: NAME,
        config: Record::new(vec![
            ("host", host_field().required()),
            ("port", port_field().required()),
            ("timeout", number().default(10000)),
            ("keepalive", number().default(60000)),
            ("tls", boolean().required().default(false)),
            ("tls_sni", string()),
            ("custom_fields_by_lua", log_serializer::lua_code_refused()),
        ]),
        default_protocols: PROTOCOLS_HTTP,
        allowed_protocols: PROTOCOLS_ALL,
        no_consumer: false,
        no_route: false,
        no_service: false,
        entity_checks: Vec::new(),
    }
}

/// A validated `config`.
#[derive(Debug, Clone, Deserialize)]
pub struct TcpLogConfig {
    pub host: String,
    pub port: u16,
    pub timeout: f64,
    pub keepalive: f64,
    pub tls: bool,
    pub tls_sni: Option<String>,
}

fn build(i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    let cfg: TcpLogConfig =
        serde_json::from_value(i.config.clone()).map_err(|e| format!("config: {e}"))?;
    Ok(Arc::new(TcpLog {
        dest: Arc::new(Dest {
            key: format!(
                "{}|{}|{}|{}",
                cfg.host,
                cfg.port,
                cfg.tls,
                cfg.tls_sni.as_deref().unwrap_or("")
            ),
            timeout: log_io::millis(cfg.timeout),
            keepalive: (cfg.keepalive > 0.0).then(|| log_io::millis(cfg.keepalive)),
            cfg,
        }),
    }))
}

struct TcpLog {
    dest: Arc<Dest>,
}

/// Where one instance sends.
struct Dest {
    cfg: TcpLogConfig,
    /// Pool key: the connection's peer and TLS settings.
    key: String,
    timeout: Duration,
    /// `None`: kept without limit (a cosocket keepalive of 0).
    keepalive: Option<Duration>,
}

impl Plugin for TcpLog {
    fn phases(&self) -> Phases {
        Phases::LOG
    }

    fn log(&self, kong: &mut Kong<'_>) {
        let mut line = log_serializer::serialize(kong).to_string();
        line.push('\n');
        let dest = self.dest.clone();
        let io = kong.env().io.clone();
        let sent = kong
            .env()
            .io
            .spawn_send(async move { dest.send(&io, line.as_bytes()).await });
        if !sent {
            log::error!("[{NAME}] failed to create timer: no runtime");
        }
    }
}

pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    /// Still usable: nothing to read and not closed by the peer (a kept
    /// cosocket is dropped from the pool when the peer closes it).
    fn idle_and_open(&self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.tcp().try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(data).await,
            Stream::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
        }
    }
}

impl Dest {
    fn at(&self) -> String {
        format!("{}:{}", self.cfg.host, self.cfg.port)
    }

    async fn connect(&self, io: &LogIo) -> Result<Stream, String> {
        let at = self.at();
        let tcp = tokio::time::timeout(
            self.timeout,
            TcpStream::connect((self.cfg.host.as_str(), self.cfg.port)),
        )
        .await
        .map_err(|_| format!("failed to connect to {at}: timeout"))?
        .map_err(|e| format!("failed to connect to {at}: {}", log_io::io_error(&e)))?;
        let _ = tcp.set_nodelay(true);
        if !self.cfg.tls {
            return Ok(Stream::Plain(tcp));
        }
        // `sslhandshake(false, conf.tls_sni, false)`: the SNI only when set.
        let (connector, name) = match &self.cfg.tls_sni {
            Some(sni) => (io.tls(true), sni.as_str()),
            None => (io.tls(false), self.cfg.host.as_str()),
        };
        let name = rustls::pki_types::ServerName::try_from(name.to_string())
            .map_err(|e| format!("failed to perform TLS handshake to {at}: {e}"))?;
        let tls = tokio::time::timeout(self.timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| format!("failed to perform TLS handshake to {at}: timeout"))?
            .map_err(|e| {
                format!(
                    "failed to perform TLS handshake to {at}: {}",
                    log_io::io_error(&e)
                )
            })?;
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// Kong's `log(premature, conf, message)` timer.
    async fn send(&self, io: &Arc<LogIo>, line: &[u8]) {
        let mut conn = match pool_take(io, &self.key, self.keepalive) {
            Some(c) => c,
            None => match self.connect(io).await {
                Ok(c) => c,
                Err(e) => {
                    log::error!("[{NAME}] {e}");
                    return;
                }
            },
        };
        match tokio::time::timeout(self.timeout, conn.write_all(line)).await {
            Ok(Ok(())) => pool_put(io, self.key.clone(), conn, self.keepalive),
            Ok(Err(e)) => log::error!(
                "[{NAME}] failed to send data to {}: {}",
                self.at(),
                log_io::io_error(&e)
            ),
            Err(_) => log::error!("[{NAME}] failed to send data to {}: timeout", self.at()),
        }
    }
}

/// Idle connections by destination, each with the time it went idle.
pub(super) type Idle = HashMap<String, Vec<(Stream, Instant)>>;

/// nginx's `lua_socket_pool_size`.
const POOL_SIZE: usize = 30;

fn fresh(idle_since: Instant, keepalive: Option<Duration>) -> bool {
    keepalive.is_none_or(|k| idle_since.elapsed() < k)
}

fn pool_take(io: &LogIo, key: &str, keepalive: Option<Duration>) -> Option<Stream> {
    let mut pool = log_io::lock(&io.tcp_idle);
    let list = pool.get_mut(key)?;
    while let Some((conn, idle_since)) = list.pop() {
        if fresh(idle_since, keepalive) && conn.idle_and_open() {
            return Some(conn);
        }
    }
    None
}

fn pool_put(io: &Arc<LogIo>, key: String, conn: Stream, keepalive: Option<Duration>) {
    {
        let mut pool = log_io::lock(&io.tcp_idle);
        let list = pool.entry(key.clone()).or_default();
        if list.len() >= POOL_SIZE {
            return;
        }
        list.push((conn, Instant::now()));
    }
    // `setkeepalive(keepalive)`: closed once idle that long.
    if let Some(k) = keepalive {
        let held = io.clone();
        io.spawn(async move {
            tokio::time::sleep(k + Duration::from_millis(10)).await;
            let mut pool = log_io::lock(&held.tcp_idle);
            if let Some(list) = pool.get_mut(&key) {
                list.retain(|(c, at)| fresh(*at, Some(k)) && c.idle_and_open());
                if list.is_empty() {
                    pool.remove(&key);
                }
            }
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use config_sync::schema::validate_record;
    use serde_json::json;

    fn validate(config: Value) -> Result<Value, Vec<(String, String)>> {
        validate_record(&schema().config, &config, "config")
            .map_err(|e| e.into_iter().map(|e| (e.path, e.message)).collect())
    }

    #[test]
    fn kongs_defaults_and_checks() {
        let v = validate(json!({"host": "127.0.0.1", "port": 35001})).unwrap();
        assert_eq!(v["timeout"], 10000);
        assert_eq!(v["keepalive"], 60000);
        assert_eq!(v["tls"], false);
        assert_eq!(v["tls_sni"], Value::Null);
        let e = validate(json!({})).unwrap_err();
        assert_eq!(
            e,
            vec![
                (
                    "config.host".to_string(),
                    "required field missing".to_string()
                ),
                (
                    "config.port".to_string(),
                    "required field missing".to_string()
                ),
            ]
        );
        let e = validate(json!({"host": "example.test:80", "port": 70000})).unwrap_err();
        assert_eq!(
            e,
            vec![
                (
                    "config.host".to_string(),
                    "must not have a port".to_string()
                ),
                (
                    "config.port".to_string(),
                    "value should be between 0 and 65535".to_string()
                ),
            ]
        );
        let e =
            validate(json!({"host": "h", "port": 1, "custom_fields_by_lua": {"a": "return 1"}}))
                .unwrap_err();
        assert_eq!(e[0].0, "config.custom_fields_by_lua");
    }

    #[tokio::test]
    async fn lines_reuse_a_kept_connection_and_reconnect_when_it_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let dest = Dest {
            cfg: TcpLogConfig {
                host: "127.0.0.1".into(),
                port,
                timeout: 1000.0,
                keepalive: 60000.0,
                tls: false,
                tls_sni: None,
            },
            key: format!("test|{port}"),
            timeout: Duration::from_secs(1),
            keepalive: Some(Duration::from_secs(60)),
        };
        let io = Arc::new(LogIo::default());
        dest.send(&io, b"one\n").await;
        dest.send(&io, b"two\n").await;
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 8];
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut buf)
            .await
            .unwrap();
        assert_eq!(buf, b"one\ntwo\n");
        // The collector closes: the next line goes over a new connection.
        drop(s);
        tokio::time::sleep(Duration::from_millis(50)).await;
        dest.send(&io, b"three\n").await;
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 6];
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut buf)
            .await
            .unwrap();
        assert_eq!(buf, b"three\n");
    }
}
