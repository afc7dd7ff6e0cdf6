//! Kong's shared `redis` config block (`kong/tools/redis/schema.lua`) and
//! the process's Redis clients, shared by the plugins that use Redis
//! (rate-limiting, response-ratelimiting).
//!
//! Kong connects per request from a cosocket pool (`resty.redis`,
//! `set_keepalive(10000, 100)`); here each distinct connection config has
//! one multiplexed connection that reconnects on its own (`redis`'s
//! `ConnectionManager`), created on first use and kept across config swaps.
//! All Redis I/O runs on a runtime of our own (a thread started on first
//! use, ended when [`RedisClients`] drops), so connections never live on a
//! proxy thread's runtime and outlive none of ours.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use config_sync::schema::{boolean, integer, record, string, Field};
use config_sync::validate::validate_sni;
use serde::Deserialize;
use serde_json::Value;

use super::background::Background;
use super::log_io::millis;
use super::tcp_log::{host_field, port_field};

/// `DEFAULT_TIMEOUT` of `kong/tools/redis/schema.lua` (ms).
pub const DEFAULT_TIMEOUT: u64 = 2000;

/// `redis_schema.config_schema`: the record rate-limiting and
/// response-ratelimiting embed as `config.redis`. OSS 3.10 has exactly
/// these fields (no sentinel, cluster or keepalive settings: those are
/// Kong Enterprise's).
pub fn config_schema() -> Field {
    record(vec![
        ("host", host_field()),
        ("port", port_field().default(6379)),
        // typedefs.timeout: 0 .. 2^31-2 ms.
        (
            "timeout",
            integer()
                .between(0.0, 2_147_483_646.0)
                .default(DEFAULT_TIMEOUT),
        ),
        ("username", string()),
        ("password", string().len_min(0)),
        ("database", integer().default(0)),
        ("ssl", boolean().default(false)),
        ("ssl_verify", boolean().default(false)),
        // typedefs.sni.
        (
            "server_name",
            string().custom(|v: &Value| match v.as_str() {
                Some(s) => validate_sni(s),
                None => Ok(()),
            }),
        ),
    ])
}

/// A validated `config.redis`: also the key of its client, so plugin
/// instances with the same settings share one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
pub struct RedisConf {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub timeout: Option<u64>,
    pub username: Option<String>,
    pub password: Option<String>,
    #[serde(default)]
    pub database: Option<i64>,
    #[serde(default)]
    pub ssl: Option<bool>,
    #[serde(default)]
    pub ssl_verify: Option<bool>,
    pub server_name: Option<String>,
}

impl RedisConf {
    pub fn database(&self) -> i64 {
        self.database.unwrap_or(0)
    }

    /// `red:set_timeout(timeout)`: connect, send and read each get it; a
    /// cosocket takes 0 as its 60 s default.
    pub fn timeout(&self) -> Duration {
        millis(self.timeout.unwrap_or(DEFAULT_TIMEOUT) as f64)
    }

    /// rate-limiting's `get_db_key`: `host:port;database`, which names the
    /// local counter tables of one Redis database.
    pub fn db_key(&self) -> String {
        format!(
            "{}:{};{}",
            self.host.as_deref().unwrap_or(""),
            self.port.unwrap_or(6379),
            self.database()
        )
    }

    fn connection_info(&self) -> Result<redis::ConnectionInfo, RedisError> {
        use redis::IntoConnectionInfo;
        let host = self
            .host
            .clone()
            .ok_or_else(|| RedisError::Config("no host".into()))?;
        let port = self.port.unwrap_or(6379);
        let addr = if self.ssl.unwrap_or(false) {
            // The certificate is checked against `host` (Kong: against
            // `server_name`, which the redis crate cannot set apart from
            // the host it connects to).
            redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure: !self.ssl_verify.unwrap_or(false),
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host, port)
        };
        let mut settings = redis::RedisConnectionInfo::default()
            .set_db(self.database())
            .set_skip_set_lib_name();
        // Kong authenticates only with a non-empty password, and sends the
        // username only along with one (`is_present`, policies/init.lua).
        let present = |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).is_some();
        if present(&self.password) {
            if let Some(pw) = &self.password {
                settings = settings.set_password(pw);
            }
            if present(&self.username) {
                if let Some(user) = &self.username {
                    settings = settings.set_username(user);
                }
            }
        }
        Ok(addr
            .into_connection_info()
            .map_err(RedisError::Redis)?
            .set_redis_settings(settings))
    }
}

