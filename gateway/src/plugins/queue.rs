//! Kong's log queue (`kong/tools/queue.lua`), with its parameters
//! (`kong/tools/queue_schema.lua`, `typedefs.queue`).
//!
//! Entries (serialized log lines) wait in a named queue; one task per queue
//! drains it in batches of up to `max_batch_size`, waiting up to
//! `max_coalescing_delay` after the first entry to fill a batch, and hands
//! each batch to the handler until it succeeds or `max_retry_time` has
//! passed (delays double from `initial_retry_delay`, capped by
//! `max_retry_delay`). A full queue drops its oldest entry. The task ends
//! when the queue is empty and the queue goes away with it, so its
//! parameters are those of the enqueue that created it, while each enqueue
//! hands over the newest handler (Kong: `handler_conf`).
//!
//! Kong's queues are per worker and keyed `<workspace id>.<name>`; here they
//! are per process, outside any config snapshot, so a config push loses no
//! entries. Each queue knows the plugin instances that fed it ([`Owner`]s,
//! kept in `env().store` by instance id): when all of them are gone from the
//! config, the queue stops and drops what it holds.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use config_sync::schema::{integer, number, record, Field};
use futures_util::FutureExt;
use serde::Deserialize;
use tokio::sync::Notify;

use super::log_io::{self, LogIo};

/// `typedefs.queue`: the `queue` record of http-log (and Kong's other
/// queued plugins).
pub fn schema() -> Field {
    record(vec![
        (
            "max_batch_size",
            integer().default(1).between(1.0, 1_000_000.0),
        ),
        (
            "max_coalescing_delay",
            number().default(1).between(0.0, 3600.0),
        ),
        (
            "max_entries",
            integer().default(10000).between(1.0, 1_000_000.0),
        ),
        ("max_bytes", integer()),
        ("max_retry_time", number().default(60)),
        (
            "initial_retry_delay",
            number().default(0.01).between(0.001, 1_000_000.0),
        ),
        (
            "max_retry_delay",
            number().default(60).between(0.001, 1_000_000.0),
        ),
        (
            "concurrency_limit",
            integer().default(1).one_of_ints(&[-1, 1]),
        ),
    ])
}

/// A validated `queue` record.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QueueParams {
    pub max_batch_size: u64,
    pub max_coalescing_delay: f64,
    pub max_entries: u64,
    pub max_bytes: Option<u64>,
    pub max_retry_time: f64,
    pub initial_retry_delay: f64,
    pub max_retry_delay: f64,
    /// 1: one task drains the queue; -1: no queue, one task per entry.
    pub concurrency_limit: i64,
}

impl Default for QueueParams {
    fn default() -> Self {
        QueueParams {
            max_batch_size: 1,
            max_coalescing_delay: 1.0,
            max_entries: 10000,
            max_bytes: None,
            max_retry_time: 60.0,
            initial_retry_delay: 0.01,
            max_retry_delay: 60.0,
            concurrency_limit: 1,
        }
    }
}

/// A queue's name, parameters, and how its messages name it.
#[derive(Debug, Clone)]
pub struct QueueConf {
    /// Kong's queue name (http-log: from the endpoint settings).
    pub name: String,
    /// `<plugin> plugin <instance id>`, prefixed to its messages.
    pub log_tag: String,
    pub params: QueueParams,
}

/// The future a handler returns for one batch.
pub type Sending<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// What processes batches (Kong's `handler` with its `handler_conf`).
pub trait Handler: Send + Sync + 'static {
    /// Sends one batch; `Err` carries the reason (retried by the queue).
    /// `io` is the process's logging state (kept connections).
    fn handle<'a>(&'a self, io: &'a Arc<LogIo>, entries: &'a [String]) -> Sending<'a>;
}

/// A plugin instance feeding queues. The queue holds it weakly: once the
/// instance is gone from the config (its state dropped from `env().store`
/// and the snapshot that ran it released) its queues stop.
#[derive(Debug, Default)]
pub struct Owner {
    _private: (),
}

