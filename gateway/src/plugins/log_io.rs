//! What the logging plugins share to send their entries off the request
//! path (Kong sends from `ngx.timer`s and the queue's timers, never from the
//! request): one background runtime for their I/O, and TLS clients that do
//! not verify the collector's certificate (Kong: `ssl_verify = false` in
//! http-log, `sslhandshake(false, sni, false)` in tcp-log).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tokio_rustls::TlsConnector;

use super::background::Background;
use super::{file_log, http_log, queue, tcp_log};

/// The logging plugins' process-wide state, one per process, held by
/// `PluginEnv::io` (outside any config snapshot, so a config push loses
/// no queued entry and no kept connection): the background runtime their
/// sends run on, the sends in progress, the log queues, the collectors'
/// idle connections and file-log's writer thread.
pub struct LogIo {
    /// Where the sends run: started on first use, ends with this handle.
    rt: Background,
    /// Sends in progress (queues draining, tcp/udp entries on their way).
    sending: Arc<AtomicUsize>,
    /// The process is stopping (Kong: `ngx.worker.exiting()`).
    exiting: AtomicBool,
    tls_sni: OnceLock<TlsConnector>,
    tls_no_sni: OnceLock<TlsConnector>,
    pub(super) queues: Mutex<HashMap<String, Arc<queue::Queue>>>,
    pub(super) http_idle: Mutex<http_log::Idle>,
    pub(super) tcp_idle: Mutex<tcp_log::Idle>,
    pub(super) file_writer: OnceLock<Option<SyncSender<file_log::Msg>>>,
}

impl Default for LogIo {
    fn default() -> LogIo {
        LogIo {
            // Its own thread, so that slow collectors never hold up a proxy
            // thread, and the proxy's runtimes (Pingora's) are not ours to
            // keep tasks on.
            rt: Background::new("gw-log"),
            sending: Arc::default(),
            exiting: AtomicBool::default(),
            tls_sni: OnceLock::new(),
            tls_no_sni: OnceLock::new(),
            queues: Mutex::default(),
            http_idle: Mutex::default(),
            tcp_idle: Mutex::default(),
            file_writer: OnceLock::new(),
        }
    }
}

impl std::fmt::Debug for LogIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogIo")
            .field("sending", &self.sending.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Locks `m`, going on after a panic elsewhere (the data stays usable:
/// idle lists and queue maps).
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts one send in progress until dropped.
struct Sending(Arc<AtomicUsize>);

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl LogIo {
    /// Runs `task` on the logging runtime: background work (connection
    /// drivers, idle-connection expiry) that [`LogIo::flush`] does not
    /// wait for. False when there is no runtime to run it on.
    pub fn spawn<F>(&self, task: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.rt.spawn(task)
    }

    /// Runs a send on the logging runtime (Kong's `ngx.timer.at(0, ...)`);
    /// [`LogIo::flush`] waits for it. False when there is no runtime to run
    /// it on.
    pub fn spawn_send<F>(&self, task: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.sending.fetch_add(1, Ordering::SeqCst);
        let guard = Sending(self.sending.clone());
        self.spawn(async move {
            let _guard = guard;
            task.await;
        })
    }

    /// Whether the process is stopping: queues then stop waiting to fill
    /// batches (Kong's queue at worker exit).
    pub fn exiting(&self) -> bool {
        self.exiting.load(Ordering::Relaxed)
    }

    /// At shutdown, once requests are done: lets the queues send what they
    /// hold without waiting for more, then waits (up to `max`) for the sends
    /// in progress and the file-log writer, as Kong's timers run on while a
    /// worker exits.
    pub fn flush(&self, max: Duration) {
        self.exiting.store(true, Ordering::SeqCst);
        self.wait_idle(max);
    }

    /// Waits (up to `max`) for the sends in progress and the file-log
    /// writer, without marking the process as stopping (benches, tests).
    pub fn wait_idle(&self, max: Duration) {
        let deadline = Instant::now() + max;
        queue::wake_all(self);
        while self.sending.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        file_log::flush(self, deadline.saturating_duration_since(Instant::now()));
    }

    /// A connector that accepts any certificate (handshake signatures are
    /// still checked); `sni` sends the server name (http-log: resty.http
    /// sends the host; tcp-log only its `tls_sni`).
    pub fn tls(&self, sni: bool) -> TlsConnector {
        let base = || crate::balancer::health::tls::connector(false).0;
        if sni {
            self.tls_sni.get_or_init(base).clone()
        } else {
            self.tls_no_sni
                .get_or_init(|| {
                    let mut cfg = (**base().config()).clone();
                    cfg.enable_sni = false;
                    TlsConnector::from(Arc::new(cfg))
                })
                .clone()
        }
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
    fn the_runtime_runs_tasks_and_ends_with_its_handle() {
        let io = LogIo::default();
        let (tx, rx) = std::sync::mpsc::channel();
        assert!(io.spawn(async move {
            let _ = tx.send(1);
        }));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
        // A task that never ends is dropped with the runtime: its sender
        // goes, so the receiver sees the channel close.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        assert!(io.spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        }));
        drop(io);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
    }

    #[test]
    fn flush_waits_for_sends_in_progress_and_marks_the_exit() {
        let io = LogIo::default();
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        assert!(io.spawn_send(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            d.store(true, Ordering::SeqCst);
        }));
        io.wait_idle(Duration::from_secs(5));
        assert!(done.load(Ordering::SeqCst));
        assert!(!io.exiting());
        io.flush(Duration::from_secs(5));
        assert!(io.exiting());
    }
}
