"""The load harness's own failure modes: waits that time out must fail the
run, and --check must refuse results with failed requests, no requests, or
no apply time, in every scenario.

  python3 -m unittest discover -s benches/load -v     (scripts/bench-smoke runs it)

The end-to-end proof (the real harness against a closed upstream port must
fail every scenario's check) is `scripts/bench-smoke --self-test`.
"""
import io
import os
import socket
import tempfile
import unittest

import bench
from bench import BenchError


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ok_run(**kw):
    r = {"requests": 100, "rps": 100.0, "p50_ms": 1.0, "p99_ms": 2.0, "p999_ms": None,
         "errors": 0, "error_kinds": {}}
    r.update(kw)
    return r


FAILED = ok_run(requests=0, rps=0.0, errors=400, error_kinds={"status 502": 400})
EMPTY = ok_run(requests=0, rps=0.0)


def good(name):
    """A result of scenario `name` that passes --check."""
    if name in ("throughput", "routes"):
        return {"runs": {"nginx": [ok_run()], "gateway": [ok_run()]}}
    if name in ("seed", "quota"):
        return {"by_cpu": {"0.5": {"runs": {"nginx": [ok_run()], "gateway": [ok_run()]}}},
                "max_rate_p99_under_10ms": {"gateway": {"rate": 0, "tried": [FAILED]}}}
    if name == "apply":
        row = {**ok_run(), "apply_ms": 12.0, "baseline": ok_run()}
        return {"sighup": {"runs": [dict(row)]}, "cp_push": {"runs": [dict(row)]}}
    if name == "memory":
        return {"rss_kib": {"nginx idle": 1000, "gateway idle": 2000},
                "pss_kib": {"nginx idle": 800, "gateway idle": 1900},
                "probes": [{"what": "gateway GET /get", "status": 200}]}
    if name == "coldstart":
        return {"declarative_file_ms": {"runs": [40.0], "probe_status": [200]},
                "cp_cache_ms": {"runs": [30.0], "probe_status": [200]}}
    if name == "push":
        return {"by_routes": {"100": {"runs": [{"push_to_ping_ms": 50.0, "apply_ms": 20.0,
                                               "last_route_status": 200}]}}}
    if name == "tls":
        return {"runs": {"ec nginx": [ok_run()], "ec gateway": [ok_run()]},
                "probes": [{"what": "ec: gateway completed full handshakes", "got": True, "want": True}]}
    if name == "limits":
        return {"runs": {"nginx": [ok_run()], "gateway /rl-redis": [ok_run()]},
                "probes": [{"what": "gateway GET /cache twice: X-Cache-Status", "got": "hit", "want": "hit"}]}
    if name == "h2":
        return {"runs": {"h2 nginx": [ok_run()], "h2 gateway": [ok_run()], "h2c gateway": [ok_run()]},
                "probes": [{"what": "h2: h2load spoke h2 to gateway", "got": "h2", "want": "h2"}]}
    if name == "grpc":
        return {"runs": {"nginx": [ok_run()], "gateway": [ok_run()]},
                "probes": [{"what": "gateway: a unary call's reply", "got": "probe", "want": "probe"}]}
    if name == "plugins":
        return {"runs": {"nginx": [ok_run()], "gateway /none": [ok_run()], "gateway /full": [ok_run()]},
                "probes": [{"what": "gateway GET /full without a key", "got": 401, "want": 401},
                           {"what": "/metrics has route full's requests", "got": True, "want": True}]}
    raise AssertionError(name)


