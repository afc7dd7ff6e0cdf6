//! Port of Kong's `spec/03-plugins/17-ip-restriction/` (DB-less):
//! `01-schema_spec.lua` (through the declarative loader) and
//! `02-access_spec.lua`, one gateway per Kong `describe` block, each Kong
//! `it(...)` a named case. What Kong's mock upstream reports as
//! `json.vars.remote_addr` (its own realip result) is read here from the
//! `X-Real-IP` the recording upstream received. "supports config changes
//! without restarting" edits the declarative file and reloads (SIGHUP)
//! instead of PATCHing through the Admin API.
//! Skipped: the gRPC and stream (tcp/tls) cases, no gRPC client and no
//! stream proxy here.
#![allow(clippy::unwrap_used)]

use gw_tests::gateway::{fill_ports, Cases, Gateway, Recorder};
use gw_tests::{request, Response};

/// `helpers.start_kong` settings of the first and third `describe`.
const XFF_ENV: &[(&str, &str)] = &[
    ("KONG_REAL_IP_HEADER", "X-Forwarded-For"),
    ("KONG_REAL_IP_RECURSIVE", "on"),
    ("KONG_TRUSTED_IPS", "0.0.0.0/0, ::/0"),
];

/// The second `describe`: `X-Real-IP` (the default `real_ip_header`).
const REAL_IP_ENV: &[(&str, &str)] = &[
    ("KONG_REAL_IP_RECURSIVE", "on"),
    ("KONG_TRUSTED_IPS", "0.0.0.0/0, ::/0"),
];

fn routes(plugins: &[(&str, &str)]) -> String {
    let mut yml = String::from(
        "_format_version: \"3.0\"\nservices:\n- name: mock\n  url: http://{UP0}\n  routes:\n",
    );
    for (host, config) in plugins {
        yml.push_str(&format!(
            "  - hosts: [{host}]\n    plugins: [{{name: ip-restriction, id: {}, config: {config}}}]\n",
            plugin_id(host)
        ));
    }
    yml
}

/// A stable plugin id per host (the reload keeps it).
fn plugin_id(host: &str) -> String {
    let n: u32 = host.bytes().map(u32::from).sum();
    format!("00000000-0000-4000-8000-{n:012}")
}

fn get(gw: &Gateway, host: &str, extra: &[(&str, &str)]) -> Response {
    let mut h = vec![("Host", host)];
    h.extend_from_slice(extra);
    request(gw.port, "GET", "/status/200", &h, b"")
}

fn assert_blocked(r: &Response, ip: &str) {
    assert_eq!(r.status, 403, "{}", r.body_str());
    assert_eq!(
        r.json()["message"],
        format!("IP address not allowed: {ip}"),
        "{}",
        r.body_str()
    );
}

fn assert_allowed(r: &Response, up: &Recorder, remote_addr: &str) {
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(up.last().header("x-real-ip"), Some(remote_addr));
}

fn ipv4_config(route2_deny: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "ip-restriction1.test",
            "{deny: [127.0.0.1, 127.0.0.2]}".into(),
        ),
        ("ip-restriction2.test", format!("{{deny: {route2_deny}}}")),
        ("ip-restriction3.test", "{allow: [127.0.0.2]}".into()),
        ("ip-restriction4.test", "{allow: [127.0.0.1]}".into()),
        ("ip-restriction5.test", "{deny: [127.0.0.0/24]}".into()),
        ("ip-restriction6.test", "{allow: [127.0.0.4]}".into()),
        ("ip-restriction7.test", "{deny: [127.0.0.4]}".into()),
        ("ip-restriction8.test", "{allow: [0.0.0.0/0]}".into()),
        (
            "ip-restriction9.test",
            "{allow: [127.0.0.1], deny: [127.0.0.1]}".into(),
        ),
        (
            "ip-restriction10.test",
            "{allow: [127.0.0.0/24], deny: [127.0.0.1]}".into(),
        ),
        (
            "ip-restriction11.test",
            "{allow: [127.0.0.0/24], deny: [127.0.0.0/24]}".into(),
        ),
        (
            "ip-restriction12.test",
            "{deny: [127.0.0.0/24], status: 401, message: Forbidden}".into(),
        ),
        // Not in Kong's spec: a status `kong.response.error` refuses.
        (
            "ip-restriction13.test",
            "{deny: [127.0.0.0/24], status: 200}".into(),
        ),
    ]
}

