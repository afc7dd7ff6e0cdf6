//! A background runtime for plugin work that must not run on (or outlive)
//! Pingora's runtimes: one thread with a current-thread tokio runtime,
//! started on first use and stopped when its owner drops it. The logging
//! plugins' sends ([`super::log_io::LogIo`]) and the Redis clients
//! ([`super::redis::RedisClients`]) each own one.

use std::future::Future;
use std::sync::OnceLock;

pub struct Background {
    /// The thread's name (`gw-log`, `gw-redis`).
    name: &'static str,
    rt: OnceLock<Option<Running>>,
}

struct Running {
    handle: tokio::runtime::Handle,
    /// Dropped with the owner: the runtime's thread then ends.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl std::fmt::Debug for Background {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Background")
            .field("name", &self.name)
            .field("started", &self.rt.get().is_some())
            .finish()
    }
}

impl Background {
    pub const fn new(name: &'static str) -> Background {
        Background {
            name,
            rt: OnceLock::new(),
        }
    }

    /// The runtime's handle, starting it the first time; `None` when its
    /// thread could not be started (logged).
    pub fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.rt
            .get_or_init(|| {
                let (tx, rx) = std::sync::mpsc::channel();
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let name = self.name;
                let spawned = std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || {
                        let rt = match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(rt) => rt,
                            Err(e) => {
                                log::error!("cannot start the {name} runtime: {e}");
                                return;
                            }
                        };
                        let _ = tx.send(rt.handle().clone());
                        let _ = rt.block_on(stopped);
                    });
                match spawned {
                    Ok(_) => rx.recv().ok().map(|handle| Running {
                        handle,
                        _stop: stop,
                    }),
                    Err(e) => {
                        log::error!("cannot start the {name} thread: {e}");
                        None
                    }
                }
            })
            .as_ref()
            .map(|r| &r.handle)
    }

    /// Runs `task` on the runtime; false when there is none.
    pub fn spawn<F>(&self, task: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self.handle() {
            Some(rt) => {
                rt.spawn(task);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn runs_tasks_and_ends_with_its_owner() {
        let bg = Background::new("gw-test");
        let (tx, rx) = std::sync::mpsc::channel();
        assert!(bg.spawn(async move {
            let _ = tx.send(1);
        }));
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
        // A task that never ends is dropped with the runtime: its sender
        // goes, so the receiver sees the channel close.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        assert!(bg.spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        }));
        drop(bg);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
