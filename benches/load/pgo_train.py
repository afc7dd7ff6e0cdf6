#!/usr/bin/env python3
"""Training run for the profile-guided build (scripts/pgo-build).

Runs an instrumented gateway through the traffic it is measured on and
deployed for, so the profile covers the request path as it is used:
- the benchmark config (1,000 routes of mixed shapes and the prometheus
  plugin) plus the plugin scenario's routes (key-auth, acl, cors);
- kept-alive HTTP/1.1, new connections per request, TLS, h2 over TLS
  and h2c, and a few 404s;
then stops it with SIGTERM so the profile is written at exit.

Usage: pgo_train.py --gateway PATH --bin-dir DIR [--seconds N]
(DIR holds the release `httpbin` used as the upstream.)
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (the benchmark's config builders and helpers)


def training_config(upstream_port):
    cfg = bench.kong_config(upstream_port, 1000)
    plugins = bench.plugins_config(upstream_port)
    cfg["services"].extend(plugins["services"])
    cfg["consumers"] = plugins.get("consumers", [])
    return cfg


def run(cmd, seconds):
    """Runs a load tool, bounded; its output is not needed."""
    try:
        subprocess.run(cmd, capture_output=True, timeout=seconds + 30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"pgo-train: {cmd[0]}: {e}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--seconds", type=int, default=3, help="length of each load step")
    a = ap.parse_args()
    for tool in ("wrk", "h2load"):
        if not shutil.which(tool):
            sys.exit(f"pgo-train: {tool} is not installed (scripts/setup installs it)")
    work = tempfile.mkdtemp(prefix="gw-pgo-")
    procs = []
    try:
        up_port = bench.free_port()
        httpbin = subprocess.Popen([os.path.join(a.bin_dir, "httpbin"), "--listen", f"127.0.0.1:{up_port}",
                                    "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(httpbin)
        bench.wait_port(up_port, what="httpbin")
        cfg_path = os.path.join(work, "kong.json")
        with open(cfg_path, "w") as f:
            json.dump(training_config(up_port), f)
        plain, tls, status = bench.free_port(), bench.free_port(), bench.free_port()
        env = dict(os.environ, KONG_DATABASE="off", KONG_DECLARATIVE_CONFIG=cfg_path,
                   KONG_PROXY_LISTEN=f"127.0.0.1:{plain} http2 reuseport, 127.0.0.1:{tls} http2 ssl",
                   KONG_STATUS_LISTEN=f"127.0.0.1:{status}", KONG_PREFIX=os.path.join(work, "prefix"),
                   KONG_PROXY_ACCESS_LOG="off", KONG_NGINX_WORKER_PROCESSES="1",
                   KONG_NGINX_HTTP_KEEPALIVE_REQUESTS="1000000", KONG_DRAIN_DELAY="0")
        gw = subprocess.Popen([a.gateway], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(gw)
        bench.wait_port(plain, what="the instrumented gateway")
        bench.wait_port(tls, what="the instrumented gateway's TLS listener")
        s = str(a.seconds)
        base = f"http://127.0.0.1:{plain}"
        hdrs = []
        for k, v in bench.PLUGIN_HEADERS.items():
            hdrs += ["-H", f"{k}: {v}"]
        steps = [
            ["wrk", "-t1", "-c50", f"-d{s}", f"{base}{bench.BENCH_PATH}"],
            ["wrk", "-t1", "-c20", f"-d{s}", "-H", "Connection: close", f"{base}{bench.BENCH_PATH}"],
            ["wrk", "-t1", "-c50", f"-d{s}", *hdrs, f"{base}/full"],
            ["wrk", "-t1", "-c20", "-d1", *hdrs, f"{base}/keyauth"],
            ["wrk", "-t1", "-c20", "-d1", f"{base}/v1/items0", "-H", "Host: api0.example.com"],
            ["wrk", "-t1", "-c10", "-d1", f"{base}/no-such-route"],
            ["wrk", "-t1", "-c20", f"-d{s}", f"https://127.0.0.1:{tls}{bench.BENCH_PATH}"],
            ["h2load", "-D", s, "-c", "10", "-m", "10", f"https://127.0.0.1:{tls}{bench.BENCH_PATH}"],
            ["h2load", "-D", s, "-c", "10", "-m", "10", f"{base}{bench.BENCH_PATH}"],
        ]
        for cmd in steps:
            run(cmd, a.seconds)
        gw.send_signal(signal.SIGTERM)
        try:
            code = gw.wait(timeout=40)
        except subprocess.TimeoutExpired:
            sys.exit("pgo-train: the gateway did not exit after SIGTERM; no profile written")
        if code != 0:
            sys.exit(f"pgo-train: the gateway exited with {code}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