fn config(list: &[(&'static str, String)], port: u16) -> String {
    let pairs: Vec<(&str, &str)> = list.iter().map(|(h, c)| (*h, c.as_str())).collect();
    fill_ports(&routes(&pairs), &[port])
}

#[test]
fn ip_restriction_access_ipv4() {
    let up = Recorder::start();
    let gw = Gateway::start_with(&config(&ipv4_config("[127.0.0.2]"), up.port), XFF_ENV);
    let mut t = Cases::new();
    // describe("deny")
    t.it("blocks a request when the IP is denied", || {
        assert_blocked(&get(&gw, "ip-restriction1.test", &[]), "127.0.0.1");
    });
    t.it(
        "blocks a request when the IP is denied with status/message",
        || {
            let r = get(&gw, "ip-restriction12.test", &[]);
            assert_eq!(r.status, 401, "{}", r.body_str());
            assert_eq!(r.json()["message"], "Forbidden");
            // `kong.response.error`: Kong's error template, with request_id.
            assert_eq!(
                r.json()["request_id"].as_str(),
                r.header("X-Kong-Request-Id")
            );
        },
    );
    t.it("allows a request when the IP is not denied", || {
        assert_allowed(&get(&gw, "ip-restriction2.test", &[]), &up, "127.0.0.1");
    });
    t.it("blocks IP with CIDR", || {
        assert_blocked(&get(&gw, "ip-restriction5.test", &[]), "127.0.0.1");
    });
    t.it("blocks an IP on a allowed CIDR range", || {
        assert_blocked(&get(&gw, "ip-restriction10.test", &[]), "127.0.0.1");
    });
    t.it("takes precedence over an allowed IP", || {
        assert_blocked(&get(&gw, "ip-restriction9.test", &[]), "127.0.0.1");
    });
    t.it("takes precedence over an allowed CIDR range", || {
        assert_blocked(&get(&gw, "ip-restriction11.test", &[]), "127.0.0.1");
    });
    // describe("X-Forwarded-For")
    t.it("allows without any X-Forwarded-For and allowed IP", || {
        assert_allowed(&get(&gw, "ip-restriction7.test", &[]), &up, "127.0.0.1");
    });
    t.it("allows with allowed X-Forwarded-For header", || {
        let r = get(
            &gw,
            "ip-restriction7.test",
            &[("X-Forwarded-For", "127.0.0.3")],
        );
        assert_allowed(&r, &up, "127.0.0.3");
    });
    t.it("blocks with not allowed X-Forwarded-For header", || {
        let r = get(
            &gw,
            "ip-restriction7.test",
            &[("X-Forwarded-For", "127.0.0.4")],
        );
        assert_blocked(&r, "127.0.0.4");
    });
    // describe("allow")
    t.it("blocks a request when the IP is not allowed", || {
        assert_blocked(&get(&gw, "ip-restriction3.test", &[]), "127.0.0.1");
    });
    t.it("allows a allowed IP", || {
        assert_allowed(&get(&gw, "ip-restriction4.test", &[]), &up, "127.0.0.1");
    });
    t.it(
        "blocks without any X-Forwarded-For and not allowed IP",
        || {
            assert_blocked(&get(&gw, "ip-restriction6.test", &[]), "127.0.0.1");
        },
    );
    t.it("block with not allowed X-Forwarded-For header", || {
        let r = get(
            &gw,
            "ip-restriction6.test",
            &[("X-Forwarded-For", "127.0.0.3")],
        );
        assert_blocked(&r, "127.0.0.3");
    });
    t.it("allows with allowed X-Forwarded-For header (allow)", || {
        let r = get(
            &gw,
            "ip-restriction6.test",
            &[("X-Forwarded-For", "127.0.0.4")],
        );
        assert_allowed(&r, &up, "127.0.0.4");
    });
    t.it("allows with allowed complex X-Forwarded-For header", || {
        let r = get(
            &gw,
            "ip-restriction6.test",
            &[("X-Forwarded-For", "127.0.0.4, 127.0.0.3")],
        );
        assert_allowed(&r, &up, "127.0.0.4");
    });
    // describe("#regression")
    t.it("handles a CIDR entry with 0.0.0.0/0", || {
        assert_allowed(&get(&gw, "ip-restriction8.test", &[]), &up, "127.0.0.1");
    });
    t.it("a status kong.response.error refuses gives 500", || {
        let r = get(&gw, "ip-restriction13.test", &[]);
        assert_eq!(r.status, 500, "{}", r.body_str());
        assert_eq!(r.json()["message"], "An unexpected error occurred");
    });
    t.it(
        "refusals reach no upstream and go through the error template",
        || {
            let before = up.count();
            let r = request(
                gw.port,
                "GET",
                "/",
                &[("Host", "ip-restriction1.test"), ("Accept", "text/plain")],
                b"",
            );
            assert_eq!(r.status, 403);
            assert!(
                r.body_str().contains("IP address not allowed: 127.0.0.1"),
                "{}",
                r.body_str()
            );
            assert!(r
                .header("Content-Type")
                .unwrap_or("")
                .starts_with("text/plain"));
            assert_eq!(up.count(), before);
        },
    );

    t.it("supports config changes without restarting", || {
        assert_eq!(get(&gw, "ip-restriction2.test", &[]).status, 200);
        let denied = config(&ipv4_config("[127.0.0.1, 127.0.0.2]"), up.port);
        assert!(gw.reload_and_wait(&denied), "reload did not apply");
        assert_blocked(&get(&gw, "ip-restriction2.test", &[]), "127.0.0.1");
        let allowed = config(&ipv4_config("[127.0.0.2, 127.0.0.3]"), up.port);
        assert!(gw.reload_and_wait(&allowed), "reload did not apply");
        assert_eq!(get(&gw, "ip-restriction2.test", &[]).status, 200);
    });
    t.finish();
}

fn ipv6_config(route2_deny: &str) -> Vec<(&'static str, String)> {
    vec![
        ("ip-restriction1.test", "{deny: [\"::1\", \"::2\"]}".into()),
        ("ip-restriction2.test", format!("{{deny: {route2_deny}}}")),
        ("ip-restriction3.test", "{deny: [\"fe80::/8\"]}".into()),
        ("ip-restriction4.test", "{allow: [\"::2\"]}".into()),
        ("ip-restriction5.test", "{allow: [\"::1\"]}".into()),
        ("ip-restriction6.test", "{allow: [\"::/0\"]}".into()),
        (
            "ip-restriction7.test",
            "{allow: [\"::1\"], deny: [\"::1\"]}".into(),
        ),
        (
            "ip-restriction8.test",
            "{allow: [\"::1/128\"], deny: [\"::1\"]}".into(),
        ),
        (
            "ip-restriction9.test",
            "{allow: [\"::1/128\"], deny: [\"::1/128\"]}".into(),
        ),
    ]
}

#[test]
fn ip_restriction_access_ipv6_real_ip() {
    let up = Recorder::start();
    let gw = Gateway::start_with(&config(&ipv6_config("[\"::2\"]"), up.port), REAL_IP_ENV);
    let v6 = [("X-Real-IP", "::1")];
    let mut t = Cases::new();
    t.it("blocks a request when the IPv6 is denied", || {
        assert_blocked(&get(&gw, "ip-restriction1.test", &v6), "::1");
    });
    t.it("allows a request when the IPv6 is not denied", || {
        assert_allowed(&get(&gw, "ip-restriction2.test", &v6), &up, "::1");
    });
    t.it("blocks the IPv6 with CIDR", || {
        let r = get(&gw, "ip-restriction3.test", &[("X-Real-IP", "fe80::1")]);
        assert_blocked(&r, "fe80::1");
    });
    t.it("blocks an IPv6 on a allowed IPv6 CIDR range", || {
        assert_blocked(&get(&gw, "ip-restriction8.test", &v6), "::1");
    });
    t.it("takes precedence over an allowed IPv6", || {
        assert_blocked(&get(&gw, "ip-restriction7.test", &v6), "::1");
    });
    t.it("takes precedence over an allowed IPv6 CIDR range", || {
        // No X-Real-IP: the IPv4 peer matches neither IPv6 list.
        assert_blocked(&get(&gw, "ip-restriction9.test", &[]), "127.0.0.1");
    });
    t.it("blocks a request when the IPv6 is not allowed", || {
        assert_blocked(&get(&gw, "ip-restriction4.test", &v6), "::1");
    });
    t.it("allows a allowed IPv6", || {
        assert_allowed(&get(&gw, "ip-restriction5.test", &v6), &up, "::1");
    });
    t.it("handles a CIDR entry with ::/0", || {
        assert_allowed(&get(&gw, "ip-restriction6.test", &v6), &up, "::1");
    });
    t.it("supports config changes without restarting", || {
        assert_allowed(&get(&gw, "ip-restriction2.test", &v6), &up, "::1");
        let denied = config(&ipv6_config("[\"::1\", \"::2\"]"), up.port);
        assert!(gw.reload_and_wait(&denied), "reload did not apply");
        assert_blocked(&get(&gw, "ip-restriction2.test", &v6), "::1");
        let allowed = config(&ipv6_config("[\"::2\", \"::3\"]"), up.port);
        assert!(gw.reload_and_wait(&allowed), "reload did not apply");
        assert_allowed(&get(&gw, "ip-restriction2.test", &v6), &up, "::1");
    });
    t.finish();
}

#[test]
fn ip_restriction_access_ipv6_forwarded_for() {
    let up = Recorder::start();
    let list = vec![
        ("ip-restriction1.test", "{deny: [\"::4\"]}".to_string()),
        ("ip-restriction2.test", "{allow: [\"::4\"]}".to_string()),
    ];
    let gw = Gateway::start_with(&config(&list, up.port), XFF_ENV);
    let xff = |v: &'static str| [("X-Forwarded-For", v)];
    let mut t = Cases::new();
    // describe("deny")
    t.it("allows with allowed X-Forwarded-For header", || {
        assert_allowed(&get(&gw, "ip-restriction1.test", &xff("::3")), &up, "::3");
    });
    t.it("blocks with not allowed X-Forwarded-For header", || {
        assert_blocked(&get(&gw, "ip-restriction1.test", &xff("::4")), "::4");
    });
    t.it("blocks with blocked complex X-Forwarded-For header", || {
        assert_blocked(&get(&gw, "ip-restriction1.test", &xff("::4, ::3")), "::4");
    });
    t.it("allows with allowed complex X-Forwarded-For header", || {
        let r = get(&gw, "ip-restriction1.test", &xff("::3, ::4"));
        assert_allowed(&r, &up, "::3");
    });
    // describe("allow")
    t.it("block with not allowed X-Forwarded-For header", || {
        assert_blocked(&get(&gw, "ip-restriction2.test", &xff("::3")), "::3");
    });
    t.it("allows with allowed X-Forwarded-For header (allow)", || {
        assert_allowed(&get(&gw, "ip-restriction2.test", &xff("::4")), &up, "::4");
    });
    t.it(
        "allows with allowed complex X-Forwarded-For header (allow)",
        || {
            let r = get(&gw, "ip-restriction2.test", &xff("::4, ::3"));
            assert_allowed(&r, &up, "::4");
        },
    );
    t.it(
        "blocks with blocked complex X-Forwarded-For header (allow)",
        || {
            assert_blocked(&get(&gw, "ip-restriction2.test", &xff("::3, ::4")), "::3");
        },
    );
    t.finish();
}

#[test]
fn ip_restriction_schema_through_the_loader() {
    let yml = r#"_format_version: "3.0"
services:
- name: s
  url: http://127.0.0.1:9
  routes:
  - {name: r1, paths: [/r1], plugins: [{name: ip-restriction, config: {allow: 12}}]}
  - {name: r2, paths: [/r2], plugins: [{name: ip-restriction, config: {deny: 12}}]}
  - {name: r3, paths: [/r3], plugins: [{name: ip-restriction, config: {allow: [127.0.0.1/32, 127.0.0.2/32, hello]}}]}
  - {name: r4, paths: [/r4], plugins: [{name: ip-restriction, config: {deny: [hello]}}]}
  - {name: r5, paths: [/r5], plugins: [{name: ip-restriction, config: {deny: [], allow: []}}]}
  - {name: r6, paths: [/r6], plugins: [{name: ip-restriction, config: {allow: [0.0.0.0/a, 0.0.0.0/-1, 0.0.0.0/33]}}]}
  - {name: r7, paths: [/r7], plugins: [{name: ip-restriction, config: {allow: ["::/a", "::/-1", "::/129", "::1/a", "::1/-1", "::1/129"]}}]}
"#;
    let err = match Gateway::try_start(yml) {
        Ok(_) => panic!("gateway started with invalid ip-restriction configs"),
        Err(out) => out,
    };
    let mut t = Cases::new();
    let has = |text: &str| {
        let needle = format!("in 'plugins' entity 'ip-restriction': {text}");
        assert!(err.contains(&needle), "missing `{needle}` in:\n{err}");
    };
    t.it("allow should not accept invalid types", || {
        has("field 'config.allow': expected an array")
    });
    t.it("deny should not accept invalid types", || {
        has("field 'config.deny': expected an array")
    });
    t.it("allow should not accept invalid IPs", || {
        has("field 'config.allow.3': invalid ip or cidr range: 'hello'")
    });
    t.it("deny should not accept invalid IPs", || {
        has("field 'config.deny.1': invalid ip or cidr range: 'hello'")
    });
    t.it("should not accept both empty allow and deny", || {
        has("at least one of these fields must be non-empty: 'config.allow', 'config.deny'")
    });
    t.it("should not accept invalid cidr ranges", || {
        for (i, c) in ["0.0.0.0/a", "0.0.0.0/-1", "0.0.0.0/33"].iter().enumerate() {
            has(&format!(
                "field 'config.allow.{}': invalid ip or cidr range: '{c}'",
                i + 1
            ));
        }
    });
    t.it("should not accept invalid ipv6 cidr ranges", || {
        for (i, c) in ["::/a", "::/-1", "::/129", "::1/a", "::1/-1", "::1/129"]
            .iter()
            .enumerate()
        {
            has(&format!(
                "field 'config.allow.{}': invalid ip or cidr range: '{c}'",
                i + 1
            ));
        }
    });
    t.finish();

    // The valid ones load, with the stream protocols in the default.
    let ok = r#"_format_version: "3.0"
services:
- name: s
  url: http://127.0.0.1:9
  routes:
  - {name: r1, paths: [/r1], plugins: [{name: ip-restriction, config: {allow: [127.0.0.1/32, 127.0.0.2/32]}}]}
  - {name: r2, paths: [/r2], plugins: [{name: ip-restriction, config: {allow: [127.0.0.1/32], status: 403, message: Forbidden}}]}
  - {name: r3, paths: [/r3], plugins: [{name: ip-restriction, config: {allow: [127.0.0.1/8]}}]}
  - {name: r4, paths: [/r4], plugins: [{name: ip-restriction, config: {deny: [127.0.0.1/32, 127.0.0.2/32]}}]}
  - {name: r5, paths: [/r5], plugins: [{name: ip-restriction, config: {deny: [127.0.0.2/32], allow: [127.0.0.1/32]}}]}
  - {name: r6, paths: [/r6], plugins: [{name: ip-restriction, config: {allow: ["::/0", "::/1", "::/128"]}}]}
  - {name: r7, paths: [/r7], plugins: [{name: ip-restriction, protocols: [http, tcp, tls_passthrough, udp], config: {allow: ["::/0"]}}]}
"#;
    if let Err(out) = Gateway::try_start(ok) {
        panic!("valid ip-restriction configs refused:\n{out}");
    }
}
