//! A gRPC unary load generator for the load harness (`benches/load/bench.py`'s
//! grpc scenario): `grpc.test.Echo/Unary` calls (see `gw_tests::grpc`)
//! multiplexed over a few HTTP/2 connections, the same load whether it
//! goes to the gateway, nginx or the echo server itself.
//!
//! ```text
//! grpc-load --url http://127.0.0.1:PORT [--authority HOST] [--connections C]
//!           [--concurrency N] [--duration SECS] [--rate R] [--message BYTES]
//!           [--timeout SECS] [--threads T]
//! ```
//!
//! N calls are in flight at once (closed loop), spread over C connections
//! (h2c for `http://`, h2 over TLS for `https://`, certificate unchecked).
//! With `--rate R` the calls are started on a fixed schedule of R per
//! second instead and latency counts from the scheduled start (no
//! coordinated omission); N then bounds the calls in flight. Prints one JSON
//! object: requests (OK calls), errors (by gRPC code in `error_kinds`),
//! rps, latency p50/p90/p99/p99.9 and max in ms.
//!
//! `--probe` makes one call instead (message "probe", trailer
//! "probe-trailer") and prints what came back: `ok`, `code`, the reply's
//! `message`, the `x-echo-trailer` trailer, and the request headers the
//! echo server saw (`seen`), so the harness can check that a proxy really
//! passed the call and its trailers through.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gw_tests::grpc::{Client, EchoRequest, Target, TRAILER_KEY};
use hdrhistogram::Histogram;
use serde_json::json;

struct Cli {
    url: String,
    authority: Option<String>,
    connections: usize,
    concurrency: usize,
    duration: f64,
    rate: Option<f64>,
    message: usize,
    timeout: f64,
    threads: usize,
    probe: bool,
}

const USAGE: &str = "usage: grpc-load --url http://127.0.0.1:PORT [--authority HOST] \
[--connections C] [--concurrency N] [--duration SECS] [--rate R] [--message BYTES] \
[--timeout SECS] [--threads T] [--probe]";

fn parse_cli() -> anyhow::Result<Cli> {
    let mut cli = Cli {
        url: String::new(),
        authority: None,
        connections: 1,
        concurrency: 50,
        duration: 5.0,
        rate: None,
        message: 16,
        timeout: 10.0,
        threads: 1,
        probe: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if flag == "--probe" {
            cli.probe = true;
            continue;
        }
        let value = match inline.or_else(|| args.next()) {
            Some(v) => v,
            None => bail!("{flag} needs a value\n{USAGE}"),
        };
        match flag.as_str() {
            "--url" => cli.url = value,
            "--authority" => cli.authority = Some(value),
            "--connections" | "-c" => cli.connections = value.parse().context("--connections")?,
            "--concurrency" | "-n" => cli.concurrency = value.parse().context("--concurrency")?,
            "--duration" | "-d" => cli.duration = value.parse().context("--duration")?,
            "--rate" | "-r" => cli.rate = Some(value.parse().context("--rate")?),
            "--message" => cli.message = value.parse().context("--message")?,
            "--timeout" => cli.timeout = value.parse().context("--timeout")?,
            "--threads" | "-t" => cli.threads = value.parse().context("--threads")?,
            _ => bail!("unknown argument {flag}\n{USAGE}"),
        }
    }
    if cli.url.is_empty() {
        bail!("--url is required\n{USAGE}");
    }
    if cli.connections == 0 || cli.concurrency == 0 || cli.threads == 0 {
        bail!("--connections, --concurrency and --threads must be at least 1");
    }
    if !(cli.duration > 0.0 && cli.timeout > 0.0) || cli.rate.is_some_and(|r| r <= 0.0) {
        bail!("--duration, --timeout and --rate must be positive");
    }
    Ok(cli)
}

/// What one worker saw.
struct Tally {
    hist: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    // Microseconds, 1 µs to 10 min, 3 significant digits.
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

fn main() -> anyhow::Result<()> {
    let cli = parse_cli()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads)
        .enable_all()
        .build()?;
    let report = if cli.probe {
        rt.block_on(probe(&cli))?
    } else {
        rt.block_on(run(&cli))?
    };
    println!("{report}");
    Ok(())
}

