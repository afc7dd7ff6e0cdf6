//! HTTP/2 connections from clients: ALPN `h2` on `ssl` listeners flagged
//! `http2`, and h2c with prior knowledge on plain ones (nginx's `http2 on`
//! sniffs the connection preface and serves HTTP/1.1 when it is absent).
//!
//! The accept loop is ours rather than Pingora's so that nginx's limits
//! that are per connection hold here too:
//! - `keepalive_requests` counts streams: after that many, GOAWAY and drain
//!   (nginx does the same since 1.19.7; it also bounds what one connection
//!   can make the gateway do with rapid resets, CVE-2023-44487);
//! - too many refused (malformed) streams close the connection;
//! - an idle connection (no open stream) closes after `keepalive_timeout`;
//! - the transport's facts ([`ConnInfo`]: TLS session, PROXY addresses)
//!   travel in the connection's digest to every stream.
//!
//! The protocol limits are the `h2` crate's, set from nginx's settings
//! ([`H2Settings::builder`]): SETTINGS_MAX_CONCURRENT_STREAMS, the initial
//! stream window, the header list size (which also bounds a CONTINUATION
//! sequence and an HPACK-expanded header block), resets of streams not yet
//! accepted, and locally reset streams. PING and SETTINGS are answered by
//! the crate with one pending acknowledgement at a time.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use pingora::apps::HttpServerApp;
use pingora::http::ResponseHeader;
use pingora::protocols::http::v2::server::{handshake, H2Accept, H2Options, HttpSession};
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{Digest, Stream};
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;

use super::edge::ConnInfo;
use crate::stats::Stats;

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Refused streams (malformed requests) one connection may send before it
/// is closed, as Pingora's own loop allows.
const MAX_REFUSED_STREAMS: usize = 32;

/// Resets of streams the server has not yet accepted, before the
/// connection is closed with ENHANCE_YOUR_CALM (the `h2` crate's default).
const MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// nginx's HTTP/2 settings, from Kong's `nginx_http_*` / `nginx_proxy_*`.
#[derive(Debug, Clone, Copy)]
pub struct H2Settings {
    /// `http2_max_concurrent_streams` (128).
    pub max_concurrent_streams: u32,
    /// `http2_body_preread_size` (64k): the initial stream window.
    pub initial_window: u32,
    /// `large_client_header_buffers` number x size (nginx's bound on an
    /// HTTP/2 header block since 1.19.7): SETTINGS_MAX_HEADER_LIST_SIZE.
    pub max_header_list: u32,
    /// `keepalive_requests` (Kong: 10000): streams per connection.
    pub max_requests: u64,
    /// `keepalive_timeout`: a connection without open streams closes.
    pub idle_timeout: Duration,
    /// `client_header_timeout`: the preface and first SETTINGS must arrive
    /// within it.
    pub handshake_timeout: Duration,
}

impl Default for H2Settings {
    fn default() -> Self {
        H2Settings {
            max_concurrent_streams: 128,
            initial_window: 64 * 1024,
            max_header_list: 32 * 1024,
            max_requests: 10_000,
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(60),
        }
    }
}

impl H2Settings {
    /// The `h2` server options for these settings.
    pub fn builder(&self) -> H2Options {
        let mut b = H2Options::new();
        b.max_concurrent_streams(self.max_concurrent_streams)
            .initial_window_size(self.initial_window)
            // nginx opens the connection window wide at once; a small one
            // would serialize uploads on one connection.
            .initial_connection_window_size(
                self.initial_window
                    .saturating_mul(self.max_concurrent_streams.min(16))
                    .max(65_535),
            )
            .max_header_list_size(self.max_header_list)
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS);
        b
    }
}

/// Whether a plain connection starts with the HTTP/2 preface: reads while
/// what arrived is a prefix of it (an HTTP/1 request differs within its
/// first bytes), then puts everything read back. `None`: the client sent
/// nothing within `timeout`, or closed; the connection is to close quietly.
pub async fn sniff_preface(stream: Stream, timeout: Duration) -> Option<(Stream, bool)> {
    let mut l4 = match stream.into_any().downcast::<L4Stream>() {
        Ok(s) => s,
        Err(_) => {
            log::error!("h2c: a plain connection is not a TCP stream; closing");
            return None;
        }
    };
    let mut buf = [0u8; PREFACE.len()];
    let mut got = 0;
    let read = async {
        while got < buf.len() {
            let n = l4.read(&mut buf[got..]).await.ok()?;
            if n == 0 {
                return None;
            }
            got += n;
            if buf[..got] != PREFACE[..got] {
                return Some(false);
            }
        }
        Some(true)
    };
    let is_h2 = tokio::time::timeout(timeout, read).await.ok().flatten();
    let is_h2 = match is_h2 {
        Some(v) => v,
        // Bytes that are neither (yet): let the HTTP/1 front answer them.
        None if got > 0 => false,
        None => return None,
    };
    l4.rewind(&buf[..got]);
    Some((l4, is_h2))
}

