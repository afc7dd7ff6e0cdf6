//! The `udp-log` plugin (Kong's `kong/plugins/udp-log`): each request's
//! serialized log entry, one JSON object per datagram (no newline), sent
//! to `host:port` from a task of its own (Kong: `ngx.timer.at(0, log,
//! ...)`), never from the request.

use std::sync::Arc;
use std::time::Duration;

use config_sync::schema::{number, PluginSchema, Record, PROTOCOLS_HTTP};
use serde::Deserialize;
use tokio::net::UdpSocket;

use super::http_log::PROTOCOLS_ALL;
use super::tcp_log::{host_field, port_field};
use super::{log_io, log_serializer, Instance, Kong, Phases, Plugin, PluginDef, VERSION};

pub const NAME: &str = "udp-log";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 8,
    version: VERSION,
    schema,
    build,
};

fn schema() -> PluginSchema {
    PluginSchema {
        name: NAME,
        config: Record::new(vec![
            ("host", host_field().required()),
            ("port", port_field().required()),
            ("timeout", number().default(10000)),
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
pub struct UdpLogConfig {
    pub host: String,
    pub port: u16,
    pub timeout: f64,
}

fn build(i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    let cfg: UdpLogConfig =
        serde_json::from_value(i.config.clone()).map_err(|e| format!("config: {e}"))?;
    Ok(Arc::new(UdpLog {
        dest: Arc::new(Dest {
            timeout: log_io::millis(cfg.timeout),
            cfg,
        }),
    }))
}

struct UdpLog {
    dest: Arc<Dest>,
}

struct Dest {
    cfg: UdpLogConfig,
    timeout: Duration,
}

impl Plugin for UdpLog {
    fn phases(&self) -> Phases {
        Phases::LOG
    }

    fn log(&self, kong: &mut Kong<'_>) {
        let entry = log_serializer::serialize(kong).to_string();
        let dest = self.dest.clone();
        if !kong
            .env()
            .io
            .spawn_send(async move { dest.send(entry.as_bytes()).await })
        {
            log::error!("[{NAME}] could not create timer: no runtime");
        }
    }
}

impl Dest {
    /// Kong's `log(premature, conf, str)` timer: `setpeername`, `send`,
    /// `close`.
    async fn send(&self, data: &[u8]) {
        let at = format!("{}:{}", self.cfg.host, self.cfg.port);
        let sock = match tokio::time::timeout(self.timeout, self.connect()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                log::error!("[{NAME}] could not connect to {at}: {e}");
                return;
            }
            Err(_) => {
                log::error!("[{NAME}] could not connect to {at}: timeout");
                return;
            }
        };
        match tokio::time::timeout(self.timeout, sock.send(data)).await {
            Ok(Ok(_)) => log::debug!("[{NAME}] sent: {}", String::from_utf8_lossy(data)),
            Ok(Err(e)) => log::error!(
                "[{NAME}] could not send data to {at}: {}",
                log_io::io_error(&e)
            ),
            Err(_) => log::error!("[{NAME}] could not send data to {at}: timeout"),
        }
    }

    async fn connect(&self) -> Result<UdpSocket, String> {
        let addr = tokio::net::lookup_host((self.cfg.host.as_str(), self.cfg.port))
            .await
            .map_err(|e| log_io::io_error(&e))?
            .next()
            .ok_or_else(|| "host not found".to_string())?;
        let local: std::net::SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(local)
            .await
            .map_err(|e| log_io::io_error(&e))?;
        sock.connect(addr).await.map_err(|e| log_io::io_error(&e))?;
        Ok(sock)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use config_sync::schema::validate_record;
    use serde_json::{json, Value};

    fn validate(config: Value) -> Result<Value, Vec<(String, String)>> {
        validate_record(&schema().config, &config, "config")
            .map_err(|e| e.into_iter().map(|e| (e.path, e.message)).collect())
    }

    #[test]
    fn kongs_defaults_and_checks() {
        let v = validate(json!({"host": "127.0.0.1", "port": 35001})).unwrap();
        assert_eq!(v["timeout"], 10000);
        let e = validate(json!({"host": "", "port": -1})).unwrap_err();
        assert_eq!(
            e,
            vec![
                (
                    "config.host".to_string(),
                    "length must be at least 1".to_string()
                ),
                (
                    "config.port".to_string(),
                    "value should be between 0 and 65535".to_string()
                ),
            ]
        );
    }

    #[tokio::test]
    async fn one_datagram_per_entry() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = rx.local_addr().unwrap().port();
        let dest = Dest {
            cfg: UdpLogConfig {
                host: "127.0.0.1".into(),
                port,
                timeout: 1000.0,
            },
            timeout: Duration::from_secs(1),
        };
        dest.send(b"{\"a\":1}").await;
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(2), rx.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"{\"a\":1}");
    }
}