class Waits(unittest.TestCase):
    def test_wait_port_raises_on_timeout(self):
        port = closed_port()
        with self.assertRaisesRegex(BenchError, f"upstream.*127.0.0.1:{port}"):
            bench.wait_port(port, timeout=0.3, what="upstream")

    def test_wait_ready_raises_on_timeout(self):
        with self.assertRaisesRegex(BenchError, "not 200 within .*no connection"):
            bench.wait_ready(closed_port(), 0.3)

    def test_wait_log_raises_on_timeout(self):
        class P:
            stderr_path = "/nowhere.log"

            @staticmethod
            def log_text():
                return "applied config abc in 5 ms\n"
        self.assertEqual(bench.wait_log(P, r"applied config abc in (\d+) ms", timeout=0.2), "5")
        with self.assertRaisesRegex(BenchError, r"\(#2\) not seen in /nowhere.log"):
            bench.wait_log(P, r"applied config abc in (\d+) ms", count=2, timeout=0.2)

    def fake_cp(self, reply):
        class Popen:
            stdin = io.StringIO()
            stdout = io.StringIO(reply)

        class Cp:
            p = Popen()
            stderr_path = "/cp.log"
        return Cp

    def test_a_ping_that_never_comes_raises(self):
        with self.assertRaisesRegex(BenchError, "no data plane pinged with config hash h1"):
            bench.cp_wait_ping(self.fake_cp('{"seen": false}\n'), "h1", 1)
        bench.cp_wait_ping(self.fake_cp('{"seen": true}\n'), "h1", 1)

    def test_a_dead_control_plane_raises(self):
        with self.assertRaisesRegex(BenchError, "exited"):
            bench.cp_send(self.fake_cp(""), "push 1 80")


class LoadResults(unittest.TestCase):
    def test_wrk_counts_refused_and_non_2xx(self):
        out = ("Running 1s test @ http://127.0.0.1:1/get\n  1 threads and 50 connections\n"
               "  Latency Distribution\n     50%  1.00ms\n     99%  2.00ms\n"
               "  400 requests in 1.00s, 60.00KB read\n  Non-2xx or 3xx responses: 400\n"
               "Requests/sec:    400.00\nnon-2xx: 400\n")
        r = bench.parse_wrk(out, "", "u", 1)
        self.assertEqual((r["requests"], r["errors"]), (0, 400))
        out = ("  0 requests in 1.00s, 0.00B read\n"
               "  Socket errors: connect 50, read 0, write 0, timeout 0\n")
        r = bench.parse_wrk(out, "", "u", 1)
        self.assertEqual((r["requests"], r["errors"]), (0, 50))
        with self.assertRaisesRegex(BenchError, "wrk gave no result"):
            bench.parse_wrk("", "unable to connect", "u", 1)

    def test_the_wrk_check_script_counts_3xx(self):
        out = "  10 requests in 1.00s, 1KB read\nnon-2xx: 3\n"
        r = bench.parse_wrk(out, "", "u", 1)
        self.assertEqual((r["requests"], r["errors"]), (7, 3))

    def test_open_loop_against_a_closed_port_completes_nothing(self):
        r = bench.open_loop(f"http://127.0.0.1:{closed_port()}/get", 1, 2, 20, {})
        self.assertEqual(r["requests"], 0)
        self.assertGreater(r["errors"], 0)
        self.assertTrue(bench.load_problems(r, "x"))