/// Why a Redis exchange failed. The messages read like the cosocket errors
/// Kong logs (`connection refused`, `timeout`, a server's error reply).
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("{}", redis_message(.0))]
    Redis(redis::RedisError),
    #[error("timeout")]
    Timeout,
    #[error("invalid redis configuration: {0}")]
    Config(String),
    #[error("no runtime for Redis connections")]
    NoRuntime,
    #[error("redis task failed")]
    Task,
    #[error("unexpected reply: {0}")]
    Reply(String),
}

fn redis_message(e: &redis::RedisError) -> String {
    if e.is_connection_refusal() {
        "connection refused".into()
    } else if e.is_timeout() {
        "timeout".into()
    } else if e.is_connection_dropped() {
        "closed".into()
    } else {
        e.to_string()
    }
}

/// One Redis connection config's client: a multiplexed connection that
/// reconnects when it breaks, and Kong's timeout for each exchange.
pub struct RedisClient {
    conn: redis::aio::ConnectionManager,
    timeout: Duration,
    rt: tokio::runtime::Handle,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisClient {
    /// Sends `pipe` and returns its replies, on the clients' runtime and
    /// within the config's timeout.
    ///
    /// A connection found closed (Redis restarted, or dropped it while
    /// idle) is replaced and the pipeline sent once more: Kong's cosocket
    /// pool discards such connections before reusing one, so it never sees
    /// that error. An exchange whose connection broke while in flight may
    /// then count twice, which is rare next to every idle close failing.
    pub async fn query(&self, pipe: redis::Pipeline) -> Result<Vec<redis::Value>, RedisError> {
        let mut conn = self.conn.clone();
        let timeout = self.timeout;
        let task = self.rt.spawn(async move {
            tokio::time::timeout(timeout, async {
                match pipe.query_async::<Vec<redis::Value>>(&mut conn).await {
                    Err(e) if e.is_connection_dropped() && !e.is_connection_refusal() => {
                        pipe.query_async::<Vec<redis::Value>>(&mut conn).await
                    }
                    other => other,
                }
            })
            .await
        });
        match task.await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(RedisError::Redis(e)),
            Ok(Err(_)) => Err(RedisError::Timeout),
            Err(_) => Err(RedisError::Task),
        }
    }
}

/// The process's Redis clients, one per distinct connection config; held
/// by `PluginEnv::redis`, outside any config snapshot.
pub struct RedisClients {
    /// One thread of its own: the proxy's runtimes are Pingora's, and a
    /// connection's driver task must outlive none of them. Started on
    /// first use; ends when this handle is dropped.
    rt: Background,
    clients: Mutex<HashMap<RedisConf, Arc<RedisClient>>>,
}

impl Default for RedisClients {
    fn default() -> RedisClients {
        RedisClients {
            rt: Background::new("gw-redis"),
            clients: Mutex::default(),
        }
    }
}

impl std::fmt::Debug for RedisClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.clients.lock().map_or(0, |c| c.len());
        f.debug_struct("RedisClients")
            .field("clients", &n)
            .finish_non_exhaustive()
    }
}

impl RedisClients {
    /// Runs background Redis work (a plugin's periodic counter sync, Kong's
    /// `kong.timer:at`) on the Redis runtime. False when there is none.
    pub fn spawn<F>(&self, task: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.rt.spawn(task)
    }

