//! Port of Kong's `spec/03-plugins/10-basic-auth/03-access_spec.lua` and
//! `05-declarative_spec.lua` (DB-less): one gateway per Kong `describe`
//! block, each Kong `it(...)` a named case; what Kong's mock upstream echoes
//! is read from the recording upstream. Skipped: the gRPC cases (no gRPC
//! client in this harness), `load_into_db` (no database: the loader's side
//! of it is in config-sync's tests).
#![allow(clippy::unwrap_used)]

use gw_tests::gateway::{fill_ports, Cases, Gateway, Recorder};
use gw_tests::{request, Response};

const BOB: &str = "7a2c4d5e-0000-4000-8000-0000000000b0";
const NO_BODY: &str = "7a2c4d5e-0000-4000-8000-0000000000a0";
const NONEXISTING: &str = "7a2c4d5e-0000-4000-8000-00000000dead";

const ACCESS: &str = r#"_format_version: "3.0"
consumers:
- username: bob
  id: 7a2c4d5e-0000-4000-8000-0000000000b0
  basicauth_credentials:
  - {username: bob, password: kong}
  - {username: user123, password: password123}
  - {username: user321, password: "password:123"}
- username: no-body
  id: 7a2c4d5e-0000-4000-8000-0000000000a0
services:
- name: mock
  url: http://{UP0}
  routes:
  - hosts: [basic-auth1.test]
    plugins: [{name: basic-auth, config: {realm: test-realm}}]
  - hosts: [basic-auth2.test]
    plugins: [{name: basic-auth, config: {hide_credentials: true}}]
  - hosts: [basic-auth3.test]
    plugins: [{name: basic-auth, config: {anonymous: 7a2c4d5e-0000-4000-8000-0000000000a0}}]
  - hosts: [basic-auth4.test]
    plugins: [{name: basic-auth, config: {anonymous: 7a2c4d5e-0000-4000-8000-00000000dead}}]
  - hosts: [basic-auth5.test]
    plugins: [{name: basic-auth, config: {anonymous: no-body}}]
"#;

fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Response {
    request(gw.port, "GET", path, headers, b"")
}

fn assert_401(r: &Response, www: &str) {
    assert_eq!(r.status, 401, "{}", r.body_str());
    assert_eq!(r.json()["message"], "Unauthorized");
    // kong.response.error: with the request id.
    assert!(r.json()["request_id"].is_string());
    assert_eq!(r.header("WWW-Authenticate"), Some(www));
}

const TEST_REALM: &str = "Basic realm=\"test-realm\"";

