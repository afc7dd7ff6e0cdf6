//! The `response-ratelimiting` plugin (Kong's
//! `kong/plugins/response-ratelimiting`): the upstream says how much of
//! each named limit a response used (`X-Kong-Limit: video=1, image=2`), and
//! requests are refused once a limit is used up.
//!
//! * access (`access.lua`): reads every limit's usage per window, tells the
//!   upstream what is left (`X-RateLimit-Remaining-<name>`), and with
//!   `block_on_first_violation` refuses a request when any window of any
//!   limit has exactly nothing left;
//! * header_filter (`header_filter.lua`): reads the upstream's increments,
//!   sets `X-RateLimit-Limit-<name>-<period>` and
//!   `X-RateLimit-Remaining-<name>-<period>`, strips the upstream's header,
//!   and turns the response into a bodiless 429 when it consumes a limit
//!   already used up;
//! * log (`log.lua`): adds the increments to every window (all six, not
//!   only the configured ones), after the response.
//!
//! Policies (`policies/init.lua`): `local` (counters of this process) and
//! `redis` (`GET` per window at access; `EXISTS`, then `INCRBY` plus
//! `EXPIRE` on new keys, in the background after the response). Keys are
//! Kong's, on the instance's own scope ids, so Kong nodes and these share
//! one Redis. `cluster` needs a database and is refused (the DB-less
//! schema).
//!
//! Where this differs from Kong: local counters are per instance (Kong's
//! shm is keyed by the counter key alone) and expire two window lengths
//! after creation (Kong's never expire, but the key names its window, so
//! nothing reads them later); a request's windows are read from Redis in
//! one pipeline and an increment's `EXISTS` go in one (Kong: one command
//! after the other, stopping at the first error); limits and windows are
//! visited in config order (Kong: `pairs` order), which only decides which
//! name a `block_on_first_violation` refusal names when several are out.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use config_sync::schema::{
    boolean, map, number, string, EntityCheck, Field, PluginSchema, Record, Type, PROTOCOLS_HTTP,
};
use http::header::HeaderName;
use pingora::http::ResponseHeader;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::rate_limiting::{
    now_ms, periods_order, redis_required, redis_shorthands, reply_count, timestamps, usage_failed,
    LocalCounters, Period, EMPTY_UUID, PERIODS,
};
use super::redis::{RedisClient, RedisConf, RedisError};
use super::response_transformer::{lua_number, lua_tonumber};
use super::{Exit, Instance, Kong, Phases, Plugin, PluginDef, VERSION};

pub const NAME: &str = "response-ratelimiting";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 900,
    version: VERSION,
    schema,
    build,
};

/// `HTTP_TOO_MANY_REQUESTS`.
const TOO_MANY_REQUESTS: u16 = 429;

// ---------------------------------------------------------------------------
// schema

fn schema() -> PluginSchema {
    let limit = || number().gt(0.0);
    // One limit: its windows, at least one, longer ones not lower.
    let periods =
        Record::new(PERIODS.iter().map(|p| (p.name(), limit())).collect()).with_checks(vec![
            EntityCheck::RecordValidator(at_least_one_period),
            EntityCheck::RecordValidator(validate_periods_order),
        ]);
    let values = Field::new(Type::Record(periods)).required();
    let mut config = Record::new(vec![
        ("header_name", string().default("x-kong-limit")),
        (
            "limit_by",
            string()
                .default("consumer")
                .one_of(&["consumer", "credential", "ip"]),
        ),
        // The DB-less / control-plane form (schema.lua `is_dbless()`).
        (
            "policy",
            string().default("local").one_of(&["local", "redis"]),
        ),
        ("fault_tolerant", boolean().required().default(true)),
        ("redis", super::redis::config_schema()),
        (
            "block_on_first_violation",
            boolean().required().default(false),
        ),
        ("hide_client_headers", boolean().required().default(false)),
        ("limits", map(string(), values).required().len_min(1)),
    ])
    .with_checks(vec![
        redis_required("redis.host"),
        redis_required("redis.port"),
        redis_required("redis.timeout"),
    ]);
    config.shorthands = redis_shorthands!("response-ratelimiting");
    PluginSchema {
        name: NAME,
        config,
        default_protocols: PROTOCOLS_HTTP,
        allowed_protocols: PROTOCOLS_HTTP,
        no_consumer: false,
        no_route: false,
        no_service: false,
        entity_checks: Vec::new(),
    }
}

