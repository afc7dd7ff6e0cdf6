#!/usr/bin/env python3
"""The gateway against nginx, in one run on one machine.

Starts a static upstream (nginx returning an httpbin-shaped /get body, or the
bundled httpbin with --upstream httpbin), the gateway (Kong routing, the
prometheus plugin on with every family) and a baseline nginx (`proxy_pass`,
upstream keepalive, `worker_processes` equal to the gateway's threads). The
proxies run pinned to CPU 1, the load generator and the upstream to CPU 0.
Each proxy runs in its own cgroup v1 CPU group so scenarios can set a
Kubernetes-like CPU limit (`cpu.cfs_quota_us`). Load comes from `oha` (JSON
output; closed loop, or fixed rate with latency correction); without oha the
closed-loop runs fall back to wrk and the fixed-rate ones to a small Python
open-loop client, which is only good enough for the smoke run.

Scenarios (each figure is the median of --rounds alternated runs):
  throughput  max throughput at 50 connections: req/s, p50/p99, CPU s per
              10k requests, peak RSS; plus the gateway without metrics and a
              do-nothing Pingora proxy (the engine's floor) with --minimal
  seed        fixed 1000 QPS over 800 connections at 0.2 and 0.548 CPU, and
              the highest fixed rate each sustains at 0.2 CPU with p99 < 10 ms
  quota       max throughput at 0.2, 0.5, 1 and 2 CPUs
  routes      gateway throughput with 10 vs 10,000 routes
  apply       a 10,000-route config applied during a fixed-rate run, by
              SIGHUP file reload and by control-plane push
  memory      RSS idle, with 10,000 routes, with 800 open client connections
  coldstart   process start to /status/ready 200 from a cached (control
              plane) 10,000-route config, and from a declarative file
  push        control-plane pushes of 1,000 and 10,000-route configs to an
              idle data plane: push to ping as the CP sees it, and the DP's
              own apply time with its validate / compile split
  limits      rate-limiting (local; redis synchronous and batched, against a
              redis-server the run starts) against a route without plugins,
              and proxy-cache's hit path against nginx's proxy_cache
  tls         TLS termination against nginx on the same certificates (ECDSA
              P-256 and RSA 2048): full handshakes (openssl s_time -new, no
              resumption) with the server's CPU per handshake, and requests
              over kept-alive TLS connections
  plugins     the plugin runtime's cost: one gateway (no global plugins),
              max throughput at 50 connections and CPU s per 10k requests
              on a route without plugins, with prometheus, with key-auth,
              and with key-auth + acl + cors + prometheus, against nginx;
              with --baseline-bin, also a gateway built before the plugin
              runtime against this one on the same no-plugin config
  h2          HTTP/2 requests against nginx (h2load, 10 connections x 10
              concurrent streams, GET /get): over TLS (ALPN h2, the
              gateway's `http2 ssl` listener) and h2c (prior knowledge, an
              `http2` listener); req/s, mean latency, CPU s per 10k requests
  grpc        unary gRPC calls (grpc-load: 100 in flight over 10 h2c
              connections) to the grpc-echo server through the gateway (a
              `grpc` route and service on an `http2` listener) and through
              nginx's grpc_pass; req/s, p50/p99, CPU s per 10k calls of the
              proxy and of the echo server

With --check (scripts/bench-smoke uses it) every scenario's results are
checked as soon as it ends and the run fails (exit 1, with what went wrong)
on any failed request (non-2xx or transport error) where 2xx is expected,
on a load run that completed no request, on a missing apply time or probe
answer. Waits (ports, readiness, log lines, config pushes) always fail the
run when they time out. `--broken-upstream` points every service at a
closed port: with --check the run must fail (scripts/bench-smoke
--self-test proves it, scenario by scenario).

Writes DIR/bench.json, DIR/bench.md and (with matplotlib) DIR/bench.png;
the plugins scenario also writes DIR/plugins.json and DIR/plugins.md (and
so do limits, tls, h2 and grpc, each under its own name), and a run of only
such scenarios writes nothing else (a full run's files and the
main block of BENCHMARKS.md stay as they are; its block has its own
markers).

  benches/load/bench.py --bin-dir $CARGO_TARGET_DIR/release [--rounds 3] [--duration 8]
  benches/load/bench.py --bin-dir ... --smoke      # seconds-long, numbers meaningless
  python3 -m unittest discover -s benches/load    # the harness's own tests
"""
import argparse
import asyncio
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ALL_SCENARIOS = ["throughput", "seed", "quota", "routes", "apply", "memory", "coldstart", "push", "plugins",
                 "limits", "tls", "h2", "grpc"]
# Scenarios with their own results block and files (see update_benchmarks_md).
OWN_BLOCK = {"plugins", "limits", "tls", "h2", "grpc"}
CG_ROOT = "/sys/fs/cgroup/cpu"
BENCH_PATH = "/get"

UPSTREAM_CONF = """
worker_processes 1;
pid {d}/upstream.pid;
error_log {d}/upstream-error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {d}/u-cbt; proxy_temp_path {d}/u-pt;
  fastcgi_temp_path {d}/u-ft; uwsgi_temp_path {d}/u-ut; scgi_temp_path {d}/u-st;
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
worker_processes {workers};
pid {d}/{name}.pid;
error_log {d}/{name}-error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
  access_log off;
  client_body_temp_path {d}/{name}-cbt; proxy_temp_path {d}/{name}-pt;
  fastcgi_temp_path {d}/{name}-ft; uwsgi_temp_path {d}/{name}-ut; scgi_temp_path {d}/{name}-st;
  keepalive_requests 1000000;
  upstream up {{ server 127.0.0.1:{up}; keepalive 64; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port} backlog=16384;
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }}
  }}
}}
"""

# nginx's proxy_cache in front of the same upstream: the reference for
# proxy-cache's hit path (nginx keeps bodies in files, served from the page
# cache; the gateway keeps them in memory).
CACHE_CONF = """
{user}worker_processes 1;
pid {d}/{name}.pid;
error_log {d}/{name}-error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {d}/{name}-cbt; proxy_temp_path {d}/{name}-pt;
  fastcgi_temp_path {d}/{name}-ft; uwsgi_temp_path {d}/{name}-ut; scgi_temp_path {d}/{name}-st;
  keepalive_requests 1000000;
  proxy_cache_path {d}/{name}-cache levels=1:2 keys_zone=c:10m max_size=100m inactive=60m use_temp_path=off;
  upstream up {{ server 127.0.0.1:{up}; keepalive 64; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port} backlog=16384;
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_cache c;
      proxy_cache_valid 200 60m;
      add_header X-Cache-Status $upstream_cache_status;
    }}
  }}
}}
"""

# nginx terminating TLS in front of the same upstream, with Kong's defaults
# (TLS 1.2 and 1.3, a session cache as Kong's template sets).
TLS_CONF = """
worker_processes 1;
pid {d}/{name}.pid;
error_log {d}/{name}-error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {d}/{name}-cbt; proxy_temp_path {d}/{name}-pt;
  fastcgi_temp_path {d}/{name}-ft; uwsgi_temp_path {d}/{name}-ut; scgi_temp_path {d}/{name}-st;
  keepalive_requests 1000000;
  upstream up {{ server 127.0.0.1:{up}; keepalive 64; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port} ssl backlog=16384;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 1d;
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }}
  }}
}}
"""

# HTTP/2 in front of the same upstream (HTTP/1.1 with keepalive, as the
# other scenarios), over TLS with Kong's defaults or as h2c; {listen} is
# nginx_h2_listen()'s, which depends on the nginx version.
H2_CONF = """
worker_processes 1;
pid {d}/{name}.pid;
error_log {d}/{name}-error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {d}/{name}-cbt; proxy_temp_path {d}/{name}-pt;
  fastcgi_temp_path {d}/{name}-ft; uwsgi_temp_path {d}/{name}-ut; scgi_temp_path {d}/{name}-st;
  # Also the HTTP/2 requests per connection (1000 by default: h2load's
  # timed runs do not reconnect).
  keepalive_requests 1000000;
  upstream up {{ server 127.0.0.1:{up}; keepalive 64; keepalive_requests 1000000; }}
  server {{
    {listen}
{tls}    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }}
  }}
}}
"""

H2_TLS_LINES = """    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 1d;
"""

# nginx's grpc_pass to the echo server (h2c, kept-alive upstream connections)
# on an h2c listener.
GRPC_CONF = """
worker_processes 1;
pid {d}/{name}.pid;
error_log {d}/{name}-error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {d}/{name}-cbt; proxy_temp_path {d}/{name}-pt;
  fastcgi_temp_path {d}/{name}-ft; uwsgi_temp_path {d}/{name}-ut; scgi_temp_path {d}/{name}-st;
  keepalive_requests 1000000;
  upstream grpc_echo {{ server 127.0.0.1:{up}; keepalive 64; keepalive_requests 1000000; }}
  server {{
    {listen}
    location / {{ grpc_pass grpc://grpc_echo; }}
  }}
}}
"""

# The h2 and grpc scenarios' load: h2load's connections and concurrent
# streams on each, grpc-load's connections and calls in flight.
H2_CONNS, H2_STREAMS = 10, 10
GRPC_CONNS, GRPC_CONCURRENCY = 10, 100
# The echo service's method path prefix (gw_tests::grpc).
GRPC_PATH = "/grpc.test.Echo/"


PROMETHEUS_PLUGIN = {
    "name": "prometheus",
    "config": {"status_code_metrics": True, "latency_metrics": True,
               "bandwidth_metrics": True, "upstream_health_metrics": True},
}


class BenchError(RuntimeError):
    """A step of the run failed (a wait timed out, a tool gave no result, a
    check found failed requests): the figures cannot be trusted."""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------------------
# Configs.