class Check(unittest.TestCase):
    def test_good_results_pass(self):
        for s in bench.ALL_SCENARIOS:
            self.assertEqual(bench.check_scenario(s, good(s)), [], s)

    def test_failed_and_empty_load_runs_fail_every_load_scenario(self):
        for s in ("throughput", "routes", "seed", "quota"):
            for bad in (FAILED, EMPTY):
                r = good(s)
                runs = r["runs"] if "runs" in r else r["by_cpu"]["0.5"]["runs"]
                runs["gateway"] = [bad]
                self.assertTrue(bench.check_scenario(s, r), (s, bad))
            r = good(s)
            if "runs" in r:
                r["runs"] = {}
            else:
                r["by_cpu"] = {}
            self.assertTrue(bench.check_scenario(s, r), s)

    def test_apply_needs_clean_runs_and_a_number(self):
        for how in ("sighup", "cp_push"):
            for key, bad in (("apply_ms", None), ("errors", 3), ("requests", 0)):
                r = good("apply")
                r[how]["runs"][0][key] = bad
                self.assertTrue(bench.check_scenario("apply", r), (how, key))
            r = good("apply")
            r[how]["runs"][0]["baseline"] = FAILED
            self.assertTrue(bench.check_scenario("apply", r), how)
            r = good("apply")
            r[how] = {"skipped": "bench-cp binary not built"}
            self.assertTrue(bench.check_scenario("apply", r), how)

    def test_pss_is_read_from_smaps_rollup(self):
        text = ("55d1c0a4e000-7ffd8a1f9000 ---p 00000000 00:00 0                          [rollup]\n"
                "Rss:                6120 kB\nPss:                3301 kB\nPss_Anon:           1804 kB\n"
                "Shared_Clean:       3712 kB\n")
        self.assertEqual(bench.parse_pss_kib(text), 3301)
        self.assertIsNone(bench.parse_pss_kib("Rss: 1 kB\n"))
        # Our own process has one.
        self.assertGreater(bench.proc_pss_kib([os.getpid()]), 0)

    def test_memory_coldstart_push_need_answers_and_numbers(self):
        r = good("memory")
        r["probes"][0]["status"] = 502
        self.assertTrue(bench.check_scenario("memory", r))
        r = good("memory")
        r["rss_kib"]["gateway idle"] = 0
        self.assertTrue(bench.check_scenario("memory", r))
        r = good("memory")
        del r["pss_kib"]
        self.assertTrue(bench.check_scenario("memory", r))
        for key in ("declarative_file_ms", "cp_cache_ms"):
            r = good("coldstart")
            r[key]["probe_status"] = [502]
            self.assertTrue(bench.check_scenario("coldstart", r), key)
            r = good("coldstart")
            r[key]["runs"] = []
            self.assertTrue(bench.check_scenario("coldstart", r), key)
        for key, bad in (("push_to_ping_ms", None), ("apply_ms", None), ("last_route_status", 502)):
            r = good("push")
            r["by_routes"]["100"]["runs"][0][key] = bad
            self.assertTrue(bench.check_scenario("push", r), key)

    def test_plugins_needs_clean_runs_and_probes_that_match(self):
        for bad in (FAILED, EMPTY):
            r = good("plugins")
            r["runs"]["gateway /full"] = [bad]
            self.assertTrue(bench.check_scenario("plugins", r))
        r = good("plugins")
        r["probes"][0]["got"] = 200  # key-auth let a request without a key through
        self.assertTrue(bench.check_scenario("plugins", r))
        r = good("plugins")
        r["probes"] = []
        self.assertTrue(bench.check_scenario("plugins", r))

    def test_limits_needs_clean_runs_and_probes_that_match(self):
        r = good("limits")
        r["runs"]["gateway /rl-redis"] = [FAILED]
        self.assertTrue(bench.check_scenario("limits", r))
        r = good("limits")
        r["probes"][0]["got"] = "miss"  # the cache never hit
        problems = bench.check_scenario("limits", r)
        self.assertTrue(problems and problems[0].startswith("limits: "), problems)

    def test_tls_needs_handshakes_and_clean_runs(self):
        r = good("tls")
        r["probes"][0]["got"] = False  # s_time completed no handshake
        self.assertTrue(bench.check_scenario("tls", r))
        r = good("tls")
        r["runs"]["ec gateway"] = [FAILED]
        self.assertTrue(bench.check_scenario("tls", r))

    def test_tls_markdown(self):
        def side(hs, cpu_us, rps, cpu):
            return ({"per_s": hs, "cpu_us_per_handshake": cpu_us, "per_cpu_s": 1e6 / cpu_us},
                    {"rps": rps, "p50_ms": 1.0, "p99_ms": 2.0, "cpu_s_per_10k": cpu})
        g = {}
        for kind in ("ec", "rsa"):
            (hn, kn), (hg, kg) = side(2000, 400, 30000, 0.3), side(1600, 500, 15000, 0.6)
            g[kind] = {"handshakes": {"nginx": hn, "gateway": hg}, "keepalive": {"nginx": kn, "gateway": kg},
                       "gateway_vs_nginx": {
                           "handshakes_per_cpu_s": bench.ratios(hg, hn, ("per_cpu_s",)),
                           "keepalive": bench.ratios(kg, kn, ("rps", "cpu_s_per_10k"))}}
        md = bench.markdown_tls({"meta": {"date": "d", "host": "h", "cpus": 2, "driver": "oha", "rounds": 3,
                                          "duration_s": 8}, "tls": g})
        self.assertIn("| ECDSA P-256 | gateway | 1600 | 500 | 2000 | 15000 |", md)
        self.assertIn("**RSA 2048, gateway / nginx:** 0.80× handshakes per CPU-second; keep-alive 0.50× req/s, "
                      "2.00× CPU per request.", md)

    def test_limits_markdown(self):
        s = {"nginx": {"rps": 20000, "p99_ms": 1.0, "cpu_s_per_10k": 0.4},
             "nginx proxy_cache": {"rps": 18000, "p99_ms": 1.0, "cpu_s_per_10k": 0.5},
             "gateway /none": {"rps": 10000, "p99_ms": 2.0, "cpu_s_per_10k": 0.8},
             "gateway /cache": {"rps": 15000, "p99_ms": 1.5, "cpu_s_per_10k": 0.6}}
        g = {"summary": s, "vs_nginx": {k: bench.ratios(v, s["nginx"], ("rps", "cpu_s_per_10k"))
                                        for k, v in s.items() if k != "nginx"},
             "cpu_us_over_none": {"gateway /none": 0.0, "gateway /cache": -20.0},
             "cache_vs_nginx_cache": bench.ratios(s["gateway /cache"], s["nginx proxy_cache"],
                                                  ("rps", "p99_ms", "cpu_s_per_10k"))}
        md = bench.markdown_limits({"meta": {"date": "d", "host": "h", "cpus": 2, "driver": "oha",
                                             "rounds": 3, "duration_s": 8}, "limits": g})
        self.assertIn("| gateway /cache | 15000 |", md)
        self.assertIn("-20.0", md)
        self.assertIn("**proxy-cache hit path / nginx proxy_cache:** 0.83× req/s, 1.20× CPU", md)

    def test_skips(self):
        for s in ("seed", "quota"):
            self.assertEqual(bench.check_scenario(s, {"skipped": bench.CGROUP_ABSENT}, ci=True), [])
            self.assertEqual(bench.check_scenario(s, {"skipped": bench.CGROUP_NOT_WRITABLE}), [])
            self.assertTrue(bench.check_scenario(s, {"skipped": bench.CGROUP_NOT_WRITABLE}, ci=True))
        self.assertTrue(bench.check_scenario("push", {"skipped": "bench-cp binary not built"}))
        self.assertTrue(bench.check_scenario("nope", {}))
        self.assertTrue(bench.check_scenario("throughput", None))

    def test_cgroup_v1_detection_reads_mountinfo(self):
        v1 = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
        v1_both = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        v1_other = "33 31 0:30 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct\n"
        v2 = "41 31 0:38 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n"
        for text, want in ((v1, True), (v1_both, True), (v1_other + v2, False), ("", False)):
            with tempfile.NamedTemporaryFile("w", delete=False) as f:
                f.write(text)
            try:
                self.assertEqual(bench.cgroup_v1_cpu_mounted(f.name), want, text)
            finally:
                os.unlink(f.name)
        self.assertFalse(bench.cgroup_v1_cpu_mounted("/nonexistent/mountinfo"))


