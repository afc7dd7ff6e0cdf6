#!/usr/bin/env python3
"""User-space instructions per proxied request, counted by valgrind's
callgrind: a figure that does not move with the machine's load.

Closed-loop CPU figures on this shared 2-core machine move by 10-20% from
round to round, which hides a lever worth a few percent. The count of
instructions the gateway executes per request is exact and repeatable (two
runs of one binary agree to 0.1%), so it tells at once whether a change
takes work away. It is not a time: the kernel is not counted, a cache miss
costs one instruction like any other, and valgrind counts each byte of a
`rep movsb` copy as an instruction, so large `memcpy`s weigh more here than
on the CPU. Confirm a lever with `bench.py` before believing its size.

For each gateway binary given: the bundled httpbin as the upstream, the
gateway under callgrind with bench.py's 1,000-route config (prometheus on
every family), 300 warm-up requests on one kept-alive connection, the
counters zeroed, then --requests more, and the total divided by them.
With --top, the functions with the most instructions of their own.

    benches/load/instr.py --httpbin target/release/httpbin \\
        /tmp/gateway-before /tmp/gateway-after
"""

import argparse
import glob
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (kong_config, BENCH_PATH)

WARMUP = 300


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"instr: nothing listens on {port} after {timeout} s")


def stop(p, sig=signal.SIGINT, timeout=20):
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def measure(gateway, httpbin, requests, top, workdir):
    d = tempfile.mkdtemp(prefix="instr-", dir=workdir)
    up = free_port()
    hb = subprocess.Popen([httpbin, "--listen", f"127.0.0.1:{up}", "--threads", "1"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    g = None
    try:
        wait_port(up, 30)
        cfg = os.path.join(d, "kong.json")
        with open(cfg, "w") as f:
            json.dump(bench.kong_config(up, 1000), f)
        port, status = free_port(), free_port()
        env = dict(os.environ, KONG_DATABASE="off", KONG_DECLARATIVE_CONFIG=cfg,
                   KONG_PROXY_LISTEN=f"127.0.0.1:{port}", KONG_STATUS_LISTEN=f"127.0.0.1:{status}",
                   KONG_ADMIN_LISTEN="off", KONG_PREFIX=os.path.join(d, "prefix"),
                   KONG_PROXY_ACCESS_LOG="off", KONG_LOG_LEVEL="error",
                   KONG_NGINX_WORKER_PROCESSES="1", KONG_NGINX_HTTP_KEEPALIVE_REQUESTS="1000000")
        env.pop("RUST_LOG", None)
        out = os.path.join(d, "callgrind.out.%p")
        g = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", gateway],
                             env=env, cwd=d, stdout=subprocess.DEVNULL,
                             stderr=open(os.path.join(d, "valgrind.log"), "w"))
        wait_port(port, 180)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

        def send(n):
            for _ in range(n):
                conn.request("GET", bench.BENCH_PATH)
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    raise SystemExit(f"instr: {gateway} answered {r.status}")

        send(WARMUP)
        subprocess.run(["callgrind_control", "--zero", str(g.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        send(requests)
        subprocess.run(["callgrind_control", "--dump", str(g.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        conn.close()
    finally:
        if g is not None:
            stop(g)
        stop(hb, signal.SIGKILL)
    dumps = sorted(glob.glob(os.path.join(d, "callgrind.out.*.1")))
    if not dumps:
        raise SystemExit(f"instr: no callgrind dump in {d} (see valgrind.log)")
    total = None
    with open(dumps[0]) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
    if total is None:
        raise SystemExit(f"instr: no totals in {dumps[0]}")
    own = None
    if top:
        ann = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", dumps[0]],
                             capture_output=True, text=True, check=True).stdout
        rows = [line for line in ann.splitlines() if "%)" in line and "PROGRAM" not in line]
        # The thread entry points carry everything below them: skip them.
        own = [r for r in rows if not any(t in r for t in ("clone", "start_thread", "thread_start",
                                                                "call_once"))][:top]
    else:
        shutil.rmtree(d, ignore_errors=True)
    return total / requests, own, d


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gateways", nargs="+", help="gateway binaries to count")
    ap.add_argument("--httpbin", required=True, help="the bundled httpbin (gw-tests)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--top", type=int, default=0, help="also list the N costliest functions")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("instr: valgrind not found (apt-get install valgrind)")
    base = None
    for gw in args.gateways:
        per, own, d = measure(os.path.abspath(gw), args.httpbin, args.requests, args.top, args.workdir)
        vs = f"  ({per / base:.3f}x the first)" if base else ""
        base = base or per
        print(f"{gw}: {per:,.0f} instructions per request{vs}", flush=True)
        for row in own or []:
            print("   ", row[:160])
        if own:
            print(f"    (callgrind output kept in {d})")


if __name__ == "__main__":
    main()
