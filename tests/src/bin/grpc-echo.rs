//! The gRPC echo service (`grpc.test.Echo`, see `gw_tests::grpc`) as a
//! process, over h2c, for the load harness (`benches/load/bench.py`'s grpc
//! scenario) and manual runs (e.g. `grpcurl -plaintext -proto echo.proto`
//! with `gw_tests::grpc::ECHO_PROTO` saved as echo.proto).
//!
//! Usage: `grpc-echo [--port P] [--host 127.0.0.1] [--threads N]`
//! (port 0: a free one). Prints `grpc-echo listening on ADDR` once bound;
//! runs until SIGINT or SIGTERM.

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

struct Cli {
    host: String,
    port: u16,
    threads: usize,
}

const USAGE: &str = "usage: grpc-echo [--port P] [--host 127.0.0.1] [--threads N]";

fn parse_cli() -> anyhow::Result<Cli> {
    let mut cli = Cli {
        host: "127.0.0.1".into(),
        port: 0,
        threads: 1,
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
        let value = match inline.or_else(|| args.next()) {
            Some(v) => v,
            None => bail!("{flag} needs a value\n{USAGE}"),
        };
        match flag.as_str() {
            "--port" | "-p" => cli.port = value.parse().context("--port")?,
            "--host" => cli.host = value,
            "--threads" | "-t" => {
                cli.threads = value.parse().context("--threads")?;
                if cli.threads == 0 {
                    bail!("--threads must be at least 1");
                }
            }
            _ => bail!("unknown argument {flag}\n{USAGE}"),
        }
    }
    Ok(cli)
}

fn main() -> anyhow::Result<()> {
    let cli = parse_cli()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let listener = TcpListener::bind((cli.host.as_str(), cli.port))
            .await
            .with_context(|| format!("bind {}:{}", cli.host, cli.port))?;
        let (addr, server) = gw_tests::grpc::serve_on(listener)?;
        println!("grpc-echo listening on {addr}");
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        server.shutdown().await;
        Ok(())
    })
}