/// Kong's `COALESCE_POLL_TIME`: waits for more entries are at most this long.
const COALESCE_POLL_TIME: f64 = 1.0;
/// Kong's `COALESCE_MIN_TIME`: a remaining coalescing wait below this is
/// not taken.
const COALESCE_MIN_TIME: f64 = 0.05;
/// Kong's `CAPACITY_WARNING_THRESHOLD`.
const CAPACITY_WARNING_THRESHOLD: f64 = 0.8;

pub(super) struct Queue {
    io: Arc<LogIo>,
    key: String,
    name: String,
    log_tag: String,
    params: QueueParams,
    state: Mutex<State>,
    wake: Notify,
}

struct State {
    entries: VecDeque<String>,
    bytes: usize,
    handler: Arc<dyn Handler>,
    owners: Vec<Weak<Owner>>,
    warned: bool,
    dropped: bool,
}

impl Queue {
    fn new(io: Arc<LogIo>, key: String, conf: &QueueConf, handler: Arc<dyn Handler>) -> Queue {
        Queue {
            io,
            key,
            name: conf.name.clone(),
            log_tag: conf.log_tag.clone(),
            params: conf.params.clone(),
            state: Mutex::new(State {
                entries: VecDeque::new(),
                bytes: 0,
                handler,
                owners: Vec::new(),
                warned: false,
                dropped: false,
            }),
            wake: Notify::new(),
        }
    }

