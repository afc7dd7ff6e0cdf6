//! Port of Kong's `spec/03-plugins/18-acl/02-access_spec.lua` (DB-less): one
//! gateway per Kong `describe` block, each Kong `it(...)` a named case;
//! what Kong's mock upstream echoes is read from the recording upstream.
//!
//! Skipped: every case that needs Kong's `ctx-checker` test plugin to set
//! `kong.ctx.shared.authenticated_groups` or `authenticated_credential`
//! (the "with authenticated groups" variants, "... missing (with
//! credential)", "Permits with" / "Forbids with", "if authenticated_groups
//! is set, it'll be used"), "cache warmup acls group" (pre-function and the
//! DB cache), and "Real-world usage" (Admin API writes; DB-less has none).
#![allow(clippy::unwrap_used)]

use gw_tests::gateway::{fill_ports, Cases, Gateway, Recorder};
use gw_tests::{request, Response};

const ACCESS: &str = r#"_format_version: "3.0"
consumers:
- username: consumer1
  keyauth_credentials: [{key: apikey123}]
- username: consumer2
  keyauth_credentials: [{key: apikey124}]
  acls: [{group: admin}]
- username: consumer3
  keyauth_credentials: [{key: apikey125}]
  acls: [{group: pro}, {group: hello}]
- username: consumer4
  keyauth_credentials: [{key: apikey126}]
  acls: [{group: free}, {group: hello}]
- username: consumer5
  keyauth_credentials: [{key: apikey127}]
  acls: [{group: acl_group1}]
- username: anonymous
  id: 9c4e6f70-0000-4000-8000-0000000000a0
  acls: [{group: anonymous}]
services:
- url: http://{UP0}
  routes:
  - hosts: [acl1.test]
    plugins: [{name: acl, config: {allow: [admin]}}]
  - hosts: [acl2.test]
    plugins: [{name: acl, config: {allow: [admin]}}, {name: key-auth}]
  - hosts: [acl3.test]
    plugins: [{name: acl, config: {deny: [admin]}}, {name: key-auth}]
  - hosts: [acl3d.test]
    plugins: [{name: acl, config: {deny: [none]}}]
  - hosts: [acl4.test]
    plugins: [{name: acl, config: {allow: [admin, pro]}}, {name: key-auth}]
  - hosts: [acl5.test]
    plugins: [{name: acl, config: {deny: [admin, pro]}}, {name: key-auth}]
  - hosts: [acl6.test]
    plugins: [{name: acl, config: {deny: [admin, pro, hello]}}, {name: key-auth}]
  - hosts: [acl7.test]
    plugins: [{name: acl, config: {allow: [admin, pro, hello]}}, {name: key-auth}]
  - hosts: [acl8.test]
    plugins:
    - {name: acl, config: {allow: [anonymous]}}
    - {name: key-auth, config: {anonymous: 9c4e6f70-0000-4000-8000-0000000000a0}}
  - hosts: [acl9.test]
    plugins: [{name: acl, config: {allow: [admin], hide_groups_header: true}}, {name: key-auth}]
  - hosts: [acl10.test]
    plugins: [{name: acl, config: {allow: [admin], hide_groups_header: false}}, {name: key-auth}]
  - hosts: [acl17.test]
    plugins:
    - {name: acl, config: {allow: [acl_group1], hide_groups_header: false, always_use_authenticated_groups: true}}
    - {name: key-auth}
"#;

fn get(gw: &Gateway, path: &str, host: &str) -> Response {
    request(gw.port, "GET", path, &[("Host", host)], b"")
}

/// `kong.response.error` with Kong's message (and a request id).
fn assert_error(r: &Response, status: u16, message: &str) {
    assert_eq!(r.status, status, "{}", r.body_str());
    assert_eq!(r.json()["message"], message);
    assert!(r.json()["request_id"].is_string());
}