# h2load 1.52.0 reports captured on this machine (Debian 12): a counted run
# over TLS against nginx, a timed h2c run whose connections nginx closed
# after 1000 requests each (its default keepalive_requests), a timed run
# through nginx to a closed upstream port (502s) and one against a closed
# port.
H2LOAD_TLS = """starting benchmark...
spawning thread #0: 4 total client(s). 2000 total requests
TLS Protocol: TLSv1.2
Cipher: ECDHE-ECDSA-AES128-GCM-SHA256
Server Temp Key: X25519 253 bits
Application protocol: h2
progress: 10% done
progress: 100% done

finished in 49.66ms, 40272.24 req/s, 2.73MB/s
requests: 2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 138.86KB (142196) total, 93.75KB (96000) headers (space savings 51.02%), 9.77KB (10000) data
                     min         max         mean         sd        +/- sd
time for request:       87us      2.41ms       701us       307us    85.65%
time for connect:     4.27ms      6.97ms      5.59ms      1.15ms    50.00%
time to 1st byte:     7.21ms      8.30ms      7.75ms       563us   100.00%
req/s           :   10141.75    10377.06    10262.57       96.14    50.00%
"""

H2LOAD_H2C_GOAWAY = """starting benchmark...
spawning thread #0: 4 total client(s). Timing-based test with 0s of warm-up time and 2s of main duration for measurements.
Warm-up started for thread #0.
progress: 25% of clients started
progress: 100% of clients started
Warm-up phase is over for thread #0.
Main benchmark duration is started for thread #0.
Application protocol: h2c
Process Request Failure:2
Process Request Failure:12
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 2.00s, 2000.00 req/s, 138.80KB/s
requests: 4026 total, 4036 started, 4026 done, 4000 succeeded, 26 failed, 26 errored, 0 timeout
status codes: 4000 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 277.60KB (284264) total, 187.50KB (192000) headers (space savings 51.02%), 19.53KB (20000) data
                     min         max         mean         sd        +/- sd
time for request:       75us      7.14ms       986us       637us    86.05%
time for connect:       53us       103us        82us        21us    75.00%
time to 1st byte:      526us      1.53ms      1.05ms       545us   100.00%
req/s           :    9266.56     9458.10     9326.75       90.09    75.00%
"""

