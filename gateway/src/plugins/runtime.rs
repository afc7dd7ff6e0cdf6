//! Plugin instances compiled into a snapshot, and the phases that run them.
//!
//! Kong resolves which instance of a plugin applies per request
//! (`lookup_cfg`, `kong/runloop/plugins_iterator.lua`): the most specific
//! of route+service+consumer, route+consumer, service+consumer,
//! route+service, consumer, route, service, global. Here that is done once
//! per route when the config is compiled: each route gets a [`Chain`], one
//! entry per plugin name in priority order, holding the instance that
//! applies without a consumer and, where consumer-scoped instances exist,
//! the one for each consumer. The consumer is looked up per plugin while the
//! access phase runs, as Kong does, so a consumer-scoped instance only
//! applies to plugins that run after the auth plugin that identified it.
//! Routes without plugins get the empty chain and pay nothing.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use config_sync::model;
use futures_util::FutureExt;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::log_io::LogIo;

use super::consumers::CredentialRef;
use super::pdk::{Exit, Kong};
use super::{def, Instance, Phases, Plugin, PluginDef};
use crate::metrics::Metrics;
use crate::proxy::RequestCtx;
use crate::snapshot::Snapshot;

/// Process-wide handles plugins use, outside any snapshot: what must
/// outlive a config swap lives here (metrics, counters keyed by instance).
#[derive(Default)]
pub struct PluginEnv {
    pub metrics: Arc<Metrics>,
    /// State plugins keep across config swaps, keyed by plugin instance id
    /// (the config handle drops entries of removed instances).
    pub store: Arc<StateStore>,
    /// The logging plugins' queues, connections and background runtime.
    pub io: Arc<LogIo>,
    /// Kong's per-worker values (this process is the one worker).
    pub worker: Worker,
    /// Redis clients of rate-limiting and response-ratelimiting.
    pub redis: Arc<super::redis::RedisClients>,
    /// proxy-cache's memory stores.
    pub caches: Arc<super::proxy_cache::CacheStores>,
}

impl PluginEnv {
    /// The plugins' environment around the process's metrics and the
    /// state store its config handle prunes.
    pub fn new(metrics: Arc<Metrics>, store: Arc<StateStore>) -> PluginEnv {
        PluginEnv {
            metrics,
            store,
            ..PluginEnv::default()
        }
    }
}

/// What Kong sets up per worker in `init_worker`.
#[derive(Debug)]
pub struct Worker {
    /// correlation-id's `uuid#counter`: the worker's uuid ...
    pub uuid: String,
    /// ... and its counter.
    pub counter: std::sync::atomic::AtomicU64,
}

impl Default for Worker {
    fn default() -> Worker {
        Worker {
            uuid: Uuid::new_v4().to_string(),
            counter: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for PluginEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEnv").finish_non_exhaustive()
    }
}

/// Per-instance state that survives config swaps (e.g. rate counters),
/// keyed by the plugin instance's id. Entries of instances that are gone
/// from the config are dropped when a new config goes live.
#[derive(Default)]
pub struct StateStore {
    slots: std::sync::Mutex<HashMap<Uuid, Arc<dyn Any + Send + Sync>>>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore").finish_non_exhaustive()
    }
}

impl StateStore {
    /// The state of instance `id`, created by `init` the first time.
    pub fn get_or_init<T: Any + Send + Sync>(&self, id: Uuid, init: impl FnOnce() -> T) -> Arc<T> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = slots.get(&id) {
            if let Ok(t) = s.clone().downcast::<T>() {
                return t;
            }
        }
        let t = Arc::new(init());
        slots.insert(id, t.clone());
        t
    }

    /// Drops the state of instances not in `live`.
    pub fn retain(&self, live: &HashSet<Uuid>) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.retain(|id, _| live.contains(id));
    }
}

/// One enabled plugin instance of a snapshot.
pub struct Compiled {
    pub id: Uuid,
    pub def: &'static PluginDef,
    pub handler: Arc<dyn Plugin>,
    pub phases: Phases,
    pub route: Option<Uuid>,
    pub service: Option<Uuid>,
    pub consumer: Option<Uuid>,
    /// The validated config (defaults filled).
    pub config: Value,
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("id", &self.id)
            .field("name", &self.def.name)
            .finish_non_exhaustive()
    }
}