#[test]
fn basic_auth_access() {
    let up = Recorder::start();
    let gw = Gateway::start(&fill_ports(ACCESS, &[up.port]));
    let mut t = Cases::new();

    t.it(
        "returns Unauthorized on missing credentials (realm configured)",
        || {
            let r = get(&gw, "/status/200", &[("Host", "basic-auth1.test")]);
            assert_401(&r, TEST_REALM);
        },
    );
    t.it(
        "returns Unauthorized on missing credentials (realm default)",
        || {
            let r = get(&gw, "/status/200", &[("Host", "basic-auth2.test")]);
            assert_401(&r, "Basic realm=\"service\"");
        },
    );
    t.it(
        "returns 401 Unauthorized on invalid credentials in Authorization",
        || {
            let r = get(
                &gw,
                "/status/200",
                &[("Host", "basic-auth1.test"), ("Authorization", "foobar")],
            );
            assert_401(&r, TEST_REALM);
        },
    );
    t.it(
        "returns 401 Unauthorized on invalid credentials in Proxy-Authorization",
        || {
            let r = get(
                &gw,
                "/status/200",
                &[
                    ("Host", "basic-auth1.test"),
                    ("Proxy-Authorization", "foobar"),
                ],
            );
            assert_401(&r, TEST_REALM);
        },
    );
    t.it("returns 401 Unauthorized on password only", || {
        let r = get(
            &gw,
            "/status/200",
            &[
                ("Host", "basic-auth1.test"),
                ("Authorization", "Basic a29uZw=="),
            ],
        );
        assert_401(&r, TEST_REALM);
    });
    t.it("returns 401 Unauthorized on username only", || {
        let r = get(
            &gw,
            "/status/200",
            &[
                ("Host", "basic-auth1.test"),
                ("Authorization", "Basic Ym9i"),
            ],
        );
        assert_401(&r, TEST_REALM);
    });
    t.it("authenticates valid credentials in Authorization", || {
        let r = get(
            &gw,
            "/status/200",
            &[
                ("Host", "basic-auth1.test"),
                ("Authorization", "Basic Ym9iOmtvbmc="),
            ],
        );
        assert_eq!(r.status, 200);
    });
    t.it(
        "authenticates valid credentials in Authorization (user123)",
        || {
            let r = get(
                &gw,
                "/request",
                &[
                    ("Host", "basic-auth1.test"),
                    ("Authorization", "Basic dXNlcjEyMzpwYXNzd29yZDEyMw=="),
                ],
            );
            assert_eq!(r.status, 200);
            let got = up.last();
            assert_eq!(got.header("x-consumer-username"), Some("bob"));
            assert_eq!(got.header("x-credential-identifier"), Some("user123"));
        },
    );
    t.it("authenticates with a password containing ':'", || {
        let r = get(
            &gw,
            "/request",
            &[
                ("Host", "basic-auth1.test"),
                ("Authorization", "Basic dXNlcjMyMTpwYXNzd29yZDoxMjM="),
            ],
        );
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(got.header("x-consumer-username"), Some("bob"));
        assert_eq!(got.header("x-credential-identifier"), Some("user321"));
    });
    t.it("returns 401 for valid Base64 encoding", || {
        let r = get(
            &gw,
            "/status/200",
            &[
                ("Host", "basic-auth1.test"),
                ("Authorization", "Basic adXNlcjEyMzpwYXNzd29yZDEyMw=="),
            ],
        );
        assert_401(&r, TEST_REALM);
    });
    t.it(
        "authenticates valid credentials in Proxy-Authorization",
        || {
            let r = get(
                &gw,
                "/status/200",
                &[
                    ("Host", "basic-auth1.test"),
                    ("Proxy-Authorization", "Basic Ym9iOmtvbmc="),
                ],
            );
            assert_eq!(r.status, 200);
        },
    );
    t.it(
        "wrong password in Proxy-Authorization is not retried with Authorization",
        || {
            // Kong stops at a credential found through Proxy-Authorization.
            let r = get(
                &gw,
                "/status/200",
                &[
                    ("Host", "basic-auth1.test"),
                    ("Proxy-Authorization", "Basic Ym9iOndyb25n"),
                    ("Authorization", "Basic Ym9iOmtvbmc="),
                ],
            );
            assert_401(&r, TEST_REALM);
            // An unknown user there falls back to Authorization.
            let r = get(
                &gw,
                "/status/200",
                &[
                    ("Host", "basic-auth1.test"),
                    ("Proxy-Authorization", "Basic bm9ib2R5Ong="),
                    ("Authorization", "Basic Ym9iOmtvbmc="),
                ],
            );
            assert_eq!(r.status, 200);
        },
    );

    // describe("Consumer headers")
    t.it("sends Consumer headers to upstream", || {
        let r = get(
            &gw,
            "/request",
            &[
                ("Host", "basic-auth1.test"),
                ("Authorization", "Basic Ym9iOmtvbmc="),
            ],
        );
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(got.header("x-consumer-id"), Some(BOB));
        assert_eq!(got.header("x-consumer-username"), Some("bob"));
        assert_eq!(got.header("x-credential-identifier"), Some("bob"));
        assert_eq!(got.header("x-anonymous-consumer"), None);
    });

    // describe("config.hide_credentials")
    t.it("false sends key to upstream", || {
        let r = get(
            &gw,
            "/request",
            &[
                ("Host", "basic-auth1.test"),
                ("Authorization", "Basic Ym9iOmtvbmc="),
            ],
        );
        assert_eq!(r.status, 200);
        assert_eq!(
            up.last().header("authorization"),
            Some("Basic Ym9iOmtvbmc=")
        );
    });
    t.it("true doesn't send key to upstream", || {
        let r = get(
            &gw,
            "/request",
            &[
                ("Host", "basic-auth2.test"),
                ("Authorization", "Basic Ym9iOmtvbmc="),
            ],
        );
        assert_eq!(r.status, 200);
        assert_eq!(up.last().header("authorization"), None);
    });

    // describe("config.anonymous")
    t.it("works with right credentials and anonymous", || {
        let r = get(
            &gw,
            "/request",
            &[
                ("Host", "basic-auth3.test"),
                ("Authorization", "Basic dXNlcjEyMzpwYXNzd29yZDEyMw=="),
            ],
        );
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(got.header("x-consumer-username"), Some("bob"));
        assert_eq!(got.header("x-credential-identifier"), Some("user123"));
        assert_eq!(got.header("x-anonymous-consumer"), None);
    });
    t.it("works with wrong credentials and anonymous", || {
        let r = get(&gw, "/request", &[("Host", "basic-auth3.test")]);
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(got.header("x-anonymous-consumer"), Some("true"));
        assert_eq!(got.header("x-consumer-username"), Some("no-body"));
        assert_eq!(got.header("x-consumer-id"), Some(NO_BODY));
        assert_eq!(got.header("x-credential-identifier"), None);
    });
    t.it(
        "works with wrong credentials and username in anonymous",
        || {
            let r = get(&gw, "/request", &[("Host", "basic-auth5.test")]);
            assert_eq!(r.status, 200);
            let got = up.last();
            assert_eq!(got.header("x-anonymous-consumer"), Some("true"));
            assert_eq!(got.header("x-consumer-username"), Some("no-body"));
        },
    );
    t.it("errors when anonymous user doesn't exist", || {
        let r = get(&gw, "/request", &[("Host", "basic-auth4.test")]);
        assert_eq!(r.status, 500);
        assert_eq!(
            r.json()["message"],
            format!("anonymous consumer {NONEXISTING} is configured but doesn't exist")
        );
    });
    t.finish();
}

