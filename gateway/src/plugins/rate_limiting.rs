//! The `rate-limiting` plugin (Kong's `kong/plugins/rate-limiting`): counts
//! requests per second, minute, hour, day, month and year windows (UTC
//! calendar), per consumer, credential, IP, service, header or path, and
//! refuses those over a limit.
//!
//! Policies (`policies/init.lua`):
//! * `local`: counters in this process, checked in access and incremented
//!   after the check, so refused requests do not count;
//! * `redis` with `sync_rate = -1`: an `INCR` (and `EXPIRE` on creation)
//!   per window at check time, so refused requests count too;
//! * `redis` with `sync_rate > 0`: a local cache read from Redis once per
//!   window and key, plus deltas flushed every `sync_rate` seconds.
//!
//! Counters are keyed on the instance's own scope ids (one global instance
//! shares its counters across routes) with Kong's key names, so Kong nodes
//! and these share one Redis. Local counters and pending deltas live in the
//! instance's slot of `kong.env().store`, so a config push keeps them.
//!
//! Where this differs from Kong: local counters and batched deltas are per
//! instance (Kong's shm and per-worker tables are keyed by the counter key
//! and the Redis database, so two instances with the same scope ids, say a
//! consumer-scoped and a global one, share them there); the windows of a
//! request are read from Redis in one pipeline (Kong: one `EVAL` after the
//! other, stopping at the first error); when several windows are exhausted
//! the refusal names the longest (Kong: whichever its `pairs` visits last).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use config_sync::schema::{
    boolean, number, string, Cond, EntityCheck, PluginSchema, Record, Shorthand, PROTOCOLS_HTTP,
};
use config_sync::validate::{validate_header_name, validate_path};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::redis::{RedisClient, RedisClients, RedisConf, RedisError};
use super::{Exit, Instance, Kong, Phases, Plugin, PluginDef, VERSION};

pub const NAME: &str = "rate-limiting";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 910,
    version: VERSION,
    schema,
    build,
};

/// `sync_rate = -1`: count in Redis at check time.
const SYNC_RATE_REALTIME: f64 = -1.0;

/// The scope id of an instance without a route or service.
pub(crate) const EMPTY_UUID: &str = "00000000-0000-0000-0000-000000000000";

/// `usage` for `sync_rate = -1` (and the first read of a batched key):
/// `INCR`, `EXPIRE` when created, the count before this request.
const USAGE_SCRIPT: &str = r#"
        local cache_key, expiration = KEYS[1], ARGV[1]
        local result_incr = redis.call("incr", cache_key)
        if result_incr == 1 then
          redis.call("expire", cache_key, expiration)
        end

        return result_incr - 1
      "#;

/// `sync_to_redis`: adds a batched delta, `EXPIREAT` when the key is new.
/// Kong's expiry argument is a window start in milliseconds plus the
/// window's length in seconds, so a key this creates expires in thousands
/// of years; sent as Kong sends it, so a mixed fleet writes the same.
const SYNC_SCRIPT: &str = r#"
      local key, value, expiration = KEYS[1], tonumber(ARGV[1]), ARGV[2]
      local exists = redis.call("exists", key)
      redis.call("incrby", key, value)
      if not exists or exists == 0 then
        redis.call("expireat", key, expiration)
      end
    "#;

// ---------------------------------------------------------------------------
// windows

/// A limit's window (`kong.tools.timestamp` precisions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Second,
    Minute,
    Hour,
    Day,
    Month,
    Year,
}

/// `ORDERED_PERIODS` (schema.lua).
pub const PERIODS: [Period; 6] = [
    Period::Second,
    Period::Minute,
    Period::Hour,
    Period::Day,
    Period::Month,
    Period::Year,
];

impl Period {
    pub fn name(self) -> &'static str {
        match self {
            Period::Second => "second",
            Period::Minute => "minute",
            Period::Hour => "hour",
            Period::Day => "day",
            Period::Month => "month",
            Period::Year => "year",
        }
    }

    /// `expiration.lua`: the counter's TTL and the header's window, in
    /// seconds (a month is 30 days, a year 365, whatever the calendar).
    pub fn expiration(self) -> i64 {
        match self {
            Period::Second => 1,
            Period::Minute => 60,
            Period::Hour => 3600,
            Period::Day => 86400,
            Period::Month => 2_592_000,
            Period::Year => 31_536_000,
        }
    }

    fn limit_header(self) -> &'static str {
        match self {
            Period::Second => "X-RateLimit-Limit-Second",
            Period::Minute => "X-RateLimit-Limit-Minute",
            Period::Hour => "X-RateLimit-Limit-Hour",
            Period::Day => "X-RateLimit-Limit-Day",
            Period::Month => "X-RateLimit-Limit-Month",
            Period::Year => "X-RateLimit-Limit-Year",
        }
    }

    fn remaining_header(self) -> &'static str {
        match self {
            Period::Second => "X-RateLimit-Remaining-Second",
            Period::Minute => "X-RateLimit-Remaining-Minute",
            Period::Hour => "X-RateLimit-Remaining-Hour",
            Period::Day => "X-RateLimit-Remaining-Day",
            Period::Month => "X-RateLimit-Remaining-Month",
            Period::Year => "X-RateLimit-Remaining-Year",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// `timestamp.get_timestamps(now)`: the start of the second, minute, hour,
/// day, month (the 1st) and year (January 1st) holding `now_ms`, in UTC,
/// in milliseconds (by `Period` index).
pub fn timestamps(now_ms: i64) -> [i64; 6] {
    use chrono::Datelike;
    let secs = now_ms.div_euclid(1000);
    let day = secs - secs.rem_euclid(86_400);
    let date = chrono::DateTime::from_timestamp(secs, 0).map(|t| t.date_naive());
    // Outside chrono's range (±262,000 years) the day start stands in.
    let start = |d: Option<chrono::NaiveDate>| {
        d.and_then(|d| d.and_hms_opt(0, 0, 0))
            .map_or(day, |t| t.and_utc().timestamp())
    };
    [
        secs,
        secs - secs.rem_euclid(60),
        secs - secs.rem_euclid(3600),
        day,
        start(date.and_then(|d| d.with_day(1))),
        start(date.and_then(|d| d.with_ordinal(1))),
    ]
    .map(|s| s * 1000)
}

/// A Lua number as `tostring` prints it (`%.14g`): `6`, `1.5`.
fn lua_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        let rounded: f64 = format!("{n:.13e}").parse().unwrap_or(n);
        format!("{rounded}")
    }
}

