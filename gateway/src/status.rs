//! Kong's status API on `status_listen`: `/status`, `/status/ready` and
//! `/metrics` (Prometheus text, see [`crate::metrics`]). Kong serves
//! `/metrics` only with the prometheus plugin loaded; here it is always
//! served, since the `kong_dp_*` scaling signals matter without the plugin.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::kong::SERVER_TOKEN;
use crate::metrics::{Metrics, CONTENT_TYPE as METRICS_CONTENT_TYPE};
use crate::snapshot::ConfigHandle;
use crate::stats::Stats;

pub struct StatusApi {
    pub config: ConfigHandle,
    pub stats: Arc<Stats>,
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    pub metrics: Arc<Metrics>,
    /// Set once the proxy listeners are bound. The status service can start
    /// first; ready before then, a client sent on at once would be refused.
    pub proxy_listening: Arc<std::sync::atomic::AtomicBool>,
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn json_response(status: u16, body: serde_json::Value) -> Response<Vec<u8>> {
    let bytes = body.to_string().into_bytes();
    let mut b = Response::builder()
        .status(status)
        .header(
            http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )
        .header(http::header::CONTENT_LENGTH, bytes.len())
        .header(http::header::SERVER, SERVER_TOKEN);
    if status == 204 {
        b = b.header("X-Kong-Status", "ok");
    }
    match b.body(bytes) {
        Ok(r) => r,
        Err(_) => Response::new(Vec::new()),
    }
}

fn metrics_response(body: String) -> Response<Vec<u8>> {
    let bytes = body.into_bytes();
    let b = Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, METRICS_CONTENT_TYPE)
        .header(http::header::CONTENT_LENGTH, bytes.len())
        .header(http::header::SERVER, SERVER_TOKEN);
    match b.body(bytes) {
        Ok(r) => r,
        Err(_) => Response::new(Vec::new()),
    }
}

impl StatusApi {
    /// `/metrics`: Prometheus text for the live snapshot.
    pub fn metrics(&self) -> String {
        let scrape = crate::plugins::prometheus::scrape(&self.config.load());
        self.metrics.render(&scrape, &self.stats)
    }

    /// `/status/ready`: 200 once a non-empty config is loaded.
    pub fn ready(&self) -> (u16, serde_json::Value) {
        if self.draining.load(Ordering::Relaxed) {
            return (503, json!({"message": "draining"}));
        }
        if !self.proxy_listening.load(Ordering::Acquire) {
            return (503, json!({"message": "proxy listeners not yet bound"}));
        }
        let snap = self.config.load();
        if snap.has_entities {
            (200, json!({"message": "ready"}))
        } else {
            (
                503,
                json!({"message": "no configuration available (empty configuration present)"}),
            )
        }
    }

    pub fn status(&self) -> serde_json::Value {
        let snap = self.config.load();
        let c = self.stats.connections();
        // Kong's `memory` block describes Lua VMs and shared dicts, which
        // this gateway does not have: those fields are left out rather than
        // filled with other figures under their names. What there is, the
        // process's resident memory, goes under its own name (in Kong's
        // human format; `/metrics` has `process_resident_memory_bytes`).
        let rss = rss_bytes().unwrap_or(0);
        json!({
            "configuration_hash": snap.hash,
            "server": {
                "total_requests": c.requests,
                "connections_accepted": c.accepted,
                "connections_handled": c.handled,
                "connections_active": c.active,
                "connections_reading": c.reading,
                "connections_writing": c.writing,
                "connections_waiting": c.waiting,
            },
            "memory": {
                "process_resident_memory": format!("{:.2} MiB", rss as f64 / 1048576.0),
            },
        })
    }
}

#[async_trait]
impl ServeHttp for StatusApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path().trim_end_matches('/');
        let method = req.method.clone();
        if path == "/metrics" && (method == http::Method::GET || method == http::Method::HEAD) {
            let mut r = metrics_response(self.metrics());
            if method == http::Method::HEAD {
                r.body_mut().clear();
            }
            return r;
        }
        let (status, body) = match path {
            "/status" => (200, self.status()),
            "/status/ready" => self.ready(),
            _ => (404, json!({"message": "Not found"})),
        };
        if method == http::Method::HEAD {
            let mut r = json_response(status, body);
            r.body_mut().clear();
            return r;
        }
        json_response(status, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn not_ready_until_the_proxy_listeners_are_bound() {
        let api = StatusApi {
            config: ConfigHandle::default(),
            stats: Arc::default(),
            draining: Arc::default(),
            metrics: Arc::new(Metrics::new().expect("constant metric definitions")),
            proxy_listening: Arc::new(AtomicBool::new(false)),
        };
        let (code, body) = api.ready();
        assert_eq!(code, 503);
        assert_eq!(body["message"], "proxy listeners not yet bound");
        api.proxy_listening.store(true, Ordering::Release);
        // Bound: the config decides (none here).
        let (code, body) = api.ready();
        assert_eq!(code, 503);
        assert_eq!(
            body["message"],
            "no configuration available (empty configuration present)"
        );
    }
}