/// The limit record's `at_least_one_of = ORDERED_PERIODS`, named as Kong
/// names the fields of a nested record (without their path).
fn at_least_one_period(limit: &Map<String, Value>) -> Result<(), String> {
    if PERIODS
        .iter()
        .any(|p| limit.get(p.name()).is_some_and(|v| !v.is_null()))
    {
        return Ok(());
    }
    Err("at least one of these fields must be non-empty: 'second', 'minute', 'hour', 'day', 'month', 'year'".into())
}

/// The limit record's `custom_validator` (`validate_periods_order`).
fn validate_periods_order(limit: &Map<String, Value>) -> Result<(), String> {
    periods_order(limit).map_err(|e| format!("the {e}"))
}

// ---------------------------------------------------------------------------
// config

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LimitBy {
    Consumer,
    Credential,
    Ip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Policy {
    Local,
    Redis,
}

/// `config` of a `response-ratelimiting` instance (validated, defaults
/// filled).
#[derive(Debug, Clone, Deserialize)]
struct Config {
    header_name: String,
    limit_by: LimitBy,
    policy: Policy,
    fault_tolerant: bool,
    #[serde(default)]
    redis: RedisConf,
    block_on_first_violation: bool,
    hide_client_headers: bool,
    limits: Map<String, Value>,
}

/// One named limit and the header names it produces.
#[derive(Debug)]
struct Limit {
    name: String,
    /// `X-RateLimit-Remaining-<name>`, to the upstream.
    upstream_header: String,
    /// Configured windows, shortest first, each with its
    /// `X-RateLimit-Limit-<name>-<period>` and
    /// `X-RateLimit-Remaining-<name>-<period>`.
    periods: Vec<Window>,
}

#[derive(Debug)]
struct Window {
    period: Period,
    limit: f64,
    limit_header: String,
    remaining_header: String,
}

// ---------------------------------------------------------------------------
// the handler

/// The `local` policy's counters (Kong: the `kong_rate_limiting_counters`
/// shm), kept in the instance's slot of `kong.env().store`.
type Counters = LocalCounters<f64>;

struct ResponseRateLimiting {
    id: uuid::Uuid,
    cfg: Config,
    limits: Vec<Limit>,
    /// `config.header_name`.
    header_name: Option<HeaderName>,
    /// The instance's own scope (`conf.route_id` / `conf.service_id`).
    route_id: String,
    service_id: String,
    counters: OnceLock<Arc<Counters>>,
    client: OnceLock<Arc<RedisClient>>,
}

/// `kong.ctx.plugin`: what access leaves for header_filter and log.
#[derive(Debug, Default)]
struct ReqState {
    /// `current_timestamp`: the access phase's second, in ms.
    now_ms: i64,
    identifier: String,
    /// `usage`, by limit then window: what is left before this request.
    /// `None` when access did not finish (refused, failed, not run).
    usage: Option<Vec<Vec<f64>>>,
    /// `increments` from the upstream's header, by limit.
    increments: Vec<Option<f64>>,
    /// The response was turned into a 429: nothing is counted.
    stop_log: bool,
}

fn build(i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    Ok(Arc::new(ResponseRateLimiting::new(i)?))
}

impl ResponseRateLimiting {
    fn new(i: &Instance<'_>) -> Result<ResponseRateLimiting, String> {
        let cfg: Config =
            serde_json::from_value(i.config.clone()).map_err(|e| format!("config: {e}"))?;
        let limits = cfg
            .limits
            .iter()
            .map(|(name, v)| Limit {
                name: name.clone(),
                upstream_header: format!("X-RateLimit-Remaining-{name}"),
                periods: PERIODS
                    .iter()
                    .filter_map(|&p| {
                        let limit = v.get(p.name()).and_then(Value::as_f64)?;
                        Some(Window {
                            period: p,
                            limit,
                            limit_header: format!("X-RateLimit-Limit-{name}-{}", p.name()),
                            remaining_header: format!("X-RateLimit-Remaining-{name}-{}", p.name()),
                        })
                    })
                    .collect(),
            })
            .collect();
        // `kong.service.response.get_header` and `kong.response.clear_header`
        // take `_` for `-`, in any case; a name no header can have matches
        // none.
        let header_name = HeaderName::from_bytes(cfg.header_name.replace('_', "-").as_bytes()).ok();
        let scope =
            |id: Option<uuid::Uuid>| id.map_or_else(|| EMPTY_UUID.to_string(), |u| u.to_string());
        Ok(ResponseRateLimiting {
            id: i.id,
            limits,
            header_name,
            route_id: scope(i.route),
            service_id: scope(i.service),
            cfg,
            counters: OnceLock::new(),
            client: OnceLock::new(),
        })
    }
}

/// Lua's whitespace for `kong.tools.string.strip` (space, `\t` to `\r`).
fn strip(s: &str) -> &str {
    s.trim_matches(|c: char| c == ' ' || ('\t'..='\r').contains(&c))
}

/// `parse_header`: `name=n` pairs separated by commas; a part with no or
/// more than one `=`, or naming no configured limit, is ignored, and a
/// later part for a name replaces an earlier one (`tonumber` failing
/// clears it).
fn parse_header(value: Option<&str>, limits: &[Limit]) -> Vec<Option<f64>> {
    let mut out = vec![None; limits.len()];
    for part in value.into_iter().flat_map(|v| v.split(',')) {
        let mut kv = part.splitn(3, '=');
        let (Some(name), Some(n), None) = (kv.next(), kv.next(), kv.next()) else {
            continue;
        };
        let name = strip(name);
        if let Some(i) = limits.iter().position(|l| l.name == name) {
            out[i] = lua_tonumber(strip(n));
        }
    }
    out
}

impl ResponseRateLimiting {
    /// `get_local_key`, also the Redis key:
    /// `response-ratelimit:<route>:<service>:<id>:<start>:<name>:<period>`.
    fn key(&self, identifier: &str, name: &str, period: Period, ts: &[i64; 6]) -> String {
        format!(
            "response-ratelimit:{}:{}:{identifier}:{}:{name}:{}",
            self.route_id,
            self.service_id,
            ts[period.index()],
            period.name()
        )
    }

    /// `get_identifier`: the consumer (or credential), the credential, or
    /// the client address (`kong.client.get_forwarded_ip()`).
    fn identifier(&self, kong: &Kong<'_>) -> String {
        let id = match self.cfg.limit_by {
            LimitBy::Consumer => kong
                .consumer()
                .map(|c| c.id.to_string())
                .or_else(|| kong.credential().map(|c| c.id.to_string())),
            LimitBy::Credential => kong.credential().map(|c| c.id.to_string()),
            LimitBy::Ip => None,
        };
        id.unwrap_or_else(|| {
            kong.client_ip()
                .map_or_else(|| "nil".into(), |ip| ip.to_string())
        })
    }

    fn counters(&self, kong: &Kong<'_>) -> Arc<Counters> {
        self.counters
            .get_or_init(|| kong.env().store.get_or_init(self.id, Counters::default))
            .clone()
    }

    fn client(&self, kong: &Kong<'_>) -> Result<Arc<RedisClient>, RedisError> {
        match self.client.get() {
            Some(c) => Ok(c.clone()),
            None => {
                let c = kong.env().redis.client(&self.cfg.redis)?;
                Ok(self.client.get_or_init(|| c).clone())
            }
        }
    }

    /// `get_usage`: what is left of each limit's windows before this
    /// request (`limit - usage`, negative once overdrawn).
    async fn usage(
        &self,
        kong: &Kong<'_>,
        identifier: &str,
        now_ms: i64,
    ) -> Result<Vec<Vec<f64>>, RedisError> {
        let ts = timestamps(now_ms);
        let keys = self.limits.iter().flat_map(|l| {
            l.periods
                .iter()
                .map(|w| self.key(identifier, &l.name, w.period, &ts))
        });
        let used: Vec<f64> = match self.cfg.policy {
            Policy::Local => {
                let counters = self.counters(kong);
                let now_s = now_ms.div_euclid(1000);
                keys.map(|k| counters.get(&k, now_s)).collect()
            }
            Policy::Redis => {
                let mut pipe = redis::pipe();
                for k in keys {
                    pipe.cmd("GET").arg(k);
                }
                let replies = self.client(kong)?.query(pipe).await?;
                // `nil` (no such key) reads as 0.
                replies
                    .iter()
                    .map(|r| reply_count(r).map(|n| n as f64))
                    .collect::<Result<_, _>>()?
            }
        };
        let mut used = used.into_iter();
        Ok(self
            .limits
            .iter()
            .map(|l| {
                l.periods
                    .iter()
                    .map(|w| w.limit - used.next().unwrap_or(0.0))
                    .collect()
            })
            .collect())
    }

    /// What `log.execute` counts: each non-zero increment, on all six
    /// windows of the access phase's time (`at_ms`).
    fn pending(&self, identifier: &str, at_ms: i64, increments: &[Option<f64>]) -> Vec<Pending> {
        let ts = timestamps(at_ms);
        self.limits
            .iter()
            .zip(increments)
            .filter_map(|(l, inc)| {
                let value = inc.filter(|n| *n != 0.0)?;
                let keys = PERIODS
                    .iter()
                    .map(|&p| (self.key(identifier, &l.name, p, &ts), p))
                    .collect();
                Some(Pending { keys, value })
            })
            .collect()
    }

    /// `log.execute`: counts the increments after the response (Kong: in a
    /// 0-delay timer; here the local counters at once, Redis in the
    /// background).
    fn increment(&self, kong: &Kong<'_>, identifier: &str, at_ms: i64, increments: &[Option<f64>]) {
        let todo = self.pending(identifier, at_ms, increments);
        if todo.is_empty() {
            return;
        }
        match self.cfg.policy {
            Policy::Local => count_locally(&self.counters(kong), todo, now_ms().div_euclid(1000)),
            Policy::Redis => {
                let client = match self.client(kong) {
                    Ok(c) => c,
                    Err(e) => {
                        log::error!("[{NAME}] failed to connect to Redis: {e}");
                        return;
                    }
                };
                let spawned = kong.env().redis.spawn(async move {
                    for p in todo {
                        // Each limit on its own, as Kong's loop: a failure is
                        // logged and the next one is still counted.
                        let _ = redis_increment(&client, &p.keys, p.value).await;
                    }
                });
                if !spawned {
                    log::error!("[{NAME}] failed to create timer: no runtime");
                }
            }
        }
    }
}

/// One limit's increment: its six keys and the value.
#[derive(Debug)]
struct Pending {
    keys: Vec<(String, Period)>,
    value: f64,
}

/// The local policy's `increment` (`shm:incr(key, value, 0)`).
fn count_locally(counters: &Counters, todo: Vec<Pending>, now_s: i64) {
    for p in todo {
        for (key, period) in p.keys {
            // Kong's shm entries never expire; two window lengths outlive
            // the window the key names.
            counters.incr(key, p.value, 2 * period.expiration(), now_s);
        }
    }
}

/// The redis policy's `increment`: `EXISTS` on each window's key, then one
/// pipeline of `INCRBY` per key and `EXPIRE` (Kong's `EXPIRATIONS`) on
/// those that did not exist.
async fn redis_increment(
    client: &RedisClient,
    keys: &[(String, Period)],
    value: f64,
) -> Result<(), RedisError> {
    let mut exists = redis::pipe();
    for (k, _) in keys {
        exists.cmd("EXISTS").arg(k);
    }
    let found = client.query(exists).await.inspect_err(|e| {
        log::error!("[{NAME}] failed to query Redis: {e}");
    })?;
    let pipe = increment_pipeline(keys, &found, value);
    client.query(pipe).await.map(drop).inspect_err(|e| {
        log::error!("[{NAME}] failed to commit pipeline in Redis: {e}");
    })
}

fn increment_pipeline(
    keys: &[(String, Period)],
    exists: &[redis::Value],
    value: f64,
) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    // A command's error reply (a fractional `INCRBY`) is that command's
    // result, not the pipeline's failure (resty.redis `commit_pipeline`).
    pipe.ignore_errors();
    // resty.redis sends numbers as `tostring` prints them.
    let value = lua_number(value);
    for (i, (key, p)) in keys.iter().enumerate() {
        pipe.cmd("INCRBY").arg(key).arg(&value);
        let existed = matches!(exists.get(i), Some(redis::Value::Int(n)) if *n != 0);
        if !existed {
            pipe.cmd("EXPIRE").arg(key).arg(p.expiration());
        }
    }
    pipe
}