/// An open stream, counted as nginx counts a request being processed.
struct Active(Arc<Stats>);

impl Active {
    fn new(stats: &Arc<Stats>) -> Self {
        stats.connections_writing.fetch_add(1, Ordering::Relaxed);
        Active(stats.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.connections_writing.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one HTTP/2 connection: every stream is a request handed to
/// `app` on its own task.
pub async fn serve<A>(
    app: &Arc<A>,
    settings: &H2Settings,
    stats: &Arc<Stats>,
    stream: Stream,
    info: Option<Arc<ConnInfo>>,
    shutdown: &ShutdownWatch,
) where
    A: HttpServerApp + Send + Sync + 'static,
{
    // The connection's facts, shared by its streams. The transport facts
    // ride in the proxy digest's user data (unused for downstream
    // connections otherwise), where `edge::conn_info` finds them.
    let proxy_digest = match info {
        Some(info) => match ResponseHeader::build(200, Some(0)) {
            Ok(response) => Some(Arc::new(ProxyDigest {
                response: Box::new(response),
                user_data: Some(Box::new(info)),
            })),
            Err(_) => None,
        },
        None => stream.get_proxy_digest(),
    };
    let digest = Arc::new(Digest {
        ssl_digest: stream.get_ssl_digest(),
        timing_digest: stream.get_timing_digest(),
        proxy_digest,
        socket_digest: stream.get_socket_digest(),
    });
    let mut conn = match tokio::time::timeout(
        settings.handshake_timeout,
        handshake(stream, Some(settings.builder())),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            log::debug!("h2 handshake: {e}");
            return;
        }
        Err(_) => {
            log::debug!("h2 handshake timed out");
            return;
        }
    };
    let mut shutdown = shutdown.clone();
    let mut closing = *shutdown.borrow();
    if closing {
        conn.graceful_shutdown();
    }
    let open = Arc::new(());
    let mut served: u64 = 0;
    let mut refused = 0usize;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.changed(), if !closing => {
                conn.graceful_shutdown();
                closing = true;
                continue;
            }
            accepted = HttpSession::from_h2_conn(&mut conn, digest.clone()) => accepted,
            () = tokio::time::sleep(settings.idle_timeout) => {
                // Only the loop's own handle left: no stream is open.
                if Arc::strong_count(&open) == 1 {
                    log::debug!("h2: idle connection closed after {:?}", settings.idle_timeout);
                    return;
                }
                continue;
            }
        };
        match accepted {
            Err(e) => {
                // Clients often just close; protocol errors were answered
                // with GOAWAY by the codec already.
                log::debug!("h2 connection ended: {e}");
                return;
            }
            Ok(None) => return,
            Ok(Some(H2Accept::Rejected)) => {
                refused += 1;
                if refused >= MAX_REFUSED_STREAMS {
                    log::warn!("h2: closing a connection after {refused} malformed requests");
                    return;
                }
            }
            Ok(Some(H2Accept::Session(session))) => {
                served += 1;
                let app = app.clone();
                let shutdown = shutdown.clone();
                let active = Active::new(stats);
                let open = open.clone();
                tokio::spawn(async move {
                    let _active = active;
                    let _open = open;
                    app.process_new_http(ServerSession::new_http2(session), &shutdown)
                        .await;
                });
                if served >= settings.max_requests && !closing {
                    // nginx's keepalive_requests: no new streams, let the
                    // open ones finish.
                    conn.graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// The transport facts an HTTP/2 stream's connection carried.
pub fn conn_info(digest: &Digest) -> Option<Arc<ConnInfo>> {
    digest
        .proxy_digest
        .as_ref()?
        .user_data
        .as_ref()?
        .downcast_ref::<Arc<ConnInfo>>()
        .cloned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn builder_takes_nginx_settings() {
        // The builder has no getters; this checks it accepts the defaults
        // and extreme values without panicking.
        let _ = H2Settings::default().builder();
        let _ = H2Settings {
            max_concurrent_streams: u32::MAX,
            initial_window: (1 << 31) - 1,
            ..H2Settings::default()
        }
        .builder();
    }
}