// ---------------------------------------------------------------------------
// schema

fn schema() -> PluginSchema {
    let limit = || number().gt(0.0);
    let mut config = Record::new(vec![
        ("second", limit()),
        ("minute", limit()),
        ("hour", limit()),
        ("day", limit()),
        ("month", limit()),
        ("year", limit()),
        (
            "limit_by",
            string().default("consumer").one_of(&[
                "consumer",
                "credential",
                "ip",
                "service",
                "header",
                "path",
            ]),
        ),
        (
            "header_name",
            string().custom(|v: &Value| v.as_str().map_or(Ok(()), validate_header_name)),
        ),
        (
            "path",
            string().custom(|v: &Value| v.as_str().map_or(Ok(()), validate_path)),
        ),
        // The DB-less / control-plane form: `cluster` needs a database
        // (schema.lua `is_dbless()`), so "expected one of: local, redis".
        (
            "policy",
            string()
                .default("local")
                .len_min(0)
                .one_of(&["local", "redis"]),
        ),
        ("fault_tolerant", boolean().required().default(true)),
        ("redis", super::redis::config_schema()),
        ("hide_client_headers", boolean().required().default(false)),
        ("error_code", number().default(429).gt(0.0)),
        ("error_message", string().default("API rate limit exceeded")),
        ("sync_rate", number().required().default(SYNC_RATE_REALTIME)),
    ])
    .with_checks(vec![
        EntityCheck::RecordValidator(validate_periods_order),
        EntityCheck::AtLeastOneOf(vec!["second", "minute", "hour", "day", "month", "year"]),
        redis_required("redis.host"),
        redis_required("redis.port"),
        redis_required("redis.timeout"),
        EntityCheck::Conditional {
            if_field: "limit_by",
            if_match: Cond::Eq(Value::from("header")),
            then_field: "header_name",
            then_match: Cond::Required,
            then_err: None,
        },
        EntityCheck::Conditional {
            if_field: "limit_by",
            if_match: Cond::Eq(Value::from("path")),
            then_field: "path",
            then_match: Cond::Required,
            then_err: None,
        },
    ]);
    config.shorthands = shorthands();
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

pub(crate) fn redis_required(field: &'static str) -> EntityCheck {
    EntityCheck::Conditional {
        if_field: "policy",
        if_match: Cond::Eq(Value::from("redis")),
        then_field: field,
        then_match: Cond::Required,
        then_err: None,
    }
}

/// The deprecated `redis_*` fields (to go in Kong 4.0), rewritten into
/// `config.redis`, with Kong's deprecation messages for plugin `$plugin`
/// (response-ratelimiting has the same set).
macro_rules! redis_shorthands {
    ($plugin:literal) => {
        $crate::plugins::rate_limiting::redis_shorthands!(@fields $plugin;
            host: string(), port: integer(), password: string().len_min(0),
            username: string(), ssl: boolean(), ssl_verify: boolean(),
            server_name: string(), timeout: integer(), database: integer())
    };
    (@fields $plugin:literal; $($f:ident: $field:expr),*) => {{
        use config_sync::schema::{boolean, integer, string, Shorthand};
        vec![$(Shorthand {
            name: concat!("redis_", stringify!($f)),
            field: $field,
            replaced_with: &["redis", stringify!($f)],
            message: concat!($plugin, ": config.redis_", stringify!($f),
                " is deprecated, please use config.redis.", stringify!($f), " instead"),
        }),*]
    }};
}
pub(crate) use redis_shorthands;

fn shorthands() -> Vec<Shorthand> {
    redis_shorthands!("rate-limiting")
}

/// `validate_periods_order` of rate-limiting and response-ratelimiting:
/// a longer window's limit lower than a shorter one's, as `limit for
/// <longer>(<v>) cannot be lower than the limit for <shorter>(<v>)` (each
/// plugin starts the sentence its own way).
pub(crate) fn periods_order(limits: &Map<String, Value>) -> Result<(), String> {
    for (i, lower) in PERIODS.iter().enumerate() {
        let Some(v1) = limits.get(lower.name()).and_then(Value::as_f64) else {
            continue;
        };
        for upper in &PERIODS[i + 1..] {
            if let Some(v2) = limits.get(upper.name()).and_then(Value::as_f64) {
                if v2 < v1 {
                    return Err(format!(
                        "limit for {}({v2:.1}) cannot be lower than the limit for {}({v1:.1})",
                        upper.name(),
                        lower.name()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The config's `custom_validator` (`validate_periods_order`), reported
/// at `config`.
fn validate_periods_order(config: &Map<String, Value>) -> Result<(), String> {
    periods_order(config).map_err(|e| format!("The {e}"))?;
    let policy = config.get("policy").and_then(Value::as_str);
    let sync_rate = config.get("sync_rate").and_then(Value::as_f64);
    let realtime = sync_rate == Some(SYNC_RATE_REALTIME);
    if policy != Some("redis") && !realtime {
        return Err("sync_rate can only be used with the redis policy".into());
    }
    if policy == Some("redis") && !realtime && sync_rate.is_some_and(|r| r < 0.02) {
        return Err("sync_rate must be greater than 0.02, or -1 to disable".into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// config

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum LimitBy {
    Consumer,
    Credential,
    Ip,
    Service,
    Header,
    Path,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Policy {
    Local,
    Redis,
}

/// `config` of a `rate-limiting` instance (validated, defaults filled).
#[derive(Debug, Clone, Deserialize)]
struct Config {
    second: Option<f64>,
    minute: Option<f64>,
    hour: Option<f64>,
    day: Option<f64>,
    month: Option<f64>,
    year: Option<f64>,
    limit_by: LimitBy,
    header_name: Option<String>,
    path: Option<String>,
    policy: Policy,
    fault_tolerant: bool,
    #[serde(default)]
    redis: RedisConf,
    hide_client_headers: bool,
    error_code: f64,
    error_message: Option<String>,
    sync_rate: f64,
}

fn build(i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    let cfg: Config =
        serde_json::from_value(i.config.clone()).map_err(|e| format!("config: {e}"))?;
    let limits: Vec<(Period, f64)> = PERIODS
        .iter()
        .zip([
            cfg.second, cfg.minute, cfg.hour, cfg.day, cfg.month, cfg.year,
        ])
        .filter_map(|(p, l)| l.map(|l| (*p, l)))
        .collect();
    let scope =
        |id: Option<uuid::Uuid>| id.map_or_else(|| EMPTY_UUID.to_string(), |u| u.to_string());
    Ok(Arc::new(RateLimiting {
        id: i.id,
        limits,
        route_id: scope(i.route),
        service_id: scope(i.service),
        db_key: cfg.redis.db_key(),
        batched: cfg.policy == Policy::Redis && cfg.sync_rate != SYNC_RATE_REALTIME,
        cfg,
        state: OnceLock::new(),
        client: OnceLock::new(),
    }))
}

// ---------------------------------------------------------------------------
// counters kept across config swaps

/// What an instance keeps in `kong.env().store`.
#[derive(Default)]
struct State {
    local: LocalCounters,
    batched: Batched,
}

/// The `local` policy's counters (Kong: the `kong_rate_limiting_counters`
/// shm): a value and the second it expires, its TTL set when the key is
/// made (`shm:incr(key, value, 0, ttl)`). Response-ratelimiting's are
/// Lua numbers (`V = f64`): an upstream may count by fractions.
#[derive(Default)]
pub(crate) struct LocalCounters<V = i64> {
    map: Mutex<HashMap<String, (V, i64)>>,
    increments: AtomicU32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<V: Copy + Default + std::ops::AddAssign> LocalCounters<V> {
    pub(crate) fn get(&self, key: &str, now_s: i64) -> V {
        match lock(&self.map).get(key) {
            Some(&(v, expires)) if expires > now_s => v,
            _ => V::default(),
        }
    }

    pub(crate) fn incr(&self, key: String, value: V, ttl: i64, now_s: i64) {
        let mut map = lock(&self.map);
        // Expired windows go now and then, as the shm's LRU would.
        if self.increments.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            map.retain(|_, (_, expires)| *expires > now_s);
        }
        let e = map.entry(key).or_insert((V::default(), now_s + ttl));
        if e.1 <= now_s {
            *e = (V::default(), now_s + ttl);
        }
        e.0 += value;
    }
}

/// The batched redis policy's per-worker tables (`cur_usage`,
/// `cur_usage_expire_at`, `cur_delta`) and its sync timer's flags.
#[derive(Default)]
struct Batched {
    /// By `db_key`.
    tables: Mutex<HashMap<String, Tables>>,
    /// A sync is scheduled: a new delta will be in it.
    pending: AtomicBool,
    /// A sync is sending.
    running: AtomicBool,
}

#[derive(Debug, Default, PartialEq)]
struct Tables {
    usage: HashMap<String, i64>,
    /// Kong adds the window's length in seconds to its start in
    /// milliseconds (`periods[period] + EXPIRATION[period]`); kept as is,
    /// since it is sent to Redis as `EXPIREAT`.
    expire_at: HashMap<String, i64>,
    delta: HashMap<String, i64>,
}

impl Batched {
    /// The cached usage of `key` (`usage` before it goes to Redis), or
    /// `None` when Redis must be read.
    fn cached(
        &self,
        db_key: &str,
        key: &str,
        period: Period,
        start_ms: i64,
        now_s: i64,
    ) -> Option<i64> {
        let mut tables = lock(&self.tables);
        let t = tables.entry(db_key.to_string()).or_default();
        let usage = *t.usage.get(key)?;
        if t.expire_at.get(key).is_some_and(|&e| e > now_s) {
            return Some(usage + t.delta.get(key).copied().unwrap_or(0));
        }
        t.usage.insert(key.to_string(), 0);
        t.expire_at
            .insert(key.to_string(), start_ms + period.expiration());
        t.delta.insert(key.to_string(), 0);
        Some(0)
    }

    /// Records a usage just read (and counted) in Redis.
    fn store(&self, db_key: &str, key: &str, period: Period, start_ms: i64, usage: i64) {
        let mut tables = lock(&self.tables);
        let t = tables.entry(db_key.to_string()).or_default();
        t.usage.insert(key.to_string(), usage);
        t.expire_at
            .insert(key.to_string(), start_ms + period.expiration());
        // The read's INCR counted this request already.
        t.delta.insert(key.to_string(), -1);
    }

    fn add(&self, db_key: &str, key: String, value: i64) {
        let mut tables = lock(&self.tables);
        *tables
            .entry(db_key.to_string())
            .or_default()
            .delta
            .entry(key)
            .or_insert(0) += value;
    }

    /// Takes the tables of `db_key` for a sync: they are cleared whether
    /// the sync succeeds or not (`clear_local_counter`), and what comes in
    /// meanwhile goes to fresh ones.
    fn take(&self, db_key: &str) -> Tables {
        lock(&self.tables).remove(db_key).unwrap_or_default()
    }
}

/// `sync_to_redis`'s pipeline: one `EVAL` per delta.
fn sync_pipeline(t: &Tables) -> Option<redis::Pipeline> {
    if t.delta.is_empty() {
        return None;
    }
    let mut pipe = redis::pipe();
    // A script error is that command's reply, not the sync's failure
    // (`commit_pipeline` only fails on the connection).
    pipe.ignore_errors();
    let mut keys: Vec<_> = t.delta.iter().collect();
    keys.sort();
    for (key, delta) in keys {
        let cmd = pipe
            .cmd("EVAL")
            .arg(SYNC_SCRIPT)
            .arg(1)
            .arg(key)
            .arg(*delta);
        // Without it Kong's call ends in `nil`, which resty.redis drops.
        if let Some(exp) = t.expire_at.get(key) {
            cmd.arg(*exp);
        }
    }
    Some(pipe)
}

// ---------------------------------------------------------------------------
// the handler

struct RateLimiting {
    id: uuid::Uuid,
    cfg: Config,
    /// Configured limits, shortest window first.
    limits: Vec<(Period, f64)>,
    /// The instance's own scope (`conf.route_id` / `conf.service_id`).
    route_id: String,
    service_id: String,
    db_key: String,
    /// The redis policy with `sync_rate > 0`.
    batched: bool,
    state: OnceLock<Arc<State>>,
    client: OnceLock<Arc<RedisClient>>,
}

/// `get_usage`: each configured window's limit and remaining count, and the
/// window whose limit is reached (Kong: the last such in its `pairs`
/// order; here the longest).
#[derive(Debug, Clone, PartialEq)]
struct Usage {
    periods: Vec<(Period, f64, f64)>,
    stop: Option<Period>,
}

impl Usage {
    fn new(limits: &[(Period, f64)], counts: &[i64]) -> Usage {
        let mut stop = None;
        let periods = limits
            .iter()
            .zip(counts)
            .map(|(&(p, limit), &used)| {
                let remaining = limit - used as f64;
                if remaining <= 0.0 {
                    stop = Some(p);
                }
                (p, limit, remaining)
            })
            .collect();
        Usage { periods, stop }
    }

    /// The client headers (access, `hide_client_headers = false`): each
    /// window's limit and remaining count, then `RateLimit-*` for the
    /// window with the fewest left (the longer on a tie), and
    /// `Retry-After` when refused.
    fn headers(&self, now_ms: i64) -> Vec<(&'static str, String)> {
        let ts = timestamps(now_ms);
        let mut out = Vec::with_capacity(self.periods.len() * 2 + 4);
        let mut best: Option<(f64, i64, f64)> = None;
        let mut reset = 1;
        for &(p, limit, remaining) in &self.periods {
            let mut rem = remaining;
            if self.stop.is_none() || self.stop == Some(p) {
                rem -= 1.0;
            }
            let rem = rem.max(0.0);
            let window = p.expiration();
            let better = match best {
                None => true,
                Some((_, w, r)) => rem < r || (rem == r && window > w),
            };
            if better {
                best = Some((limit, window, rem));
                reset = (window - (now_ms - ts[p.index()]).div_euclid(1000)).max(1);
            }
            out.push((p.limit_header(), lua_number(limit)));
            out.push((p.remaining_header(), lua_number(rem)));
        }
        if let Some((limit, _, rem)) = best {
            out.push(("RateLimit-Limit", lua_number(limit)));
            out.push(("RateLimit-Remaining", lua_number(rem)));
            out.push(("RateLimit-Reset", reset.to_string()));
            if self.stop.is_some() {
                out.push(("Retry-After", reset.to_string()));
            }
        }
        out
    }
}

impl RateLimiting {
    /// `get_local_key`: `ratelimit:<route>:<service>:<id>:<start>:<period>`.
    fn key(&self, identifier: &str, period: Period, ts: &[i64; 6]) -> String {
        format!(
            "ratelimit:{}:{}:{identifier}:{}:{}",
            self.route_id,
            self.service_id,
            ts[period.index()],
            period.name()
        )
    }

    /// `get_identifier`: what requests are counted by, falling back to the
    /// client address (`kong.client.get_forwarded_ip()`).
    fn identifier(&self, kong: &Kong<'_>) -> String {
        let id = match self.cfg.limit_by {
            LimitBy::Service => kong.service().map(|s| s.id.to_string()),
            LimitBy::Consumer => kong
                .consumer()
                .map(|c| c.id.to_string())
                .or_else(|| kong.credential().map(|c| c.id.to_string())),
            LimitBy::Credential => kong.credential().map(|c| c.id.to_string()),
            LimitBy::Header => self
                .cfg
                .header_name
                .as_deref()
                .and_then(|h| kong.header(h))
                .map(str::to_string),
            LimitBy::Path => {
                let path = kong.path();
                (self.cfg.path.as_deref() == Some(path.as_str())).then_some(path)
            }
            LimitBy::Ip => None,
        };
        id.unwrap_or_else(|| match kong.client_ip() {
            Some(ip) => ip.to_string(),
            None => "nil".into(),
        })
    }

    fn state(&self, kong: &Kong<'_>) -> Arc<State> {
        self.state
            .get_or_init(|| kong.env().store.get_or_init(self.id, State::default))
            .clone()
    }

    fn client(&self, clients: &RedisClients) -> Result<Arc<RedisClient>, RedisError> {
        if let Some(c) = self.client.get() {
            return Ok(c.clone());
        }
        let c = clients.client(&self.cfg.redis)?;
        Ok(self.client.get_or_init(|| c).clone())
    }

    /// The count of each configured window before this request.
    async fn counts(
        &self,
        kong: &Kong<'_>,
        state: &State,
        identifier: &str,
        now_ms: i64,
    ) -> Result<Vec<i64>, RedisError> {
        let ts = timestamps(now_ms);
        let now_s = now_ms.div_euclid(1000);
        let keys: Vec<String> = self
            .limits
            .iter()
            .map(|&(p, _)| self.key(identifier, p, &ts))
            .collect();
        if self.cfg.policy == Policy::Local {
            return Ok(keys.iter().map(|k| state.local.get(k, now_s)).collect());
        }
        let mut counts: Vec<Option<i64>> = vec![None; keys.len()];
        if self.batched {
            // The local cache first: Redis is read once per key and sync.
            for (i, &(p, _)) in self.limits.iter().enumerate() {
                counts[i] = state
                    .batched
                    .cached(&self.db_key, &keys[i], p, ts[p.index()], now_s);
            }
        }
        let todo: Vec<usize> = (0..keys.len()).filter(|&i| counts[i].is_none()).collect();
        if !todo.is_empty() {
            let mut pipe = redis::pipe();
            for &i in &todo {
                let (p, _) = self.limits[i];
                pipe.cmd("EVAL")
                    .arg(USAGE_SCRIPT)
                    .arg(1)
                    .arg(&keys[i])
                    .arg(p.expiration());
            }
            let client = self.client(&kong.env().redis)?;
            let replies = client.query(pipe).await?;
            for (&i, reply) in todo.iter().zip(replies.iter()) {
                let used = reply_count(reply)?;
                if self.batched {
                    let (p, _) = self.limits[i];
                    state
                        .batched
                        .store(&self.db_key, &keys[i], p, ts[p.index()], used);
                }
                counts[i] = Some(used);
            }
        }
        Ok(counts.into_iter().map(|c| c.unwrap_or(0)).collect())
    }

    /// Counts this request once it is let through (`increment`).
    fn increment(&self, kong: &Kong<'_>, state: &Arc<State>, identifier: &str, now_ms: i64) {
        let ts = timestamps(now_ms);
        match (self.cfg.policy, self.batched) {
            (Policy::Local, _) => {
                let now_s = now_ms.div_euclid(1000);
                for &(p, _) in &self.limits {
                    let key = self.key(identifier, p, &ts);
                    state.local.incr(key, 1, p.expiration(), now_s);
                }
            }
            // Counted by the read already.
            (Policy::Redis, false) => {}
            (Policy::Redis, true) => {
                for &(p, _) in &self.limits {
                    let key = self.key(identifier, p, &ts);
                    state.batched.add(&self.db_key, key, 1);
                }
                self.schedule_sync(kong, state);
            }
        }
    }

    /// `rate_limited_sync`: at most one sync pending per instance; it runs
    /// `sync_rate` seconds after the first delta it carries, after any sync
    /// still sending.
    fn schedule_sync(&self, kong: &Kong<'_>, state: &Arc<State>) {
        if state.batched.pending.swap(true, Ordering::SeqCst) {
            return;
        }
        let client = match self.client(&kong.env().redis) {
            Ok(c) => c,
            Err(e) => {
                state.batched.pending.store(false, Ordering::SeqCst);
                log::error!("[{NAME}] failed to connect to Redis: {e}");
                return;
            }
        };
        let delay = Duration::from_secs_f64(self.cfg.sync_rate.max(0.0));
        let wait = self.cfg.redis.timeout() / 2;
        let db_key = self.db_key.clone();
        let st = state.clone();
        let spawned = kong.env().redis.spawn(async move {
            tokio::time::sleep(delay).await;
            let mut tries = 0;
            while st.batched.running.load(Ordering::SeqCst) {
                if tries > 4 {
                    log::error!("[{NAME}] A Redis sync is blocked by a previous try. The previous try should have timed out but it didn't for unknown reasons.");
                }
                tokio::time::sleep(wait).await;
                tries += 1;
            }
            st.batched.running.store(true, Ordering::SeqCst);
            st.batched.pending.store(false, Ordering::SeqCst);
            let tables = st.batched.take(&db_key);
            if let Some(pipe) = sync_pipeline(&tables) {
                if let Err(e) = client.query(pipe).await {
                    log::error!(
                        "[{NAME}] failed to commit increment pipeline in Redis: {e}"
                    );
                }
            }
            st.batched.running.store(false, Ordering::SeqCst);
        });
        if !spawned {
            state.batched.pending.store(false, Ordering::SeqCst);
            log::error!("[{NAME}] failed to create timer: no runtime");
        }
    }

    /// `kong.response.error(error_code, error_message)`; a code outside
    /// 400-599 makes that call fail, which Kong turns into a 500.
    fn refusal(&self) -> Exit {
        let code = self.cfg.error_code;
        if (400.0..600.0).contains(&code) {
            let msg = self.cfg.error_message.clone();
            Exit::error(code as u16, msg.unwrap_or_default())
        } else {
            log::error!("[{NAME}] code must be a number between 400 and 599");
            Exit::error(500, "An unexpected error occurred")
        }
    }
}

/// An `EVAL` reply of the usage script: an integer (`nil` reads as 0).
pub(crate) fn reply_count(v: &redis::Value) -> Result<i64, RedisError> {
    match v {
        redis::Value::Int(n) => Ok(*n),
        redis::Value::Nil => Ok(0),
        redis::Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| RedisError::Reply(String::from_utf8_lossy(b).into_owned())),
        other => Err(RedisError::Reply(format!("{other:?}"))),
    }
}

/// A store that failed in access (`get_usage`'s error): with
/// `fault_tolerant` the request goes on, the failure logged; without,
/// `return error(err)`, which Kong's runloop answers with a 500.
pub(crate) fn usage_failed(plugin: &str, fault_tolerant: bool, e: &RedisError) -> Result<(), Exit> {
    if !fault_tolerant {
        log::error!("[{plugin}] {e}");
        return Err(Exit::error(500, "An unexpected error occurred"));
    }
    log::error!("[{plugin}] failed to get usage: {e}");
    Ok(())
}

pub(crate) fn now_ms() -> i64 {
    // `ngx.time() * 1000`: whole seconds.
    (super::consumers::now_secs() as i64) * 1000
}

#[async_trait]
impl Plugin for RateLimiting {
    fn phases(&self) -> Phases {
        Phases::ACCESS
    }

    async fn access(&self, kong: &mut Kong<'_>) -> Result<(), Exit> {
        let now = now_ms();
        let identifier = self.identifier(kong);
        let state = self.state(kong);
        let usage = match self.counts(kong, &state, &identifier, now).await {
            Ok(counts) => Some(Usage::new(&self.limits, &counts)),
            Err(e) => {
                usage_failed(NAME, self.cfg.fault_tolerant, &e)?;
                None
            }
        };
        if let Some(usage) = usage {
            if !self.cfg.hide_client_headers {
                for (name, value) in usage.headers(now) {
                    kong.set_response_header(name, &value);
                }
            }
            if usage.stop.is_some() {
                return Err(self.refusal());
            }
        }
        self.increment(kong, &state, &identifier, now);
        Ok(())
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

    fn err(path: &str, msg: &str) -> (String, String) {
        (path.to_string(), msg.to_string())
    }

    // 01-schema_spec.lua

    #[test]
    fn proper_config_validates() {
        for c in [
            json!({"second": 10}),
            json!({"second": 10, "minute": 20, "hour": 30, "day": 40, "month": 50, "year": 60}),
            json!({"second": 10, "limit_by": "header", "header_name": "X-App-Version"}),
            json!({"second": 10, "limit_by": "path", "path": "/request"}),
        ] {
            validate(c.clone()).unwrap_or_else(|e| panic!("{c}: {e:?}"));
        }
        let v = validate(json!({"second": 10})).unwrap();
        assert_eq!(v["policy"], "local");
        assert_eq!(v["limit_by"], "consumer");
        assert_eq!(v["fault_tolerant"], true);
        assert_eq!(v["error_code"], 429);
        assert_eq!(v["error_message"], "API rate limit exceeded");
        assert_eq!(v["sync_rate"], -1.0);
        assert_eq!(v["redis"]["port"], 6379);
        assert_eq!(v["redis"]["timeout"], 2000);
    }

    #[test]
    fn limits_smaller_unit_is_less_than_bigger_unit() {
        assert_eq!(
            errors(json!({"second": 20, "hour": 10})),
            vec![err(
                "config",
                "The limit for hour(10.0) cannot be lower than the limit for second(20.0)"
            )]
        );
        assert_eq!(
            errors(
                json!({"second": 10, "minute": 20, "hour": 30, "day": 40, "month": 60, "year": 50})
            ),
            vec![err(
                "config",
                "The limit for year(50.0) cannot be lower than the limit for month(60.0)"
            )]
        );
    }

    #[test]
    fn invalid_limit_and_missing_conditional_fields() {
        assert_eq!(
            errors(json!({})),
            vec![err(
                "@entity",
                "at least one of these fields must be non-empty: 'config.second', 'config.minute', 'config.hour', 'config.day', 'config.month', 'config.year'"
            )]
        );
        let e = errors(json!({"second": 10, "limit_by": "header"}));
        assert!(
            e.contains(&err("config.header_name", "required field missing")),
            "{e:?}"
        );
        let e = errors(json!({"second": 10, "limit_by": "path"}));
        assert!(
            e.contains(&err("config.path", "required field missing")),
            "{e:?}"
        );
        assert!(e.contains(&err(
            "@entity",
            "failed conditional validation given value of field 'config.limit_by'"
        )));
    }

    #[test]
    fn cluster_is_refused_and_sync_rate_needs_redis() {
        assert_eq!(
            errors(json!({"second": 10, "policy": "cluster"})),
            vec![err("config.policy", "expected one of: local, redis")]
        );
        assert_eq!(
            errors(json!({"second": 10, "sync_rate": 1})),
            vec![err(
                "config",
                "sync_rate can only be used with the redis policy"
            )]
        );
        assert_eq!(
            errors(
                json!({"second": 10, "policy": "redis", "redis": {"host": "h"}, "sync_rate": 0.01})
            ),
            vec![err(
                "config",
                "sync_rate must be greater than 0.02, or -1 to disable"
            )]
        );
        assert_eq!(
            errors(json!({"second": 0})),
            vec![err("config.second", "value must be greater than 0")]
        );
    }

    #[test]
    fn redis_new_and_legacy_structures() {
        // "proper config validates with redis new structure"
        let v = validate(json!({"second": 10, "policy": "redis", "redis": {
            "host": "localhost", "port": 6379, "database": 0, "username": "test",
            "password": "testXXX", "ssl": true, "ssl_verify": false, "timeout": 1100,
            "server_name": "test.test"}}))
        .unwrap();
        assert_eq!(v["redis"]["timeout"], 1100);
        // "... with redis legacy structure" (06-shorthand_fields_spec: the
        // legacy fields land in the new structure).
        let v = validate(json!({"minute": 100, "policy": "redis",
            "redis_host": "custom-host.example.test", "redis_port": 55000,
            "redis_username": "test1", "redis_password": "testX", "redis_database": 1,
            "redis_timeout": 1100, "redis_ssl": true, "redis_ssl_verify": true,
            "redis_server_name": "example.test"}))
        .unwrap();
        assert_eq!(
            v["redis"],
            json!({"host": "custom-host.example.test", "port": 55000, "timeout": 1100,
                   "username": "test1", "password": "testX", "database": 1, "ssl": true,
                   "ssl_verify": true, "server_name": "example.test"})
        );
        assert!(v.get("redis_host").is_none());
        // "verifies that redis required fields are supplied"
        let e = errors(json!({"second": 10, "policy": "redis", "redis": {"port": 6379}}));
        assert!(
            e.contains(&err("config.redis.host", "required field missing")),
            "{e:?}"
        );
        let e = errors(json!({"second": 10, "redis_host": "a", "redis": {"host": "b"}}));
        assert_eq!(
            e,
            vec![err(
                "config.redis_host",
                "both deprecated and new field are used but their values mismatch: redis_host = a vs redis.host = b"
            )]
        );
    }

    // windows

    #[test]
    fn windows_are_utc_calendar_aligned() {
        // 2019-03-22T14:05:48Z (02-policies_spec's 1553263548).
        let ts = timestamps(1_553_263_548_000);
        assert_eq!(
            ts,
            [
                1_553_263_548_000,
                1_553_263_500_000,
                1_553_263_200_000,
                1_553_212_800_000, // 2019-03-22
                1_551_398_400_000, // 2019-03-01
                1_546_300_800_000, // 2019-01-01
            ]
        );
        // 2016-02-29T23:59:59Z, a leap day, then the next second.
        let ts = timestamps(1_456_790_399_000);
        assert_eq!(ts[Period::Month.index()], 1_454_284_800_000); // 2016-02-01
        let ts = timestamps(1_456_790_400_000);
        assert_eq!(ts[Period::Month.index()], 1_456_790_400_000); // 2016-03-01
        assert_eq!(ts[Period::Year.index()], 1_451_606_400_000); // 2016-01-01
                                                                 // Before the epoch: still the start of the window holding it.
        let ts = timestamps(-1);
        assert_eq!(ts[Period::Second.index()], -1000);
        assert_eq!(ts[Period::Month.index()], -2_678_400_000); // 1969-12-01
    }

    fn usage(limits: &[(Period, f64)], counts: &[i64]) -> Usage {
        Usage::new(limits, counts)
    }

    fn header<'a>(h: &'a [(&str, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn headers_name_the_tightest_window() {
        // 30 s into a minute.
        let now = 1_553_263_530_000;
        let limits = [(Period::Minute, 6.0), (Period::Hour, 99999.0)];
        let h = usage(&limits, &[0, 0]).headers(now);
        assert_eq!(header(&h, "X-RateLimit-Limit-Minute"), Some("6"));
        assert_eq!(header(&h, "X-RateLimit-Remaining-Minute"), Some("5"));
        assert_eq!(header(&h, "X-RateLimit-Remaining-Hour"), Some("99998"));
        assert_eq!(header(&h, "RateLimit-Limit"), Some("6"));
        assert_eq!(header(&h, "RateLimit-Remaining"), Some("5"));
        assert_eq!(header(&h, "RateLimit-Reset"), Some("30"));
        assert_eq!(header(&h, "Retry-After"), None);
        // The 7th: refused; only the exhausted window counts this one.
        let u = usage(&limits, &[6, 6]);
        assert_eq!(u.stop, Some(Period::Minute));
        let h = u.headers(now);
        assert_eq!(header(&h, "X-RateLimit-Remaining-Minute"), Some("0"));
        assert_eq!(header(&h, "X-RateLimit-Remaining-Hour"), Some("99993"));
        assert_eq!(header(&h, "RateLimit-Remaining"), Some("0"));
        assert_eq!(header(&h, "Retry-After"), Some("30"));
        // A tie goes to the longer window; the reset is at least 1.
        let h = usage(&[(Period::Second, 1.0), (Period::Minute, 1.0)], &[0, 0]).headers(now);
        assert_eq!(header(&h, "RateLimit-Reset"), Some("30"));
        let h = usage(&[(Period::Second, 1.0)], &[0]).headers(now + 999);
        assert_eq!(header(&h, "RateLimit-Reset"), Some("1"));
        // Fractional limits print as Lua does.
        let h = usage(&[(Period::Minute, 2.5)], &[1]).headers(now);
        assert_eq!(header(&h, "X-RateLimit-Limit-Minute"), Some("2.5"));
        assert_eq!(header(&h, "X-RateLimit-Remaining-Minute"), Some("0.5"));
    }

    #[test]
    fn local_counters_keep_their_first_ttl() {
        // 02-policies_spec "sets the TTL equal to one period when
        // incrementing" / "expires after due time".
        let c = LocalCounters::default();
        c.incr("k".into(), 1, 60, 100);
        c.incr("k".into(), 1, 60, 150);
        assert_eq!(c.get("k", 159), 2);
        assert_eq!(c.get("k", 160), 0, "expired 60 s after creation");
        c.incr("k".into(), 1, 60, 160);
        assert_eq!(c.get("k", 160), 1);
    }

    #[test]
    fn batched_tables_follow_kongs_cache() {
        let b = Batched::default();
        let start = 1_553_263_500_000;
        assert_eq!(b.cached("db", "k", Period::Minute, start, 100), None);
        // Read from Redis: 4 before this request, which the read counted.
        b.store("db", "k", Period::Minute, start, 4);
        b.add("db", "k".into(), 1);
        assert_eq!(b.cached("db", "k", Period::Minute, start, 101), Some(4));
        b.add("db", "k".into(), 1);
        assert_eq!(b.cached("db", "k", Period::Minute, start, 102), Some(5));
        let t = b.take("db");
        assert_eq!(t.delta["k"], 1);
        assert_eq!(t.expire_at["k"], start + 60);
        let pipe = sync_pipeline(&t).unwrap();
        let args: Vec<Vec<u8>> = pipe
            .cmd_iter()
            .flat_map(|c| c.args_iter())
            .filter_map(|a| match a {
                redis::Arg::Simple(b) => Some(b.to_vec()),
                _ => None,
            })
            .collect();
        assert_eq!(args[0], b"EVAL");
        assert_eq!(
            args[2..],
            [
                b"1".to_vec(),
                b"k".to_vec(),
                b"1".to_vec(),
                (start + 60).to_string().into_bytes()
            ]
        );
        // Cleared after a sync: the next read goes to Redis again.
        assert_eq!(b.cached("db", "k", Period::Minute, start, 103), None);
        assert!(sync_pipeline(&Tables::default()).is_none());
    }

    #[test]
    fn keys_use_the_instances_scope() {
        let p = build(&Instance {
            id: uuid::Uuid::from_u128(1),
            config: &validate(json!({"minute": 6})).unwrap(),
            route: None,
            service: Some(uuid::Uuid::from_u128(2)),
            consumer: None,
            routes: 1,
            instance_name: None,
        })
        .unwrap();
        assert_eq!(p.phases(), Phases::ACCESS);
        let rl = RateLimiting {
            id: uuid::Uuid::from_u128(1),
            cfg: serde_json::from_value(validate(json!({"minute": 6})).unwrap()).unwrap(),
            limits: vec![(Period::Minute, 6.0)],
            route_id: EMPTY_UUID.into(),
            service_id: uuid::Uuid::from_u128(2).to_string(),
            db_key: String::new(),
            batched: false,
            state: OnceLock::new(),
            client: OnceLock::new(),
        };
        let ts = timestamps(1_553_263_548_000);
        assert_eq!(
            rl.key("127.0.0.1", Period::Minute, &ts),
            "ratelimit:00000000-0000-0000-0000-000000000000:00000000-0000-0000-0000-000000000002:127.0.0.1:1553263500000:minute"
        );
    }
}
