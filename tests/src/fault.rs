//! A TCP proxy on loopback in front of one upstream, switchable at run time
//! between faults, for the balancer tests:
//!
//! - [`Mode::Pass`]: forwards both ways;
//! - [`Mode::Kill`]: closes the listener (connects are refused) and resets
//!   every open connection, as a crashed host would;
//! - [`Mode::Slow`]: holds each chunk of the upstream's answer back for a
//!   while (past the gateway's read timeout);
//! - [`Mode::ResetAfter`]: forwards that many bytes of the answer, then
//!   resets the connection;
//! - [`Mode::BlackHole`]: a listener that never accepts, its one-slot
//!   queue pre-filled, so new SYNs are dropped and connects time out;
//!   open connections stop moving.
//!
//! It runs on a runtime of its own, so the blocking test code can drive it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Kill,
    Slow(Duration),
    ResetAfter(usize),
    BlackHole,
}

struct Shared {
    upstream: SocketAddr,
    accepted: AtomicUsize,
}

/// A running fault proxy; stops (and resets its connections) on drop.
pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
    mode: watch::Sender<(Mode, u64)>,
    epoch: u64,
    rt: Option<tokio::runtime::Runtime>,
}

fn listener(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let s = TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(backlog)
}

impl FaultProxy {
    /// Starts a proxy to `127.0.0.1:upstream_port` on a free loopback port.
    pub fn start(upstream_port: u16) -> FaultProxy {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("fault proxy runtime");
        let l = rt
            .block_on(async { listener(SocketAddr::from(([127, 0, 0, 1], 0)), 1024) })
            .expect("bind fault proxy");
        let port = l.local_addr().expect("fault proxy addr").port();
        let shared = Arc::new(Shared {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            accepted: AtomicUsize::new(0),
        });
        let (tx, rx) = watch::channel((Mode::Pass, 0));
        rt.spawn(control(l, port, shared.clone(), rx));
        FaultProxy {
            port,
            shared,
            mode: tx,
            epoch: 0,
            rt: Some(rt),
        }
    }

    /// Switches the mode; takes effect for open connections too.
    pub fn set(&mut self, mode: Mode) {
        self.epoch += 1;
        let _ = self.mode.send((mode, self.epoch));
        // Let the control task rebind or drop the listener.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Connections accepted so far (all modes).
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.mode.send((Mode::Kill, u64::MAX));
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// Owns the listening socket: accepts while the mode lets it, rebinds the
/// same port when traffic is allowed again.
async fn control(
    first: TcpListener,
    port: u16,
    shared: Arc<Shared>,
    mut rx: watch::Receiver<(Mode, u64)>,
) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut accepting = Some(first);
    // Sockets that fill the black hole's queue; held while it lasts.
    let mut hole: Option<(TcpListener, Vec<tokio::task::JoinHandle<()>>)> = None;
    loop {
        let (mode, _) = *rx.borrow_and_update();
        match mode {
            Mode::Kill | Mode::BlackHole => {
                accepting = None;
                if mode == Mode::BlackHole && hole.is_none() {
                    if let Ok(l) = listener(addr, 0) {
                        // One connection fills a backlog-0 queue; a second
                        // makes sure. Neither is ever accepted.
                        let fillers = (0..2)
                            .map(|_| {
                                tokio::spawn(async move {
                                    if let Ok(s) = TcpStream::connect(addr).await {
                                        std::future::pending::<()>().await;
                                        drop(s);
                                    }
                                })
                            })
                            .collect();
                        hole = Some((l, fillers));
                    }
                } else if mode == Mode::Kill {
                    drop_hole(&mut hole);
                }
            }
            _ => {
                drop_hole(&mut hole);
                if accepting.is_none() {
                    // The old socket may linger a moment; retry the bind.
                    for _ in 0..50 {
                        if let Ok(l) = listener(addr, 1024) {
                            accepting = Some(l);
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }
        match &accepting {
            Some(l) => {
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    conn = l.accept() => if let Ok((s, _)) = conn {
                        shared.accepted.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(connection(s, shared.clone(), rx.clone()));
                    },
                }
            }
            None => {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

fn drop_hole(hole: &mut Option<(TcpListener, Vec<tokio::task::JoinHandle<()>>)>) {
    if let Some((l, fillers)) = hole.take() {
        for f in fillers {
            f.abort();
        }
        drop(l);
    }
}

fn reset(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

/// One client connection, forwarded to a fresh upstream connection.
async fn connection(client: TcpStream, shared: Arc<Shared>, mut rx: watch::Receiver<(Mode, u64)>) {
    let Ok(upstream) = TcpStream::connect(shared.upstream).await else {
        reset(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let mut cbuf = vec![0u8; 16 * 1024];
    let mut ubuf = vec![0u8; 16 * 1024];
    // Answer bytes forwarded under the current mode (for ResetAfter).
    let mut sent = 0usize;
    let mut epoch = rx.borrow().1;
    loop {
        let (mode, e) = *rx.borrow_and_update();
        if e != epoch {
            epoch = e;
            sent = 0;
        }
        if mode == Mode::Kill {
            break;
        }
        let hold = mode == Mode::BlackHole;
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { break },
            n = cr.read(&mut cbuf), if !hold => match n {
                Ok(0) | Err(_) => {
                    let _ = uw.shutdown().await;
                    // Drain the rest of the answer, still under the faults.
                    return finish(ur, cw, ubuf, rx, sent).await;
                }
                Ok(n) => if uw.write_all(&cbuf[..n]).await.is_err() { break },
            },
            n = ur.read(&mut ubuf), if !hold => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => match forward(&mut cw, &ubuf[..n], mode, &mut sent).await {
                    Forwarded::Ok => {}
                    Forwarded::Reset | Forwarded::Closed => break,
                },
            },
        }
    }
    // Any way out of the loop resets the client side, as a crash would.
    if let (Ok(c), Ok(_u)) = (cr.reunite(cw), ur.reunite(uw)) {
        reset(c);
    }
}

async fn finish(
    mut ur: tokio::net::tcp::OwnedReadHalf,
    mut cw: tokio::net::tcp::OwnedWriteHalf,
    mut ubuf: Vec<u8>,
    rx: watch::Receiver<(Mode, u64)>,
    mut sent: usize,
) {
    loop {
        let mode = rx.borrow().0;
        match ur.read(&mut ubuf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if !matches!(
                    forward(&mut cw, &ubuf[..n], mode, &mut sent).await,
                    Forwarded::Ok
                ) {
                    return;
                }
            }
        }
    }
}

enum Forwarded {
    Ok,
    Reset,
    Closed,
}

async fn forward(
    cw: &mut tokio::net::tcp::OwnedWriteHalf,
    chunk: &[u8],
    mode: Mode,
    sent: &mut usize,
) -> Forwarded {
    match mode {
        Mode::Slow(d) => tokio::time::sleep(d).await,
        Mode::ResetAfter(limit) => {
            let room = limit.saturating_sub(*sent);
            if chunk.len() > room {
                let _ = cw.write_all(&chunk[..room]).await;
                let _ = cw.flush().await;
                *sent += room;
                return Forwarded::Reset;
            }
        }
        _ => {}
    }
    if cw.write_all(chunk).await.is_err() {
        return Forwarded::Closed;
    }
    *sent += chunk.len();
    Forwarded::Ok
}
