//! What the logging plugins share to send their entries off the request
//! path (Kong sends from `ngx.timer`s and the queue's timers, never from the
//! request): one background runtime for their I/O, and TLS clients that do
//! not verify the collector's certificate (Kong: `ssl_verify = false` in
//! http-log, `sslhandshake(false, sni, false)` in tcp-log).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio_rustls::TlsConnector;

/// The logging runtime, started on first use: a thread of its own, so that
/// slow collectors never hold up a proxy thread, and the proxy's runtimes
/// (Pingora's) are not ours to keep tasks on.
fn runtime() -> Option<&'static tokio::runtime::Handle> {
    static RT: OnceLock<Option<tokio::runtime::Handle>> = OnceLock::new();
    RT.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("gw-log".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        log::error!("cannot start the logging runtime: {e}");
                        return;
                    }
                };
                let _ = tx.send(rt.handle().clone());
                // Lives as long as the process.
                rt.block_on(std::future::pending::<()>());
            });
        match spawned {
            Ok(_) => rx.recv().ok(),
            Err(e) => {
                log::error!("cannot start the logging thread: {e}");
                None
            }
        }
    })
    .as_ref()
}

/// Runs `task` on the logging runtime: background work (connection
/// drivers, idle-connection expiry) that [`flush`] does not wait for.
/// False when there is no runtime to run it on.
pub fn spawn<F>(task: F) -> bool
where
    F: Future<Output = ()> + Send + 'static,
{
    match runtime() {
        Some(rt) => {
            rt.spawn(task);
            true
        }
        None => false,
    }
}

/// Sends in progress (queues draining, tcp/udp entries on their way).
static SENDING: AtomicUsize = AtomicUsize::new(0);
/// The process is stopping (Kong: `ngx.worker.exiting()`).
static EXITING: AtomicBool = AtomicBool::new(false);

struct Sending;

impl Drop for Sending {
    fn drop(&mut self) {
        SENDING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs a send on the logging runtime (Kong's `ngx.timer.at(0, ...)`);
/// [`flush`] waits for it. False when there is no runtime to run it on.
pub fn spawn_send<F>(task: F) -> bool
where
    F: Future<Output = ()> + Send + 'static,
{
    SENDING.fetch_add(1, Ordering::SeqCst);
    let guard = Sending;
    spawn(async move {
        let _guard = guard;
        task.await;
    })
}

/// Whether the process is stopping: queues then stop waiting to fill
/// batches (Kong's queue at worker exit).
pub fn exiting() -> bool {
    EXITING.load(Ordering::Relaxed)
}

/// At shutdown, once requests are done: lets the queues send what they
/// hold without waiting for more, then waits (up to `max`) for the sends
/// in progress and the file-log writer, as Kong's timers run on while a
/// worker exits.
pub fn flush(max: Duration) {
    let deadline = Instant::now() + max;
    EXITING.store(true, Ordering::SeqCst);
    super::queue::wake_all();
    while SENDING.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    super::file_log::flush(deadline.saturating_duration_since(Instant::now()));
}

/// A connector that accepts any certificate (handshake signatures are
/// still checked); `sni` sends the server name (http-log: resty.http sends
/// the host; tcp-log only its `tls_sni`).
pub fn tls(sni: bool) -> TlsConnector {
    static WITH: OnceLock<TlsConnector> = OnceLock::new();
    static WITHOUT: OnceLock<TlsConnector> = OnceLock::new();
    let base = || crate::balancer::health::tls::connector(false).0;
    if sni {
        WITH.get_or_init(base).clone()
    } else {
        WITHOUT
            .get_or_init(|| {
                let mut cfg = (**base().config()).clone();
                cfg.enable_sni = false;
                TlsConnector::from(Arc::new(cfg))
            })
            .clone()
    }
}

/// A timeout in milliseconds from a plugin config (`number`): cosockets
/// treat 0 as "the default", which is 60 s (`lua_socket_*_timeout`).
pub fn millis(ms: f64) -> Duration {
    if ms.is_finite() && ms > 0.0 {
        Duration::from_secs_f64(ms / 1000.0)
    } else {
        Duration::from_secs(60)
    }
}

/// An error as ngx_lua's cosockets word it (`timeout`, `connection
/// refused`, ...), for Kong's log messages.
pub fn io_error(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::TimedOut | K::WouldBlock => "timeout".into(),
        K::ConnectionRefused => "connection refused".into(),
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            "closed".into()
        }
        _ => {
            // `Display` adds " (os error N)"; Kong prints strerror alone.
            let s = e.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_like_cosocket_errors() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(io_error(&refused), "connection refused");
        let enoent = std::io::Error::from_raw_os_error(2);
        assert_eq!(io_error(&enoent), "No such file or directory");
    }

    #[test]
    fn timeouts_are_milliseconds_with_cosockets_default() {
        assert_eq!(millis(1500.0), Duration::from_millis(1500));
        assert_eq!(millis(0.0), Duration::from_secs(60));
    }

    #[test]
    fn the_runtime_runs_tasks() {
        let (tx, rx) = std::sync::mpsc::channel();
        assert!(spawn(async move {
            let _ = tx.send(1);
        }));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
    }
}