/// One plugin name in a chain.
#[derive(Debug)]
struct Entry {
    /// The instance when no consumer is known (or for one without its own).
    default: Option<u32>,
    /// Consumer-specific resolutions, when consumer-scoped instances exist.
    by_consumer: Option<HashMap<Uuid, u32>>,
}

impl Entry {
    fn resolve(&self, consumer: Option<Uuid>) -> Option<u32> {
        if let (Some(map), Some(c)) = (&self.by_consumer, consumer) {
            if let Some(&i) = map.get(&c) {
                return Some(i);
            }
        }
        self.default
    }
}

/// The plugins of one route (or of requests no route matched), in order.
#[derive(Debug, Default)]
pub struct Chain {
    entries: Box<[Entry]>,
    needs_body: bool,
}

impl Chain {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The compiled plugins of a snapshot.
#[derive(Debug)]
pub struct PluginSet {
    pub instances: Vec<Compiled>,
    /// `chains[0]` is the empty chain.
    chains: Vec<Chain>,
    /// Chain of each route, by route index.
    route_chain: Vec<u32>,
    /// Global instances only: what runs when no route matched.
    global_chain: u32,
    /// A global instance has a rewrite handler.
    rewrite: bool,
}

impl Default for PluginSet {
    fn default() -> Self {
        PluginSet {
            instances: Vec::new(),
            chains: vec![Chain::default()],
            route_chain: Vec::new(),
            global_chain: 0,
            rewrite: false,
        }
    }
}

/// Why a plugin instance could not be built.
#[derive(Debug, thiserror::Error)]
#[error("plugin '{name}' ({id}): {reason}")]
pub struct PluginError {
    pub name: String,
    pub id: Uuid,
    pub reason: String,
}

/// Kong's scope key: (route, service, consumer).
type Scope = (Option<Uuid>, Option<Uuid>, Option<Uuid>);

impl PluginSet {
    /// Builds every enabled instance that runs in the HTTP subsystem and
    /// resolves each route's chain. `routes` gives each route's id and its
    /// service's id, by route index.
    pub fn compile(
        plugins: &[model::Plugin],
        routes: &[(Uuid, Option<Uuid>)],
    ) -> Result<PluginSet, PluginError> {
        let mut set = PluginSet::default();
        for p in plugins {
            // Kong keeps an instance if it is enabled and one of its
            // protocols is of this subsystem; `enabled: false` does not mask
            // a less specific instance.
            let http = p
                .protocols
                .iter()
                .any(|x| matches!(x.as_str(), "http" | "https" | "grpc" | "grpcs"));
            if !p.enabled || !http {
                continue;
            }
            let Some(def) = def(&p.name) else {
                // The loader refuses names without a schema, so none get here.
                continue;
            };
            let handler = (def.build)(&Instance {
                id: p.id,
                config: &p.config,
                route: p.route,
                service: p.service,
                consumer: p.consumer,
                routes: routes.len(),
                instance_name: p.instance_name.as_deref(),
            })
            .map_err(|reason| PluginError {
                name: p.name.clone(),
                id: p.id,
                reason,
            })?;
            set.instances.push(Compiled {
                id: p.id,
                def,
                phases: handler.phases(),
                handler,
                route: p.route,
                service: p.service,
                consumer: p.consumer,
                config: p.config.clone(),
            });
        }
        if set.instances.is_empty() {
            set.route_chain = vec![0; routes.len()];
            return Ok(set);
        }

        // Names in run order: PRIORITY descending, ties by name descending.
        let mut names: Vec<&'static PluginDef> = Vec::new();
        for c in &set.instances {
            if !names.iter().any(|d| d.name == c.def.name) {
                names.push(c.def);
            }
        }
        names.sort_by(|a, b| b.priority.cmp(&a.priority).then(b.name.cmp(a.name)));
        // name -> scope -> instance.
        let mut by_name: HashMap<&str, HashMap<Scope, u32>> = HashMap::new();
        let mut consumers_of: HashMap<&str, Vec<Uuid>> = HashMap::new();
        let mut route_scoped: HashSet<Uuid> = HashSet::new();
        for (i, c) in set.instances.iter().enumerate() {
            by_name
                .entry(c.def.name)
                .or_default()
                .insert((c.route, c.service, c.consumer), i as u32);
            if let Some(cid) = c.consumer {
                let list = consumers_of.entry(c.def.name).or_default();
                if !list.contains(&cid) {
                    list.push(cid);
                }
            }
            if let Some(r) = c.route {
                route_scoped.insert(r);
            }
        }

        let build_chain = |route: Option<Uuid>, service: Option<Uuid>, globals_only: bool| {
            let mut entries = Vec::new();
            let mut needs_body = false;
            for d in &names {
                let Some(scopes) = by_name.get(d.name) else {
                    continue;
                };
                let find = |k: Scope| scopes.get(&k).copied();
                let (r, s) = (route, service);
                let default = if globals_only {
                    find((None, None, None))
                } else {
                    let mut order: Vec<Scope> = Vec::with_capacity(4);
                    if r.is_some() && s.is_some() {
                        order.push((r, s, None));
                    }
                    if r.is_some() {
                        order.push((r, None, None));
                    }
                    if s.is_some() {
                        order.push((None, s, None));
                    }
                    order.push((None, None, None));
                    order.into_iter().find_map(find)
                };
                let mut map: HashMap<Uuid, u32> = HashMap::new();
                if !globals_only {
                    for &cid in consumers_of
                        .get(d.name)
                        .map(Vec::as_slice)
                        .unwrap_or_default()
                    {
                        let c = Some(cid);
                        let mut order: Vec<Scope> = Vec::with_capacity(8);
                        if r.is_some() && s.is_some() {
                            order.push((r, s, c));
                        }
                        if r.is_some() {
                            order.push((r, None, c));
                        }
                        if s.is_some() {
                            order.push((None, s, c));
                        }
                        if r.is_some() && s.is_some() {
                            order.push((r, s, None));
                        }
                        order.push((None, None, c));
                        if r.is_some() {
                            order.push((r, None, None));
                        }
                        if s.is_some() {
                            order.push((None, s, None));
                        }
                        order.push((None, None, None));
                        if let Some(i) = order.into_iter().find_map(find) {
                            if Some(i) != default {
                                map.insert(cid, i);
                            }
                        }
                    }
                }
                if default.is_none() && map.is_empty() {
                    continue;
                }
                for i in default.iter().chain(map.values()) {
                    needs_body |= set.instances[*i as usize].handler.needs_request_body();
                }
                entries.push(Entry {
                    default,
                    by_consumer: (!map.is_empty()).then_some(map),
                });
            }
            Chain {
                entries: entries.into_boxed_slice(),
                needs_body,
            }
        };

        let mut chains = vec![Chain::default()];
        let mut push = |c: Chain| -> u32 {
            if c.is_empty() {
                return 0;
            }
            chains.push(c);
            (chains.len() - 1) as u32
        };
        // Routes without route-scoped instances share their service's chain.
        let mut per_service: HashMap<Option<Uuid>, u32> = HashMap::new();
        let mut route_chain = Vec::with_capacity(routes.len());
        for &(rid, sid) in routes {
            let idx = if route_scoped.contains(&rid) {
                push(build_chain(Some(rid), sid, false))
            } else if let Some(&i) = per_service.get(&sid) {
                i
            } else {
                let i = push(build_chain(None, sid, false));
                per_service.insert(sid, i);
                i
            };
            route_chain.push(idx);
        }
        let global_chain = push(build_chain(None, None, true));
        set.chains = chains;
        set.route_chain = route_chain;
        set.global_chain = global_chain;
        set.rewrite = set
            .chain(global_chain)
            .entries
            .iter()
            .filter_map(|e| e.default)
            .any(|i| set.instances[i as usize].phases.has(Phases::REWRITE));
        Ok(set)
    }

