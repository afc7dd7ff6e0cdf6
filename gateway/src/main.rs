//! `gateway`: a Kong-compatible data plane.
//!
//! `gateway [-c kong.conf]`: settings come from `kong.conf` and `KONG_*`
//! environment variables (the environment wins), as in Kong.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use config_sync::settings::{Role, Settings};
use gateway::kong::KONG_VERSION;
use gateway::server::{self, Shared};
use gateway::{cluster, loader, plugins};

#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Args {
    conf: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Option<Args>> {
    let mut conf = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" | "--conf" => conf = Some(PathBuf::from(it.next().context("-c needs a file")?)),
            "-v" | "--version" | "version" => {
                // The integration tests check for "test-hooks" here.
                let hooks = if cluster::TEST_HOOKS {
                    " [test-hooks]"
                } else {
                    ""
                };
                println!(
                    "Kong-compatible gateway {} (kong {KONG_VERSION}){hooks}",
                    env!("CARGO_PKG_VERSION")
                );
                return Ok(None);
            }
            "start" => {}
            "-h" | "--help" => {
                println!("usage: gateway [start] [-c kong.conf]\nSettings: kong.conf and KONG_* environment variables.");
                return Ok(None);
            }
            other => anyhow::bail!("unknown argument '{other}' (usage: gateway [-c kong.conf])"),
        }
    }
    Ok(Some(Args { conf }))
}

fn init_logging(settings: &Settings) {
    let mut b = env_logger::Builder::new();
    b.filter_level(settings.log_level.to_level_filter());
    // Pingora logs every refused connection at error level; keep its noise down.
    b.filter_module("pingora_core", log::LevelFilter::Warn);
    b.filter_module("pingora_proxy", log::LevelFilter::Warn);
    b.format(|buf, record| {
        writeln!(
            buf,
            "{} [{}] {}: {}",
            chrono::Local::now().format("%Y/%m/%d %H:%M:%S"),
            record.level().as_str().to_ascii_lowercase(),
            record.target(),
            record.args()
        )
    });
    if let Some(path) = settings.proxy_error_log_path() {
        match path.to_str() {
            Some("/dev/stderr") => {}
            Some("/dev/stdout") => {
                b.target(env_logger::Target::Stdout);
            }
            _ => {
                // 0600 in 0700 directories when we create them.
                match config_sync::private_fs::open_append(&path) {
                    Ok(f) => {
                        b.target(env_logger::Target::Pipe(Box::new(f)));
                    }
                    Err(e) => eprintln!(
                        "cannot open proxy_error_log '{}': {e}; logging to stderr",
                        path.display()
                    ),
                }
            }
        }
    }
    b.init();
}