fn target(cli: &Cli) -> anyhow::Result<Target> {
    let mut target = Target::parse(&cli.url)?.with_timeout(Duration::from_secs_f64(cli.timeout));
    if let Some(a) = &cli.authority {
        target = target.with_authority(a);
    }
    Ok(target)
}

async fn probe(cli: &Cli) -> anyhow::Result<serde_json::Value> {
    let target = target(cli)?;
    let mut req = EchoRequest::new("probe");
    req.trailer = "probe-trailer".into();
    let answer = match Client::connect(&target).await {
        Ok(c) => c.unary(req, &[]).await,
        Err(st) => Err(st),
    };
    Ok(match answer {
        Ok(a) => json!({
            "ok": true,
            "code": "Ok",
            "message": a.message.message,
            "trailer": a.trailer(TRAILER_KEY),
            "seen": a.message.metadata,
        }),
        Err(st) => json!({
            "ok": false,
            "code": format!("{:?}", st.code()),
            "error": st.message(),
            "trailer": st.metadata().get(TRAILER_KEY).and_then(|v| v.to_str().ok()),
        }),
    })
}

async fn run(cli: &Cli) -> anyhow::Result<serde_json::Value> {
    let target = target(cli)?;
    let mut conns = Vec::with_capacity(cli.connections);
    for _ in 0..cli.connections {
        let c = Client::connect(&target)
            .await
            .map_err(|s| anyhow::anyhow!("connect {}: {}", cli.url, s.message()))?;
        conns.push(c);
    }
    let payload = "x".repeat(cli.message);
    let duration = Duration::from_secs_f64(cli.duration);
    let start = Instant::now();
    let end = start + duration;
    let n = cli.concurrency;
    let mut workers = Vec::with_capacity(n);
    for w in 0..n {
        let client = conns[w % conns.len()].clone();
        let req = EchoRequest::new(&payload);
        let rate = cli.rate;
        workers.push(tokio::spawn(async move {
            let mut t = Tally {
                hist: histogram()?,
                ok: 0,
                errors: BTreeMap::new(),
            };
            let mut k = 0u64;
            loop {
                // Fixed rate: worker w takes ticks w, w + N, w + 2N, ...
                let began = match rate {
                    Some(r) => {
                        let due =
                            start + Duration::from_secs_f64((w as u64 + k * n as u64) as f64 / r);
                        k += 1;
                        if due >= end {
                            break;
                        }
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => {
                        let now = Instant::now();
                        if now >= end {
                            break;
                        }
                        now
                    }
                };
                match client.unary(req.clone(), &[]).await {
                    Ok(_) => {
                        t.ok += 1;
                        let us = began.elapsed().as_micros().clamp(1, 600_000_000) as u64;
                        t.hist.saturating_record(us);
                    }
                    Err(st) => {
                        *t.errors.entry(format!("{:?}", st.code())).or_default() += 1;
                    }
                }
            }
            anyhow::Ok(t)
        }));
    }
    let mut hist = histogram()?;
    let (mut ok, mut errors) = (0u64, BTreeMap::<String, u64>::new());
    for w in workers {
        let t = w.await??;
        hist.add(&t.hist)?;
        ok += t.ok;
        for (k, v) in t.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ms = |q: f64| (ok > 0).then(|| hist.value_at_quantile(q) as f64 / 1000.0);
    Ok(json!({
        "url": cli.url,
        "authority": target.authority,
        "connections": cli.connections,
        "concurrency": n,
        "rate": cli.rate,
        "duration_s": cli.duration,
        "elapsed_s": elapsed,
        "requests": ok,
        "errors": errors.values().sum::<u64>(),
        "error_kinds": errors,
        "rps": ok as f64 / cli.duration,
        "p50_ms": ms(0.5),
        "p90_ms": ms(0.9),
        "p99_ms": ms(0.99),
        "p999_ms": ms(0.999),
        "max_ms": (ok > 0).then(|| hist.max() as f64 / 1000.0),
        "mean_ms": (ok > 0).then(|| hist.mean() / 1000.0),
    }))
}