#[test]
fn acl_access() {
    let up = Recorder::start();
    let gw = Gateway::start(&fill_ports(ACCESS, &[up.port]));
    let mut t = Cases::new();
    let groups = |name: &str| up.last().header(name).map(str::to_string);

    // describe("Mapping to Consumer or Authenticated Groups")
    t.it("should work with consumer with credentials", || {
        let r = get(&gw, "/request?apikey=apikey124", "acl2.test");
        assert_eq!(r.status, 200);
        assert_eq!(groups("x-consumer-groups").as_deref(), Some("admin"));
        assert_eq!(groups("x-authenticated-groups"), None);
    });
    t.it("should work with consumer without credentials", || {
        let r = get(&gw, "/request", "acl8.test");
        assert_eq!(r.status, 200);
        assert_eq!(groups("x-consumer-groups").as_deref(), Some("anonymous"));
        assert_eq!(groups("x-authenticated-groups"), None);
    });

    // describe("Simple lists")
    t.it(
        "should fail when an authentication plugin is missing",
        || {
            assert_error(&get(&gw, "/status/200", "acl1.test"), 401, "Unauthorized");
        },
    );
    t.it("should fail when not allowed", || {
        let r = get(&gw, "/status/200?apikey=apikey123", "acl2.test");
        assert_error(&r, 403, "You cannot consume this service");
    });
    t.it("should work when allowed", || {
        let r = get(&gw, "/request?apikey=apikey124", "acl2.test");
        assert_eq!(r.status, 200);
        assert_eq!(groups("x-consumer-groups").as_deref(), Some("admin"));
        assert_eq!(groups("x-authenticated-groups"), None);
    });
    t.it(
        "should not send x-consumer-groups header when hide_groups_header flag true",
        || {
            let r = get(&gw, "/request?apikey=apikey124", "acl9.test");
            assert_eq!(r.status, 200);
            assert_eq!(groups("x-consumer-groups"), None);
            assert_eq!(groups("x-authenticated-groups"), None);
        },
    );
    t.it(
        "should send x-consumer-groups header when hide_groups_header flag false",
        || {
            let r = get(&gw, "/request?apikey=apikey124", "acl10.test");
            assert_eq!(r.status, 200);
            assert_eq!(groups("x-consumer-groups").as_deref(), Some("admin"));
            assert_eq!(groups("x-authenticated-groups"), None);
        },
    );
    t.it("should work when not denied", || {
        assert_eq!(
            get(&gw, "/request?apikey=apikey123", "acl3.test").status,
            200
        );
    });
    t.it("should fail when denied", || {
        let r = get(&gw, "/request?apikey=apikey124", "acl3.test");
        assert_error(&r, 403, "You cannot consume this service");
    });
    t.it(
        "should fail denied and with no authenticated groups",
        || {
            assert_error(&get(&gw, "/request", "acl3d.test"), 401, "Unauthorized");
        },
    );

    // describe("Multi lists")
    t.it("should work when allowed (multi)", || {
        let r = get(&gw, "/request?apikey=apikey125", "acl4.test");
        assert_eq!(r.status, 200);
        let g = groups("x-consumer-groups").unwrap();
        assert!(g == "pro, hello" || g == "hello, pro", "{g}");
        assert_eq!(groups("x-authenticated-groups"), None);
    });
    t.it("should fail when not allowed (multi)", || {
        let r = get(&gw, "/request?apikey=apikey126", "acl4.test");
        assert_error(&r, 403, "You cannot consume this service");
    });
    t.it("should fail when denied (multi)", || {
        let r = get(&gw, "/request?apikey=apikey125", "acl5.test");
        assert_error(&r, 403, "You cannot consume this service");
    });
    t.it("should work when not denied (multi)", || {
        assert_eq!(
            get(&gw, "/request?apikey=apikey126", "acl5.test").status,
            200
        );
    });
    t.it("should not work when one of the ACLs denied", || {
        let r = get(&gw, "/request?apikey=apikey126", "acl6.test");
        assert_error(&r, 403, "You cannot consume this service");
    });
    t.it("should work when one of the ACLs is allowed", || {
        assert_eq!(
            get(&gw, "/request?apikey=apikey126", "acl7.test").status,
            200
        );
    });
    t.it(
        "should not work when at least one of the ACLs denied",
        || {
            let r = get(&gw, "/request?apikey=apikey125", "acl6.test");
            assert_error(&r, 403, "You cannot consume this service");
        },
    );

    // describe("always_use_authenticated_groups")
    t.it(
        "if authenticated_groups is not set, fallback to use acl groups",
        || {
            let r = get(&gw, "/request?apikey=apikey127", "acl17.test");
            assert_eq!(r.status, 200);
            assert_eq!(groups("x-authenticated-groups"), None);
            assert_eq!(groups("x-consumer-groups").as_deref(), Some("acl_group1"));
            let r = get(&gw, "/request?apikey=apikey126", "acl17.test");
            assert_error(&r, 403, "You cannot consume this service");
        },
    );
    t.it("a client-sent X-Consumer-Groups is replaced", || {
        let r = request(
            gw.port,
            "GET",
            "/request?apikey=apikey124",
            &[("Host", "acl2.test"), ("X-Consumer-Groups", "root")],
            b"",
        );
        assert_eq!(r.status, 200);
        assert_eq!(up.last().header_all("x-consumer-groups"), vec!["admin"]);
    });
    t.finish();
}

const ANONYMOUS: &str = r#"_format_version: "3.0"
consumers:
- username: anonymous
  id: 9c4e6f70-0000-4000-8000-0000000000b0
- username: anonymous_with_group
  id: 9c4e6f70-0000-4000-8000-0000000000b1
  acls: [{group: everyone}]
