//! The in-tree test control plane as a process, for the load harness
//! (`benches/load/bench.py`): it lets a script push configs to a real data
//! plane over the hybrid protocol while load runs.
//!
//! Prints one JSON line `{"port": P, "env": {"KONG_...": "..."}}` (the DP's
//! cluster settings, shared-mode certs in a temp dir that lives as long as
//! this process), then reads commands from stdin, one per line:
//!
//! - `push N UPSTREAM_PORT`: push a Kong-export-shaped config with routes
//!   `/a` and `/r0 … /r{N-1}` to a service on 127.0.0.1:UPSTREAM_PORT;
//!   answers `{"hash": "..."}`;
//! - `wait-ping HASH SECONDS`: answers `{"seen": true|false}` once a DP
//!   pinged with that hash or the time is up.
//!
//! EOF on stdin stops it.

use std::io::{BufRead, Write};
use std::time::Duration;

use gw_tests::cp::{kong_export, Certs, ControlPlane};
use serde_json::json;

fn main() -> anyhow::Result<()> {
    let certs = Certs::shared();
    let cp = ControlPlane::start(&certs);
    let env: serde_json::Map<String, serde_json::Value> = certs
        .dp_env(cp.port)
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", json!({"port": cp.port, "env": env}))?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = match words.as_slice() {
            ["push", n, port] => {
                let n: usize = n.parse()?;
                let port: u16 = port.parse()?;
                let hash = cp.set_config(&kong_export(port, "/", n));
                json!({ "hash": hash })
            }
            ["wait-ping", hash, secs] => {
                let secs: f64 = secs.parse()?;
                json!({ "seen": cp.wait_ping(hash, Duration::from_secs_f64(secs)) })
            }
            [] => continue,
            _ => json!({ "error": format!("unknown command '{line}'") }),
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    Ok(())
}