#[async_trait]
impl Plugin for ResponseRateLimiting {
    fn phases(&self) -> Phases {
        Phases::ACCESS | Phases::HEADER_FILTER | Phases::LOG
    }

    async fn access(&self, kong: &mut Kong<'_>) -> Result<(), Exit> {
        if self.limits.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let identifier = self.identifier(kong);
        let usage = self.usage(kong, &identifier, now).await;
        let st = kong.state::<ReqState>();
        st.now_ms = now;
        st.identifier = identifier;
        let usage = match usage {
            Ok(u) => u,
            Err(e) => return usage_failed(NAME, self.cfg.fault_tolerant, &e),
        };
        for (limit, left) in self.limits.iter().zip(&usage) {
            let mut remaining: Option<f64> = None;
            for &rem in left {
                // Exactly 0: an overdrawn window (negative) does not block.
                if self.cfg.block_on_first_violation && rem == 0.0 {
                    return Err(Exit::error(
                        TOO_MANY_REQUESTS,
                        format!("API rate limit exceeded for '{}'", limit.name),
                    ));
                }
                if remaining.is_none_or(|r| rem < r) {
                    remaining = Some(rem);
                }
            }
            if let Some(r) = remaining {
                kong.set_upstream_header(&limit.upstream_header, &lua_number(r));
            }
        }
        kong.state::<ReqState>().usage = Some(usage);
        Ok(())
    }