    /// The client for `conf`, created (without connecting) on first use.
    pub fn client(&self, conf: &RedisConf) -> Result<Arc<RedisClient>, RedisError> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(conf) {
            return Ok(c.clone());
        }
        let rt = self.rt.handle().ok_or(RedisError::NoRuntime)?.clone();
        let client = redis::Client::open(conf.connection_info()?).map_err(RedisError::Redis)?;
        let timeout = conf.timeout();
        // One connect attempt per exchange: a Redis that is down fails the
        // request at once (Kong: `connection refused`), and the next
        // exchange tries again.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(0);
        // The manager spawns its tasks on the runtime current when it is
        // made, and later on the one its exchanges run on: both ours.
        let conn = {
            let _in_rt = rt.enter();
            redis::aio::ConnectionManager::new_lazy_with_config(client, config)
                .map_err(RedisError::Redis)?
        };
        // Clients no plugin instance holds any more (their config changed
        // or went away) are closed now.
        clients.retain(|_, c| Arc::strong_count(c) > 1);
        let c = Arc::new(RedisClient { conn, timeout, rt });
        clients.insert(conf.clone(), c.clone());
        Ok(c)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use config_sync::schema::{validate_record, Record};
    use serde_json::json;

    fn validate(v: Value) -> Result<Value, Vec<config_sync::schema::SchemaError>> {
        let r = Record::new(vec![("redis", config_schema())]);
        validate_record(&r, &json!({ "redis": v }), "config").map(|mut v| v["redis"].take())
    }

    #[test]
    fn the_record_has_kongs_fields_defaults_and_checks() {
        assert_eq!(
            validate(json!({})).unwrap(),
            json!({"host": null, "port": 6379, "timeout": 2000, "username": null,
                   "password": null, "database": 0, "ssl": false, "ssl_verify": false,
                   "server_name": null})
        );
        // An empty password is allowed (`len_min = 0`).
        assert!(validate(json!({"host": "127.0.0.1", "password": ""})).is_ok());
        let e = validate(json!({"host": "a:1", "port": 70000, "timeout": -1,
                                "server_name": "127.0.0.1", "sentinel_master": "m"}))
        .unwrap_err();
        let got: Vec<(&str, &str)> = e
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("config.redis.host", "must not have a port"),
                ("config.redis.port", "value should be between 0 and 65535"),
                (
                    "config.redis.timeout",
                    "value should be between 0 and 2147483646"
                ),
                ("config.redis.server_name", "must not be an IP"),
                ("config.redis.sentinel_master", "unknown field"),
            ]
        );
    }

    #[test]
    fn db_key_and_timeout_follow_kong() {
        let c: RedisConf = serde_json::from_value(
            validate(json!({"host": "r.test", "database": 3, "timeout": 0})).unwrap(),
        )
        .unwrap();
        assert_eq!(c.db_key(), "r.test:6379;3");
        assert_eq!(c.timeout(), Duration::from_secs(60));
    }

    #[test]
    fn clients_are_shared_per_config_and_fail_fast_when_redis_is_down() {
        let clients = RedisClients::default();
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = RedisConf {
            host: Some("127.0.0.1".into()),
            port: Some(port),
            timeout: Some(1000),
            ..RedisConf::default()
        };
        let a = clients.client(&conf).unwrap();
        let b = clients.client(&conf).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut pipe = redis::pipe();
        pipe.cmd("PING");
        let err = rt.block_on(a.query(pipe)).unwrap_err();
        assert_eq!(err.to_string(), "connection refused");
        // A client no instance holds is dropped when another is made.
        drop((a, b));
        let other = RedisConf {
            database: Some(1),
            ..conf
        };
        let _c = clients.client(&other).unwrap();
        assert_eq!(clients.clients.lock().unwrap().len(), 1);
    }

    #[test]
    fn ssl_connections_use_rustls() {
        // A server that hangs up: the handshake fails as an error (rustls
        // with the tree's ring provider), never a panic.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in l.incoming().take(2) {
                drop(s);
            }
        });
        let clients = RedisClients::default();
        let conf = RedisConf {
            host: Some("localhost".into()),
            port: Some(port),
            timeout: Some(2000),
            ssl: Some(true),
            ..RedisConf::default()
        };
        let c = clients.client(&conf).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut pipe = redis::pipe();
        pipe.cmd("PING");
        let err = rt.block_on(c.query(pipe)).unwrap_err();
        assert!(matches!(err, RedisError::Redis(_)), "{err:?}");
    }
}