def kong_config(upstream_port, n_routes, prometheus=True):
    """A declarative config with `n_routes` routes of mixed shapes (hosts,
    wildcard hosts, prefixes, regex paths, header and method matches) over
    a few services, plus the bench route `/get` on a host-less prefix. The
    bench request therefore goes through the full router, not a shortcut."""
    services = []
    n_services = max(1, min(50, n_routes // 200))
    for s in range(n_services):
        services.append({"name": f"svc{s}", "url": f"http://127.0.0.1:{upstream_port}", "routes": []})
    for i in range(n_routes):
        r = {"name": f"r{i}"}
        kind = i % 10
        if kind < 4:
            r["hosts"] = [f"api{i}.example.com"]
            r["paths"] = [f"/v1/items{i}"]
        elif kind < 6:
            r["hosts"] = [f"*.tenant{i}.example.net"]
        elif kind < 8:
            r["paths"] = [f"/p{i}/"]
            r["methods"] = ["GET", "POST"]
        elif kind == 8:
            r["hosts"] = [f"re{i}.example.org"]
            r["paths"] = [f"~/users/{i}/\\d+$"]
        else:
            r["paths"] = [f"/h{i}"]
            r["headers"] = {"x-tenant": [f"t{i}"]}
        services[i % n_services]["routes"].append(r)
    services[0]["routes"].append({"name": "bench", "paths": [BENCH_PATH], "strip_path": False})
    cfg = {"_format_version": "3.0", "services": services}
    if prometheus:
        cfg["plugins"] = [PROMETHEUS_PLUGIN]
    return cfg


# The plugins scenario: one route per plugin set, all on one service, no
# global plugins. Every request carries the key and an Origin, so the routes
# differ only in their plugins.
PLUGIN_ROUTES = {
    "/none": [],
    "/prom": [PROMETHEUS_PLUGIN],
    "/keyauth": [{"name": "key-auth"}],
    "/full": [{"name": "key-auth"}, {"name": "acl", "config": {"allow": ["bench"]}},
              {"name": "cors", "config": {"origins": ["https://app.example.com"]}}, PROMETHEUS_PLUGIN],
}
PLUGIN_HEADERS = {"apikey": "bench-key", "Origin": "https://app.example.com"}


def plugins_config(upstream_port, routes=PLUGIN_ROUTES):
    """A consumer with a key-auth credential and an acl group, and one route
    per entry of `routes` (path -> its plugins). With only "/none" there are
    no consumers either: the baseline binary predates them."""
    svc = {"name": "svc", "url": f"http://127.0.0.1:{upstream_port}", "routes": []}
    for path, plugins in routes.items():
        r = {"name": path.strip("/"), "paths": [path], "strip_path": False}
        if plugins:
            r["plugins"] = plugins
        svc["routes"].append(r)
    cfg = {"_format_version": "3.0", "services": [svc]}
    if any(routes.values()):
        cfg["consumers"] = [{"username": "bench", "keyauth_credentials": [{"key": "bench-key"}],
                             "acls": [{"group": "bench"}]}]
    return cfg


# The limits scenario: limits no run reaches, so every request is proxied
# and the figures are the counting's cost, not refusals.
LIMIT_NEVER = 1_000_000_000


def limits_config(upstream_port, redis_port):
    """A route without plugins, rate-limiting with each policy, and
    proxy-cache (memory strategy, Kong's defaults: GET/HEAD, 200/301/404,
    application/json, 300 s)."""
    redis = {"host": "127.0.0.1", "port": redis_port}
    routes = {
        "/none": [],
        "/rl-local": [{"name": "rate-limiting", "config": {"hour": LIMIT_NEVER, "policy": "local"}}],
        "/rl-redis": [{"name": "rate-limiting", "config": {"hour": LIMIT_NEVER, "policy": "redis",
                                                            "redis": redis, "sync_rate": -1}}],
        "/rl-redis-batched": [{"name": "rate-limiting", "config": {"hour": LIMIT_NEVER, "policy": "redis",
                                                                    "redis": redis, "sync_rate": 1}}],
        "/cache": [{"name": "proxy-cache", "config": {"strategy": "memory"}}],
    }
    svc = {"name": "svc", "url": f"http://127.0.0.1:{upstream_port}", "routes": []}
    for path, plugins in routes.items():
        r = {"name": path.strip("/"), "paths": [path], "strip_path": False}
        if plugins:
            r["plugins"] = plugins
        svc["routes"].append(r)
    return {"_format_version": "3.0", "services": [svc]}


def grpc_config(echo_port):
    """A `grpc` service to the echo server and a `grpc` route for its
    methods (Kong refuses strip_path on grpc routes)."""
    return {"_format_version": "3.0", "services": [
        {"name": "grpc-echo", "protocol": "grpc", "host": "127.0.0.1", "port": echo_port,
         "routes": [{"name": "grpc", "protocols": ["grpc"], "paths": [GRPC_PATH], "strip_path": False}]}]}


def h2_config(upstream_port):
    """One catch-all route to the upstream, for the h2 listeners."""
    return {"_format_version": "3.0", "services": [
        {"name": "svc", "url": f"http://127.0.0.1:{upstream_port}", "routes": [{"name": "r", "paths": ["/"]}]}]}


def redis_keys(port, pattern, timeout=2.0):
    """Keys matching `pattern` (RESP over a socket; None when it fails)."""
    parts = ["KEYS", pattern]
    cmd = f"*{len(parts)}\r\n" + "".join(f"${len(x)}\r\n{x}\r\n" for x in parts)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(cmd.encode())
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
                lines = data.split(b"\r\n")
                if lines and lines[0].startswith(b"*"):
                    n = int(lines[0][1:])
                    if len(lines) >= 2 * n + 2:
                        return [lines[2 + 2 * i].decode() for i in range(n)]
    except (OSError, ValueError):
        return None
    return None


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# Processes, ports, /proc.

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15.0, what="a server"):
    """Waits until something accepts connections on 127.0.0.1:`port`;
    raises BenchError on timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    raise BenchError(f"{what}: nothing accepted connections on 127.0.0.1:{port} within {timeout} s")


def descendants(pid):
    out = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
    except OSError:
        kids = []
    for k in kids:
        out.extend(descendants(int(k)))
    return out


def cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tick


def parse_pss_kib(text):
    """`Pss:` of a /proc/PID/smaps_rollup text, in KiB (None if absent)."""
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return None


def proc_pss_kib(pids):
    """Proportional set size summed over `pids`: pages shared between them
    (nginx's master and worker share most of theirs) count once in total,
    where summing VmRSS counts them once per process."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += parse_pss_kib(f.read()) or 0
        except OSError:
            pass
    return total


def proc_kb(pids, key):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class CpuGroup:
    """A cgroup v1 CPU group holding only the processes this script starts."""

    def __init__(self, name):
        self.path = os.path.join(CG_ROOT, f"gw-bench-{os.getpid()}-{name}")
        os.makedirs(self.path, exist_ok=True)
        self.set(None)

    @staticmethod
    def available():
        return os.access(os.path.join(CG_ROOT, "cpu.cfs_quota_us"), os.W_OK)

    def set(self, cores):
        with open(os.path.join(self.path, "cpu.cfs_period_us"), "w") as f:
            f.write("100000")
        quota = -1 if cores is None else max(1000, int(round(cores * 100000)))
        with open(os.path.join(self.path, "cpu.cfs_quota_us"), "w") as f:
            f.write(str(quota))

    def throttled(self):
        out = {}
        try:
            with open(os.path.join(self.path, "cpu.stat")) as f:
                for line in f:
                    k, v = line.split()
                    out[k] = int(v)
        except OSError:
            pass
        return out

    def wrap(self, cmd):
        # The shell joins the group, then becomes the process: nothing else
        # (least of all this script) is ever moved.
        procs = os.path.join(self.path, "cgroup.procs")
        return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh"] + cmd

    def remove(self):
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)


# Why the CPU-limit scenarios cannot run. Only the first is a property of
# the host (a cgroup-v2-only kernel setup has no v1 cpu controller to
# limit); the second is this run's permissions, which --check under CI=true
# does not accept.
CGROUP_ABSENT = "no cgroup v1 hierarchy with the cpu controller is mounted on this host"
CGROUP_NOT_WRITABLE = f"cgroup v1 cpu controller not writable here ({CG_ROOT}; not root?)"


def cgroup_v1_cpu_mounted(mountinfo="/proc/self/mountinfo"):
    """True when a cgroup v1 hierarchy carrying the cpu controller is
    mounted (fs type `cgroup`, `cpu` among the super options)."""
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    for line in lines:
        _, sep, after = line.partition(" - ")
        fields = after.split()
        if sep and len(fields) >= 3 and fields[0] == "cgroup" and "cpu" in fields[2].split(","):
            return True
    return False


def cgroup_skip_reason():
    return CGROUP_NOT_WRITABLE if cgroup_v1_cpu_mounted() else CGROUP_ABSENT


class Proc:
    def __init__(self, name, cmd, env=None, stderr=None, stdin=None, stdout=None):
        self.name = name
        self.stderr_path = stderr
        err = open(stderr, "a") if stderr else subprocess.DEVNULL
        self.p = subprocess.Popen(cmd, env=env, stdin=stdin or subprocess.DEVNULL,
                                  stdout=stdout or subprocess.DEVNULL, stderr=err, text=True)
        self.pid = self.p.pid

    def pids(self):
        return descendants(self.pid)

    def alive(self):
        return self.p.poll() is None

    def stop(self, sig=signal.SIGINT, timeout=15):
        if self.p.poll() is None:
            try:
                self.p.send_signal(sig)
                self.p.wait(timeout=timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait(timeout=5)

    def log_text(self):
        try:
            with open(self.stderr_path) as f:
                return f.read()
        except (OSError, TypeError):
            return ""


# ---------------------------------------------------------------------------
# Load generators.

def parse_wrk_latency(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    if not m:
        return None
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


# wrk itself only counts statuses >= 400 as errors; with --check this
# script makes it count everything outside 2xx (at some cost in wrk's own
# speed, which is why real runs do without it).
WRK_NON_2XX_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then bad = bad + 1 end
end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(threads) do n = n + t:get("bad") end
  io.write(string.format("non-2xx: %d\\n", n))
end
"""


class Load:
    def __init__(self, cpu, oha, timeout_slack=30, strict=False, workdir=None):
        self.cpu = cpu
        self.oha = oha
        self.slack = timeout_slack
        self.wrk_script = None
        if strict:
            self.wrk_script = os.path.join(workdir or tempfile.gettempdir(), f"non2xx-{os.getpid()}.lua")
            with open(self.wrk_script, "w") as f:
                f.write(WRK_NON_2XX_LUA)

    @property
    def driver(self):
        return "oha" if self.oha else "wrk + python open-loop fallback"

    def _taskset(self, cmd):
        return (["taskset", "-c", str(self.cpu)] if shutil.which("taskset") else []) + cmd

    def run(self, url, duration, conns, rate=None, headers=None):
        """Returns {requests, rps, p50_ms, p99_ms, p999_ms, errors}."""
        if self.oha:
            return self._oha(url, duration, conns, rate, headers or {})
        if rate is None:
            return self._wrk(url, duration, conns, headers or {})
        return open_loop(url, duration, conns, rate, headers or {})

    def _oha(self, url, duration, conns, rate, headers):
        cmd = [self.oha, "--no-tui", "--output-format", "json", "-z", f"{duration}s", "-c", str(conns)]
        if rate is not None:
            cmd += ["-q", str(rate), "--latency-correction"]
        for k, v in headers.items():
            cmd += ["-H", f"{k}: {v}"]
        if url.startswith("https:"):
            cmd.append("--insecure")  # the bench's self-signed certificates
        cmd.append(url)
        out = subprocess.run(self._taskset(cmd), capture_output=True, text=True,
                             timeout=duration + self.slack)
        try:
            j = json.loads(out.stdout)
        except json.JSONDecodeError:
            raise BenchError(f"oha gave no JSON for {url}: {out.stderr.strip()[:500]}")
        codes = {str(k): v for k, v in (j.get("statusCodeDistribution") or {}).items()}
        ok = sum(v for k, v in codes.items() if k.startswith("2"))
        bad_status = sum(v for k, v in codes.items() if not k.startswith("2"))
        errs = sum((j.get("errorDistribution") or {}).values())
        # Requests cut off by the deadline are not errors of the proxy.
        cut = sum(v for k, v in (j.get("errorDistribution") or {}).items() if "aborted due to deadline" in k)
        lp = j.get("latencyPercentiles") or {}

        def ms(key):
            v = lp.get(key)
            return None if v is None else v * 1000.0
        return {"requests": ok, "rps": ok / duration, "p50_ms": ms("p50"), "p99_ms": ms("p99"),
                "p999_ms": ms("p99.9"), "errors": bad_status + errs - cut,
                "error_kinds": {**{f"status {k}": v for k, v in codes.items() if not k.startswith("2")},
                                **{k: v for k, v in (j.get("errorDistribution") or {}).items()
                                   if "aborted due to deadline" not in k}}}

    def _wrk(self, url, duration, conns, headers):
        cmd = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency"]
        if self.wrk_script:
            cmd += ["-s", self.wrk_script]
        for k, v in headers.items():
            cmd += ["-H", f"{k}: {v}"]
        cmd.append(url)
        run = subprocess.run(self._taskset(cmd), capture_output=True, text=True,
                             timeout=duration + self.slack)
        return parse_wrk(run.stdout, run.stderr, url, duration)


def parse_wrk(out, err, url, duration):
    """wrk's text report as {requests (2xx only), rps, p50_ms, p99_ms,
    errors, error_kinds}; BenchError when there is no report."""
    m = re.search(r"(\d+) requests in", out)
    if not m:
        raise BenchError(f"wrk gave no result for {url}: {(err.strip() or out.strip())[:500]}")
    reqs = int(m.group(1))
    kinds = {}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        kinds["status >= 400"] = int(m.group(1))
    m = re.search(r"^non-2xx: (\d+)$", out, re.M)
    if m:
        # The --check script counts 3xx (and 1xx) too: it supersedes.
        kinds.pop("status >= 400", None)
        kinds["status not 2xx"] = int(m.group(1))
    bad_status = sum(kinds.values())
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        for k, v in zip(("connect", "read", "write", "timeout"), m.groups()):
            if int(v):
                kinds[f"socket {k}"] = int(v)
    errs = sum(kinds.values())
    ok = max(0, reqs - bad_status)

    def pct(label):
        m = re.search(rf"^\s*{label}%\s+(\S+)", out, re.M)
        return parse_wrk_latency(m.group(1)) if m and ok else None
    return {"requests": ok, "rps": ok / duration, "p50_ms": pct("50"), "p99_ms": pct("99"),
            "p999_ms": None, "errors": errs, "error_kinds": kinds}


def open_loop(url, duration, conns, rate, headers):
    """A fixed-rate client for when oha is missing: requests are scheduled at
    `rate`/s and latency counts from the scheduled time (no coordinated
    omission). Python tops out far below what the proxies do; smoke only."""
    m = re.match(r"http://([^:/]+):(\d+)(/.*)?", url)
    host, port, path = m.group(1), int(m.group(2)), m.group(3) or "/"
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    req = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()

    async def main():
        queue = asyncio.Queue()
        lat, errors, ok = [], [0], [0]
        end = time.monotonic() + duration

        async def worker():
            reader = writer = None
            while True:
                t = await queue.get()
                if t is None:
                    break
                try:
                    if writer is None:
                        reader, writer = await asyncio.open_connection(host, port)
                    writer.write(req)
                    await writer.drain()
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                    status = int(head.split(b" ", 2)[1])
                    cl = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                    if cl:
                        await reader.readexactly(int(cl.group(1)))
                    lat.append(time.monotonic() - t)
                    if 200 <= status < 300:
                        ok[0] += 1
                    else:
                        errors[0] += 1
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                        asyncio.TimeoutError, ValueError, IndexError):
                    errors[0] += 1
                    if writer is not None:
                        writer.close()
                    reader = writer = None
            if writer is not None:
                writer.close()

        workers = [asyncio.create_task(worker()) for _ in range(conns)]
        start = time.monotonic()
        n = 0
        while True:
            t = start + n / rate
            if t >= end:
                break
            now = time.monotonic()
            if t > now:
                await asyncio.sleep(t - now)
            queue.put_nowait(t)
            n += 1
        for _ in workers:
            queue.put_nowait(None)
        _, pending = await asyncio.wait(workers, timeout=15)
        # Requests still in flight or never sent by then count as failed.
        unsent = 0
        while not queue.empty():
            unsent += queue.get_nowait() is not None
        errors[0] += len(pending) + unsent
        for w in pending:
            w.cancel()
        return lat, errors[0], ok[0]

    lat, errs, ok = asyncio.run(main())
    lat.sort()

    def pct(q):
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else None
    return {"requests": ok, "rps": ok / duration, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "p999_ms": pct(0.999), "errors": errs, "error_kinds": {}}


def parse_h2load(out, url, duration):
    """h2load's text report as {requests (2xx only), rps, mean_ms, min_ms,
    max_ms, sd_ms, errors, error_kinds, protocol, h2load_rps}; rps counts
    2xx over the run's duration. BenchError when there is no report.
    Streams still open when a timed run ends are not errors (h2load's
    `started` minus `done`)."""
    m = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out, re.M)
    if not m:
        raise BenchError(f"h2load gave no result for {url}: {out.strip()[-500:]}")
    _total, _started, done, _succeeded, failed, errored, timeout = (int(x) for x in m.groups())
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.M)
    codes = dict(zip(("2xx", "3xx", "4xx", "5xx"), (int(x) for x in m.groups()))) if m else {}
    ok = codes.get("2xx", 0)
    kinds = {f"status {k}": v for k, v in codes.items() if k != "2xx" and v}
    for k, v in (("errored", errored), ("timeout", timeout)):
        if v:
            kinds[k] = v
    # `failed` counts errored and timed-out streams and statuses >= 400;
    # done - 2xx also counts 3xx.
    errors = max(failed, done - ok)
    if errors > sum(kinds.values()):
        kinds["other"] = errors - sum(kinds.values())
    lat = {}
    m = re.search(r"^time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    if m and ok:
        lat = dict(zip(("min_ms", "max_ms", "mean_ms", "sd_ms"), (parse_wrk_latency(x) for x in m.groups())))
    m = re.search(r"^finished in [\d.]+(?:us|ms|s), ([\d.]+) req/s", out, re.M)
    proto = re.search(r"^Application protocol: (\S+)", out, re.M)
    return {"requests": ok, "rps": ok / duration, "p50_ms": None, "p99_ms": None, "p999_ms": None,
            "mean_ms": lat.get("mean_ms"), "min_ms": lat.get("min_ms"), "max_ms": lat.get("max_ms"),
            "sd_ms": lat.get("sd_ms"), "errors": errors, "error_kinds": kinds,
            "protocol": proto.group(1) if proto else None,
            "h2load_rps": float(m.group(1)) if m else None}


def parse_grpc_load(out, err, url):
    """grpc-load's JSON report; BenchError when there is none."""
    try:
        r = json.loads(out)
    except json.JSONDecodeError:
        raise BenchError(f"grpc-load gave no JSON for {url}: {(err.strip() or out.strip())[-500:]}")
    if not isinstance(r, dict) or "requests" not in r:
        raise BenchError(f"grpc-load gave no result for {url}: {out.strip()[:500]}")
    return r


# ---------------------------------------------------------------------------
# The bench.

class Bench:
    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="gw-bench-")
        self.procs = []
        self.groups = []
        ncpu = os.cpu_count() or 1
        self.proxy_cpu, self.load_cpu = ("1", "0") if ncpu > 1 else ("0", "0")
        self.all_cpus = "0-1" if ncpu > 1 else "0"
        self.cgroups = CpuGroup.available()
        oha = args.oha or shutil.which("oha") or os.path.expanduser("~/.cargo/bin/oha")
        self.load = Load(self.load_cpu, oha if oha and os.path.exists(oha) and not args.no_oha else None,
                         strict=args.check, workdir=self.dir)
        # --gateway-bin: the gateway from elsewhere (the PGO build); every
        # other binary from --bin-dir.
        self.bin = lambda name: (args.gateway_bin if name == "gateway" and args.gateway_bin
                                 else os.path.join(args.bin_dir, name))
        self.upstream_port = None
        self.seq = 0

    # -- processes -------------------------------------------------------

    def start(self, name, cmd, env=None, cpus=None, group=None, **kw):
        if cpus is not None:
            cmd = ["taskset", "-c", cpus] + cmd
        if group is not None:
            cmd = group.wrap(cmd)
        p = Proc(name, cmd, env=env, stderr=os.path.join(self.dir, f"{name}.log"), **kw)
        self.procs.append(p)
        return p

    def group(self, name):
        if not self.cgroups:
            return None
        g = CpuGroup(name)
        self.groups.append(g)
        return g

    def uniq(self, name):
        self.seq += 1
        return f"{name}-{self.seq}"

    def start_upstream(self):
        port = free_port()
        if self.args.upstream == "httpbin":
            p = self.start("upstream", [self.bin("httpbin"), "--listen", f"127.0.0.1:{port}"], cpus=self.load_cpu)
        else:
            conf = os.path.join(self.dir, "upstream.conf")
            with open(conf, "w") as f:
                f.write(UPSTREAM_CONF.format(d=self.dir, port=port))
            p = self.start("upstream", [nginx_bin(), "-c", conf, "-g", "daemon off;"], cpus=self.load_cpu)
        wait_port(port, what=f"upstream did not start (see {self.dir}/upstream.log)")
        self.upstream_port = port
        if self.args.broken_upstream:
            # Every proxy gets a port nothing listens on: each proxied
            # request fails (502). For proving that --check catches it.
            self.upstream_port = free_port()
            log(f"--broken-upstream: services point at closed port {self.upstream_port}")
        return p

    def start_nginx(self, workers=1, cpus=None, group=None, worker_connections=16384):
        name = self.uniq("nginx")
        port = free_port()
        conf = os.path.join(self.dir, f"{name}.conf")
        with open(conf, "w") as f:
            f.write(PROXY_CONF.format(d=self.dir, name=name, workers=workers, port=port, up=self.upstream_port,
                                      worker_connections=worker_connections))
        p = self.start(name, [nginx_bin(), "-c", conf, "-g", "daemon off;"],
                       cpus=cpus or self.proxy_cpu, group=group)
        p.port = p.status_port = None
        p.port = port
        wait_port(port, what=f"nginx did not start (see {p.stderr_path})")
        time.sleep(0.2)  # workers up
        return p

    def gateway_env(self, name, port, status_port, workers, extra=None, listen_flags=""):
        env = dict(os.environ,
                   KONG_DATABASE="off",
                   KONG_PROXY_LISTEN=f"127.0.0.1:{port}{listen_flags} reuseport backlog=16384",
                   KONG_STATUS_LISTEN=f"127.0.0.1:{status_port}",
                   KONG_ADMIN_LISTEN="off",
                   KONG_PREFIX=os.path.join(self.dir, name),
                   KONG_PROXY_ACCESS_LOG="off",
                   KONG_PROXY_ERROR_LOG="/dev/stderr",
                   KONG_LOG_LEVEL="info",
                   # As the nginx configs here: load clients' connections
                   # are never cut by keepalive_requests (Kong: 10000).
                   KONG_NGINX_HTTP_KEEPALIVE_REQUESTS="1000000",
                   KONG_NGINX_WORKER_PROCESSES=str(workers))
        env.pop("RUST_LOG", None)
        env.update(extra or {})
        return env

    def start_gateway(self, config=None, workers=1, cpus=None, group=None, env_extra=None,
                      prefix_name=None, wait=True, name="gateway", binary=None, listen_flags=""):
        name = self.uniq(name)
        port, status_port = free_port(), free_port()
        extra = dict(env_extra or {})
        if config is not None:
            path = os.path.join(self.dir, f"{name}.json")
            write_json(path, config)
            extra["KONG_DECLARATIVE_CONFIG"] = path
        env = self.gateway_env(prefix_name or name, port, status_port, workers, extra, listen_flags)
        p = self.start(name, [binary or self.bin("gateway")], env=env, cpus=cpus or self.proxy_cpu, group=group)
        p.port, p.status_port = port, status_port
        p.config_path = extra.get("KONG_DECLARATIVE_CONFIG")
        if wait:
            wait_ready(status_port, 60, what=f"gateway {name} (see {p.stderr_path})")
        return p

    def start_minimal(self, cpus=None):
        port = free_port()
        p = self.start(self.uniq("minimal"), [self.bin("minimal-pingora"), f"127.0.0.1:{port}",
                                              f"127.0.0.1:{self.upstream_port}", "1"],
                       cpus=cpus or self.proxy_cpu)
        p.port = port
        wait_port(port, what=f"minimal pingora did not start (see {p.stderr_path})")
        return p

    def stop(self, p):
        p.stop(signal.SIGTERM if "nginx" in p.name or p.name == "upstream" else signal.SIGINT)
        if p in self.procs:
            self.procs.remove(p)

    def close(self):
        for p in list(self.procs):
            self.stop(p)
        for g in self.groups:
            g.remove()
        if self.args.keep:
            log(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, p, path=BENCH_PATH):
        return f"http://127.0.0.1:{p.port}{path}"

    def measured(self, p, duration, conns, rate=None, path=BENCH_PATH, group=None, headers=None, scheme="http"):
        """One load run against `p` with its CPU time and RSS."""
        pids = p.pids()
        c0 = cpu_seconds(pids)
        t0 = group.throttled() if group else {}
        url = self.url(p, path)
        if scheme == "https":
            url = "https" + url[len("http"):]
        r = self.load.run(url, duration, conns, rate, headers)
        c1 = cpu_seconds(p.pids())
        r["cpu_s"] = c1 - c0
        r["cpu_s_per_10k"] = (c1 - c0) / r["requests"] * 10000 if r["requests"] else None
        r["rss_kib"] = proc_kb(p.pids(), "VmRSS")
        r["peak_rss_kib"] = proc_kb(p.pids(), "VmHWM")
        if group:
            t1 = group.throttled()
            r["throttled_periods"] = t1.get("nr_throttled", 0) - t0.get("nr_throttled", 0)
        return r

    # -- scenarios -------------------------------------------------------

    def throughput(self):
        a = self.args
        targets = {"nginx": self.start_nginx(),
                   "gateway": self.start_gateway(kong_config(self.upstream_port, 1))}
        if not a.smoke:
            targets["gateway-no-metrics"] = self.start_gateway(
                kong_config(self.upstream_port, 1, prometheus=False))
        if a.minimal:
            targets["pingora-minimal"] = self.start_minimal()
        runs = {k: [] for k in targets}
        for rnd in range(a.rounds):
            for name, p in targets.items():
                if a.warmup:
                    self.load.run(self.url(p), a.warmup, 50)
                r = self.measured(p, a.duration, 50)
                runs[name].append(r)
                log(f"throughput round {rnd + 1} {name}: {r['rps']:.0f} req/s p99 {fmt(r['p99_ms'])} ms "
                    f"cpu/10k {fmt(r['cpu_s_per_10k'], 3)} s")
        for p in targets.values():
            self.stop(p)
        summary = {k: summarize(v, ("rps", "p50_ms", "p99_ms", "cpu_s_per_10k", "peak_rss_kib")) for k, v in runs.items()}
        return {"connections": 50, "summary": summary, "runs": runs,
                "ratio": ratios(summary["gateway"], summary["nginx"],
                                ("rps", "p50_ms", "p99_ms", "cpu_s_per_10k", "peak_rss_kib"))}

    def seed(self):
        a = self.args
        out = {"rate": a.seed_rate, "connections": a.seed_conns, "by_cpu": {}}
        if not self.cgroups:
            return {"skipped": cgroup_skip_reason()}
        for cores in (0.2, 0.548):
            gn, gg = self.group("seed-nginx"), self.group("seed-gateway")
            gn.set(cores)
            gg.set(cores)
            targets = {"nginx": (self.start_nginx(group=gn), gn),
                       "gateway": (self.start_gateway(kong_config(self.upstream_port, 1), group=gg,
                                                      env_extra={"KONG_NGINX_WORKER_PROCESSES": "auto"}), gg)}
            runs = {k: [] for k in targets}
            for rnd in range(a.rounds):
                for name, (p, g) in targets.items():
                    r = self.measured(p, a.duration, a.seed_conns, rate=a.seed_rate, group=g)
                    runs[name].append(r)
                    log(f"seed {cores} CPU round {rnd + 1} {name}: {r['rps']:.0f} req/s p99 {fmt(r['p99_ms'])} ms "
                        f"p99.9 {fmt(r['p999_ms'])} ms errors {r['errors']}")
            if cores == 0.2:
                out["max_rate_p99_under_10ms"] = {
                    name: self.max_rate(p, g) for name, (p, g) in targets.items()}
            for p, _ in targets.values():
                self.stop(p)
            summary = {k: summarize(v, ("rps", "p50_ms", "p99_ms", "p999_ms")) for k, v in runs.items()}
            for k, v in runs.items():
                summary[k]["errors"] = sum(x["errors"] for x in v)
                summary[k]["requests"] = sum(x["requests"] for x in v)
            out["by_cpu"][str(cores)] = {"summary": summary, "runs": runs}
        m = out.get("max_rate_p99_under_10ms", {})
        if m.get("nginx") and m.get("gateway"):
            out["max_rate_ratio"] = m["gateway"]["rate"] / m["nginx"]["rate"] if m["nginx"]["rate"] else None
        return out

    def max_rate(self, p, group):
        """Highest fixed rate with p99 < 10 ms and no errors: grow by 1.5x
        until it fails, then bisect."""
        a = self.args
        dur = max(1, a.duration // 2)
        tried = []

        def ok(rate):
            r = self.load.run(self.url(p), dur, a.seed_conns, rate=rate)
            good = (r["p99_ms"] is not None and r["p99_ms"] < 10.0 and r["errors"] == 0
                    and r["rps"] >= 0.95 * rate)
            tried.append({"rate": rate, "p99_ms": r["p99_ms"], "rps": r["rps"], "errors": r["errors"], "ok": good})
            log(f"max-rate {p.name} {rate}/s: p99 {fmt(r['p99_ms'])} ms, {r['rps']:.0f} req/s, "
                f"errors {r['errors']} -> {'ok' if good else 'fail'}")
            return good
        lo, hi = 0, None
        rate = a.max_rate_start
        for _ in range(a.max_rate_steps):
            if ok(rate):
                lo = rate
                rate = int(rate * 1.5)
            else:
                hi = rate
                break
        if hi is not None:
            for _ in range(a.bisect_steps):
                mid = (lo + hi) // 2
                if hi - lo <= max(10, lo // 20):
                    break
                if ok(mid):
                    lo = mid
                else:
                    hi = mid
        return {"rate": lo, "first_failing": hi, "tried": tried}

    def quota(self):
        a = self.args
        if not self.cgroups:
            return {"skipped": cgroup_skip_reason()}
        out = {"connections": 50, "by_cpu": {}}
        for cores in a.quota_levels:
            workers = max(1, math.ceil(cores - 1e-9))
            cpus = self.proxy_cpu if workers == 1 else self.all_cpus
            gn, gg = self.group("quota-nginx"), self.group("quota-gateway")
            gn.set(cores)
            gg.set(cores)
            targets = {"nginx": (self.start_nginx(workers=workers, cpus=cpus, group=gn), gn),
                       "gateway": (self.start_gateway(kong_config(self.upstream_port, 1), workers=workers,
                                                      cpus=cpus, group=gg), gg)}
            runs = {k: [] for k in targets}
            for rnd in range(a.rounds):
                for name, (p, g) in targets.items():
                    r = self.measured(p, a.duration, 50, group=g)
                    runs[name].append(r)
                    log(f"quota {cores} CPU round {rnd + 1} {name}: {r['rps']:.0f} req/s p99 {fmt(r['p99_ms'])} ms")
            for p, _ in targets.values():
                self.stop(p)
            summary = {k: summarize(v, ("rps", "p50_ms", "p99_ms", "cpu_s_per_10k")) for k, v in runs.items()}
            out["by_cpu"][str(cores)] = {"workers": workers, "cpus": cpus, "summary": summary, "runs": runs,
                                         "ratio": ratios(summary["gateway"], summary["nginx"], ("rps",))}
        # Linearity: throughput per core against the 1-CPU figure.
        base = out["by_cpu"].get("1") or out["by_cpu"].get("1.0")
        if base:
            for cores, v in out["by_cpu"].items():
                v["per_core_vs_1cpu"] = {
                    k: (v["summary"][k]["rps"] / float(cores)) / base["summary"][k]["rps"]
                    if base["summary"][k]["rps"] else None for k in ("nginx", "gateway")}
        return out

    def routes(self):
        a = self.args
        targets = {"10 routes": self.start_gateway(kong_config(self.upstream_port, 10)),
                   f"{a.routes} routes": self.start_gateway(kong_config(self.upstream_port, a.routes))}
        runs = {k: [] for k in targets}
        for rnd in range(a.rounds):
            for name, p in targets.items():
                if a.warmup:
                    self.load.run(self.url(p), a.warmup, 50)
                r = self.measured(p, a.duration, 50)
                runs[name].append(r)
                log(f"routes round {rnd + 1} {name}: {r['rps']:.0f} req/s p99 {fmt(r['p99_ms'])} ms")
        for p in targets.values():
            self.stop(p)
        summary = {k: summarize(v, ("rps", "p50_ms", "p99_ms", "cpu_s_per_10k")) for k, v in runs.items()}
        small, big = summary["10 routes"], summary[f"{a.routes} routes"]
        return {"summary": summary, "runs": runs,
                "throughput_ratio": big["rps"] / small["rps"] if small["rps"] else None}

    def apply(self):
        a = self.args
        out = {"rate": a.apply_rate, "connections": 100, "routes": a.routes}
        # SIGHUP: the file is rewritten, then the gateway told to reload it.
        p = self.start_gateway(kong_config(self.upstream_port, 10))
        rows = []
        for rnd in range(a.rounds):
            write_json(p.config_path, kong_config(self.upstream_port, 10))
            os.kill(p.pid, signal.SIGHUP)
            wait_log(p, r"declarative config reloaded", count=2 * rnd + 1, timeout=30)
            base = self.load.run(self.url(p), a.apply_duration, 100, rate=a.apply_rate)
            write_json(p.config_path, kong_config(self.upstream_port, a.routes))

            def hup():
                os.kill(p.pid, signal.SIGHUP)
            r = self.during(p, hup)
            took = wait_log(p, r"declarative config reloaded .* in (\d+) ms", count=2 * rnd + 2, timeout=60)
            r["apply_ms"] = float(took)
            r["baseline_p99_ms"] = base["p99_ms"]
            r["baseline"] = {k: base[k] for k in ("requests", "errors", "error_kinds")}
            rows.append(r)
            log(f"apply (SIGHUP) round {rnd + 1}: {r['apply_ms']} ms, errors {r['errors']}, "
                f"p99 {fmt(r['p99_ms'])} ms (baseline {fmt(base['p99_ms'])} ms)")
        self.stop(p)
        out["sighup"] = {"summary": {**summarize(rows, ("apply_ms", "p99_ms", "baseline_p99_ms", "p999_ms")),
                                     "errors": sum(x["errors"] for x in rows)}, "runs": rows}
        # Control-plane push over the hybrid protocol.
        cp = self.start_cp()
        if cp is None:
            out["cp_push"] = {"skipped": "bench-cp binary not built"}
            return out
        try:
            cp_send(cp, f"push 10 {self.upstream_port}")
            p = self.start_gateway(env_extra=cp.env, wait=True)
            rows = []
            for rnd in range(a.rounds):
                h = cp_send(cp, f"push {11 + rnd} {self.upstream_port}")["hash"]
                cp_wait_ping(cp, h, 20)
                base = self.load.run(self.url(p, "/a"), a.apply_duration, 100, rate=a.apply_rate)
                pushed = []
                r = self.during(p, lambda: pushed.append(
                    cp_send(cp, f"push {a.routes + rnd} {self.upstream_port}")["hash"]), path="/a")
                took = wait_log(p, rf"applied config {pushed[0]} in (\d+) ms", timeout=60)
                r["apply_ms"] = float(took)
                r["baseline_p99_ms"] = base["p99_ms"]
                r["baseline"] = {k: base[k] for k in ("requests", "errors", "error_kinds")}
                rows.append(r)
                log(f"apply (CP push) round {rnd + 1}: {r['apply_ms']} ms, errors {r['errors']}, "
                    f"p99 {fmt(r['p99_ms'])} ms (baseline {fmt(base['p99_ms'])} ms)")
            self.stop(p)
            out["cp_push"] = {"summary": {**summarize(rows, ("apply_ms", "p99_ms", "baseline_p99_ms", "p999_ms")),
                                          "errors": sum(x["errors"] for x in rows)}, "runs": rows}
        finally:
            self.stop(cp)
        return out

    def during(self, p, action, path=BENCH_PATH):
        """A fixed-rate run with `action` fired a third of the way in."""
        a = self.args
        result, failed = {}, []

        def drive():
            try:
                result.update(self.load.run(self.url(p, path), a.apply_duration, 100, rate=a.apply_rate))
            except Exception as e:  # noqa: BLE001 -- re-raised below, in the caller's thread
                failed.append(e)
        t = threading.Thread(target=drive)
        t.start()
        try:
            time.sleep(a.apply_duration / 3)
            action()
        finally:
            t.join()
        if failed:
            raise failed[0]
        return result

    def start_cp(self):
        if not os.path.exists(self.bin("bench-cp")):
            return None
        cp = self.start(self.uniq("bench-cp"), [self.bin("bench-cp")], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE)
        line = cp.p.stdout.readline()
        try:
            info = json.loads(line)
        except json.JSONDecodeError:
            self.stop(cp)
            raise BenchError(f"bench-cp did not start (said {line!r}); see {cp.stderr_path}")
        cp.env = info["env"]
        return cp

    def push(self):
        """Control-plane pushes to an idle data plane, for each size in
        --push-sizes: push to the DP's ping with the new hash (as the CP
        sees it, which is how Kong's CP learns a DP applied a config), the
        DP's own apply time and its validate / compile split (debug log),
        and a request to the last route of the new config."""
        a = self.args
        cp = self.start_cp()
        if cp is None:
            return {"skipped": "bench-cp binary not built"}
        out = {"by_routes": {}}
        try:
            h = cp_send(cp, f"push 1 {self.upstream_port}")["hash"]
            p = self.start_gateway(env_extra={**cp.env, "KONG_LOG_LEVEL": "debug"}, wait=True)
            cp_wait_ping(cp, h, 30)
            for n in a.push_sizes:
                rows = []
                for rnd in range(a.rounds):
                    routes = n + rnd  # a different config (and hash) each round
                    t0 = time.monotonic()
                    h = cp_send(cp, f"push {routes} {self.upstream_port}")["hash"]
                    cp_wait_ping(cp, h, 120)
                    push_to_ping = (time.monotonic() - t0) * 1000
                    took = wait_log(p, rf"applied config {h} in (\d+) ms", timeout=30)
                    split = re.findall(r"\[clustering\] validate (\d+) ms, compile (\d+) ms", p.log_text())
                    row = {"push_to_ping_ms": push_to_ping, "apply_ms": float(took),
                           "validate_ms": float(split[-1][0]) if split else None,
                           "compile_ms": float(split[-1][1]) if split else None,
                           "last_route_status": get(p.port, f"/r{routes - 1}")}
                    rows.append(row)
                    log(f"push {routes} routes round {rnd + 1}: push->ping {push_to_ping:.0f} ms, "
                        f"DP apply {took} ms (validate {fmt(row['validate_ms'], 0)}, compile "
                        f"{fmt(row['compile_ms'], 0)}), GET /r{routes - 1} -> {row['last_route_status']}")
                out["by_routes"][str(n)] = {
                    "summary": summarize(rows, ("push_to_ping_ms", "apply_ms", "validate_ms", "compile_ms")),
                    "runs": rows}
            self.stop(p)
        finally:
            self.stop(cp)
        return out

    def plugins(self):
        """The plugin runtime's cost per request: one gateway with a route
        per plugin set (PLUGIN_ROUTES, no global plugins), each driven at
        max throughput with the same headers, nginx alongside; with
        --baseline-bin, the binary from before the plugin runtime and this
        one on the same one-route, plugin-less config. Probes check that the
        plugins really run (401 without the key, CORS and metrics)."""
        a = self.args
        targets = {"nginx": (self.start_nginx(), "/none")}
        gw = self.start_gateway(plugins_config(self.upstream_port))
        for path in PLUGIN_ROUTES:
            targets[f"gateway {path}"] = (gw, path)
        if a.baseline_bin:
            if not os.access(a.baseline_bin, os.X_OK):
                raise BenchError(f"--baseline-bin {a.baseline_bin}: not an executable")
            bare = plugins_config(self.upstream_port, {"/none": []})
            targets["before /none"] = (self.start_gateway(bare, binary=a.baseline_bin, name="before"), "/none")
            targets["after /none"] = (self.start_gateway(bare, name="after"), "/none")
        probes = []
        for path in PLUGIN_ROUTES:
            st, hdrs = request_head(gw.port, path, PLUGIN_HEADERS)
            probes.append({"what": f"gateway GET {path} with the key", "got": st, "want": 200})
            if path in ("/keyauth", "/full"):
                st, _ = request_head(gw.port, path, {})
                probes.append({"what": f"gateway GET {path} without a key", "got": st, "want": 401})
            if path == "/full":
                probes.append({"what": "gateway GET /full: Access-Control-Allow-Origin",
                               "got": hdrs.get("access-control-allow-origin"),
                               "want": PLUGIN_HEADERS["Origin"]})
        for name, (p, path) in targets.items():
            if not name.startswith("gateway"):
                probes.append({"what": f"{name} GET {path}", "got": request_head(p.port, path, PLUGIN_HEADERS)[0],
                               "want": 200})
        runs = {k: [] for k in targets}
        for rnd in range(a.rounds):
            for name, (p, path) in targets.items():
                if a.warmup:
                    self.load.run(self.url(p, path), a.warmup, 50, headers=PLUGIN_HEADERS)
                r = self.measured(p, a.duration, 50, path=path, headers=PLUGIN_HEADERS)
                runs[name].append(r)
                log(f"plugins round {rnd + 1} {name}: {r['rps']:.0f} req/s p99 {fmt(r['p99_ms'])} ms "
                    f"cpu/10k {fmt(r['cpu_s_per_10k'], 3)} s")
        # The prometheus plugin counted the routes it is on, and only those.
        metrics = http_get_text(gw.status_port, "/metrics")
        for route, want in (("prom", True), ("full", True), ("none", False), ("keyauth", False)):
            seen = bool(re.search(rf'^kong_http_requests_total\{{[^}}]*route="{route}"', metrics, re.M))
            probes.append({"what": f"/metrics has route {route}'s requests", "got": seen, "want": want})
        stopped = set()
        for p, _ in targets.values():
            if id(p) not in stopped:
                stopped.add(id(p))
                self.stop(p)
        keys = ("rps", "p50_ms", "p99_ms", "cpu_s_per_10k", "peak_rss_kib")
        summary = {k: summarize(v, keys) for k, v in runs.items()}
        none, ng = summary["gateway /none"], summary["nginx"]
        out = {"connections": 50, "headers": PLUGIN_HEADERS, "routes": {k: [x["name"] for x in v]
                                                                       for k, v in PLUGIN_ROUTES.items()},
               "summary": summary, "runs": runs, "probes": probes,
               "vs_none": {k: ratios(v, none, ("rps", "cpu_s_per_10k")) for k, v in summary.items()
                           if k.startswith("gateway")},
               "vs_nginx": {k: ratios(v, ng, ("rps", "cpu_s_per_10k")) for k, v in summary.items()
                            if k != "nginx"},
               # CPU per request over the route without plugins, in µs.
               "cpu_us_over_none": {k: (v["cpu_s_per_10k"] - none["cpu_s_per_10k"]) * 100
                                    if v.get("cpu_s_per_10k") is not None and none.get("cpu_s_per_10k") is not None
                                    else None
                                    for k, v in summary.items() if k.startswith("gateway")}}
        if a.baseline_bin:
            out["baseline_bin"] = a.baseline_bin
            out["after_vs_before"] = ratios(summary["after /none"], summary["before /none"],
                                            ("rps", "p99_ms", "cpu_s_per_10k", "peak_rss_kib"))
        return out

    def start_redis(self):
        exe = shutil.which("redis-server")
        if not exe:
            raise BenchError("limits: redis-server is not installed (scripts/setup installs it)")
        port = free_port()
        p = self.start(self.uniq("redis"), [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                            "--appendonly", "no", "--dir", self.dir],
                       cpus=self.load_cpu)
        p.port = port
        wait_port(port, what=f"redis-server did not start (see {p.stderr_path})")
        return p

    def start_nginx_cache(self):
        name = self.uniq("nginx-cache")
        port = free_port()
        conf = os.path.join(self.dir, f"{name}.conf")
        with open(conf, "w") as f:
            # Workers write the cache files: under root they would run as
            # `nobody`, which cannot enter the run's private directory.
            user = "user root;\n" if os.geteuid() == 0 else ""
            f.write(CACHE_CONF.format(user=user, d=self.dir, name=name, port=port, up=self.upstream_port))
        p = self.start(name, [nginx_bin(), "-c", conf, "-g", "daemon off;"], cpus=self.proxy_cpu)
        p.port = port
        wait_port(port, what=f"nginx did not start (see {p.stderr_path})")
        time.sleep(0.2)
        return p

    def limits(self):
        """rate-limiting's cost per request with each policy, and
        proxy-cache's hit path, against a route without plugins and nginx
        (plain and with proxy_cache), at max throughput over 50
        connections. Redis runs beside the load generator; its CPU per
        request is reported too (the counting costs it, not the proxy).
        Probes check that the plugins really ran: rate-limit headers, Redis
        keys with Kong's names, cache hits."""
        a = self.args
        redis = self.start_redis()
        gw = self.start_gateway(limits_config(self.upstream_port, redis.port))
        nginx, nginx_cache = self.start_nginx(), self.start_nginx_cache()
        targets = {"nginx": (nginx, "/none"), "nginx proxy_cache": (nginx_cache, "/cache")}
        for path in ("/none", "/rl-local", "/rl-redis", "/rl-redis-batched", "/cache"):
            targets[f"gateway {path}"] = (gw, path)
        probes = []
        for path in ("/rl-local", "/rl-redis", "/rl-redis-batched"):
            st, hdrs = request_head(gw.port, path, {})
            probes.append({"what": f"gateway GET {path}", "got": st, "want": 200})
            probes.append({"what": f"gateway GET {path}: X-RateLimit-Limit-Hour",
                           "got": hdrs.get("x-ratelimit-limit-hour"), "want": str(LIMIT_NEVER)})
        for name, (p, path) in (("gateway", (gw, "/cache")), ("nginx proxy_cache", (nginx_cache, "/cache"))):
            request_head(p.port, path, {})
            st, hdrs = request_head(p.port, path, {})
            probes.append({"what": f"{name} GET {path} twice: status", "got": st, "want": 200})
            probes.append({"what": f"{name} GET {path} twice: X-Cache-Status",
                           "got": (hdrs.get("x-cache-status") or "").lower(), "want": "hit"})
        probes.append({"what": "nginx GET /none", "got": request_head(nginx.port, "/none", {})[0], "want": 200})
        runs = {k: [] for k in targets}
        redis_cpu = {k: [] for k in targets}
        for rnd in range(a.rounds):
            for name, (p, path) in targets.items():
                if a.warmup:
                    self.load.run(self.url(p, path), a.warmup, 50)
                r0 = cpu_seconds(redis.pids())
                r = self.measured(p, a.duration, 50, path=path)
                r1 = cpu_seconds(redis.pids())
                r["redis_cpu_s_per_10k"] = (r1 - r0) / r["requests"] * 10000 if r["requests"] else None
                runs[name].append(r)
                log(f"limits round {rnd + 1} {name}: {r['rps']:.0f} req/s p99 {fmt(r['p99_ms'])} ms "
                    f"cpu/10k {fmt(r['cpu_s_per_10k'], 3)} s, redis {fmt(r['redis_cpu_s_per_10k'], 3)} s")
        keys = redis_keys(redis.port, "ratelimit:*")
        probes.append({"what": "redis has Kong-named ratelimit:* keys", "got": bool(keys), "want": True})
        for p in (gw, nginx, nginx_cache, redis):
            self.stop(p)
        fields = ("rps", "p50_ms", "p99_ms", "cpu_s_per_10k", "redis_cpu_s_per_10k", "peak_rss_kib")
        summary = {k: summarize(v, fields) for k, v in runs.items()}
        none = summary["gateway /none"]
        return {"connections": 50, "limit": LIMIT_NEVER, "redis_keys": (keys or [])[:10],
                "summary": summary, "runs": runs, "probes": probes,
                "vs_none": {k: ratios(v, none, ("rps", "cpu_s_per_10k")) for k, v in summary.items()
                            if k.startswith("gateway")},
                "vs_nginx": {k: ratios(v, summary["nginx"], ("rps", "cpu_s_per_10k"))
                             for k, v in summary.items() if k != "nginx"},
                "cache_vs_nginx_cache": ratios(summary["gateway /cache"], summary["nginx proxy_cache"],
                                               ("rps", "p99_ms", "cpu_s_per_10k")),
                "cpu_us_over_none": {k: (v["cpu_s_per_10k"] - none["cpu_s_per_10k"]) * 100
                                     if v.get("cpu_s_per_10k") is not None
                                     and none.get("cpu_s_per_10k") is not None else None
                                     for k, v in summary.items() if k.startswith("gateway")}}

    def make_cert(self, kind):
        """A self-signed certificate for 127.0.0.1 (`ec` P-256 or `rsa`
        2048), made with the openssl command line."""
        cert, key = os.path.join(self.dir, f"{kind}.crt"), os.path.join(self.dir, f"{kind}.key")
        algo = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"] if kind == "ec"
                else ["-newkey", "rsa:2048"])
        out = subprocess.run(["openssl", "req", "-x509", *algo, "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                              "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise BenchError(f"tls: openssl could not make a {kind} certificate: {out.stderr.strip()[:300]}")
        return cert, key

    def start_nginx_tls(self, cert, key):
        name = self.uniq("nginx-tls")
        port = free_port()
        conf = os.path.join(self.dir, f"{name}.conf")
        with open(conf, "w") as f:
            f.write(TLS_CONF.format(d=self.dir, name=name, port=port, up=self.upstream_port, cert=cert, key=key))
        p = self.start(name, [nginx_bin(), "-c", conf, "-g", "daemon off;"], cpus=self.proxy_cpu)
        p.port = port
        wait_port(port, what=f"nginx did not start (see {p.stderr_path})")
        time.sleep(0.2)
        return p

    def handshakes(self, p, duration):
        """Full handshakes for `duration` s from two `openssl s_time -new`
        clients (no session reuse, nothing sent), with the server's CPU."""
        cmd = ["openssl", "s_time", "-connect", f"127.0.0.1:{p.port}", "-new", "-time", str(duration)]
        pids = p.pids()
        c0 = cpu_seconds(pids)
        procs = [subprocess.Popen(self.load._taskset(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for _ in range(2)]
        n = 0
        outs = []
        for q in procs:
            try:
                out, _ = q.communicate(timeout=duration + 30)
            except subprocess.TimeoutExpired:
                q.kill()
                raise BenchError("tls: openssl s_time did not finish")
            outs.append(out)
            m = re.search(r"(\d+) connections in [\d.]+s", out)
            n += int(m.group(1)) if m else 0
        cpu = cpu_seconds(p.pids()) - c0
        return {"handshakes": n, "per_s": n / duration, "cpu_s": cpu,
                "cpu_us_per_handshake": cpu / n * 1e6 if n else None,
                "per_cpu_s": n / cpu if cpu > 0 else None,
                "ok": n > 0, "client_output": outs[0][-300:] if not n else ""}

    def tls(self):
        """TLS termination against nginx on the same certificate: full
        handshakes per second and per CPU-second of the server (openssl
        s_time -new: a full handshake each, nothing sent), then requests
        over 50 kept-alive TLS connections, for an ECDSA P-256 and an RSA
        2048 certificate."""
        a = self.args
        if not shutil.which("openssl"):
            raise BenchError("tls: the openssl command is not installed")
        out = {}
        probes = []
        for kind in ("ec", "rsa"):
            cert, key = self.make_cert(kind)
            cfg = {"_format_version": "3.0", "services": [
                {"name": "svc", "url": f"http://127.0.0.1:{self.upstream_port}",
                 "routes": [{"name": "r", "paths": ["/"]}]}]}
            gw = self.start_gateway(cfg, listen_flags=" ssl",
                                    env_extra={"KONG_SSL_CERT": cert, "KONG_SSL_CERT_KEY": key})
            ng = self.start_nginx_tls(cert, key)
            targets = {"nginx": ng, "gateway": gw}
            for name, p in targets.items():
                st = https_status(p.port, "/get")
                probes.append({"what": f"{kind}: {name} GET https://127.0.0.1/get", "got": st, "want": 200})
            hs = {k: [] for k in targets}
            ka = {k: [] for k in targets}
            for rnd in range(a.rounds):
                for name, p in targets.items():
                    h = self.handshakes(p, a.duration)
                    hs[name].append(h)
                    r = self.measured(p, a.duration, 50, path="/get", scheme="https")
                    ka[name].append(r)
                    log(f"tls {kind} round {rnd + 1} {name}: {h['per_s']:.0f} handshakes/s "
                        f"({fmt(h['cpu_us_per_handshake'], 0)} µs CPU each); keep-alive {r['rps']:.0f} req/s "
                        f"cpu/10k {fmt(r['cpu_s_per_10k'], 3)} s")
            for p in targets.values():
                self.stop(p)
            for name in targets:
                probes.append({"what": f"{kind}: {name} completed full handshakes",
                               "got": all(h["ok"] for h in hs[name]), "want": True})
            hsum = {k: summarize(v, ("per_s", "cpu_us_per_handshake", "per_cpu_s")) for k, v in hs.items()}
            ksum = {k: summarize(v, ("rps", "p50_ms", "p99_ms", "cpu_s_per_10k")) for k, v in ka.items()}
            out[kind] = {"handshakes": hsum, "keepalive": ksum, "handshake_runs": hs, "runs": ka,
                         "gateway_vs_nginx": {
                             "handshakes_per_cpu_s": ratios(hsum["gateway"], hsum["nginx"], ("per_cpu_s",)),
                             "keepalive": ratios(ksum["gateway"], ksum["nginx"], ("rps", "cpu_s_per_10k"))}}
        out["probes"] = probes
        out["runs"] = {f"{kind} {name}": out[kind]["runs"][name] for kind in ("ec", "rsa")
                       for name in ("nginx", "gateway")}
        return out

    # -- HTTP/2 and gRPC ---------------------------------------------------

    def with_cpu(self, p, run, extra=None):
        """`run()`'s load result with the CPU time and RSS of `p` (and the
        CPU of each process in `extra`, name -> Proc, as NAME_cpu_s_per_10k)
        over that run: measured() for load tools other than oha/wrk."""
        extra = extra or {}
        c0 = cpu_seconds(p.pids())
        e0 = {k: cpu_seconds(q.pids()) for k, q in extra.items()}
        r = run()
        c1 = cpu_seconds(p.pids())
        n = r.get("requests") or 0
        r["cpu_s"] = c1 - c0
        r["cpu_s_per_10k"] = (c1 - c0) / n * 10000 if n else None
        for k, q in extra.items():
            r[f"{k}_cpu_s_per_10k"] = (cpu_seconds(q.pids()) - e0[k]) / n * 10000 if n else None
        r["rss_kib"] = proc_kb(p.pids(), "VmRSS")
        r["peak_rss_kib"] = proc_kb(p.pids(), "VmHWM")
        return r

    def h2load(self, p, tls, duration):
        """A timed h2load run (H2_CONNS connections, H2_STREAMS streams on
        each, one thread on the load CPU) of GET /get against `p`."""
        url = f"{'https' if tls else 'http'}://127.0.0.1:{p.port}{BENCH_PATH}"
        cmd = ["h2load", "-D", str(duration), "-c", str(H2_CONNS), "-m", str(H2_STREAMS), "-t", "1", url]
        run = subprocess.run(self.load._taskset(cmd), capture_output=True, text=True,
                             timeout=duration + self.load.slack)
        return parse_h2load(run.stdout + run.stderr, url, duration)

    def start_nginx_h2(self, tls, cert=None, key=None):
        name = self.uniq("nginx-h2")
        port = free_port()
        conf = os.path.join(self.dir, f"{name}.conf")
        with open(conf, "w") as f:
            f.write(H2_CONF.format(d=self.dir, name=name, up=self.upstream_port,
                                   listen=nginx_h2_listen(port, tls, nginx_version()),
                                   tls=H2_TLS_LINES.format(cert=cert, key=key) if tls else ""))
        p = self.start(name, [nginx_bin(), "-c", conf, "-g", "daemon off;"], cpus=self.proxy_cpu)
        p.port = port
        wait_port(port, what=f"nginx did not start (see {p.stderr_path})")
        time.sleep(0.2)
        return p

    def h2(self):
        """HTTP/2 requests against nginx on the same upstream: h2load, GET
        /get over H2_CONNS connections with H2_STREAMS concurrent streams
        each, over TLS (ALPN h2; the gateway's `http2 ssl` listener, an
        ECDSA P-256 certificate) and as h2c (prior knowledge; an `http2`
        listener). The upstream side is HTTP/1.1 as everywhere else. Probes
        check that h2load really spoke h2 / h2c."""
        a = self.args
        if not shutil.which("h2load"):
            # Skipped, not raised: a full run keeps the other scenarios'
            # results; --check still fails on it.
            return {"skipped": "h2load is not installed (scripts/setup installs nghttp2-client)"}
        cert, key = self.make_cert("ec")
        out, probes = {"connections": H2_CONNS, "streams": H2_STREAMS}, []
        for variant, tls in (("h2", True), ("h2c", False)):
            gw = self.start_gateway(h2_config(self.upstream_port), listen_flags=" http2 ssl" if tls else " http2",
                                    env_extra={"KONG_SSL_CERT": cert, "KONG_SSL_CERT_KEY": key} if tls else None)
            targets = {"nginx": self.start_nginx_h2(tls, cert, key), "gateway": gw}
            runs = {k: [] for k in targets}
            for rnd in range(a.rounds):
                for name, p in targets.items():
                    if a.warmup:
                        self.h2load(p, tls, a.warmup)
                    r = self.with_cpu(p, lambda: self.h2load(p, tls, a.duration))
                    runs[name].append(r)
                    log(f"h2 {variant} round {rnd + 1} {name}: {r['rps']:.0f} req/s mean {fmt(r['mean_ms'])} ms "
                        f"cpu/10k {fmt(r['cpu_s_per_10k'], 3)} s errors {r['errors']}")
            for p in targets.values():
                self.stop(p)
            for name in targets:
                probes.append({"what": f"{variant}: h2load spoke {variant} to {name}",
                               "got": runs[name][0].get("protocol"), "want": variant})
            keys = ("rps", "mean_ms", "cpu_s_per_10k", "peak_rss_kib")
            summary = {k: summarize(v, keys) for k, v in runs.items()}
            out[variant] = {"summary": summary, "runs": runs,
                            "ratio": ratios(summary["gateway"], summary["nginx"], keys)}
        out["probes"] = probes
        out["runs"] = {f"{variant} {name}": out[variant]["runs"][name] for variant in ("h2", "h2c")
                       for name in ("nginx", "gateway")}
        return out

    def grpc_load(self, p, duration=None, probe=False):
        """grpc-load against `p` (h2c): a timed run, or with `probe` one
        call whose answer it reports."""
        url = f"http://127.0.0.1:{p.port}"
        cmd = [self.bin("grpc-load"), "--url", url]
        if probe:
            cmd.append("--probe")
        else:
            cmd += ["--connections", str(GRPC_CONNS), "--concurrency", str(GRPC_CONCURRENCY),
                    "--duration", str(duration)]
        run = subprocess.run(self.load._taskset(cmd), capture_output=True, text=True,
                             timeout=(duration or 0) + self.load.slack)
        if probe:
            try:
                return json.loads(run.stdout)
            except json.JSONDecodeError:
                raise BenchError(f"grpc-load --probe gave no JSON for {url}: {run.stderr.strip()[-500:]}")
        return parse_grpc_load(run.stdout, run.stderr, url)

    def start_grpc_echo(self):
        port = free_port()
        p = self.start("grpc-echo", [self.bin("grpc-echo"), "--port", str(port)], cpus=self.load_cpu)
        p.port = port
        wait_port(port, what=f"grpc-echo did not start (see {p.stderr_path})")
        return p

    def start_nginx_grpc(self, echo_port):
        name = self.uniq("nginx-grpc")
        port = free_port()
        conf = os.path.join(self.dir, f"{name}.conf")
        with open(conf, "w") as f:
            f.write(GRPC_CONF.format(d=self.dir, name=name, up=echo_port,
                                     listen=nginx_h2_listen(port, False, nginx_version())))
        p = self.start(name, [nginx_bin(), "-c", conf, "-g", "daemon off;"], cpus=self.proxy_cpu)
        p.port = port
        wait_port(port, what=f"nginx did not start (see {p.stderr_path})")
        time.sleep(0.2)
        return p

    def grpc(self):
        """Unary gRPC calls through the gateway (a `grpc` route and service
        on an h2c `http2` listener) and through nginx's grpc_pass, to the
        grpc-echo server on the load generator's CPU: grpc-load with
        GRPC_CONCURRENCY calls in flight over GRPC_CONNS connections. The
        echo server's CPU per call is reported too. Probes: one call through
        each proxy comes back with its reply and its trailer."""
        a = self.args
        if not (os.path.exists(self.bin("grpc-echo")) and os.path.exists(self.bin("grpc-load"))):
            # As h2 without h2load: the rest of a full run still counts.
            return {"skipped": f"grpc-echo and grpc-load are not built in {a.bin_dir} "
                               "(cargo build -p gw-tests --bin grpc-echo --bin grpc-load)"}
        echo = self.start_grpc_echo()
        # --broken-upstream: both proxies point at a closed port instead.
        echo_port = free_port() if a.broken_upstream else echo.port
        targets = {"nginx": self.start_nginx_grpc(echo_port),
                   "gateway": self.start_gateway(grpc_config(echo_port), listen_flags=" http2")}
        probes = []
        for name, p in targets.items():
            pr = self.grpc_load(p, probe=True)
            probes.append({"what": f"{name}: a unary call's reply", "got": pr.get("message") or pr.get("code"),
                           "want": "probe"})
            probes.append({"what": f"{name}: the call's trailer x-echo-trailer", "got": pr.get("trailer"),
                           "want": "probe-trailer"})
        runs = {k: [] for k in targets}
        for rnd in range(a.rounds):
            for name, p in targets.items():
                if a.warmup:
                    self.grpc_load(p, a.warmup)
                r = self.with_cpu(p, lambda: self.grpc_load(p, a.duration), extra={"echo": echo})
                runs[name].append(r)
                log(f"grpc round {rnd + 1} {name}: {r['rps']:.0f} calls/s p99 {fmt(r['p99_ms'])} ms "
                    f"cpu/10k {fmt(r['cpu_s_per_10k'], 3)} s (echo {fmt(r['echo_cpu_s_per_10k'], 3)} s) "
                    f"errors {r['errors']}")
        for p in list(targets.values()) + [echo]:
            self.stop(p)
        keys = ("rps", "p50_ms", "p90_ms", "p99_ms", "cpu_s_per_10k", "echo_cpu_s_per_10k", "peak_rss_kib")
        summary = {k: summarize(v, keys) for k, v in runs.items()}
        return {"connections": GRPC_CONNS, "concurrency": GRPC_CONCURRENCY, "summary": summary, "runs": runs,
                "probes": probes, "ratio": ratios(summary["gateway"], summary["nginx"], keys)}

    def memory(self):
        """Memory of each proxy idle and holding mem_conns kept-alive
        connections (each after one proxied request), as PSS summed over
        the proxy's processes (VmRSS sums count nginx's shared pages twice).
        nginx runs with worker_connections 4096 here: 16384 preallocates
        connection structures these figures are not about."""
        out = {}
        rounds, rss_rounds = [], []
        # Status of every request made to warm up / hold connections: the
        # figures only mean something if the proxy really proxied.
        probes = out["probes"] = []
        for rnd in range(self.args.rounds):
            row, rss = {}, {}
            for name, start in (("nginx", lambda: self.start_nginx(worker_connections=4096)),
                                ("gateway", lambda: self.start_gateway(kong_config(self.upstream_port, 1)))):
                p = start()
                probes.append({"what": f"{name} GET {BENCH_PATH}", "status": get(p.port, BENCH_PATH)})
                time.sleep(0.5)
                row[f"{name} idle"] = proc_pss_kib(p.pids())
                rss[f"{name} idle"] = proc_kb(p.pids(), "VmRSS")
                socks, statuses = open_conns(p.port, self.args.mem_conns)
                bad = [st for st in statuses if st != 200]
                probes.append({"what": f"{name} {len(statuses)} held connections, non-200 answers",
                               "status": 200 if not bad and statuses else bad[:5] or None})
                time.sleep(0.5)
                row[f"{name} {self.args.mem_conns} conns"] = proc_pss_kib(p.pids())
                rss[f"{name} {self.args.mem_conns} conns"] = proc_kb(p.pids(), "VmRSS")
                for s in socks:
                    s.close()
                self.stop(p)
            p = self.start_gateway(kong_config(self.upstream_port, self.args.routes))
            probes.append({"what": f"gateway with {self.args.routes} routes GET {BENCH_PATH}",
                           "status": get(p.port, BENCH_PATH)})
            time.sleep(0.5)
            row[f"gateway idle, {self.args.routes} routes"] = proc_pss_kib(p.pids())
            rss[f"gateway idle, {self.args.routes} routes"] = proc_kb(p.pids(), "VmRSS")
            self.stop(p)
            rounds.append(row)
            rss_rounds.append(rss)
            log(f"memory round {rnd + 1} (PSS): " + ", ".join(f"{k} {v / 1024:.1f} MiB" for k, v in row.items()))
        out["pss_kib"] = {k: median([r[k] for r in rounds]) for k in rounds[0]}
        out["rss_kib"] = {k: median([r[k] for r in rss_rounds]) for k in rss_rounds[0]}
        out["runs"] = rounds
        n = self.args.mem_conns
        g, ng = out["pss_kib"][f"gateway {n} conns"], out["pss_kib"][f"nginx {n} conns"]
        out["ratio_conns"] = g / ng if ng else None
        gi, ni = out["pss_kib"]["gateway idle"], out["pss_kib"]["nginx idle"]
        out["per_conn_kib"] = {"gateway": (g - gi) / n if n else None, "nginx": (ng - ni) / n if n else None}
        return out

    def coldstart(self):
        a = self.args
        out = {"routes": a.routes}
        # Declarative file.
        cfg = os.path.join(self.dir, "coldstart.json")
        write_json(cfg, kong_config(self.upstream_port, a.routes))
        times, probes = [], []
        for _ in range(a.rounds):
            took, status = self.time_to_ready({"KONG_DECLARATIVE_CONFIG": cfg}, "cold-file", probe=BENCH_PATH)
            times.append(took)
            probes.append(status)
        out["declarative_file_ms"] = {"median": median(times), "runs": times, "probe_status": probes}
        # Cached control-plane config: a DP gets the config once and writes
        # its cache; later starts find the CP gone and serve the cache.
        cp = self.start_cp()
        if cp is None:
            out["cp_cache_ms"] = {"skipped": "bench-cp binary not built"}
            return out
        prefix = "cold-cache"
        try:
            h = cp_send(cp, f"push {a.routes} {self.upstream_port}")["hash"]
            env = dict(cp.env)
            p = self.start_gateway(env_extra=env, prefix_name=prefix, wait=True)
            cp_wait_ping(cp, h, 30)
            wait_log(p, r"] persisted config to ", timeout=30)
            self.stop(p)
        finally:
            self.stop(cp)
        env = dict(cp.env)  # the CP is gone: its port refuses
        times, probes = [], []
        for _ in range(a.rounds):
            took, status = self.time_to_ready(env, "cold-cache", prefix_name=prefix, probe="/a")
            times.append(took)
            probes.append(status)
        out["cp_cache_ms"] = {"median": median(times), "runs": times, "probe_status": probes}
        return out

    def time_to_ready(self, env_extra, name, prefix_name=None, probe=BENCH_PATH):
        """Milliseconds from spawn to /status/ready 200, and the status of a
        `probe` request made once ready (the config must really route)."""
        port, status_port = free_port(), free_port()
        pname = self.uniq(name)
        env = self.gateway_env(prefix_name or pname, port, status_port, 1, env_extra)
        t0 = time.monotonic()
        p = self.start(pname, [self.bin("gateway")], env=env, cpus=self.proxy_cpu)
        try:
            wait_ready(status_port, 60, interval=0.001, what=f"gateway {pname} (see {p.stderr_path})")
            took = (time.monotonic() - t0) * 1000
            status = get(port, probe)
        finally:
            self.stop(p)
        log(f"coldstart {name}: {took:.1f} ms, GET {probe} -> {status}")
        return took, status


# ---------------------------------------------------------------------------
# Small helpers.

def nginx_bin():
    for p in ("/usr/sbin/nginx", shutil.which("nginx")):
        if p and os.path.exists(p):
            return p
    sys.exit("nginx not found (scripts/setup installs nginx-light)")


def nginx_version():
    """nginx's version as a tuple, (0,) when `nginx -v` does not say."""
    try:
        out = subprocess.run([nginx_bin(), "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return (0,)
    m = re.search(r"nginx/(\d+(?:\.\d+)*)", out.stderr + out.stdout)
    return tuple(int(x) for x in m.group(1).split(".")) if m else (0,)


def nginx_h2_listen(port, tls, version):
    """An HTTP/2 listen directive: `http2 on;` from nginx 1.25.1 on, the
    listen parameter `http2` before (Debian 12 ships 1.22)."""
    ssl = " ssl" if tls else ""
    if version >= (1, 25, 1):
        return f"listen 127.0.0.1:{port}{ssl} backlog=16384;\n    http2 on;"
    return f"listen 127.0.0.1:{port}{ssl} http2 backlog=16384;"


def get(port, path, timeout=2.0):
    """Status of one GET, or None when it cannot connect."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            return int(data.split(b" ", 2)[1])
    except (OSError, IndexError, ValueError):
        return None


def request_head(port, path, headers, timeout=2.0):
    """Status and lower-cased response headers of one GET with `headers`;
    (None, {}) when it cannot connect or the answer does not parse."""
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        hdrs = {}
        for line in head[1:]:
            k, sep, v = line.partition(":")
            if sep:
                hdrs[k.strip().lower()] = v.strip()
        return int(head[0].split(" ", 2)[1]), hdrs
    except (OSError, IndexError, ValueError):
        return None, {}


def https_status(port, path, timeout=5.0):
    """The status of one GET over TLS (certificate not checked), None when
    it fails."""
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while b"\r\n" not in data:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
        return int(data.split(b" ", 2)[1])
    except (OSError, IndexError, ValueError):
        return None


def http_get_text(port, path, timeout=5.0):
    """The body of one GET (Connection: close), '' when it fails."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return ""
    head, _, body = data.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            try:
                n = int(size.split(b";")[0], 16)
            except ValueError:
                break
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    return body.decode("utf-8", "replace")


def wait_ready(status_port, timeout, interval=0.01, what="gateway"):
    """Waits for /status/ready 200; raises BenchError on timeout."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = get(status_port, "/status/ready", timeout=1.0)
        if last == 200:
            return True
        time.sleep(interval)
    raise BenchError(f"{what}: /status/ready on port {status_port} not 200 within {timeout} s "
                     f"(last answer: {last if last is not None else 'no connection'})")


def wait_log(p, pattern, count=1, timeout=30):
    """Waits for the `count`-th match of `pattern` in p's log; returns its
    first group (or True). Raises BenchError on timeout."""
    rx = re.compile(pattern)
    end = time.monotonic() + timeout
    while True:
        found = list(rx.finditer(p.log_text()))
        if len(found) >= count:
            m = found[count - 1]
            return m.group(1) if m.groups() else True
        if time.monotonic() >= end:
            raise BenchError(f"'{pattern}' (#{count}) not seen in {p.stderr_path} within {timeout} s")
        time.sleep(0.05)


def open_conns(port, n):
    """`n` keep-alive client connections, each after one full request;
    returns them and the status of each answer (None when unparseable)."""
    socks, statuses = [], []
    req = f"GET {BENCH_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(req)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        want = int(m.group(1)) if m else 0
        while len(body) < want:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        try:
            statuses.append(int(head.split(b" ", 2)[1]))
        except (IndexError, ValueError):
            statuses.append(None)
        socks.append(s)
    return socks, statuses


def cp_send(cp, line):
    try:
        cp.p.stdin.write(line + "\n")
        cp.p.stdin.flush()
        reply = cp.p.stdout.readline()
    except OSError as e:
        raise BenchError(f"bench-cp: '{line}': {e}; see {cp.stderr_path}")
    try:
        answer = json.loads(reply)
    except json.JSONDecodeError:
        raise BenchError(f"bench-cp: '{line}' got {reply!r} (exited?); see {cp.stderr_path}")
    if "error" in answer:
        raise BenchError(f"bench-cp: '{line}': {answer['error']}")
    return answer


def cp_wait_ping(cp, config_hash, seconds):
    """Waits until a DP pinged the CP with `config_hash` (i.e. applied it);
    raises BenchError on timeout."""
    if not cp_send(cp, f"wait-ping {config_hash} {seconds}").get("seen"):
        raise BenchError(f"no data plane pinged with config hash {config_hash} within {seconds} s")


def summarize(rows, keys):
    return {k: median([r.get(k) for r in rows]) for k in keys}


def ratios(a, b, keys):
    return {k: (a[k] / b[k] if a.get(k) and b.get(k) else None) for k in keys}


def fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


# ---------------------------------------------------------------------------
# Checks (--check): a smoke run proves the harness works only if what it
# measured really was proxied traffic.

def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_problems(r, what):
    """A load run must have completed requests and no failed one (non-2xx
    or transport error)."""
    out = []
    if not (is_number(r.get("requests")) and r["requests"] > 0):
        out.append(f"{what}: no request succeeded ({r.get('requests')!r})")
    if r.get("errors"):
        out.append(f"{what}: {r['errors']} failed requests {r.get('error_kinds') or ''}".rstrip())
    return out


def check_scenario(name, r, ci=False):
    """What is wrong with scenario `name`'s result `r` (empty: nothing).
    The max-rate search of `seed` is exempt: failing is how it ends."""
    if not isinstance(r, dict):
        return [f"{name}: no result"]
    if "skipped" in r:
        if r["skipped"] == CGROUP_ABSENT or (r["skipped"] == CGROUP_NOT_WRITABLE and not ci):
            return []
        return [f"{name}: skipped ({r['skipped']})"]
    p = []

    def runs(by_target, what):
        if not by_target:
            p.append(f"{what}: no load runs")
        for target, rows in by_target.items():
            if not rows:
                p.append(f"{what} {target}: no load runs")
            for i, row in enumerate(rows):
                p.extend(load_problems(row, f"{what} {target} run {i + 1}"))

    if name in ("throughput", "routes"):
        runs(r.get("runs") or {}, name)
    elif name in ("seed", "quota"):
        by_cpu = r.get("by_cpu") or {}
        if not by_cpu:
            p.append(f"{name}: no CPU levels measured")
        for cores, v in by_cpu.items():
            runs(v.get("runs") or {}, f"{name} {cores} CPU")
    elif name == "apply":
        for how in ("sighup", "cp_push"):
            x = r.get(how) or {}
            if not x.get("runs"):
                p.append(f"apply {how}: no runs ({x.get('skipped', 'missing')})")
                continue
            for i, row in enumerate(x["runs"]):
                what = f"apply {how} run {i + 1}"
                p.extend(load_problems(row, f"{what}, during the apply"))
                p.extend(load_problems(row.get("baseline") or {}, f"{what}, baseline"))
                if not is_number(row.get("apply_ms")):
                    p.append(f"{what}: no apply time ({row.get('apply_ms')!r})")
    elif name == "memory":
        probes = r.get("probes") or []
        if not probes:
            p.append("memory: no probe requests recorded")
        for probe in probes:
            if probe.get("status") != 200:
                p.append(f"memory: {probe.get('what')}: got {probe.get('status')!r}, want 200")
        for key, what in (("pss_kib", "PSS"), ("rss_kib", "RSS")):
            figures = r.get(key) or {}
            if not figures:
                p.append(f"memory: no {what} figures")
            for k, v in figures.items():
                if not (is_number(v) and v > 0):
                    p.append(f"memory: {what} '{k}' is {v!r}")
    elif name == "coldstart":
        for key in ("declarative_file_ms", "cp_cache_ms"):
            x = r.get(key) or {}
            if not x.get("runs"):
                p.append(f"coldstart {key}: no runs ({x.get('skipped', 'missing')})")
                continue
            if not all(is_number(v) for v in x["runs"]):
                p.append(f"coldstart {key}: times {x['runs']!r}")
            statuses = x.get("probe_status") or []
            if len(statuses) != len(x["runs"]) or any(st != 200 for st in statuses):
                p.append(f"coldstart {key}: requests once ready got {statuses!r}, want 200 each")
    elif name in ("plugins", "limits", "tls", "h2", "grpc"):
        runs(r.get("runs") or {}, name)
        probes = r.get("probes") or []
        if not probes:
            p.append(f"{name}: no probe requests recorded")
        for probe in probes:
            if probe.get("got") != probe.get("want"):
                p.append(f"{name}: {probe.get('what')}: got {probe.get('got')!r}, want {probe.get('want')!r}")
    elif name == "push":
        by = r.get("by_routes") or {}
        if not by:
            p.append("push: no sizes measured")
        for n, v in by.items():
            if not v.get("runs"):
                p.append(f"push {n} routes: no runs")
            for i, row in enumerate(v.get("runs") or []):
                what = f"push {n} routes run {i + 1}"
                for k in ("push_to_ping_ms", "apply_ms"):
                    if not is_number(row.get(k)):
                        p.append(f"{what}: no {k} ({row.get(k)!r})")
                if row.get("last_route_status") != 200:
                    p.append(f"{what}: last route answered {row.get('last_route_status')!r}, want 200")
    else:
        p.append(f"{name}: no check defined")
    return p


# ---------------------------------------------------------------------------
# Report.

def markdown(res):
    L = []
    meta = res["meta"]
    L.append(f"Run of {meta['date']} on {meta['host']} ({meta['cpus']} CPUs), driver {meta['driver']}, "
             f"{meta['rounds']} alternated rounds of {meta['duration_s']} s, medians; "
             f"gateway: {meta.get('gateway_build', 'release')} build.")
    L.append("")
    t = res.get("throughput")
    if t:
        L.append("**1. Max throughput, 50 connections, 1 worker each, proxy pinned to one CPU**")
        L.append("")
        L.append("| proxy | req/s | p50 ms | p99 ms | CPU s / 10k req | peak RSS MiB |")
        L.append("|---|---|---|---|---|---|")
        for name, s in t["summary"].items():
            L.append(f"| {name} | {fmt(s['rps'], 0)} | {fmt(s['p50_ms'])} | {fmt(s['p99_ms'])} | "
                     f"{fmt(s['cpu_s_per_10k'], 3)} | {fmt((s['peak_rss_kib'] or 0) / 1024, 1)} |")
        r = t["ratio"]
        L.append(f"| **gateway / nginx** | {fmt(r['rps'])}× | {fmt(r['p50_ms'])}× | {fmt(r['p99_ms'])}× | "
                 f"**{fmt(r['cpu_s_per_10k'])}×** | {fmt(r['peak_rss_kib'])}× |")
        L.append("")
    s = res.get("seed")
    if s and "by_cpu" in s:
        L.append(f"**2. Seed scenario: fixed {s['rate']} QPS over {s['connections']} connections, "
                 "proxy in a CPU cgroup**")
        L.append("")
        L.append("| CPU limit | proxy | achieved req/s | p50 ms | p99 ms | p99.9 ms | errors |")
        L.append("|---|---|---|---|---|---|---|")
        for cores, v in s["by_cpu"].items():
            for name, x in v["summary"].items():
                L.append(f"| {cores} | {name} | {fmt(x['rps'], 0)} | {fmt(x['p50_ms'])} | {fmt(x['p99_ms'])} | "
                         f"{fmt(x['p999_ms'])} | {x['errors']} |")
        m = s.get("max_rate_p99_under_10ms")
        if m:
            L.append("")
            L.append("Highest fixed rate at 0.2 CPU with p99 < 10 ms and no errors: " + ", ".join(
                f"{k} {v['rate']}/s" for k, v in m.items())
                + (f" (gateway / nginx {fmt(s.get('max_rate_ratio'))}×)" if s.get("max_rate_ratio") else ""))
        L.append("")
    q = res.get("quota")
    if q and "by_cpu" in q:
        L.append("**3. CPU-limit scaling: max throughput, 50 connections (workers = ceil(limit))**")
        L.append("")
        L.append("| CPU limit | nginx req/s | gateway req/s | gateway / nginx | gateway req/s per core vs 1 CPU |")
        L.append("|---|---|---|---|---|")
        for cores, v in q["by_cpu"].items():
            pc = (v.get("per_core_vs_1cpu") or {}).get("gateway")
            L.append(f"| {cores} | {fmt(v['summary']['nginx']['rps'], 0)} | {fmt(v['summary']['gateway']['rps'], 0)} | "
                     f"{fmt(v['ratio']['rps'])}× | {fmt(pc)} |")
        L.append("")
    r = res.get("routes")
    if r:
        L.append("**4. Route count: gateway max throughput, 50 connections**")
        L.append("")
        L.append("| routes | req/s | p99 ms | CPU s / 10k req |")
        L.append("|---|---|---|---|")
        for name, x in r["summary"].items():
            L.append(f"| {name} | {fmt(x['rps'], 0)} | {fmt(x['p99_ms'])} | {fmt(x['cpu_s_per_10k'], 3)} |")
        L.append(f"| **ratio** | **{fmt(r['throughput_ratio'])}** | | |")
        L.append("")
    a = res.get("apply")
    if a:
        L.append(f"**5. Applying a {a['routes']}-route config during a fixed {a['rate']} QPS run**")
        L.append("")
        L.append("| how | apply ms | failed requests | p99 ms during | p99 ms without apply |")
        L.append("|---|---|---|---|---|")
        for how in ("sighup", "cp_push"):
            x = a.get(how)
            if x and "summary" in x:
                y = x["summary"]
                L.append(f"| {how} | {fmt(y['apply_ms'], 0)} | {y['errors']} | {fmt(y['p99_ms'])} | "
                         f"{fmt(y['baseline_p99_ms'])} |")
        L.append("")
    m = res.get("memory")
    if m:
        # PSS summed over each side's processes (older results: RSS only).
        mem = m.get("pss_kib") or m["rss_kib"]
        what = "PSS" if "pss_kib" in m else "RSS"
        L.append(f"**6. Memory ({what}, summed over each side's processes)**")
        L.append("")
        L.append(f"| state | {what} MiB |")
        L.append("|---|---|")
        for k, v in mem.items():
            L.append(f"| {k} | {fmt(v / 1024, 1)} |")
        L.append(f"| **gateway / nginx with open connections** | **{fmt(m['ratio_conns'])}×** |")
        per = m.get("per_conn_kib")
        if per:
            L.append(f"| KiB per open connection (gateway / nginx) | {fmt(per['gateway'], 1)} / {fmt(per['nginx'], 1)} |")
        L.append("")
    c = res.get("coldstart")
    if c:
        L.append(f"**7. Start to `/status/ready` 200 with {c['routes']} routes**")
        L.append("")
        L.append("| from | ms |")
        L.append("|---|---|")
        if "median" in c.get("cp_cache_ms", {}):
            L.append(f"| cached control-plane config | {fmt(c['cp_cache_ms']['median'], 0)} |")
        L.append(f"| declarative file | {fmt(c['declarative_file_ms']['median'], 0)} |")
        L.append("")
    u = res.get("push")
    if u and "by_routes" in u:
        L.append("**8. Control-plane push to an idle data plane**")
        L.append("")
        L.append("| routes | push → ping ms | DP apply ms | validate ms | compile ms |")
        L.append("|---|---|---|---|---|")
        for n, v in u["by_routes"].items():
            y = v["summary"]
            L.append(f"| {n} | {fmt(y['push_to_ping_ms'], 0)} | {fmt(y['apply_ms'], 0)} | "
                     f"{fmt(y['validate_ms'], 0)} | {fmt(y['compile_ms'], 0)} |")
        L.append("")
    return "\n".join(L)


def markdown_plugins(res):
    """The plugins scenario's own block (BENCHMARKS.md `## Plugins`)."""
    g = res.get("plugins")
    if not g or "summary" not in g:
        return ""
    meta = res["meta"]
    L = [f"Run of {meta['date']} on {meta['host']} ({meta['cpus']} CPUs), driver {meta['driver']}, "
         f"{meta['rounds']} alternated rounds of {meta['duration_s']} s, medians; every request sends "
         f"`apikey` and `Origin`.", ""]
    L.append("**Plugins: max throughput, 50 connections, 1 worker, proxy pinned to one CPU**")
    L.append("")
    L.append("| target | plugins | req/s | p99 ms | CPU s / 10k req | req/s vs /none | CPU vs /none | "
             "CPU µs / req over /none | req/s vs nginx | CPU vs nginx |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    routes = g.get("routes", {})
    for name, x in g["summary"].items():
        if name.startswith(("before", "after")):
            continue
        path = name.split(" ", 1)[1] if name.startswith("gateway ") else None
        plugins = " + ".join(routes.get(path, [])) if path else "(proxy_pass)"
        vn = g.get("vs_none", {}).get(name, {})
        vx = g.get("vs_nginx", {}).get(name, {})
        over = g.get("cpu_us_over_none", {}).get(name)
        L.append(f"| {name} | {plugins or 'none'} | {fmt(x['rps'], 0)} | {fmt(x['p99_ms'])} | "
                 f"{fmt(x['cpu_s_per_10k'], 3)} | {fmt(vn.get('rps')) + '×' if vn else ''} | "
                 f"{fmt(vn.get('cpu_s_per_10k')) + '×' if vn else ''} | {fmt(over, 1) if path else ''} | "
                 f"{fmt(vx.get('rps')) + '×' if vx else ''} | {fmt(vx.get('cpu_s_per_10k')) + '×' if vx else ''} |")
    L.append("")
    ab = g.get("after_vs_before")
    if ab:
        L.append("**Before / after the plugin runtime: the same one-route config, no plugins**")
        L.append("")
        L.append("| binary | req/s | p99 ms | CPU s / 10k req | peak RSS MiB | req/s vs nginx | CPU vs nginx |")
        L.append("|---|---|---|---|---|---|---|")
        for name in ("before /none", "after /none"):
            x = g["summary"][name]
            vx = g.get("vs_nginx", {}).get(name, {})
            L.append(f"| {name} | {fmt(x['rps'], 0)} | {fmt(x['p99_ms'])} | {fmt(x['cpu_s_per_10k'], 3)} | "
                     f"{fmt((x['peak_rss_kib'] or 0) / 1024, 1)} | {fmt(vx.get('rps'))}× | "
                     f"{fmt(vx.get('cpu_s_per_10k'))}× |")
        L.append(f"| **after / before** | {fmt(ab['rps'])}× | {fmt(ab['p99_ms'])}× | **{fmt(ab['cpu_s_per_10k'])}×** | "
                 f"{fmt(ab['peak_rss_kib'])}× | | |")
        L.append("")
        L.append(f"Before: `{g.get('baseline_bin')}`.")
        L.append("")
    return "\n".join(L).rstrip() + "\n"


def markdown_limits(res):
    """The limits scenario's own block (BENCHMARKS.md `## Rate limiting and
    the proxy cache`)."""
    g = res.get("limits")
    if not g or "summary" not in g:
        return ""
    meta = res["meta"]
    L = [f"Run of {meta['date']} on {meta['host']} ({meta['cpus']} CPUs), driver {meta['driver']}, "
         f"{meta['rounds']} alternated rounds of {meta['duration_s']} s, medians; 50 connections, 1 worker, "
         f"proxy pinned to one CPU; Redis and the load generator on the other.", ""]
    L.append("| target | req/s | p99 ms | proxy CPU s / 10k req | Redis CPU s / 10k req | "
             "CPU µs / req over /none | req/s vs nginx | CPU vs nginx |")
    L.append("|---|---|---|---|---|---|---|---|")
    for name, x in g["summary"].items():
        vx = g.get("vs_nginx", {}).get(name, {})
        over = g.get("cpu_us_over_none", {}).get(name)
        L.append(f"| {name} | {fmt(x['rps'], 0)} | {fmt(x['p99_ms'])} | {fmt(x['cpu_s_per_10k'], 3)} | "
                 f"{fmt(x.get('redis_cpu_s_per_10k'), 3)} | {fmt(over, 1) if over is not None else ''} | "
                 f"{fmt(vx.get('rps')) + '×' if vx else ''} | {fmt(vx.get('cpu_s_per_10k')) + '×' if vx else ''} |")
    c = g.get("cache_vs_nginx_cache") or {}
    L.append("")
    L.append(f"**proxy-cache hit path / nginx proxy_cache:** {fmt(c.get('rps'))}× req/s, "
             f"{fmt(c.get('cpu_s_per_10k'))}× CPU per request, {fmt(c.get('p99_ms'))}× p99.")
    return "\n".join(L).rstrip() + "\n"


def markdown_tls(res):
    """The tls scenario's own block (BENCHMARKS.md `## TLS termination`)."""
    g = res.get("tls")
    if not g or "ec" not in g:
        return ""
    meta = res["meta"]
    L = [f"Run of {meta['date']} on {meta['host']} ({meta['cpus']} CPUs), {meta['rounds']} alternated rounds "
         f"of {meta['duration_s']} s, medians; 1 worker pinned to one CPU, clients on the other. Handshakes: "
         f"two `openssl s_time -new` clients (a full handshake each, no resumption, no request). "
         f"Keep-alive: {meta['driver']}, 50 connections, GET /get.", ""]
    L.append("| certificate | server | full handshakes/s | CPU µs / handshake | handshakes / CPU-s | "
             "keep-alive req/s | p99 ms | CPU s / 10k req |")
    L.append("|---|---|---|---|---|---|---|---|")
    for kind, label in (("ec", "ECDSA P-256"), ("rsa", "RSA 2048")):
        x = g.get(kind) or {}
        for name in ("nginx", "gateway"):
            h = (x.get("handshakes") or {}).get(name, {})
            k = (x.get("keepalive") or {}).get(name, {})
            L.append(f"| {label} | {name} | {fmt(h.get('per_s'), 0)} | {fmt(h.get('cpu_us_per_handshake'), 0)} | "
                     f"{fmt(h.get('per_cpu_s'), 0)} | {fmt(k.get('rps'), 0)} | {fmt(k.get('p99_ms'))} | "
                     f"{fmt(k.get('cpu_s_per_10k'), 3)} |")
    L.append("")
    for kind, label in (("ec", "ECDSA P-256"), ("rsa", "RSA 2048")):
        r = (g.get(kind) or {}).get("gateway_vs_nginx") or {}
        hs = (r.get("handshakes_per_cpu_s") or {}).get("per_cpu_s")
        ka = r.get("keepalive") or {}
        L.append(f"- **{label}, gateway / nginx:** {fmt(hs)}× handshakes per CPU-second; keep-alive "
                 f"{fmt(ka.get('rps'))}× req/s, {fmt(ka.get('cpu_s_per_10k'))}× CPU per request.")
    return "\n".join(L).rstrip() + "\n"


def markdown_h2(res):
    """The h2 scenario's own block (BENCHMARKS.md `## HTTP/2`)."""
    g = res.get("h2")
    if not g or "h2" not in g:
        return ""
    meta = res["meta"]
    L = [f"Run of {meta['date']} on {meta['host']} ({meta['cpus']} CPUs), {meta['rounds']} alternated rounds "
         f"of {meta['duration_s']} s, medians; 1 worker pinned to one CPU, h2load and the upstream "
         f"({meta.get('upstream', 'nginx')}, HTTP/1.1) on the other. h2load: {g.get('connections')} connections "
         f"× {g.get('streams')} concurrent streams, GET /get.", ""]
    L.append("| listener | server | req/s | mean latency ms | CPU s / 10k req | peak RSS MiB |")
    L.append("|---|---|---|---|---|---|")
    labels = (("h2", "h2 (TLS, ALPN)"), ("h2c", "h2c (prior knowledge)"))
    for variant, label in labels:
        for name in ("nginx", "gateway"):
            x = ((g.get(variant) or {}).get("summary") or {}).get(name, {})
            L.append(f"| {label} | {name} | {fmt(x.get('rps'), 0)} | {fmt(x.get('mean_ms'))} | "
                     f"{fmt(x.get('cpu_s_per_10k'), 3)} | {fmt((x.get('peak_rss_kib') or 0) / 1024, 1)} |")
    L.append("")
    for variant, label in labels:
        r = (g.get(variant) or {}).get("ratio") or {}
        L.append(f"- **{label}, gateway / nginx:** {fmt(r.get('rps'))}× req/s, "
                 f"{fmt(r.get('cpu_s_per_10k'))}× CPU per request, {fmt(r.get('mean_ms'))}× mean latency.")
    return "\n".join(L).rstrip() + "\n"


def markdown_grpc(res):
    """The grpc scenario's own block (BENCHMARKS.md `## gRPC`)."""
    g = res.get("grpc")
    if not g or "summary" not in g:
        return ""
    meta = res["meta"]
    L = [f"Run of {meta['date']} on {meta['host']} ({meta['cpus']} CPUs), {meta['rounds']} alternated rounds "
         f"of {meta['duration_s']} s, medians; 1 worker pinned to one CPU, grpc-load and grpc-echo on the other. "
         f"grpc-load: unary calls, {g.get('concurrency')} in flight over {g.get('connections')} h2c connections; "
         f"the proxies speak h2c to the echo server too.", ""]
    L.append("| proxy | calls/s | p50 ms | p90 ms | p99 ms | proxy CPU s / 10k calls | echo CPU s / 10k calls | "
             "peak RSS MiB |")
    L.append("|---|---|---|---|---|---|---|---|")
    for name in ("nginx", "gateway"):
        x = g["summary"].get(name, {})
        L.append(f"| {name} | {fmt(x.get('rps'), 0)} | {fmt(x.get('p50_ms'))} | {fmt(x.get('p90_ms'))} | "
                 f"{fmt(x.get('p99_ms'))} | {fmt(x.get('cpu_s_per_10k'), 3)} | "
                 f"{fmt(x.get('echo_cpu_s_per_10k'), 3)} | {fmt((x.get('peak_rss_kib') or 0) / 1024, 1)} |")
    r = g.get("ratio") or {}
    L.append(f"| **gateway / nginx** | {fmt(r.get('rps'))}× | {fmt(r.get('p50_ms'))}× | {fmt(r.get('p90_ms'))}× | "
             f"{fmt(r.get('p99_ms'))}× | **{fmt(r.get('cpu_s_per_10k'))}×** | | {fmt(r.get('peak_rss_kib'))}× |")
    return "\n".join(L).rstrip() + "\n"


# Scenarios with a block of their own: how each renders it.
OWN_MARKDOWN = {"plugins": markdown_plugins, "limits": markdown_limits, "tls": markdown_tls,
                "h2": markdown_h2, "grpc": markdown_grpc}


def chart(res, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not available: no chart (scripts/bench installs it in a venv)")
        return False
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    ax = axes[0][0]
    t = res.get("throughput")
    if t:
        names = list(t["summary"])
        ax.bar(names, [t["summary"][n]["cpu_s_per_10k"] or 0 for n in names],
               color=["#888" if n == "nginx" else "#2a7" for n in names])
        ax.set_title("CPU s per 10k requests (lower is better)")
        ax.tick_params(axis="x", labelrotation=20)
    ax = axes[0][1]
    s = res.get("seed")
    if s and "by_cpu" in s:
        labels, vals, colors = [], [], []
        for cores, v in s["by_cpu"].items():
            for name, x in v["summary"].items():
                labels.append(f"{name}\n{cores} CPU")
                vals.append(x["p99_ms"] or 0)
                colors.append("#888" if name == "nginx" else "#2a7")
        ax.bar(labels, vals, color=colors)
        ax.set_yscale("log")
        ax.set_title(f"p99 ms at {s['rate']} QPS / {s['connections']} conns")
    ax = axes[0][2]
    q = res.get("quota")
    if q and "by_cpu" in q:
        xs = [float(c) for c in q["by_cpu"]]
        for name, color in (("nginx", "#888"), ("gateway", "#2a7")):
            ax.plot(xs, [v["summary"][name]["rps"] or 0 for v in q["by_cpu"].values()], "o-",
                    color=color, label=name)
        ax.set_xlabel("CPU limit (cores)")
        ax.set_title("max req/s by CPU limit")
        ax.legend()
    ax = axes[1][0]
    r = res.get("routes")
    if r:
        names = list(r["summary"])
        ax.bar(names, [r["summary"][n]["rps"] or 0 for n in names], color="#2a7")
        ax.set_title("gateway req/s by route count")
    ax = axes[1][1]
    m = res.get("memory")
    if m:
        mem = m.get("pss_kib") or m["rss_kib"]
        names = list(mem)
        ax.barh(names, [mem[n] / 1024 for n in names],
                color=["#888" if n.startswith("nginx") else "#2a7" for n in names])
        ax.set_title("PSS MiB" if "pss_kib" in m else "RSS MiB")
    ax = axes[1][2]
    c = res.get("coldstart")
    a = res.get("apply")
    labels, vals = [], []
    if c:
        if "median" in c.get("cp_cache_ms", {}):
            labels.append("start→ready\n(CP cache)")
            vals.append(c["cp_cache_ms"]["median"])
        labels.append("start→ready\n(file)")
        vals.append(c["declarative_file_ms"]["median"])
    if a:
        for how in ("sighup", "cp_push"):
            x = a.get(how)
            if x and "summary" in x and x["summary"]["apply_ms"] is not None:
                labels.append(f"apply\n({how})")
                vals.append(x["summary"]["apply_ms"])
    if labels:
        ax.bar(labels, vals, color="#2a7")
        ax.set_title(f"ms with {res.get('meta', {}).get('routes')} routes")
    fig.suptitle(f"gateway vs nginx, {res['meta']['date']} ({res['meta']['driver']})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def update_benchmarks_md(path, md, png_rel, marker="bench"):
    """Replaces the block between `<!-- MARKER:begin -->` and
    `<!-- MARKER:end -->` (appended when missing); no chart when
    `png_rel` is None."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    with open(path) as f:
        text = f.read()
    chart_line = "" if png_rel is None else f"![benchmark chart]({png_rel})\n"
    block = f"{begin}\n{md}\n{chart_line}{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True,
                    help="where gateway, minimal-pingora, bench-cp, httpbin, grpc-echo, grpc-load are")
    ap.add_argument("--gateway-bin", default=None,
                    help="the gateway binary (default: <bin-dir>/gateway), e.g. scripts/pgo-build's")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "results"))
    ap.add_argument("--only", default=",".join(ALL_SCENARIOS), help="comma-separated scenarios")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--upstream", choices=("nginx", "httpbin"), default="nginx")
    ap.add_argument("--minimal", action="store_true", help="also measure the do-nothing Pingora proxy")
    ap.add_argument("--oha", default=None, help="path to oha (default: PATH or ~/.cargo/bin)")
    ap.add_argument("--no-oha", action="store_true", help="use the wrk / Python fallbacks")
    ap.add_argument("--seed-rate", type=int, default=1000)
    ap.add_argument("--seed-conns", type=int, default=800)
    ap.add_argument("--max-rate-start", type=int, default=400)
    ap.add_argument("--max-rate-steps", type=int, default=8)
    ap.add_argument("--bisect-steps", type=int, default=4)
    ap.add_argument("--quota-levels", default="0.2,0.5,1,2")
    ap.add_argument("--routes", type=int, default=10000)
    ap.add_argument("--apply-rate", type=int, default=1000)
    ap.add_argument("--apply-duration", type=int, default=6)
    ap.add_argument("--mem-conns", type=int, default=800)
    ap.add_argument("--push-sizes", default="1000,10000", help="route counts of the push scenario")
    ap.add_argument("--baseline-bin", default=None,
                    help="plugins scenario: a gateway binary from before the plugin runtime, measured "
                         "against this one on the same no-plugin route")
    ap.add_argument("--check", action="store_true",
                    help="fail on failed or missing requests, apply times and probes (see above)")
    ap.add_argument("--broken-upstream", action="store_true",
                    help="point every service at a closed port (to prove --check fails)")
    ap.add_argument("--update-benchmarks-md", default=None, help="replace the marked block in this file")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir with logs")
    ap.add_argument("--smoke", action="store_true", help="seconds-long run of every scenario")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.duration, args.warmup = 1, 1, 0
        args.seed_rate, args.seed_conns = 100, 20
        args.max_rate_start, args.max_rate_steps, args.bisect_steps = 100, 1, 0
        args.quota_levels = "0.5,1"
        args.routes, args.apply_rate, args.apply_duration, args.mem_conns = 300, 100, 2, 50
        args.push_sizes = "100,300"
    args.quota_levels = [float(x) for x in args.quota_levels.split(",")]
    args.push_sizes = [int(x) for x in args.push_sizes.split(",")]
    scenarios = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(scenarios) - set(ALL_SCENARIOS)
    if unknown:
        sys.exit(f"unknown scenarios {sorted(unknown)}; known: {ALL_SCENARIOS}")
    if not CpuGroup.available():
        log(f"note: {cgroup_skip_reason()}; CPU-limit scenarios will be skipped")
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")

    bench = Bench(args)
    res = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "host": socket.gethostname(),
                    "cpus": os.cpu_count(), "driver": bench.load.driver, "rounds": args.rounds,
                    "duration_s": args.duration, "smoke": args.smoke, "routes": args.routes,
                    "upstream": args.upstream,
                    "gateway_build": "profile-guided" if args.gateway_bin else "release",
                    "pinning": {"proxies": bench.proxy_cpu, "load_and_upstream": bench.load_cpu}}}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1) or sys.exit(1))
    try:
        bench.start_upstream()
        for s in scenarios:
            log(f"== {s}")
            t0 = time.monotonic()
            res[s] = getattr(bench, s)()
            res[s]["took_s"] = round(time.monotonic() - t0, 1)
            if args.check:
                # Every scenario runs and is checked; the run fails at the end.
                problems = res.setdefault("check", {})[s] = check_scenario(s, res[s], ci=ci)
                log(f"{s}: check " + ("FAILED:\n  " + "\n  ".join(problems) if problems else "passed"))
    except (BenchError, subprocess.TimeoutExpired) as e:
        sys.exit(f"bench failed: {e}")
    finally:
        bench.close()
    os.makedirs(args.out, exist_ok=True)
    # Scenarios with a block of their own get their own files too, so a run
    # of only them leaves a full run's results (and block) alone.
    main_ran = [s for s in scenarios if s not in OWN_BLOCK]
    if main_ran:
        with open(os.path.join(args.out, "bench.json"), "w") as f:
            json.dump(res, f, indent=2)
        md = markdown(res)
        with open(os.path.join(args.out, "bench.md"), "w") as f:
            f.write(md + "\n")
        png = os.path.join(args.out, "bench.png")
        drew = chart(res, png)
        print(md)
        if args.update_benchmarks_md:
            rel = os.path.relpath(png, os.path.dirname(os.path.abspath(args.update_benchmarks_md)))
            update_benchmarks_md(args.update_benchmarks_md, md, rel if drew else "")
    for s in scenarios:
        if s not in OWN_BLOCK:
            continue
        own = {k: res[k] for k in ("meta", s) if k in res}
        if "check" in res:
            own["check"] = {k: v for k, v in res["check"].items() if k == s}
        with open(os.path.join(args.out, f"{s}.json"), "w") as f:
            json.dump(own, f, indent=2)
        md = OWN_MARKDOWN[s](res)
        with open(os.path.join(args.out, f"{s}.md"), "w") as f:
            f.write(md)
        print(md)
        if args.update_benchmarks_md and md:
            update_benchmarks_md(args.update_benchmarks_md, md, None, marker=f"bench-{s}")
    log(f"results in {os.path.abspath(args.out)}")
    failed = [s for s, problems in res.get("check", {}).items() if problems]
    if failed:
        sys.exit(f"bench failed its check in scenarios {failed} (details above and in the results' 'check')")


if __name__ == "__main__":
    main()