    fn header_filter(&self, kong: &mut Kong<'_>, resp: &mut ResponseHeader) {
        // `kong.service.response.get_header`: the upstream's, first line.
        let value = match &self.header_name {
            Some(h) if kong.response_from_service() => resp
                .headers
                .get(h)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            _ => None,
        };
        let increments = parse_header(value.as_deref(), &self.limits);
        let st = kong.state::<ReqState>();
        st.increments = increments;
        let Some(usage) = &st.usage else {
            return;
        };
        let mut stop = false;
        for ((limit, left), inc) in self.limits.iter().zip(usage).zip(&st.increments) {
            for (w, &rem) in limit.periods.iter().zip(left) {
                if !self.cfg.hide_client_headers {
                    // `math.max(0, x)`: 0 unless x is above it.
                    let left = rem - inc.unwrap_or(0.0);
                    let remain = if left > 0.0 { left } else { 0.0 };
                    let _ = resp.insert_header(w.limit_header.clone(), lua_number(w.limit));
                    let _ = resp.insert_header(w.remaining_header.clone(), lua_number(remain));
                }
                if inc.is_some_and(|n| n > 0.0) && rem <= 0.0 {
                    stop = true;
                }
            }
        }
        if let Some(h) = &self.header_name {
            resp.remove_header(h);
        }
        if stop {
            st.stop_log = true;
            // `kong.response.exit(429)`: no body.
            kong.exit_header_filter(resp, TOO_MANY_REQUESTS);
        }
    }

