//! The reference point for the gateway's own cost: a do-nothing Pingora
//! proxy to one fixed peer (no routing, no headers, no logging), built with
//! the same profile and allocator as the gateway, and with the same
//! engine-level settings (listener buffers, runtime flavour, no default
//! modules), so the difference measures the gateway's own work.
//!
//! `minimal-pingora LISTEN UPSTREAM [THREADS]`

use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};
use std::net::SocketAddr;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Fixed(SocketAddr);

#[async_trait::async_trait]
impl ProxyHttp for Fixed {
    type CTX = ();
    fn new_ctx(&self) {}
    // As the gateway: no disabled compression module on every request.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.0, false, String::new())))
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let listen = args.get(1).map(String::as_str).unwrap_or("127.0.0.1:18084");
    let upstream: SocketAddr = args
        .get(2)
        .map(String::as_str)
        .unwrap_or("127.0.0.1:18080")
        .parse()?;
    let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(1);
    let conf = ServerConf {
        threads,
        // As the gateway: a current-thread runtime when there is one thread.
        work_stealing: threads > 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut svc = http_proxy_service(&server.configuration, Fixed(upstream));
    // As the gateway: no 64 KiB L4 read buffer per connection.
    svc.add_listener(ListenerConfig::tcp(listen).l4_buffer(L4BufferSettings {
        read: Some(0),
        write: None,
    }));
    server.add_service(svc);
    server.run_forever()
}
