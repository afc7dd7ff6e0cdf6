#!/usr/bin/env python3
"""CPU per proxied request: the gateway against nginx proxy_pass, in one run.

Starts a static nginx upstream, an nginx reverse proxy (upstream keepalive,
1 worker) and the gateway (1 worker thread, Kong routing on a kong.yml with
the service and route), pins the proxies to CPU 1 and the load generator and
the upstream to CPU 0, then drives the two proxies alternately with wrk.
Per run it reads the proxy's CPU time from /proc and reports the medians of
requests/s, p50/p99 latency and CPU-seconds per 10,000 requests, and the
gateway/nginx ratio. Writes JSON (and Markdown with --markdown).

  benches/load/compare_nginx.py --gateway target/release/gateway [--rounds 3] [--duration 10]
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

UPSTREAM_PORT = 18080
NGINX_PORT = 18081
GATEWAY_PORT = 18082
GATEWAY_STATUS = 18083
MINIMAL_PORT = 18084
PROM_PORT = 18085
PROM_STATUS = 18086

UPSTREAM_CONF = """
worker_processes 1;
pid {d}/upstream.pid;
error_log {d}/upstream-error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {d}/cbt; proxy_temp_path {d}/pt;
  fastcgi_temp_path {d}/ft; uwsgi_temp_path {d}/ut; scgi_temp_path {d}/st;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  server {{
    listen 127.0.0.1:{port} backlog=4096 reuseport;
    default_type application/json;
    location / {{ return 200 '{{"args":{{}},"headers":{{"Accept":"*/*","Host":"127.0.0.1","User-Agent":"bench"}},"origin":"127.0.0.1","url":"http://127.0.0.1/get","pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}'; }}
  }}
}}
"""

PROXY_CONF = """
worker_processes 1;
pid {d}/proxy.pid;
error_log {d}/proxy-error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {d}/cbt2; proxy_temp_path {d}/pt2;
  fastcgi_temp_path {d}/ft2; uwsgi_temp_path {d}/ut2; scgi_temp_path {d}/st2;
  keepalive_requests 1000000;
  upstream up {{ server 127.0.0.1:{up}; keepalive 64; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }}
  }}
}}
"""

KONG_YML = """
_format_version: "3.0"
services:
  - name: bench
    url: http://127.0.0.1:{up}
    routes:
      - name: bench
        paths: ["/"]
"""

# The same, with Kong's prometheus plugin on globally and every family on.
PROMETHEUS_PLUGIN = """
plugins:
  - name: prometheus
    config:
      status_code_metrics: true
      latency_metrics: true
      bandwidth_metrics: true
      upstream_health_metrics: true