H2LOAD_502 = """starting benchmark...
spawning thread #0: 2 total client(s). Timing-based test with 0s of warm-up time and 1s of main duration for measurements.
Application protocol: h2c
Stopped all clients for thread #0

finished in 1.00s, 9465.00 req/s, 2.07MB/s
requests: 9465 total, 9469 started, 9465 done, 0 succeeded, 9465 failed, 0 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 0 4xx, 9465 5xx
traffic: 2.07MB (2167583) total, 499.13KB (511110) headers (space savings 45.45%), 1.42MB (1486005) data
                     min         max         mean         sd        +/- sd
time for request:      120us      9.32ms       409us       529us    97.60%
time for connect:       69us        99us        84us        21us   100.00%
time to 1st byte:      689us       734us       711us        32us   100.00%
req/s           :    4698.73     4763.95     4731.34       46.12   100.00%
"""

H2LOAD_REFUSED = """starting benchmark...
spawning thread #0: 2 total client(s). Timing-based test with 0s of warm-up time and 1s of main duration for measurements.
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 1.00s, 0.00 req/s, 0B/s
requests: 0 total, 0 started, 0 done, 0 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 0B (0) total, 0B (0) headers (space savings 0.00%), 0B (0) data
                     min         max         mean         sd        +/- sd
time for request:        0us         0us         0us         0us     0.00%
time for connect:        0us         0us         0us         0us     0.00%
time to 1st byte:        0us         0us         0us         0us     0.00%
req/s           :       0.00        0.00        0.00        0.00   100.00%
"""


