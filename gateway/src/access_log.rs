//! `proxy_access_log` in Kong's `kong_log_format`, written off the request
//! path: requests hand a small record to a bounded channel and one thread
//! formats and writes. When the channel is full a line is dropped (and
//! counted) rather than slowing requests down.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pingora::proxy::Session;

use crate::proxy::RequestCtx;

enum Msg {
    Record(Record),
    /// Write out everything queued, then answer.
    Flush(SyncSender<()>),
}

struct Record {
    time: SystemTime,
    remote_addr: String,
    request_line: String,
    status: u16,
    body_bytes: usize,
    referer: String,
    user_agent: String,
    request_id: String,
}

/// Handle to the access-log writer thread.
#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

fn header_or_dash(session: &Session, name: http::header::HeaderName) -> String {
    session
        .req_header()
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

impl AccessLog {
    /// Opens `path` (`/dev/stdout` and `/dev/stderr` included) for appending.
    pub fn open(path: &Path) -> std::io::Result<AccessLog> {
        let out: Box<dyn Write + Send> = match path.to_str() {
            Some("/dev/stdout") => Box::new(std::io::stdout()),
            Some("/dev/stderr") => Box::new(std::io::stderr()),
            // 0600 in 0700 directories when we create them: the prefix is private.
            _ => Box::new(config_sync::private_fs::open_append(path)?),
        };
        let (tx, rx) = sync_channel::<Msg>(64 * 1024);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut w = BufWriter::with_capacity(64 * 1024, out);
                loop {
                    match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(first) => {
                            // Drain what is queued before flushing.
                            let mut next = Some(first);
                            let mut waiters = Vec::new();
                            while let Some(msg) = next {
                                match msg {
                                    Msg::Record(r) => {
                                        let _ = write_record(&mut w, &r);
                                    }
                                    Msg::Flush(done) => waiters.push(done),
                                }
                                next = rx.try_recv().ok();
                            }
                            let _ = w.flush();
                            for done in waiters {
                                let _ = done.send(());
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => {
                            let _ = w.flush();
                            return;
                        }
                    }
                }
            })?;
        Ok(AccessLog {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Writes out every queued line (at shutdown), waiting at most `timeout`.
    pub fn flush(&self, timeout: Duration) {
        let (done_tx, done_rx) = sync_channel(1);
        if self.tx.send(Msg::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(timeout);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn record(&self, session: &Session, ctx: &RequestCtx) {
        let req = session.req_header();
        let version = match req.version {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2.0",
            _ => "HTTP/1.1",
        };
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.kong_status)
            .unwrap_or(0);
        let rec = Record {
            time: SystemTime::now(),
            remote_addr: ctx
                .client_ip
                .or(ctx.peer_ip)
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| "-".to_string()),
            request_line: format!(
                "{} {} {}",
                req.method,
                String::from_utf8_lossy(req.raw_path()),
                version
            ),
            status,
            body_bytes: session.body_bytes_sent(),
            referer: header_or_dash(session, http::header::REFERER),
            user_agent: header_or_dash(session, http::header::USER_AGENT),
            request_id: ctx.request_id.clone(),
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Record(rec)) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn write_record(w: &mut impl Write, r: &Record) -> std::io::Result<()> {
    let t: chrono::DateTime<chrono::Local> = r.time.into();
    writeln!(
        w,
        "{} - - [{}] \"{}\" {} {} \"{}\" \"{}\" kong_request_id: \"{}\"",
        r.remote_addr,
        t.format("%d/%b/%Y:%H:%M:%S %z"),
        r.request_line,
        r.status,
        r.body_bytes,
        r.referer,
        r.user_agent,
        r.request_id
    )
}