    /// Kong's `Queue:log`: `[<tag>] queue <name>: <message>`.
    fn msg(&self, m: impl std::fmt::Display) -> String {
        format!("[{}] queue {}: {m}", self.log_tag, self.name)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Kong's `Queue:delete_frontmost_entry`.
    fn pop_front(st: &mut State) -> Option<String> {
        let e = st.entries.pop_front()?;
        st.bytes = st.bytes.saturating_sub(e.len());
        Some(e)
    }

    /// Kong's `enqueue`, capacity rules included.
    fn push(&self, st: &mut State, entry: String) -> Result<(), String> {
        let max_entries = usize::try_from(self.params.max_entries).unwrap_or(usize::MAX);
        let count = st.entries.len();
        if count as f64 >= max_entries as f64 * CAPACITY_WARNING_THRESHOLD {
            if !st.warned {
                log::warn!(
                    "{}",
                    self.msg(format!(
                        "queue at {}% capacity",
                        CAPACITY_WARNING_THRESHOLD * 100.0
                    ))
                );
                st.warned = true;
            }
        } else {
            st.warned = false;
        }
        if count >= max_entries {
            log::error!(
                "{}",
                self.msg("queue full, dropping old entries until processing is successful again")
            );
            Self::pop_front(st);
            st.dropped = true;
        }
        if let Some(max_bytes) = self.params.max_bytes {
            let max_bytes = usize::try_from(max_bytes).unwrap_or(usize::MAX);
            if entry.len() > max_bytes {
                let e = format!(
                    "string to be queued is longer ({} bytes) than the queue's max_bytes ({} bytes)",
                    entry.len(),
                    max_bytes
                );
                log::error!("{}", self.msg(&e));
                return Err(e);
            }
            let mut dropped = 0;
            while st.bytes + entry.len() > max_bytes && Self::pop_front(st).is_some() {
                dropped += 1;
            }
            if dropped > 0 {
                st.dropped = true;
                log::error!(
                    "{}",
                    self.msg(format!(
                        "byte capacity exceeded, {dropped} queue entries were dropped"
                    ))
                );
            }
        }
        st.bytes += entry.len();
        st.entries.push_back(entry);
        Ok(())
    }

    /// Kong's `handle`: one batch, retried until it goes through or
    /// `max_retry_time` has passed.
    async fn handle(&self, batch: Vec<String>) {
        let start = Instant::now();
        let mut retry: i32 = 0;
        loop {
            let handler = self.lock().handler.clone();
            let sent = std::panic::AssertUnwindSafe(handler.handle(&self.io, &batch))
                .catch_unwind()
                .await;
            let err = match sent {
                Ok(Ok(())) => {
                    log::debug!(
                        "{}",
                        self.msg(format!(
                            "handler processed {} entries successfully",
                            batch.len()
                        ))
                    );
                    return;
                }
                Ok(Err(e)) => e,
                Err(_) => "handler panicked".to_string(),
            };
            log::warn!(
                "{}",
                self.msg(format!("handler could not process entries: {err}"))
            );
            if !self.fed() {
                log::error!(
                    "{}",
                    self.msg(format!(
                        "the plugin instances feeding the queue are gone. {} queue entries were lost",
                        batch.len()
                    ))
                );
                return;
            }
            if start.elapsed().as_secs_f64() > self.params.max_retry_time {
                log::error!(
                    "{}",
                    self.msg(format!(
                        "could not send entries due to max_retry_time exceeded. {} queue entries were lost",
                        batch.len()
                    ))
                );
                return;
            }
            let delay = (2f64.powi(retry) * self.params.initial_retry_delay)
                .min(self.params.max_retry_delay);
            tokio::time::sleep(secs(delay)).await;
            retry = retry.saturating_add(1);
        }
    }

    /// Some instance that fed the queue is still configured.
    fn fed(&self) -> bool {
        self.lock().owners.iter().any(|w| w.strong_count() > 0)
    }
}

fn secs(s: f64) -> Duration {
    if s.is_finite() && s > 0.0 {
        Duration::from_secs_f64(s)
    } else {
        Duration::ZERO
    }
}

/// Kong's `Queue.enqueue(queue_conf, handler, handler_conf, entry)`, on
/// the process's queues (`io`).
pub fn enqueue(
    io: &Arc<LogIo>,
    conf: &QueueConf,
    owner: &Arc<Owner>,
    handler: Arc<dyn Handler>,
    entry: String,
) -> Result<(), String> {
    let key = format!("{}.{}", super::log_serializer::workspace_id(), conf.name);
    if conf.params.concurrency_limit == -1 {
        // No queue: a task per entry, retried on its own.
        let q = Arc::new(Queue::new(io.clone(), key, conf, handler));
        q.lock().owners.push(Arc::downgrade(owner));
        let ok = io.spawn_send(async move { q.handle(vec![entry]).await });
        return if ok {
            Ok(())
        } else {
            Err("failed to create timer: no runtime".into())
        };
    }
    let mut reg = log_io::lock(&io.queues);
    let (q, created) = match reg.get(&key) {
        Some(q) => (q.clone(), false),
        None => {
            let q = Arc::new(Queue::new(io.clone(), key.clone(), conf, handler.clone()));
            reg.insert(key.clone(), q.clone());
            (q, true)
        }
    };
    let pushed = {
        let mut st = q.lock();
        // The newest configuration seen drives the handler.
        st.handler = handler;
        let me = Arc::downgrade(owner);
        if !st.owners.iter().any(|w| w.ptr_eq(&me)) {
            st.owners.retain(|w| w.strong_count() > 0);
            st.owners.push(me);
        }
        q.push(&mut st, entry)
    };
    // A new queue gets its task even when the entry was refused: the task
    // is what removes an empty queue from the registry.
    if created && !io.spawn_send(drain(q.clone())) {
        reg.remove(&key);
        return Err("failed to create timer: no runtime".into());
    }
    drop(reg);
    q.wake.notify_one();
    pushed
}

/// The queue's one task (Kong's `named_at("queue " .. key)` timer running
/// `process_once` while entries remain).
async fn drain(q: Arc<Queue>) {
    loop {
        {
            // Registry then queue, as `enqueue` locks them: an entry is
            // either seen here or goes to a new queue.
            let mut reg = log_io::lock(&q.io.queues);
            let mut st = q.lock();
            let fed = st.owners.iter().any(|w| w.strong_count() > 0);
            if st.entries.is_empty() || !fed {
                if !st.entries.is_empty() {
                    log::error!(
                        "{}",
                        q.msg(format!(
                            "the plugin instances feeding the queue are gone. {} queue entries were lost",
                            st.entries.len()
                        ))
                    );
                    st.entries.clear();
                    st.bytes = 0;
                }
                if reg.get(&q.key).is_some_and(|r| Arc::ptr_eq(r, &q)) {
                    reg.remove(&q.key);
                }
                log::debug!("{}", q.msg("done processing queue"));
                return;
            }
        }
        // Coalesce: wait for more entries until the batch is full or the
        // delay since its first entry has passed.
        let first = Instant::now();
        let max_batch = usize::try_from(q.params.max_batch_size).unwrap_or(usize::MAX);
        loop {
            if q.lock().entries.len() >= max_batch {
                break;
            }
            // At exit, what is there goes at once.
            let delay = if q.io.exiting() {
                0.0
            } else {
                q.params.max_coalescing_delay
            };
            let left = delay - first.elapsed().as_secs_f64();
            if left < COALESCE_MIN_TIME {
                break;
            }
            let wait = secs(left.min(COALESCE_POLL_TIME));
            let _ = tokio::time::timeout(wait, q.wake.notified()).await;
        }
        let batch: Vec<String> = {
            let mut st = q.lock();
            let n = st.entries.len().min(max_batch);
            let batch = (0..n).filter_map(|_| Queue::pop_front(&mut st)).collect();
            if st.dropped {
                log::info!("{}", q.msg("queue resumed processing"));
                st.dropped = false;
            }
            batch
        };
        if !batch.is_empty() {
            q.handle(batch).await;
        }
    }
}

/// Wakes every queue waiting to fill a batch (shutdown).
pub fn wake_all(io: &LogIo) {
    for q in log_io::lock(&io.queues).values() {
        q.wake.notify_one();
    }
}

/// Entries waiting in the queue `name` (tests).
pub fn pending(io: &LogIo, name: &str) -> usize {
    let key = format!("{}.{}", super::log_serializer::workspace_id(), name);
    log_io::lock(&io.queues)
        .get(&key)
        .map_or(0, |q| q.lock().entries.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The queue semantics of `spec/01-unit/27-queue_spec.lua` that apply.
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Records batches; fails the first `fail` calls.
    struct Rec {
        batches: Mutex<Vec<Vec<String>>>,
        fail: AtomicUsize,
        calls: AtomicUsize,
    }

    impl Rec {
        fn new(fail: usize) -> Arc<Rec> {
            Arc::new(Rec {
                batches: Mutex::new(Vec::new()),
                fail: AtomicUsize::new(fail),
                calls: AtomicUsize::new(0),
            })
        }

        fn batches(&self) -> Vec<Vec<String>> {
            self.batches.lock().unwrap().clone()
        }
    }

    impl Handler for Rec {
        fn handle<'a>(&'a self, _io: &'a Arc<LogIo>, entries: &'a [String]) -> Sending<'a> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                if self
                    .fail
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return Err("failed".into());
                }
                self.batches.lock().unwrap().push(entries.to_vec());
                Ok(())
            })
        }
    }

    fn conf(name: &str, params: QueueParams) -> QueueConf {
        QueueConf {
            name: name.into(),
            log_tag: "test plugin".into(),
            params,
        }
    }

    fn wait_until(mut f: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn entries_are_sent_one_by_one_with_batch_size_one() {
        let rec = Rec::new(0);
        let io = Arc::new(LogIo::default());
        let owner = Arc::new(Owner::default());
        let c = conf("one-by-one", QueueParams::default());
        for i in 0..3 {
            enqueue(&io, &c, &owner, rec.clone(), format!("e{i}")).unwrap();
        }
        assert!(wait_until(|| rec.batches().len() == 3));
        assert_eq!(rec.batches(), vec![vec!["e0"], vec!["e1"], vec!["e2"]]);
        assert!(wait_until(|| pending(&io, "one-by-one") == 0));
    }

    #[test]
    fn entries_coalesce_into_batches() {
        let rec = Rec::new(0);
        let io = Arc::new(LogIo::default());
        let owner = Arc::new(Owner::default());
        let c = conf(
            "coalesce",
            QueueParams {
                max_batch_size: 3,
                max_coalescing_delay: 0.5,
                ..QueueParams::default()
            },
        );
        for i in 0..4 {
            enqueue(&io, &c, &owner, rec.clone(), format!("e{i}")).unwrap();
        }
        // Three fill a batch at once; the fourth waits out the delay.
        assert!(wait_until(|| rec.batches().len() == 2));
        assert_eq!(rec.batches(), vec![vec!["e0", "e1", "e2"], vec!["e3"]]);
    }

    #[test]
    fn a_failing_batch_is_retried_then_given_up() {
        let rec = Rec::new(2);
        let io = Arc::new(LogIo::default());
        let owner = Arc::new(Owner::default());
        let c = conf("retry", QueueParams::default());
        enqueue(&io, &c, &owner, rec.clone(), "x".into()).unwrap();
        assert!(wait_until(|| rec.batches().len() == 1));
        assert_eq!(rec.calls.load(Ordering::SeqCst), 3);

        // max_retry_time: a batch failing for longer is dropped.
        let rec = Rec::new(usize::MAX);
        let c = conf(
            "give-up",
            QueueParams {
                max_retry_time: 0.05,
                ..QueueParams::default()
            },
        );
        enqueue(&io, &c, &owner, rec.clone(), "x".into()).unwrap();
        assert!(wait_until(|| pending(&io, "give-up") == 0
            && log_io::lock(&io.queues)
                .get(&format!(
                    "{}.give-up",
                    crate::plugins::log_serializer::workspace_id()
                ))
                .is_none()));
        let calls = rec.calls.load(Ordering::SeqCst);
        assert!(calls >= 2, "{calls}");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(rec.calls.load(Ordering::SeqCst), calls);
    }

    #[test]
    fn a_full_queue_drops_its_oldest_entries() {
        let rec = Rec::new(usize::MAX);
        let io = Arc::new(LogIo::default());
        let owner = Arc::new(Owner::default());
        let c = conf(
            "full",
            QueueParams {
                max_entries: 2,
                max_retry_time: 0.3,
                ..QueueParams::default()
            },
        );
        // e0 is taken at once and keeps failing; e1..e3 queue behind it.
        enqueue(&io, &c, &owner, rec.clone(), "e0".into()).unwrap();
        assert!(wait_until(|| rec.calls.load(Ordering::SeqCst) > 0));
        for e in ["e1", "e2", "e3"] {
            enqueue(&io, &c, &owner, rec.clone(), e.into()).unwrap();
        }
        let key = format!("{}.full", crate::plugins::log_serializer::workspace_id());
        let held: Vec<String> = log_io::lock(&io.queues)
            .get(&key)
            .map(|q| q.lock().entries.iter().cloned().collect())
            .unwrap();
        assert_eq!(held, vec!["e2", "e3"]);
    }

    #[test]
    fn max_bytes_refuses_big_entries_and_drops_old_ones() {
        let rec = Rec::new(usize::MAX);
        let io = Arc::new(LogIo::default());
        let owner = Arc::new(Owner::default());
        let c = conf(
            "bytes",
            QueueParams {
                max_bytes: Some(6),
                max_retry_time: 0.3,
                ..QueueParams::default()
            },
        );
        enqueue(&io, &c, &owner, rec.clone(), "0".into()).unwrap();
        assert!(wait_until(|| rec.calls.load(Ordering::SeqCst) > 0));
        let e = enqueue(&io, &c, &owner, rec.clone(), "1234567".into()).unwrap_err();
        assert_eq!(
            e,
            "string to be queued is longer (7 bytes) than the queue's max_bytes (6 bytes)"
        );
        enqueue(&io, &c, &owner, rec.clone(), "aaa".into()).unwrap();
        enqueue(&io, &c, &owner, rec.clone(), "bbb".into()).unwrap();
        enqueue(&io, &c, &owner, rec.clone(), "cc".into()).unwrap();
        let key = format!("{}.bytes", crate::plugins::log_serializer::workspace_id());
        let held: Vec<String> = log_io::lock(&io.queues)
            .get(&key)
            .map(|q| q.lock().entries.iter().cloned().collect())
            .unwrap();
        assert_eq!(held, vec!["bbb", "cc"]);
    }

    #[test]
    fn a_new_queue_refusing_its_first_entry_still_goes_away() {
        let rec = Rec::new(0);
        let io = Arc::new(LogIo::default());
        let owner = Arc::new(Owner::default());
        let c = conf(
            "refused-first",
            QueueParams {
                max_bytes: Some(2),
                ..QueueParams::default()
            },
        );
        assert!(enqueue(&io, &c, &owner, rec.clone(), "too long".into()).is_err());
        let key = format!(
            "{}.refused-first",
            crate::plugins::log_serializer::workspace_id()
        );
        assert!(wait_until(|| log_io::lock(&io.queues).get(&key).is_none()));
        enqueue(&io, &c, &owner, rec.clone(), "ok".into()).unwrap();
        assert!(wait_until(|| rec.batches() == vec![vec!["ok".to_string()]]));
    }

    #[test]
    fn a_queue_stops_when_its_instances_are_gone() {
        let rec = Rec::new(usize::MAX);
        let io = Arc::new(LogIo::default());
        let owner = Arc::new(Owner::default());
        let c = conf("orphan", QueueParams::default());
        for e in ["a", "b", "c"] {
            enqueue(&io, &c, &owner, rec.clone(), e.into()).unwrap();
        }
        assert!(wait_until(|| rec.calls.load(Ordering::SeqCst) > 0));
        drop(owner);
        assert!(wait_until(|| pending(&io, "orphan") == 0));
        let calls = rec.calls.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(rec.calls.load(Ordering::SeqCst), calls);
    }

    #[test]
    fn no_queue_with_unlimited_concurrency() {
        let rec = Rec::new(0);
        let io = Arc::new(LogIo::default());
        let owner = Arc::new(Owner::default());
        let c = conf(
            "unlimited",
            QueueParams {
                concurrency_limit: -1,
                max_batch_size: 10,
                ..QueueParams::default()
            },
        );
        for e in ["a", "b"] {
            enqueue(&io, &c, &owner, rec.clone(), e.into()).unwrap();
        }
        assert!(wait_until(|| rec.batches().len() == 2));
        assert!(rec.batches().iter().all(|b| b.len() == 1));
        assert_eq!(pending(&io, "unlimited"), 0);
    }

    #[test]
    fn the_schema_has_kongs_defaults_and_bounds() {
        use config_sync::schema::{validate_record, Record};
        let r = Record::new(vec![("queue", schema())]);
        let v = validate_record(&r, &serde_json::json!({}), "config").unwrap();
        let p: QueueParams = serde_json::from_value(v["queue"].clone()).unwrap();
        assert_eq!(p, QueueParams::default());
        let e = validate_record(
            &r,
            &serde_json::json!({"queue": {"concurrency_limit": 2, "max_batch_size": 0}}),
            "config",
        )
        .unwrap_err();
        let got: Vec<(&str, &str)> = e
            .iter()
            .map(|e| (e.path.as_str(), e.message.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "config.queue.max_batch_size",
                    "value should be between 1 and 1000000"
                ),
                ("config.queue.concurrency_limit", "expected one of: -1, 1"),
            ]
        );
    }
}