services:
- url: http://{UP0}
  routes:
  - hosts: [allow-everyone.test]
    plugins: [{name: acl, config: {allow: [everyone]}}]
  - hosts: [allow-none.test]
    plugins: [{name: acl, config: {allow: [none]}}]
  - hosts: [deny-everyone.test]
    plugins: [{name: acl, config: {allow: [everyone]}}]
  - hosts: [deny-none.test]
    plugins: [{name: acl, config: {allow: [none]}}]
  - hosts: [allow-everyone-anonymous.test]
    plugins: [{name: acl, config: {allow: [everyone]}}, {name: key-auth, config: {anonymous: 9c4e6f70-0000-4000-8000-0000000000b0}}]
  - hosts: [allow-everyone-anonymous-with-group.test]
    plugins: [{name: acl, config: {allow: [everyone]}}, {name: key-auth, config: {anonymous: 9c4e6f70-0000-4000-8000-0000000000b1}}]
  - hosts: [allow-none-anonymous.test]
    plugins: [{name: acl, config: {allow: [none]}}, {name: key-auth, config: {anonymous: 9c4e6f70-0000-4000-8000-0000000000b0}}]
  - hosts: [allow-none-anonymous-with-group.test]
    plugins: [{name: acl, config: {allow: [none]}}, {name: key-auth, config: {anonymous: 9c4e6f70-0000-4000-8000-0000000000b1}}]
  - hosts: [deny-everyone-anonymous.test]
    plugins: [{name: acl, config: {deny: [everyone]}}, {name: key-auth, config: {anonymous: 9c4e6f70-0000-4000-8000-0000000000b0}}]
  - hosts: [deny-everyone-anonymous-with-group.test]
    plugins: [{name: acl, config: {deny: [everyone]}}, {name: key-auth, config: {anonymous: 9c4e6f70-0000-4000-8000-0000000000b1}}]
  - hosts: [deny-none-anonymous.test]
    plugins: [{name: acl, config: {deny: [none]}}, {name: key-auth, config: {anonymous: 9c4e6f70-0000-4000-8000-0000000000b0}}]
  - hosts: [deny-none-anonymous-with-group.test]
    plugins: [{name: acl, config: {deny: [none]}}, {name: key-auth, config: {anonymous: 9c4e6f70-0000-4000-8000-0000000000b1}}]
"#;

#[test]
fn acl_anonymous() {
    let up = Recorder::start();
    let gw = Gateway::start(&fill_ports(ANONYMOUS, &[up.port]));
    let mut t = Cases::new();
    // describe("without authentication")
    t.it("returns 401", || {
        for host in [
            "allow-everyone.test",
            "allow-none.test",
            "deny-everyone.test",
            "deny-none.test",
        ] {
            let r = get(&gw, "/request", host);
            assert_error(&r, 401, "Unauthorized");
            assert!(r.json().get("headers").is_none());
        }
    });
    // describe("with authentication without groups")
    t.it("returns 401 with allow groups", || {
        for host in ["allow-everyone-anonymous.test", "allow-none-anonymous.test"] {
            assert_error(&get(&gw, "/request", host), 401, "Unauthorized");
        }
    });
    t.it("returns 200 with deny groups", || {
        for host in ["deny-everyone-anonymous.test", "deny-none-anonymous.test"] {
            let r = get(&gw, "/request", host);
            assert_eq!(r.status, 200);
            // Sent, and empty.
            let got = up.last();
            assert_eq!(
                got.header("x-consumer-groups"),
                Some(""),
                "{host}: {:?}",
                got.headers
            );
        }
    });
    // describe("with authentication with group")
    t.it("returns 200", || {
        for host in [
            "allow-everyone-anonymous-with-group.test",
            "deny-none-anonymous-with-group.test",
        ] {
            let r = get(&gw, "/request", host);
            assert_eq!(r.status, 200);
            let got = up.last();
            assert_eq!(got.header("x-authenticated-groups"), None);
            assert_eq!(got.header("x-consumer-groups"), Some("everyone"));
        }
    });
    t.it("returns 403", || {
        for host in [
            "allow-none-anonymous-with-group.test",
            "deny-everyone-anonymous-with-group.test",
        ] {
            assert_error(
                &get(&gw, "/request", host),
                403,
                "You cannot consume this service",
            );
        }
    });
    t.finish();
}

#[test]
fn acl_schema_needs_exactly_one_list() {
    for conf in ["{}", "{allow: [a], deny: [b]}"] {
        let out = Gateway::try_start(&format!(
            "_format_version: \"3.0\"\nservices:\n- url: http://127.0.0.1:9\n  routes:\n  - paths: [/]\n    plugins: [{{name: acl, config: {conf}}}]\n"
        ))
        .err()
        .expect("config must be refused");
        assert!(
            out.contains(
                "exactly one of these fields must be non-empty: 'config.allow', 'config.deny'"
            ),
            "{out}"
        );
    }
}