/// SIGHUP re-reads the declarative file: a valid one is swapped in whole,
/// an invalid one is logged and the running config stays.
fn spawn_reloader(path: PathBuf, plugins: Vec<String>, shared: Shared) -> anyhow::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])
        .context("installing the SIGHUP handler")?;
    std::thread::Builder::new()
        .name("config-reload".into())
        .spawn(move || {
            for _ in signals.forever() {
                let started = std::time::Instant::now();
                match loader::load_file(&path, &plugins, shared.config.upstream_tls()) {
                    Ok(snap) => {
                        let hash = snap.hash.clone();
                        shared.config.store(snap);
                        shared.metrics.observe_config_apply(started.elapsed());
                        log::info!(
                            "declarative config reloaded from '{}' (hash {hash}) in {} ms",
                            path.display(),
                            started.elapsed().as_millis()
                        );
                    }
                    Err(e) => log::error!("config reload failed, keeping the running config: {e}"),
                }
            }
        })?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // Where the host enables transparent huge pages for every mapping
    // ("always"), the allocator's mostly empty arenas would still be backed
    // in 2 MiB pages; opt this process out (mimalloc's `no_thp` covers the
    // "madvise" setting). Best effort: an old kernel without it changes
    // nothing but memory use.
    let _ = nix::sys::prctl::set_thp_disable(true);
    let argv: Vec<String> = std::env::args().collect();
    let as_kong = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == "kong");
    if let Some(code) = gateway::shim::run(as_kong, argv.get(1..).unwrap_or_default()) {
        std::process::exit(code);
    }
    let Some(args) = parse_args()? else {
        return Ok(());
    };
    let conf_text = match &args.conf {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let settings = match Settings::load(conf_text.as_deref(), std::env::vars()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Error: invalid configuration:\n{e}");
            std::process::exit(1);
        }
    };
    // The prefix holds the node id, the pid file, logs and (hybrid) the
    // control-plane config cache with its keys: created private if missing.
    let prefix_error = config_sync::private_fs::ensure_prefix(&settings.prefix).err();
    init_logging(&settings);
    if let Some(e) = prefix_error {
        log::warn!(
            "cannot create the prefix '{}': {e}",
            settings.prefix.display()
        );
    }
    for w in &settings.warnings {
        log::warn!("{w}");
    }
    let plugins = match plugins::enabled(&settings.plugins) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("Error: invalid configuration:\n{e}");
            std::process::exit(1);
        }
    };
    // nginx's proxy_ssl_* and Kong's client_ssl: files read once, here (a
    // file that cannot be loaded stops the start, as nginx's does).
    let upstream_tls = match gateway::upstream_tls::UpstreamTlsDefaults::from_settings(&settings) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("Error: invalid configuration:\n{e}");
            std::process::exit(1);
        }
    };
    let mut shared = Shared::new(settings.mem_cache_size);
    shared.config = shared.config.with_upstream_tls(upstream_tls);
    // Node id for metric labels: `<prefix>/kong.id`, the one a data plane
    // reports to its control plane (Kong persists it the same way).
    match config_sync::cluster::node_id::load_or_create(&settings.prefix) {
        Ok(id) => shared.metrics.set_node_id(id.to_string()),
        Err(e) => log::warn!("cannot persist the node id under the prefix: {e}"),
    }
    gateway::shim::write_pid_file(&settings.prefix);
    gateway::shim::write_kong_env(&settings);
    // Readiness turns 503 at once on SIGTERM or `kong quit` (SIGUSR1), so
    // endpoints and the load balancer let go before the listener closes.
    let drain_delay = match gateway::lifecycle::drain_delay_from(
        std::env::var("KONG_DRAIN_DELAY").ok().as_deref(),
    ) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("Error: invalid configuration:\n{e}");
            std::process::exit(1);
        }
    };
    let quit_requested = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGQUIT,
        signal_hook::consts::SIGUSR1,
    ] {
        signal_hook::flag::register(sig, shared.draining.clone())
            .context("installing the drain signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, quit_requested.clone())
        .context("installing the drain signal handlers")?;
    // Kong lets a data plane start from a declarative file too (the CP's
    // config replaces it); certificates must load before anything else.
    let hybrid = match settings.role {
        Role::DataPlane => match cluster::prepare(&settings, &shared.config, &plugins) {
            Ok(h) => {
                shared.metrics.set_cluster(h.status.clone());
                Some(h.with_metrics(shared.metrics.clone()))
            }
            Err(e) => {
                eprintln!("Error: {e}");
                std::process::exit(1);
            }
        },
        Role::Traditional => None,
    };

    if let Some(text) = &settings.declarative_config_string {
        match loader::compile_text(
            text,
            &plugins,
            "declarative_config_string",
            shared.config.upstream_tls(),
        ) {
            Ok(s) => shared.config.store(s),
            Err(e) => {
                eprintln!("Error: {e}");
                std::process::exit(1);
            }
        }
    } else if let Some(path) = &settings.declarative_config {
        match loader::load_file(path, &plugins, shared.config.upstream_tls()) {
            Ok(s) => {
                log::info!(
                    "loaded declarative config '{}' (hash {})",
                    path.display(),
                    s.hash
                );
                shared.config.store(s);
            }
            Err(e) => {
                eprintln!("Error: {e}");
                std::process::exit(1);
            }
        }
        spawn_reloader(path.clone(), plugins.clone(), shared.clone())?;
    } else if let Some(h) = &hybrid {
        h.load_cache();
    } else {
        log::warn!("no declarative_config given: every request answers 404 until one is loaded");
    }
    if let Some(h) = hybrid {
        h.spawn().context("starting the control-plane link")?;
    }

    let built = server::build(&settings, &shared)?;
    log::info!("gateway started");
    built.server.run(pingora::server::RunArgs {
        shutdown_signal: Box::new(gateway::lifecycle::DrainingShutdown {
            quit_requested,
            drain_delay,
            stats: shared.stats.clone(),
            stopping_since: Default::default(),
        }),
    });
    // In-flight requests are done: write out the access log before exiting.
    if let Some(log) = built.access_log {
        log.flush(std::time::Duration::from_secs(2));
    }
    // And send what the logging plugins still hold (Kong's log queues
    // drain while a worker exits).
    shared.plugins.io.flush(std::time::Duration::from_secs(5));
    log::info!("gateway stopped");
    Ok(())
}