    fn log(&self, kong: &mut Kong<'_>) {
        let st = kong.state::<ReqState>();
        if st.stop_log || st.usage.is_none() {
            return;
        }
        let identifier = std::mem::take(&mut st.identifier);
        let increments = std::mem::take(&mut st.increments);
        let now = st.now_ms;
        self.increment(kong, &identifier, now, &increments);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use config_sync::schema::{validate_record, SchemaError};
    use serde_json::json;

    fn validate(v: Value) -> Result<Value, Vec<SchemaError>> {
        validate_record(&schema().config, &v, "config")
    }

    fn errors(v: Value) -> Vec<(String, String)> {
        validate(v)
            .unwrap_err()
            .into_iter()
            .map(|e| (e.path, e.message))
            .collect()
    }

    fn err(path: &str, msg: &str) -> Vec<(String, String)> {
        vec![(path.to_string(), msg.to_string())]
    }

    fn plugin(config: Value, route: Option<u128>, service: Option<u128>) -> ResponseRateLimiting {
        let config = validate(config).unwrap();
        ResponseRateLimiting::new(&Instance {
            id: uuid::Uuid::from_u128(1),
            config: &config,
            route: route.map(uuid::Uuid::from_u128),
            service: service.map(uuid::Uuid::from_u128),
            consumer: None,
            routes: 1,
            instance_name: None,
        })
        .unwrap()
    }

    // 01-schema_spec.lua

    #[test]
    fn proper_config_validates() {
        // "proper config validates" and "(bis)"
        let v = validate(json!({"limits": {"video": {"second": 1}}})).unwrap();
        assert_eq!(v["header_name"], "x-kong-limit");
        assert_eq!(v["limit_by"], "consumer");
        // 03-api_spec "accepts proper config and sets local policy by default"
        assert_eq!(v["policy"], "local");
        assert_eq!(v["fault_tolerant"], true);
        assert_eq!(v["block_on_first_violation"], false);
        assert_eq!(v["hide_client_headers"], false);
        assert_eq!(v["redis"]["port"], 6379);
        assert_eq!(v["limits"]["video"]["second"], 1);
        validate(json!({"limits": {"video": {"second": 1, "minute": 2, "hour": 3, "day": 4, "month": 5, "year": 6}}}))
            .unwrap();
        let p = plugin(json!({"limits": {"video": {"second": 1}}}), None, None);
        assert_eq!(
            p.phases(),
            Phases::ACCESS | Phases::HEADER_FILTER | Phases::LOG
        );
    }

    #[test]
    fn empty_config_and_invalid_limits() {
        // "empty config" (also 03-api_spec "errors on empty config")
        assert_eq!(
            errors(json!({})),
            err("config.limits", "required field missing")
        );
        assert_eq!(
            errors(json!({"limits": {}})),
            err("config.limits", "length must be at least 1")
        );
        // "invalid limit": the map's error carries the record's, without
        // the entry's key.
        assert_eq!(
            errors(json!({"limits": {"video": {"seco": 1}}})),
            err("config.limits.seco", "unknown field")
        );
        // "limits: 'null' value does not cause 500, issue #8314"
        validate(json!({"limits": {"video": {"second": null, "minute": 1}}})).unwrap();
        // "invaldid unit type"
        assert_eq!(
            errors(json!({"limits": {"second": 10}})),
            err("config.limits", "expected a record")
        );
        // A limit with no window (`at_least_one_of`), and one that is not
        // greater than 0.
        assert_eq!(
            errors(json!({"limits": {"video": {}}})),
            err(
                "config.limits",
                "at least one of these fields must be non-empty: 'second', 'minute', 'hour', 'day', 'month', 'year'"
            )
        );
        assert_eq!(
            errors(json!({"limits": {"video": {"minute": 0}}})),
            err("config.limits.minute", "value must be greater than 0")
        );
    }

    #[test]
    fn limits_smaller_unit_is_less_than_bigger_unit() {
        assert_eq!(
            errors(json!({"limits": {"video": {"second": 2, "minute": 1}}})),
            err(
                "config.limits",
                "the limit for minute(1.0) cannot be lower than the limit for second(2.0)"
            )
        );
        // "(bis)"
        assert_eq!(
            errors(
                json!({"limits": {"video": {"second": 1, "minute": 2, "hour": 3, "day": 4, "month": 6, "year": 5}}})
            ),
            err(
                "config.limits",
                "the limit for year(5.0) cannot be lower than the limit for month(6.0)"
            )
        );
    }

    #[test]
    fn redis_structures_and_the_dbless_policies() {
        // "proper config validates with redis new structure"
        validate(
            json!({"limits": {"video": {"second": 10}}, "policy": "redis", "redis": {
            "host": "localhost", "port": 6379, "database": 0, "username": "test",
            "password": "testXXX", "ssl": true, "ssl_verify": false, "timeout": 1100,
            "server_name": "redis.test"}}),
        )
        .unwrap();
        // "proper config validates with redis legacy structure", and
        // 06-shorthand_fields_spec: the legacy fields land in `redis`.
        let v = validate(
            json!({"limits": {"video": {"minute": 100}}, "policy": "redis",
            "redis_host": "custom-host.example.test", "redis_port": 55000,
            "redis_username": "test1", "redis_password": "testX", "redis_database": 1,
            "redis_timeout": 1100, "redis_ssl": true, "redis_ssl_verify": true,
            "redis_server_name": "example.test"}),
        )
        .unwrap();
        assert_eq!(
            v["redis"],
            json!({"host": "custom-host.example.test", "port": 55000, "timeout": 1100,
                   "username": "test1", "password": "testX", "database": 1, "ssl": true,
                   "ssl_verify": true, "server_name": "example.test"})
        );
        let messages: Vec<&str> = schema()
            .config
            .shorthands
            .iter()
            .map(|s| s.message)
            .collect();
        assert_eq!(messages.len(), 9);
        assert_eq!(
            messages[0],
            "response-ratelimiting: config.redis_host is deprecated, please use config.redis.host instead"
        );
        assert_eq!(
            messages[8],
            "response-ratelimiting: config.redis_database is deprecated, please use config.redis.database instead"
        );
        // "verifies that redis required fields are supplied"
        let e = errors(
            json!({"limits": {"video": {"second": 10}}, "policy": "redis",
            "redis": {"port": 6379, "database": 0, "username": "test", "password": "testXXX",
                      "ssl": true, "ssl_verify": false, "timeout": 1100}}),
        );
        assert!(
            e.contains(&("config.redis.host".into(), "required field missing".into())),
            "{e:?}"
        );
        // DB-less: no `cluster`.
        assert_eq!(
            errors(json!({"limits": {"video": {"second": 10}}, "policy": "cluster"})),
            err("config.policy", "expected one of: local, redis")
        );
    }

    // 02-policies_spec.lua (its `cluster` cases, on the local policy)

    #[test]
    fn local_policy_counts_every_window() {
        let p = plugin(
            json!({"limits": {"video": {"second": 10}}}),
            Some(7),
            Some(8),
        );
        let c = Counters::default();
        let id = "8a1e0f52-0000-4000-8000-000000000001";
        let t0 = 1_424_217_600_000;
        let used = |at_ms: i64| -> Vec<f64> {
            let ts = timestamps(at_ms);
            PERIODS
                .iter()
                .map(|&per| c.get(&p.key(id, "video", per, &ts), at_ms / 1000))
                .collect()
        };
        // "should return 0 when ratelimiting metrics are not existing"
        assert_eq!(used(t0), vec![0.0; 6]);
        // "should increment ratelimiting metrics with the given period"
        count_locally(&c, p.pending(id, t0, &[Some(1.0)]), t0 / 1000);
        assert_eq!(used(t0), vec![1.0; 6]);
        count_locally(&c, p.pending(id, t0, &[Some(1.0)]), t0 / 1000);
        assert_eq!(used(t0), vec![2.0; 6]);
        // 1 second later: a new second window, the others go on.
        let t1 = t0 + 1000;
        count_locally(&c, p.pending(id, t1, &[Some(1.0)]), t1 / 1000);
        assert_eq!(used(t1), vec![1.0, 3.0, 3.0, 3.0, 3.0, 3.0]);
        // Zero increments count nothing; negative ones give back.
        assert!(p.pending(id, t1, &[Some(0.0)]).is_empty());
        assert!(p.pending(id, t1, &[None]).is_empty());
        count_locally(&c, p.pending(id, t1, &[Some(-0.5)]), t1 / 1000);
        assert_eq!(used(t1), vec![0.5, 2.5, 2.5, 2.5, 2.5, 2.5]);
        // A month window's counter outlives a 31-day month.
        let c = Counters::default();
        count_locally(&c, p.pending(id, t0, &[Some(1.0)]), t0 / 1000);
        let month = p.key(id, "video", Period::Month, &timestamps(t0));
        assert_eq!(c.get(&month, t0 / 1000 + 31 * 86_400), 1.0);
    }

    #[test]
    fn keys_are_kongs() {
        let p = plugin(json!({"limits": {"video": {"second": 10}}}), None, Some(2));
        let ts = timestamps(1_553_263_548_000);
        assert_eq!(
            p.key("127.0.0.1", "video", Period::Minute, &ts),
            "response-ratelimit:00000000-0000-0000-0000-000000000000:00000000-0000-0000-0000-000000000002:127.0.0.1:1553263500000:video:minute"
        );
        let pending = p.pending("127.0.0.1", 1_553_263_548_000, &[Some(2.0)]);
        let names: Vec<&str> = pending[0].keys.iter().map(|(_, p)| p.name()).collect();
        assert_eq!(names, ["second", "minute", "hour", "day", "month", "year"]);
    }

    #[test]
    fn the_upstream_header_is_parsed_as_kong_does() {
        let p = plugin(
            json!({"limits": {"video": {"second": 10}, "image": {"second": 10}}}),
            None,
            None,
        );
        let parse = |v: &str| parse_header(Some(v), &p.limits);
        assert_eq!(parse("video=1"), [Some(1.0), None]);
        assert_eq!(parse(" video = 2 ,image=1"), [Some(2.0), Some(1.0)]);
        // Unknown names, parts without exactly one `=`, empty parts.
        assert_eq!(parse("test=6, video=1=2,, image"), [None, None]);
        // Lua numbers: fractions, hex, signs; the last part wins, and one
        // that is not a number clears the name.
        assert_eq!(parse("video=1.5, image=0x10"), [Some(1.5), Some(16.0)]);
        assert_eq!(parse("video=1, video=-2"), [Some(-2.0), None]);
        assert_eq!(parse("video=1, video=abc"), [None, None]);
        assert_eq!(parse_header(None, &p.limits), [None, None]);
        // Header names keep the limit's spelling.
        assert_eq!(
            p.limits[0].periods[0].limit_header,
            "X-RateLimit-Limit-video-second"
        );
        assert_eq!(
            p.limits[1].periods[0].remaining_header,
            "X-RateLimit-Remaining-image-second"
        );
        assert_eq!(p.limits[0].upstream_header, "X-RateLimit-Remaining-video");
        // `header_name` is read with `_` as `-`.
        let p = plugin(
            json!({"limits": {"video": {"second": 10}}, "header_name": "X_My_Limit"}),
            None,
            None,
        );
        assert_eq!(p.header_name.unwrap().as_str(), "x-my-limit");
    }

    #[test]
    fn the_redis_increment_is_kongs_pipeline() {
        let keys: Vec<(String, Period)> = PERIODS
            .iter()
            .map(|&p| (format!("k-{}", p.name()), p))
            .collect();
        // The second window's key is new, the others exist.
        let mut exists = vec![redis::Value::Int(1); 6];
        exists[0] = redis::Value::Int(0);
        let pipe = increment_pipeline(&keys, &exists, 2.0);
        let cmds: Vec<Vec<String>> = pipe
            .cmd_iter()
            .map(|c| {
                c.args_iter()
                    .filter_map(|a| match a {
                        redis::Arg::Simple(b) => Some(String::from_utf8_lossy(b).into_owned()),
                        _ => None,
                    })
                    .collect()
            })
            .collect();
        assert_eq!(cmds[0], ["INCRBY", "k-second", "2"]);
        assert_eq!(cmds[1], ["EXPIRE", "k-second", "1"]);
        assert_eq!(cmds[2], ["INCRBY", "k-minute", "2"]);
        assert_eq!(cmds.len(), 7);
        // All new: Kong's EXPIRATIONS.
        let pipe = increment_pipeline(&keys, &vec![redis::Value::Int(0); 6], 0.5);
        let expire: Vec<String> = pipe
            .cmd_iter()
            .filter_map(|c| {
                let args: Vec<_> = c.args_iter().collect();
                match (&args[0], &args[2]) {
                    (redis::Arg::Simple(b"EXPIRE"), redis::Arg::Simple(ttl)) => {
                        Some(String::from_utf8_lossy(ttl).into_owned())
                    }
                    (redis::Arg::Simple(b"INCRBY"), redis::Arg::Simple(v)) => {
                        assert_eq!(*v, b"0.5", "sent as Lua prints it");
                        None
                    }
                    _ => None,
                }
            })
            .collect();
        assert_eq!(expire, ["1", "60", "3600", "86400", "2592000", "31536000"]);
    }
}