    /// The chain of route `index`, if it has plugins.
    pub fn route_chain(&self, index: usize) -> Option<u32> {
        self.route_chain.get(index).copied().filter(|&c| c != 0)
    }

    /// The global instances, for requests no route matched.
    pub fn global_chain(&self) -> Option<u32> {
        (self.global_chain != 0).then_some(self.global_chain)
    }

    fn chain(&self, index: u32) -> &Chain {
        self.chains.get(index as usize).unwrap_or(&self.chains[0])
    }

    /// Every enabled instance of a plugin.
    pub fn instances_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Compiled> {
        self.instances.iter().filter(move |c| c.def.name == name)
    }

    /// Ids of every instance (to drop state of removed ones).
    pub fn ids(&self) -> HashSet<Uuid> {
        self.instances.iter().map(|c| c.id).collect()
    }
}

/// What one request's plugins share across its phases.
#[derive(Default)]
pub struct PluginRun {
    /// The chain the request runs (route's, or global).
    pub(crate) chain: u32,
    /// Instances collected in access, in run order.
    pub(crate) collected: Vec<u32>,
    /// The phases the collected instances implement between them.
    pub(crate) phases: Phases,
    /// `collected` is final (access ran, or the global fallback was taken).
    pub(crate) downstream_ready: bool,
    /// Per-request state of each collected instance (same order).
    pub(crate) state: Vec<Option<Box<dyn Any + Send + Sync>>>,
    /// `ctx.authenticated_consumer`: index into the snapshot's consumers.
    pub(crate) consumer: Option<u32>,
    /// `ctx.authenticated_credential`.
    pub(crate) credential: Option<CredentialRef>,
    /// `ctx.authenticated_groups`.
    pub(crate) authenticated_groups: Option<Vec<String>>,
    /// Headers plugins set on the response in access
    /// (`kong.response.set_header` / `add_header`), applied to whatever
    /// response goes out, with their names as the plugin spelled them.
    pub(crate) response_headers: Vec<(String, HeaderValue, bool)>,
    /// `kong.ctx.shared`.
    pub(crate) shared: HashMap<String, Value>,
    /// `kong.log.set_serialize_value` entries.
    pub(crate) serialize: Map<String, Value>,
    /// The request body, when a plugin asked for it and it fitted.
    pub(crate) request_body: Option<Bytes>,
    /// A body plugins replaced the request's with.
    pub(crate) new_body: Option<Bytes>,
    /// Body bytes read for the plugins that Pingora's retry buffer could
    /// not keep: sent ahead of the first chunk Pingora forwards.
    pub(crate) pending_prefix: Option<Bytes>,
    /// A plugin's exit answered the request.
    pub(crate) exited: bool,
    /// A plugin exited in header_filter ([`Kong::exit_header_filter`]):
    /// the rest of that phase is skipped and the upstream body dropped.
    pub(crate) header_exit: bool,
    /// A cap a plugin put on the body streaming to the upstream
    /// ([`Kong::limit_request_body`]): more bytes than this from the
    /// client fail the request with the exit.
    pub(crate) body_limit: Option<(u64, Exit)>,
}

impl std::fmt::Debug for PluginRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRun")
            .field("chain", &self.chain)
            .field("collected", &self.collected)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl PluginRun {
    pub fn new(chain: u32) -> PluginRun {
        PluginRun {
            chain,
            ..PluginRun::default()
        }
    }

    /// The body a plugin replaced the request's with.
    pub fn replaced_body(&self) -> Option<&Bytes> {
        self.new_body.as_ref()
    }
}

/// Kong's rewrite phase, before routing: the global instances' rewrite
/// handlers, with their global config, in priority order. Does nothing
/// (and costs one flag test) unless a global instance has one. Returns the
/// exit a handler asked for: the request is answered with it, and the
/// global instances run its downstream phases (Kong's collected-iterator
/// fallback). Per-request plugin state set here does not carry into
/// access; `kong.ctx.shared` does.
pub async fn rewrite(
    env: &PluginEnv,
    session: &mut Session,
    ctx: &mut RequestCtx,
    snap: &Arc<Snapshot>,
) -> Option<Exit> {
    if !snap.plugins.rewrite {
        return None;
    }
    let g = snap.plugins.global_chain()?;
    start_without_route(snap, ctx);
    let mut exit = None;
    for entry in snap.plugins.chain(g).entries.iter() {
        let Some(idx) = entry.default else { continue };
        let inst = &snap.plugins.instances[idx as usize];
        if !inst.phases.has(Phases::REWRITE) {
            continue;
        }
        let slot = match ctx.plugins.as_mut() {
            Some(run) => {
                run.state.push(None);
                run.state.len() - 1
            }
            None => return None,
        };
        let mut kong = Kong::new(env, session, ctx, snap, idx, slot);
        let ran = std::panic::AssertUnwindSafe(inst.handler.rewrite(&mut kong))
            .catch_unwind()
            .await;
        match ran {
            Ok(Ok(())) => {}
            Ok(Err(e)) => exit = Some(e),
            Err(_) => {
                log::error!("plugin '{}' ({}) failed in rewrite", inst.def.name, inst.id);
                exit = Some(Exit::error(500, "An unexpected error occurred"));
            }
        }
        if exit.is_some() {
            break;
        }
    }
    if let Some(run) = ctx.plugins.as_mut() {
        run.state.clear();
        run.exited = exit.is_some();
    }
    exit
}

/// The matched route's chain becomes the request's (keeping what the
/// rewrite phase left, such as `kong.ctx.shared`).
pub fn enter_route(ctx: &mut RequestCtx, chain: u32) {
    match ctx.plugins.as_mut() {
        Some(run) => run.chain = chain,
        None => ctx.plugins = Some(Box::new(PluginRun::new(chain))),
    }
}

/// Whether the request's chain wants the body read before access.
pub fn needs_body(snap: &Snapshot, chain: u32) -> bool {
    snap.plugins.chain(chain).needs_body
}

/// Runs the access phase of `ctx.plugins`' chain. Returns the exit a plugin
/// asked for; the later plugins are still collected (their downstream
/// phases run), only their access handlers are skipped.
pub async fn access(
    env: &PluginEnv,
    session: &mut Session,
    ctx: &mut RequestCtx,
    snap: &Arc<Snapshot>,
) -> Option<Exit> {
    let run = ctx.plugins.as_mut()?;
    run.downstream_ready = true;
    let chain = snap.plugins.chain(run.chain);
    let mut exit: Option<Exit> = None;
    for entry in chain.entries.iter() {
        let consumer = ctx
            .plugins
            .as_ref()
            .and_then(|r| r.consumer)
            .and_then(|i| snap.consumers.get(i))
            .map(|c| c.id);
        let Some(idx) = entry.resolve(consumer) else {
            continue;
        };
        let slot = match ctx.plugins.as_mut() {
            Some(run) => {
                run.collected.push(idx);
                run.state.push(None);
                run.phases = run.phases | snap.plugins.instances[idx as usize].phases;
                run.collected.len() - 1
            }
            None => return exit,
        };
        let inst = &snap.plugins.instances[idx as usize];
        if exit.is_some() || !inst.phases.has(Phases::ACCESS) {
            continue;
        }
        let mut kong = Kong::new(env, session, ctx, snap, idx, slot);
        // Kong runs each access handler in a coroutine and turns an error
        // into 500 "An unexpected error occurred" (kong/init.lua 399-421).
        let ran = std::panic::AssertUnwindSafe(inst.handler.access(&mut kong))
            .catch_unwind()
            .await;
        match ran {
            Ok(Ok(())) => {}
            Ok(Err(e)) => exit = Some(e),
            Err(_) => {
                log::error!("plugin '{}' ({}) failed in access", inst.def.name, inst.id);
                exit = Some(Exit::error(500, "An unexpected error occurred"));
            }
        }
    }
    if exit.is_some() {
        if let Some(run) = ctx.plugins.as_mut() {
            run.exited = true;
        }
    }
    exit
}

/// Makes the instances that run the downstream phases ready: those
/// collected in access, or, when access never ran (no route, or an answer
/// before it), the global ones with Kong's global config. Returns how many
/// there are and the phases they implement between them.
fn downstream(snap: &Snapshot, ctx: &mut RequestCtx) -> (usize, Phases) {
    let Some(run) = ctx.plugins.as_mut() else {
        return (0, Phases::default());
    };
    if !run.collected.is_empty() || run.downstream_ready {
        return (run.collected.len(), run.phases);
    }
    run.downstream_ready = true;
    if let Some(g) = snap.plugins.global_chain() {
        run.collected = snap
            .plugins
            .chain(g)
            .entries
            .iter()
            .filter_map(|e| e.default)
            .collect();
        run.state = run.collected.iter().map(|_| None).collect();
        run.phases = run.collected.iter().fold(Phases::default(), |p, &i| {
            p | snap.plugins.instances[i as usize].phases
        });
    }
    (run.collected.len(), run.phases)
}

/// The instance in downstream slot `slot`.
fn collected(ctx: &RequestCtx, slot: usize) -> Option<u32> {
    ctx.plugins
        .as_ref()
        .and_then(|r| r.collected.get(slot).copied())
}

/// Makes sure a request that never reached access (no route matched)
/// still runs the global instances' downstream phases.
pub fn start_without_route(snap: &Snapshot, ctx: &mut RequestCtx) {
    if ctx.plugins.is_none() {
        if let Some(g) = snap.plugins.global_chain() {
            ctx.plugins = Some(Box::new(PluginRun::new(g)));
        }
    }
}

/// Applies headers set in access, then runs the header_filter phase.
pub fn header_filter(
    env: &PluginEnv,
    session: &mut Session,
    ctx: &mut RequestCtx,
    snap: &Arc<Snapshot>,
    resp: &mut ResponseHeader,
) {
    if let Some(run) = ctx.plugins.as_ref() {
        for (name, value, append) in &run.response_headers {
            let r = if *append {
                resp.append_header(name.clone(), value.clone()).map(|_| ())
            } else {
                resp.insert_header(name.clone(), value.clone())
            };
            if r.is_err() {
                log::debug!("plugin response header {name} not set");
            }
        }
    }
    let (n, phases) = downstream(snap, ctx);
    if !phases.has(Phases::HEADER_FILTER) {
        return;
    }
    for slot in 0..n {
        let Some(idx) = collected(ctx, slot) else {
            break;
        };
        let inst = &snap.plugins.instances[idx as usize];
        if inst.phases.has(Phases::HEADER_FILTER) {
            let mut kong = Kong::new(env, session, ctx, snap, idx, slot);
            inst.handler.header_filter(&mut kong, resp);
            if header_exited(ctx) {
                break;
            }
        }
    }
}

/// A plugin answered in header_filter ([`Kong::exit_header_filter`]).
pub fn header_exited(ctx: &RequestCtx) -> bool {
    ctx.plugins.as_ref().is_some_and(|r| r.header_exit)
}

/// Runs the body_filter phase on one chunk.
pub fn body_filter(
    env: &PluginEnv,
    session: &mut Session,
    ctx: &mut RequestCtx,
    snap: &Arc<Snapshot>,
    body: &mut Option<Bytes>,
    eof: bool,
) {
    let (n, phases) = downstream(snap, ctx);
    if !phases.has(Phases::BODY_FILTER) {
        return;
    }
    for slot in 0..n {
        let Some(idx) = collected(ctx, slot) else {
            break;
        };
        let inst = &snap.plugins.instances[idx as usize];
        if inst.phases.has(Phases::BODY_FILTER) {
            let mut kong = Kong::new(env, session, ctx, snap, idx, slot);
            inst.handler.body_filter(&mut kong, body, eof);
        }
    }
}

/// Whether any instance that will run has a body filter (so a response
/// Kong generates must be passed through it).
pub fn has_body_filter(snap: &Snapshot, ctx: &mut RequestCtx) -> bool {
    downstream(snap, ctx).1.has(Phases::BODY_FILTER)
}

/// Runs the log phase.
pub fn log(env: &PluginEnv, session: &mut Session, ctx: &mut RequestCtx, snap: &Arc<Snapshot>) {
    let (n, phases) = downstream(snap, ctx);
    if !phases.has(Phases::LOG) {
        return;
    }
    for slot in 0..n {
        let Some(idx) = collected(ctx, slot) else {
            break;
        };
        let inst = &snap.plugins.instances[idx as usize];
        if inst.phases.has(Phases::LOG) {
            let mut kong = Kong::new(env, session, ctx, snap, idx, slot);
            inst.handler.log(&mut kong);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn u(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    /// A `prometheus` instance (the plugin every build has) with a scope.
    fn inst(
        id: u128,
        route: Option<u128>,
        service: Option<u128>,
        consumer: Option<u128>,
    ) -> model::Plugin {
        model::Plugin {
            id: u(id),
            name: "prometheus".into(),
            instance_name: None,
            enabled: true,
            config: serde_json::json!({}),
            service: service.map(u),
            route: route.map(u),
            consumer: consumer.map(u),
            protocols: vec!["http".into(), "https".into()],
            tags: Vec::new(),
        }
    }

    /// The instance (by id) route `ri` runs for `consumer`.
    fn resolved(set: &PluginSet, ri: usize, consumer: Option<u128>) -> Option<Uuid> {
        let chain = set.chain(set.route_chain(ri)?);
        let e = chain.entries.first()?;
        e.resolve(consumer.map(u))
            .map(|i| set.instances[i as usize].id)
    }

    // Routes: r1 (service s1), r2 (service s1), r3 (serviceless).
    const ROUTES: [(u128, Option<u128>); 3] = [(101, Some(201)), (102, Some(201)), (103, None)];

    fn routes() -> Vec<(Uuid, Option<Uuid>)> {
        ROUTES.iter().map(|(r, s)| (u(*r), s.map(u))).collect()
    }

    #[test]
    fn kongs_scope_precedence_without_a_consumer() {
        let set = PluginSet::compile(
            &[
                inst(1, None, None, None),           // global
                inst(2, None, Some(201), None),      // service
                inst(3, Some(101), None, None),      // route
                inst(4, Some(101), Some(201), None), // route + service
            ],
            &routes(),
        )
        .unwrap();
        assert_eq!(resolved(&set, 0, None), Some(u(4)), "route+service first");
        assert_eq!(resolved(&set, 1, None), Some(u(2)), "then service");
        assert_eq!(resolved(&set, 2, None), Some(u(1)), "serviceless: global");
        assert_eq!(
            set.global_chain().map(|g| set.chain(g).entries.len()),
            Some(1)
        );
    }

    #[test]
    fn consumer_overlays_follow_kongs_order() {
        let set = PluginSet::compile(
            &[
                inst(1, None, None, None),
                inst(2, Some(101), None, None),
                inst(3, None, None, Some(301)),      // consumer only
                inst(4, None, Some(201), Some(302)), // service + consumer
                inst(5, Some(101), None, Some(303)), // route + consumer
            ],
            &routes(),
        )
        .unwrap();
        // Kong's lookup_cfg order: route+service+consumer, route+consumer,
        // service+consumer, route+service, consumer, route, service, global.
        assert_eq!(resolved(&set, 0, Some(303)), Some(u(5)));
        assert_eq!(resolved(&set, 0, Some(302)), Some(u(4)));
        assert_eq!(
            resolved(&set, 0, Some(301)),
            Some(u(3)),
            "consumer-only (5th) beats route-only (6th)"
        );
        assert_eq!(resolved(&set, 0, None), Some(u(2)));
        assert_eq!(
            resolved(&set, 0, Some(999)),
            Some(u(2)),
            "unknown consumer: default"
        );
        // r2 (same service, no route instance): consumer-only beats global.
        assert_eq!(resolved(&set, 1, Some(301)), Some(u(3)));
        assert_eq!(resolved(&set, 1, Some(302)), Some(u(4)));
        assert_eq!(resolved(&set, 1, None), Some(u(1)));
    }

    #[test]
    fn disabled_and_stream_only_instances_do_not_run_or_mask() {
        let mut off = inst(2, Some(101), None, None);
        off.enabled = false;
        let mut tcp = inst(3, Some(102), None, None);
        tcp.protocols = vec!["tcp".into()];
        let set = PluginSet::compile(&[inst(1, None, None, None), off, tcp], &routes()).unwrap();
        assert_eq!(
            resolved(&set, 0, None),
            Some(u(1)),
            "a disabled route instance lets the global one apply"
        );
        assert_eq!(
            resolved(&set, 1, None),
            Some(u(1)),
            "a stream-only instance is not in the HTTP subsystem"
        );
        // `["https"]` alone still runs on plain-HTTP requests (only the
        // subsystem counts).
        let mut https = inst(4, Some(103), None, None);
        https.protocols = vec!["https".into()];
        let set = PluginSet::compile(&[https], &routes()).unwrap();
        assert_eq!(resolved(&set, 2, None), Some(u(4)));
    }

    #[test]
    fn routes_without_plugins_get_no_chain_and_service_chains_are_shared() {
        let set = PluginSet::compile(&[inst(1, None, Some(201), None)], &routes()).unwrap();
        assert!(set.route_chain(2).is_none(), "serviceless route has none");
        assert_eq!(set.route_chain(0), set.route_chain(1), "shared per service");
        assert!(set.global_chain().is_none());
        let empty = PluginSet::compile(&[], &routes()).unwrap();
        assert!((0..3).all(|i| empty.route_chain(i).is_none()));
    }

    #[test]
    fn state_store_keeps_live_instances_only() {
        let store = StateStore::default();
        let a = store.get_or_init(u(1), || 7u32);
        assert_eq!(*store.get_or_init(u(1), || 9u32), 7, "kept across calls");
        store.get_or_init(u(2), || 1u32);
        store.retain(&[u(1)].into_iter().collect());
        assert_eq!(*store.get_or_init(u(1), || 9u32), 7);
        assert_eq!(*store.get_or_init(u(2), || 5u32), 5, "dropped, recreated");
        drop(a);
    }
}