class H2AndGrpc(unittest.TestCase):
    def test_h2load_counted_run_over_tls(self):
        r = bench.parse_h2load(H2LOAD_TLS, "u", 1)
        self.assertEqual((r["requests"], r["errors"], r["protocol"]), (2000, 0, "h2"))
        self.assertAlmostEqual(r["h2load_rps"], 40272.24)
        self.assertAlmostEqual(r["mean_ms"], 0.701)
        self.assertAlmostEqual(r["min_ms"], 0.087)
        self.assertAlmostEqual(r["max_ms"], 2.41)
        self.assertAlmostEqual(r["sd_ms"], 0.307)
        self.assertEqual(bench.load_problems(r, "x"), [])

    def test_h2load_counts_errored_streams_not_those_cut_by_the_deadline(self):
        r = bench.parse_h2load(H2LOAD_H2C_GOAWAY, "u", 2)
        self.assertEqual((r["requests"], r["rps"], r["protocol"]), (4000, 2000.0, "h2c"))
        # 4036 started, 4026 done: the 10 still open at the end are not errors.
        self.assertEqual((r["errors"], r["error_kinds"]), (26, {"errored": 26}))
        self.assertAlmostEqual(r["mean_ms"], 0.986)
        self.assertTrue(bench.load_problems(r, "x"))

    def test_h2load_non_2xx_and_refused(self):
        r = bench.parse_h2load(H2LOAD_502, "u", 1)
        self.assertEqual((r["requests"], r["errors"], r["error_kinds"]), (0, 9465, {"status 5xx": 9465}))
        self.assertIsNone(r["mean_ms"])  # latency of failures is no figure
        self.assertTrue(bench.load_problems(r, "x"))
        r = bench.parse_h2load(H2LOAD_REFUSED, "u", 1)
        self.assertEqual((r["requests"], r["errors"], r["protocol"]), (0, 0, None))
        self.assertTrue(bench.load_problems(r, "x"))
        with self.assertRaisesRegex(BenchError, "h2load gave no result"):
            bench.parse_h2load("connect to 127.0.0.1 failed", "u", 1)

    def test_grpc_load_report(self):
        out = ('{"requests":4468,"errors":0,"error_kinds":{},"rps":2234.0,"p50_ms":7.9,"p90_ms":14.9,'
               '"p99_ms":23.7,"p999_ms":28.1,"max_ms":31.1,"mean_ms":8.9}\n')
        r = bench.parse_grpc_load(out, "", "u")
        self.assertEqual((r["requests"], r["p99_ms"]), (4468, 23.7))
        self.assertEqual(bench.load_problems(r, "x"), [])
        bad = bench.parse_grpc_load('{"requests":0,"errors":3372,"error_kinds":{"Internal":3372}}', "", "u")
        self.assertTrue(bench.load_problems(bad, "x"))
        with self.assertRaisesRegex(BenchError, "grpc-load gave no JSON.*connection refused"):
            bench.parse_grpc_load("", "Error: connect: connection refused", "u")

    def test_h2_and_grpc_checks(self):
        for name in ("h2", "grpc"):
            r = good(name)
            r["runs"][next(iter(r["runs"]))] = [FAILED]
            self.assertTrue(bench.check_scenario(name, r), name)
            r = good(name)
            r["probes"][0]["got"] = "http/1.1" if name == "h2" else "Unavailable"
            self.assertTrue(bench.check_scenario(name, r), name)
            r = good(name)
            r["probes"] = []
            self.assertTrue(bench.check_scenario(name, r), name)
            # A missing h2load or grpc binary skips the scenario: --check fails it.
            self.assertTrue(bench.check_scenario(name, {"skipped": "h2load is not installed"}), name)

    def test_nginx_h2_listen_by_version(self):
        self.assertEqual(bench.nginx_h2_listen(8443, True, (1, 22, 1)),
                         "listen 127.0.0.1:8443 ssl http2 backlog=16384;")
        self.assertEqual(bench.nginx_h2_listen(8080, False, (1, 22, 1)), "listen 127.0.0.1:8080 http2 backlog=16384;")
        self.assertEqual(bench.nginx_h2_listen(8443, True, (1, 25, 1)),
                         "listen 127.0.0.1:8443 ssl backlog=16384;\n    http2 on;")
        self.assertEqual(bench.nginx_h2_listen(8080, False, (1, 27, 0)),
                         "listen 127.0.0.1:8080 backlog=16384;\n    http2 on;")

    def test_grpc_config_routes_the_echo_methods(self):
        cfg = bench.grpc_config(5000)
        svc = cfg["services"][0]
        self.assertEqual((svc["protocol"], svc["port"]), ("grpc", 5000))
        self.assertEqual(svc["routes"], [{"name": "grpc", "protocols": ["grpc"], "paths": ["/grpc.test.Echo/"],
                                          "strip_path": False}])

    def meta(self):
        return {"date": "d", "host": "h", "cpus": 2, "driver": "oha", "rounds": 3, "duration_s": 8,
                "upstream": "nginx"}

    def test_h2_markdown(self):
        g = {"connections": 10, "streams": 10}
        for variant, (n, gw) in (("h2", (40000, 20000)), ("h2c", (50000, 40000))):
            s = {"nginx": {"rps": n, "mean_ms": 2.0, "cpu_s_per_10k": 0.25, "peak_rss_kib": 4096},
                 "gateway": {"rps": gw, "mean_ms": 4.0, "cpu_s_per_10k": 0.5, "peak_rss_kib": 20480}}
            g[variant] = {"summary": s, "ratio": bench.ratios(s["gateway"], s["nginx"],
                                                              ("rps", "mean_ms", "cpu_s_per_10k", "peak_rss_kib"))}
        md = bench.markdown_h2({"meta": self.meta(), "h2": g})
        self.assertIn("10 connections × 10 concurrent streams", md)
        self.assertIn("| h2 (TLS, ALPN) | gateway | 20000 | 4.00 | 0.500 | 20.0 |", md)
        self.assertIn("| h2c (prior knowledge) | nginx | 50000 | 2.00 | 0.250 | 4.0 |", md)
        self.assertIn("**h2 (TLS, ALPN), gateway / nginx:** 0.50× req/s, 2.00× CPU per request, 2.00× mean", md)
        self.assertIn("**h2c (prior knowledge), gateway / nginx:** 0.80× req/s", md)
        self.assertEqual(bench.markdown_h2({"meta": self.meta()}), "")

    def test_grpc_markdown(self):
        s = {"nginx": {"rps": 30000, "p50_ms": 3.0, "p90_ms": 4.0, "p99_ms": 6.0, "cpu_s_per_10k": 0.3,
                       "echo_cpu_s_per_10k": 0.2, "peak_rss_kib": 4096},
             "gateway": {"rps": 15000, "p50_ms": 6.0, "p90_ms": 8.0, "p99_ms": 12.0, "cpu_s_per_10k": 0.6,
                         "echo_cpu_s_per_10k": 0.2, "peak_rss_kib": 16384}}
        g = {"connections": 10, "concurrency": 100, "summary": s,
             "ratio": bench.ratios(s["gateway"], s["nginx"], tuple(s["nginx"]))}
        md = bench.markdown_grpc({"meta": self.meta(), "grpc": g})
        self.assertIn("100 in flight over 10 h2c connections", md)
        self.assertIn("| gateway | 15000 | 6.00 | 8.00 | 12.00 | 0.600 | 0.200 | 16.0 |", md)
        self.assertIn("| **gateway / nginx** | 0.50× | 2.00× | 2.00× | 2.00× | **2.00×** | | 4.00× |", md)

    def test_own_blocks(self):
        for name in ("h2", "grpc"):
            self.assertIn(name, bench.ALL_SCENARIOS)
            self.assertIn(name, bench.OWN_BLOCK)
            self.assertIn(name, bench.OWN_MARKDOWN)