const MULTI: &str = r#"_format_version: "3.0"
consumers:
- username: Anonymous
  id: 7a2c4d5e-0000-4000-8000-0000000000e0
- username: Mickey
  id: 7a2c4d5e-0000-4000-8000-0000000000e1
  keyauth_credentials: [{key: Mouse}]
- username: Aladdin
  id: 7a2c4d5e-0000-4000-8000-0000000000e2
  basicauth_credentials: [{username: Aladdin, password: OpenSesame}]
services:
- url: http://{UP0}/request
  routes:
  - hosts: [logical-and.test]
    plugins: [{name: basic-auth}, {name: key-auth}]
- url: http://{UP0}/request
  routes:
  - hosts: [logical-or.test]
    plugins:
    - {name: basic-auth, config: {anonymous: 7a2c4d5e-0000-4000-8000-0000000000e0}}
    - {name: key-auth, config: {anonymous: 7a2c4d5e-0000-4000-8000-0000000000e0}}
"#;
const ANONYMOUS: &str = "7a2c4d5e-0000-4000-8000-0000000000e0";
const MICKEY: &str = "7a2c4d5e-0000-4000-8000-0000000000e1";
const ALADDIN: &str = "7a2c4d5e-0000-4000-8000-0000000000e2";
const ALADDIN_BASIC: &str = "Basic QWxhZGRpbjpPcGVuU2VzYW1l";

#[test]
fn basic_auth_with_key_auth_logical_and_or() {
    let up = Recorder::start();
    let gw = Gateway::start(&fill_ports(MULTI, &[up.port]));
    let mut t = Cases::new();
    t.it("AND: passes with all credentials provided", || {
        let r = get(
            &gw,
            "/request",
            &[
                ("Host", "logical-and.test"),
                ("apikey", "Mouse"),
                ("Authorization", ALADDIN_BASIC),
            ],
        );
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(got.header("x-anonymous-consumer"), None);
        let id = got.header("x-consumer-id").unwrap();
        assert!(id == MICKEY || id == ALADDIN);
    });
    t.it(
        "AND: fails 401, with only the first credential provided",
        || {
            let r = get(
                &gw,
                "/request",
                &[("Host", "logical-and.test"), ("apikey", "Mouse")],
            );
            assert_eq!(r.status, 401);
        },
    );
    t.it(
        "AND: fails 401, with only the second credential provided",
        || {
            let r = get(
                &gw,
                "/request",
                &[
                    ("Host", "logical-and.test"),
                    ("Authorization", ALADDIN_BASIC),
                ],
            );
            assert_eq!(r.status, 401);
            assert_eq!(r.header("WWW-Authenticate"), Some("Key"));
        },
    );
    t.it("AND: fails 401, with no credential provided", || {
        let r = get(&gw, "/request", &[("Host", "logical-and.test")]);
        assert_eq!(r.status, 401);
        assert_eq!(r.header("WWW-Authenticate"), Some("Key"));
    });
    t.it("OR: passes with all credentials provided", || {
        let r = get(
            &gw,
            "/request",
            &[
                ("Host", "logical-or.test"),
                ("apikey", "Mouse"),
                ("Authorization", ALADDIN_BASIC),
            ],
        );
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(got.header("x-anonymous-consumer"), None);
        let id = got.header("x-consumer-id").unwrap();
        assert_ne!(id, ANONYMOUS);
        assert!(id == MICKEY || id == ALADDIN);
    });
    t.it("OR: passes with only the first credential provided", || {
        let r = get(
            &gw,
            "/request",
            &[("Host", "logical-or.test"), ("apikey", "Mouse")],
        );
        assert_eq!(r.status, 200);
        assert_eq!(up.last().header("x-consumer-id"), Some(MICKEY));
    });
    t.it(
        "OR: passes with only the second credential provided",
        || {
            let r = get(
                &gw,
                "/request",
                &[
                    ("Host", "logical-or.test"),
                    ("Authorization", ALADDIN_BASIC),
                ],
            );
            assert_eq!(r.status, 200);
            let got = up.last();
            assert_eq!(got.header("x-anonymous-consumer"), None);
            assert_eq!(got.header("x-consumer-id"), Some(ALADDIN));
        },
    );
    t.it("OR: passes with no credential provided", || {
        let r = get(&gw, "/request", &[("Host", "logical-or.test")]);
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(got.header("x-anonymous-consumer"), Some("true"));
        assert_eq!(got.header("x-consumer-id"), Some(ANONYMOUS));
    });
    t.finish();
}