"""


def nginx_bin():
    for p in ("/usr/sbin/nginx", shutil.which("nginx")):
        if p and os.path.exists(p):
            return p
    sys.exit("nginx not found (apt-get install nginx-light)")


def wait_port(port, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def children(pid):
    out = [pid]
    try:
        kids = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        kids = []
    for k in kids:
        out.extend(children(int(k)))
    return out


def cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            fields = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tick


def rss_kb(pids):
    total = 0
    for p in pids:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def parse_latency(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    if not m:
        return None
    v = float(m.group(1))
    return {"us": v / 1000, "ms": v, "s": v * 1000}[m.group(2)]


def run_wrk(port, duration, conns, cpu):
    cmd = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{conns}", f"-d{duration}s",
           "--latency", f"http://127.0.0.1:{port}/get"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = parse_latency(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))
    p99 = parse_latency(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))
    errs = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errs += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errs += sum(int(x) for x in m.groups())
    return reqs, rps, p50, p99, errs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--minimal", default=None,
                    help="also measure a do-nothing Pingora proxy (benches' minimal-pingora) as a reference")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--prometheus", action="store_true",
                    help="also measure the gateway with the prometheus plugin on (all metrics)")
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    ncpu = os.cpu_count() or 1
    proxy_cpu, load_cpu = (1, 0) if ncpu > 1 else (0, 0)

    d = tempfile.mkdtemp(prefix="gw-bench-")
    procs = []

    def start(cmd, env=None, cpu=None):
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu)] + cmd
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(f"{d}/stderr.log", "a"))
        procs.append(p)
        return p

    busy = [p for p in (UPSTREAM_PORT, NGINX_PORT, GATEWAY_PORT, GATEWAY_STATUS, MINIMAL_PORT,
                        PROM_PORT, PROM_STATUS)
            if wait_port(p, timeout=0.05)]
    if busy:
        sys.exit(f"ports already in use: {busy}; stop what listens there first")
    try:
        ngx = nginx_bin()
        open(f"{d}/upstream.conf", "w").write(UPSTREAM_CONF.format(d=d, port=UPSTREAM_PORT))
        open(f"{d}/proxy.conf", "w").write(PROXY_CONF.format(d=d, port=NGINX_PORT, up=UPSTREAM_PORT))
        open(f"{d}/kong.yml", "w").write(KONG_YML.format(up=UPSTREAM_PORT))
        start([ngx, "-c", f"{d}/upstream.conf", "-g", "daemon off;"], cpu=load_cpu)
        nginx_proxy = start([ngx, "-c", f"{d}/proxy.conf", "-g", "daemon off;"], cpu=proxy_cpu)
        env = dict(os.environ,
                   KONG_DATABASE="off",
                   KONG_DECLARATIVE_CONFIG=f"{d}/kong.yml",
                   KONG_PROXY_LISTEN=f"127.0.0.1:{GATEWAY_PORT} reuseport backlog=16384",
                   KONG_STATUS_LISTEN=f"127.0.0.1:{GATEWAY_STATUS}",
                   KONG_PREFIX=f"{d}/kong",
                   KONG_PROXY_ACCESS_LOG="off",
                   KONG_PROXY_ERROR_LOG="/dev/stderr",
                   KONG_LOG_LEVEL="warn",
                   KONG_NGINX_WORKER_PROCESSES="1")
        gw = start([args.gateway], env=env, cpu=proxy_cpu)
        for port in (UPSTREAM_PORT, NGINX_PORT, GATEWAY_PORT):
            if not wait_port(port):
                sys.exit(f"port {port} did not open; see {d}/stderr.log")
        for p in procs:
            if p.poll() is not None:
                sys.exit(f"{p.args} exited early; see {d}/stderr.log")
        targets = {"nginx": (NGINX_PORT, nginx_proxy.pid), "gateway": (GATEWAY_PORT, gw.pid)}
        if args.prometheus:
            open(f"{d}/kong-prom.yml", "w").write(KONG_YML.format(up=UPSTREAM_PORT) + PROMETHEUS_PLUGIN)
            penv = dict(env,
                        KONG_DECLARATIVE_CONFIG=f"{d}/kong-prom.yml",
                        KONG_PROXY_LISTEN=f"127.0.0.1:{PROM_PORT} reuseport backlog=16384",
                        KONG_STATUS_LISTEN=f"127.0.0.1:{PROM_STATUS}",
                        KONG_PREFIX=f"{d}/kong-prom")
            gp = start([args.gateway], env=penv, cpu=proxy_cpu)
            if not wait_port(PROM_PORT):
                sys.exit(f"gateway+prometheus did not start; see {d}/stderr.log")
            targets["gateway+prometheus"] = (PROM_PORT, gp.pid)
        if args.minimal:
            mp = start([args.minimal, f"127.0.0.1:{MINIMAL_PORT}", f"127.0.0.1:{UPSTREAM_PORT}", "1"], cpu=proxy_cpu)
            if not wait_port(MINIMAL_PORT):
                sys.exit(f"minimal proxy did not start; see {d}/stderr.log")
            targets["pingora-minimal"] = (MINIMAL_PORT, mp.pid)
        runs = {k: [] for k in targets}
        for r in range(args.rounds):
            for name, (port, pid) in targets.items():
                if args.warmup:
                    run_wrk(port, args.warmup, args.connections, load_cpu)
                pids = children(pid)
                c0 = cpu_seconds(pids)
                reqs, rps, p50, p99, errs = run_wrk(port, args.duration, args.connections, load_cpu)
                c1 = cpu_seconds(pids)
                runs[name].append({
                    "requests": reqs, "rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": errs,
                    "cpu_s": c1 - c0, "cpu_s_per_10k": (c1 - c0) / reqs * 10000 if reqs else None,
                    "rss_kb": rss_kb(pids),
                })
                print(f"round {r + 1} {name}: {rps:.0f} req/s, p50 {p50} ms, p99 {p99} ms, "
                      f"cpu/10k {runs[name][-1]['cpu_s_per_10k']:.3f} s, errors {errs}", file=sys.stderr)
        summary = {}
        for name, rs in runs.items():
            summary[name] = {k: statistics.median([x[k] for x in rs if x[k] is not None])
                             for k in ("rps", "p50_ms", "p99_ms", "cpu_s_per_10k", "rss_kb")}
            summary[name]["errors"] = sum(x["errors"] for x in rs)
        ratio = {k: summary["gateway"][k] / summary["nginx"][k]
                 for k in ("rps", "cpu_s_per_10k", "rss_kb") if summary["nginx"][k]}
        result = {"rounds": args.rounds, "duration_s": args.duration, "connections": args.connections,
                  "pinning": {"proxy_cpu": proxy_cpu, "load_cpu": load_cpu},
                  "summary": summary, "ratio_gateway_over_nginx": ratio, "runs": runs}
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)
        if args.markdown:
            print("| proxy | req/s | p50 ms | p99 ms | CPU s / 10k req | RSS MiB | errors |")
            print("|---|---|---|---|---|---|---|")
            for name in targets:
                s = summary[name]
                print(f"| {name} | {s['rps']:.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | "
                      f"{s['cpu_s_per_10k']:.3f} | {s['rss_kb'] / 1024:.1f} | {s['errors']} |")
            print(f"| gateway / nginx | {ratio.get('rps', 0):.2f}x | | | {ratio.get('cpu_s_per_10k', 0):.2f}x | "
                  f"{ratio.get('rss_kb', 0):.2f}x | |")
            if "gateway+prometheus" in summary and summary["gateway"]["cpu_s_per_10k"]:
                r = summary["gateway+prometheus"]["cpu_s_per_10k"] / summary["gateway"]["cpu_s_per_10k"]
                print(f"| gateway+prometheus / gateway | | | | {r:.2f}x | | |")
        else:
            print(json.dumps({"summary": summary, "ratio_gateway_over_nginx": ratio}, indent=2))
    finally:
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM if "nginx" in str(p.args) else signal.SIGINT)
            except OSError:
                pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