class Report(unittest.TestCase):
    def summary(self, rps, cpu):
        return {"rps": rps, "p50_ms": 1.0, "p99_ms": 2.0, "cpu_s_per_10k": cpu, "peak_rss_kib": 10240}

    def test_plugins_markdown_with_and_without_a_baseline(self):
        s = {"nginx": self.summary(20000, 0.4), "gateway /none": self.summary(10000, 0.8),
             "gateway /full": self.summary(8000, 1.0)}
        g = {"summary": s, "routes": {"/none": [], "/full": ["key-auth", "acl"]},
             "vs_none": {k: bench.ratios(v, s["gateway /none"], ("rps", "cpu_s_per_10k"))
                         for k, v in s.items() if k.startswith("gateway")},
             "vs_nginx": {k: bench.ratios(v, s["nginx"], ("rps", "cpu_s_per_10k")) for k, v in s.items()},
             "cpu_us_over_none": {"gateway /none": 0.0, "gateway /full": 20.0}}
        res = {"meta": {"date": "d", "host": "h", "cpus": 2, "driver": "oha", "rounds": 3, "duration_s": 8},
               "plugins": g}
        md = bench.markdown_plugins(res)
        self.assertIn("| gateway /full | key-auth + acl | 8000 |", md)
        self.assertIn("| 20.0 |", md)
        self.assertNotIn("after / before", md)
        s["before /none"], s["after /none"] = self.summary(10000, 0.8), self.summary(9000, 0.9)
        g["after_vs_before"] = bench.ratios(s["after /none"], s["before /none"],
                                            ("rps", "p99_ms", "cpu_s_per_10k", "peak_rss_kib"))
        md = bench.markdown_plugins(res)
        self.assertIn("**after / before** | 0.90× | 1.00× | **1.12×**", md)

    def test_a_plugins_block_leaves_the_main_block_alone(self):
        with tempfile.NamedTemporaryFile("w", delete=False, suffix=".md") as f:
            f.write("# B\n<!-- bench:begin -->\nmain figures\n<!-- bench:end -->\n\n## Plugins\n"
                    "<!-- bench-plugins:begin -->\nold\n<!-- bench-plugins:end -->\n\n## After\n")
        try:
            bench.update_benchmarks_md(f.name, "new plugin figures", None, marker="bench-plugins")
            with open(f.name) as g:
                text = g.read()
            self.assertIn("main figures", text)
            self.assertIn("<!-- bench-plugins:begin -->\nnew plugin figures\n<!-- bench-plugins:end -->", text)
            self.assertNotIn("old", text)
            self.assertTrue(text.endswith("## After\n"))
        finally:
            os.unlink(f.name)


if __name__ == "__main__":
    unittest.main()