#[test]
fn basic_auth_consumer_cache_consistency() {
    // it("consumer cache consistency"): the anonymous consumer (by username)
    // removed from the config makes the fallback a 500.
    let up = Recorder::start();
    let yml = r#"_format_version: "3.0"
consumers:
- username: Anonymous
  id: 7a2c4d5e-0000-4000-8000-0000000000f0
services:
- url: http://{UP0}/request
  routes:
  - hosts: [anonymous-with-username.test]
    plugins: [{name: basic-auth, config: {anonymous: Anonymous}}]
"#;
    let gw = Gateway::start(&fill_ports(yml, &[up.port]));
    let h = [("Host", "anonymous-with-username.test")];
    let r = get(&gw, "/request", &h);
    assert_eq!(r.status, 200);
    let got = up.last();
    assert_eq!(got.header("x-anonymous-consumer"), Some("true"));
    assert_eq!(
        got.header("x-consumer-id"),
        Some("7a2c4d5e-0000-4000-8000-0000000000f0")
    );
    assert_eq!(got.header("x-consumer-username"), Some("Anonymous"));
    let without = fill_ports(yml, &[up.port]).replace(
        "consumers:\n- username: Anonymous\n  id: 7a2c4d5e-0000-4000-8000-0000000000f0\n",
        "",
    );
    assert!(gw.reload_and_wait(&without), "reload");
    let r = get(&gw, "/request", &h);
    assert_eq!(r.status, 500);
    assert_eq!(
        r.json()["message"],
        "anonymous consumer Anonymous is configured but doesn't exist"
    );
}

#[test]
fn basic_auth_declarative_plain_and_hashed_passwords() {
    // 05-declarative_spec.lua, "access": a credential declared with its
    // plaintext password (hashed on load), and one declared with the hash
    // under `_transform: false` (a control plane's export).
    let consumer = "ad06b77c-0d2f-407a-8d6d-07f272a92d6a";
    let hashed = config_sync::credentials::basicauth_hash(consumer, "MI6");
    let up = Recorder::start();
    let base = r#"
services:
- name: foo
  id: 3b9c2302-a610-4925-a7b9-25942309335d
  url: http://{UP0}
  routes:
  - name: bar
    id: eb88ccb8-274d-4e7e-b4cb-0d673a4fa93b
    protocols: [http]
    paths: [/status/200]
    strip_path: true
  plugins:
  - name: basic-auth
    id: 389ad9bd-b158-4e19-aed7-c9b040f7f312
    config: {hide_credentials: true, realm: service}
consumers:
- id: ad06b77c-0d2f-407a-8d6d-07f272a92d6a
  username: andru
  custom_id: donalds
basicauth_credentials:
"#;
    let plain = fill_ports(
        &format!(
            "_format_version: \"3.0\"\n{base}- id: ad06b77c-0d2f-407a-8d6d-07f272a92d9a\n  consumer: {consumer}\n  username: james\n  password: secret\n"
        ),
        &[up.port],
    );
    let export = fill_ports(
        &format!(
            "_format_version: \"3.0\"\n_transform: false\n{base}- id: caa33a6f-8e6b-4b02-9f55-0e2cffd26fb5\n  consumer: {consumer}\n  username: bond\n  password: {hashed}\n"
        ),
        &[up.port],
    );
    let mut t = Cases::new();
    for (yml, user, pass) in [(&plain, "james", "secret"), (&export, "bond", "MI6")] {
        let gw = Gateway::start(yml);
        t.it(
            &format!("returns 401 Unauthorized on invalid credentials in Authorization ({user})"),
            || {
                let r = get(&gw, "/status/200", &[("Authorization", "foobar")]);
                assert_eq!(r.status, 401);
                assert_eq!(r.json()["message"], "Unauthorized");
            },
        );
        t.it(&format!("Accepts valid credentials ({user})"), || {
            use base64::Engine as _;
            let creds = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
            );
            let r = get(&gw, "/status/200", &[("Authorization", &creds)]);
            assert_eq!(r.status, 200);
            let got = up.last();
            assert_eq!(got.header("x-consumer-id"), Some(consumer));
            assert_eq!(got.header("x-consumer-username"), Some("andru"));
            assert_eq!(got.header("x-consumer-custom-id"), Some("donalds"));
            assert_eq!(got.header("x-credential-identifier"), Some(user));
            // hide_credentials
            assert_eq!(got.header("authorization"), None);
        });
    }
    t.finish();
}
