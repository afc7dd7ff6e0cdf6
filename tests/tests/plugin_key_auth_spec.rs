//! Port of Kong's `spec/03-plugins/09-key-auth/02-access_spec.lua` (DB-less):
//! one gateway per Kong `describe` block, each Kong `it(...)` a named case.
//! The upstream is a recording server: what Kong's mock upstream echoes
//! (`json.headers`, `json.vars.request_uri`, `json.post_data`) is read from
//! the request it received. Skipped: the gRPC cases (no gRPC client in this
//! harness; key-auth does not look at the protocol).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gw_tests::gateway::{fill_ports, Cases, Gateway, Recorded, Recorder};
use gw_tests::{request, Response};

const BOB: &str = "6f1b3c6a-0000-4000-8000-0000000000b0";
const NO_BODY: &str = "6f1b3c6a-0000-4000-8000-0000000000a0";
const KONG_CRED: &str = "6f1b3c6a-0000-4000-8000-0000000000c0";
/// A consumer id that exists nowhere.
const NONEXISTING: &str = "6f1b3c6a-0000-4000-8000-00000000dead";

const ACCESS: &str = r#"_format_version: "3.0"
consumers:
- username: no-body
  id: 6f1b3c6a-0000-4000-8000-0000000000a0
- username: bob
  id: 6f1b3c6a-0000-4000-8000-0000000000b0
  keyauth_credentials:
  - key: kong
    id: 6f1b3c6a-0000-4000-8000-0000000000c0
services:
- name: mock
  url: http://{UP0}
  routes:
  - hosts: [key-auth1.test]
    plugins: [{name: key-auth}]
  - hosts: [key-auth2.test]
    plugins: [{name: key-auth, config: {hide_credentials: true, realm: test-realm}}]
  - hosts: [key-auth3.test]
    plugins: [{name: key-auth, config: {anonymous: 6f1b3c6a-0000-4000-8000-0000000000a0}}]
  - hosts: [key-auth4.test]
    plugins: [{name: key-auth, config: {anonymous: 6f1b3c6a-0000-4000-8000-00000000dead}}]
  - hosts: [key-auth5.test]
    plugins: [{name: key-auth, config: {key_in_body: true}}]
  - hosts: [key-auth6.test]
    plugins: [{name: key-auth, config: {key_in_body: true, hide_credentials: true}}]
  - hosts: [key-auth7.test]
    strip_path: true
    plugins: [{name: key-auth, config: {run_on_preflight: false}}]
  - hosts: [key-auth8.test]
    plugins: [{name: key-auth, config: {key_names: [api_key]}}]
  - hosts: [key-auth9.test]
    plugins: [{name: key-auth, config: {key_names: [api-key]}}]
  - hosts: [key-auth10.test]
    plugins: [{name: key-auth, config: {anonymous: no-body}}]
"#;

fn send(gw: &Gateway, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    request(gw.port, method, path, headers, body)
}

fn json_message(r: &Response) -> String {
    r.json()["message"].as_str().unwrap_or_default().to_string()
}

fn assert_401(r: &Response, message: &str, www: &str) {
    assert_eq!(r.status, 401, "{}", r.body_str());
    assert_eq!(json_message(r), message);
    assert_eq!(r.header("WWW-Authenticate"), Some(www));
}

/// Form, JSON or multipart bodies for `{name = value}` tables, as the Lua
/// test client encodes them.
fn encode_body(content_type: &str, fields: &[(&str, &str)]) -> (String, Vec<u8>) {
    match content_type {
        "application/json" => {
            let mut m = serde_json::Map::new();
            for (k, v) in fields {
                m.insert(k.to_string(), serde_json::Value::String(v.to_string()));
            }
            (
                content_type.to_string(),
                serde_json::Value::Object(m).to_string().into_bytes(),
            )
        }
        "multipart/form-data" => {
            let boundary = "8fd84e9444e3946c";
            let mut b = String::new();
            for (k, v) in fields {
                b.push_str(&format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                ));
            }
            b.push_str(&format!("--{boundary}--\r\n"));
            (
                format!("multipart/form-data; boundary={boundary}"),
                b.into_bytes(),
            )
        }
        _ => {
            let pairs: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            (content_type.to_string(), pairs.join("&").into_bytes())
        }
    }
}

/// The fields of a body the upstream received (`json.post_data.params`).
fn post_params(r: &Recorded) -> serde_json::Map<String, serde_json::Value> {
    let ct = r.header("content-type").unwrap_or_default().to_string();
    let body = String::from_utf8_lossy(&r.body).into_owned();
    let mut out = serde_json::Map::new();
    if ct.starts_with("application/json") {
        if let Ok(serde_json::Value::Object(m)) = serde_json::from_str(&body) {
            return m;
        }
    } else if ct.starts_with("multipart/form-data") {
        for part in body.split("--8fd84e9444e3946c") {
            if let Some(i) = part.find("name=\"") {
                let rest = &part[i + 6..];
                let name = &rest[..rest.find('"').unwrap()];
                let value = rest
                    .split("\r\n\r\n")
                    .nth(1)
                    .unwrap_or("")
                    .trim_end_matches("\r\n");
                out.insert(name.to_string(), value.into());
            }
        }
    } else {
        for pair in body.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.insert(k.to_string(), v.into());
        }
    }
    out
}

/// The query arguments the upstream received (`json.uri_args`).
fn uri_args(r: &Recorded) -> Vec<(String, String)> {
    r.target
        .split_once('?')
        .map(|(_, q)| {
            q.split('&')
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_string(), v.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn key_auth_access() {
    let up = Recorder::start();
    let gw = Gateway::start(&fill_ports(ACCESS, &[up.port]));
    let mut t = Cases::new();

    // describe("Unauthorized")
    t.it(
        "returns 200 on OPTIONS requests if run_on_preflight is false",
        || {
            let r = send(
                &gw,
                "OPTIONS",
                "/status/200",
                &[("Host", "key-auth7.test")],
                b"",
            );
            assert_eq!(r.status, 200);
        },
    );
    t.it(
        "returns Unauthorized on OPTIONS requests if run_on_preflight is true",
        || {
            let r = send(
                &gw,
                "OPTIONS",
                "/status/200",
                &[("Host", "key-auth1.test")],
                b"",
            );
            assert_401(&r, "No API key found in request", "Key");
        },
    );
    t.it("returns Unauthorized on missing credentials", || {
        let r = send(
            &gw,
            "GET",
            "/status/200",
            &[("Host", "key-auth1.test")],
            b"",
        );
        assert_401(&r, "No API key found in request", "Key");
        // kong.response.error: the negotiated template, with request_id.
        assert!(r.json()["request_id"].is_string());
    });
    t.it("returns Unauthorized on empty key header", || {
        let r = send(
            &gw,
            "GET",
            "/status/200",
            &[("Host", "key-auth1.test"), ("apikey", "")],
            b"",
        );
        assert_401(&r, "No API key found in request", "Key");
    });
    t.it(
        "returns Unauthorized on empty key header with no realm",
        || {
            let r = send(
                &gw,
                "GET",
                "/status/200",
                &[("Host", "key-auth1.test"), ("apikey", "")],
                b"",
            );
            assert_401(&r, "No API key found in request", "Key");
        },
    );
    t.it(
        "returns Unauthorized on empty key header with conifgured realm",
        || {
            let r = send(
                &gw,
                "GET",
                "/status/200",
                &[("Host", "key-auth2.test"), ("apikey", "")],
                b"",
            );
            assert_401(
                &r,
                "No API key found in request",
                "Key realm=\"test-realm\"",
            );
        },
    );
    t.it("returns Unauthorized on empty key querystring", || {
        let r = send(
            &gw,
            "GET",
            "/status/200?apikey",
            &[("Host", "key-auth1.test")],
            b"",
        );
        assert_401(&r, "No API key found in request", "Key");
    });
    t.it(
        "returns WWW-Authenticate header on missing credentials",
        || {
            let r = send(
                &gw,
                "GET",
                "/status/200",
                &[("Host", "key-auth1.test")],
                b"",
            );
            assert_eq!(r.header("WWW-Authenticate"), Some("Key"));
        },
    );

    // describe("key in querystring")
    t.it("authenticates valid credentials (querystring)", || {
        let r = send(
            &gw,
            "GET",
            "/request?apikey=kong",
            &[("Host", "key-auth1.test")],
            b"",
        );
        assert_eq!(r.status, 200);
    });
    t.it(
        "returns 401 Unauthorized on invalid key (querystring)",
        || {
            let r = send(
                &gw,
                "GET",
                "/status/200?apikey=123",
                &[("Host", "key-auth1.test")],
                b"",
            );
            assert_401(&r, "Unauthorized", "Key");
        },
    );
    t.it("handles duplicated key in querystring", || {
        let r = send(
            &gw,
            "GET",
            "/status/200?apikey=kong&apikey=kong",
            &[("Host", "key-auth1.test")],
            b"",
        );
        assert_401(&r, "Duplicate API key found", "Key");
    });

    // describe("key in request body")
    for ct in [
        "application/x-www-form-urlencoded",
        "application/json",
        "multipart/form-data",
    ] {
        t.it(&format!("{ct}: authenticates valid credentials"), || {
            let (ctype, body) = encode_body(ct, &[("apikey", "kong")]);
            let r = send(
                &gw,
                "POST",
                "/request",
                &[("Host", "key-auth5.test"), ("Content-Type", &ctype)],
                &body,
            );
            assert_eq!(r.status, 200, "{}", r.body_str());
        });
        t.it(
            &format!("{ct}: authenticates valid credentials in query"),
            || {
                let (ctype, body) = encode_body(ct, &[("non_apikey", "kong")]);
                let r = send(
                    &gw,
                    "POST",
                    "/request?apikey=kong",
                    &[("Host", "key-auth5.test"), ("Content-Type", &ctype)],
                    &body,
                );
                assert_eq!(r.status, 200);
            },
        );
        t.it(
            &format!("{ct}: authenticates valid credentials in header"),
            || {
                let (ctype, body) = encode_body(ct, &[("non_apikey", "kong")]);
                let r = send(
                    &gw,
                    "POST",
                    "/request?apikey=kong",
                    &[
                        ("Host", "key-auth5.test"),
                        ("Content-Type", &ctype),
                        ("apikey", "kong"),
                    ],
                    &body,
                );
                assert_eq!(r.status, 200);
            },
        );
        t.it(
            &format!("{ct}: returns 401 Unauthorized on invalid key"),
            || {
                let (ctype, body) = encode_body(ct, &[("apikey", "123")]);
                let r = send(
                    &gw,
                    "POST",
                    "/status/200",
                    &[("Host", "key-auth5.test"), ("Content-Type", &ctype)],
                    &body,
                );
                assert_401(&r, "Unauthorized", "Key");
            },
        );
    }
    t.it("application/json: handles duplicated key", || {
        let r = send(
            &gw,
            "POST",
            "/status/200",
            &[
                ("Host", "key-auth5.test"),
                ("Content-Type", "application/json"),
            ],
            br#"{"apikey":["kong","kong"]}"#,
        );
        assert_401(&r, "Duplicate API key found", "Key");
    });
    t.it(
        "application/x-www-form-urlencoded: handles duplicated key",
        || {
            let r = send(
                &gw,
                "POST",
                "/status/200",
                &[
                    ("Host", "key-auth5.test"),
                    ("Content-Type", "application/x-www-form-urlencoded"),
                ],
                b"apikey=kong&apikey=kong",
            );
            assert_401(&r, "Duplicate API key found", "Key");
        },
    );
    t.it("does not identify apikey[] as api keys", || {
        let r = send(
            &gw,
            "POST",
            "/status/200",
            &[
                ("Host", "key-auth5.test"),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            b"apikey[]=kong&apikey[]=kong",
        );
        assert_401(&r, "No API key found in request", "Key");
    });
    t.it("does not identify apikey[1] as api keys", || {
        let r = send(
            &gw,
            "POST",
            "/status/200",
            &[
                ("Host", "key-auth5.test"),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            b"apikey[1]=kong&apikey[1]=kong",
        );
        assert_401(&r, "No API key found in request", "Key");
    });

    // describe("key in headers")
    t.it("authenticates valid credentials (headers)", || {
        let r = send(
            &gw,
            "GET",
            "/request",
            &[("Host", "key-auth1.test"), ("apikey", "kong")],
            b"",
        );
        assert_eq!(r.status, 200);
    });
    t.it("returns 401 Unauthorized on invalid key (headers)", || {
        let r = send(
            &gw,
            "GET",
            "/status/200",
            &[("Host", "key-auth1.test"), ("apikey", "123")],
            b"",
        );
        assert_401(&r, "Unauthorized", "Key");
    });

    // describe("underscores or hyphens in key headers")
    t.it(
        "authenticates valid credentials (underscores or hyphens)",
        || {
            let r = send(
                &gw,
                "GET",
                "/request",
                &[("Host", "key-auth8.test"), ("api_key", "kong")],
                b"",
            );
            assert_eq!(r.status, 200);
            let r = send(
                &gw,
                "GET",
                "/request",
                &[("Host", "key-auth8.test"), ("api-key", "kong")],
                b"",
            );
            assert_eq!(r.status, 200);
        },
    );
    t.it(
        "returns 401 Unauthorized on invalid key (underscores or hyphens)",
        || {
            let r = send(
                &gw,
                "GET",
                "/status/200",
                &[("Host", "key-auth8.test"), ("api_key", "123")],
                b"",
            );
            assert_401(&r, "Unauthorized", "Key");
            let r = send(
                &gw,
                "GET",
                "/status/200",
                &[("Host", "key-auth8.test"), ("api-key", "123")],
                b"",
            );
            assert_401(&r, "Unauthorized", "Key");
        },
    );

    // describe("Consumer headers")
    t.it("sends Consumer headers to upstream", || {
        let r = send(
            &gw,
            "GET",
            "/request?apikey=kong",
            &[("Host", "key-auth1.test")],
            b"",
        );
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(got.header("x-consumer-id"), Some(BOB));
        assert_eq!(got.header("x-consumer-username"), Some("bob"));
        assert_eq!(got.header("x-credential-identifier"), Some(KONG_CRED));
        assert_eq!(got.header("x-anonymous-consumer"), None);
        // bob has no custom_id: the header is cleared, even if the client sent one.
        let r = send(
            &gw,
            "GET",
            "/request?apikey=kong",
            &[
                ("Host", "key-auth1.test"),
                ("X-Consumer-Custom-ID", "forged"),
                ("X-Anonymous-Consumer", "true"),
            ],
            b"",
        );
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(got.header("x-consumer-custom-id"), None);
        assert_eq!(got.header("x-anonymous-consumer"), None);
    });

    // describe("config.hide_credentials")
    for ct in [
        "application/x-www-form-urlencoded",
        "application/json",
        "multipart/form-data",
    ] {
        t.it(
            &format!("({ct}) uri_args: false sends key to upstream"),
            || {
                let r = send(
                    &gw,
                    "GET",
                    "/request?apikey=kong",
                    &[("Host", "key-auth1.test")],
                    b"",
                );
                assert_eq!(r.status, 200);
                assert!(uri_args(&up.last()).contains(&("apikey".into(), "kong".into())));
            },
        );
        t.it(
            &format!("({ct}) uri_args: true doesn't send key to upstream"),
            || {
                let r = send(
                    &gw,
                    "GET",
                    "/request?apikey=kong",
                    &[("Host", "key-auth2.test")],
                    b"",
                );
                assert_eq!(r.status, 200);
                assert!(uri_args(&up.last()).iter().all(|(k, _)| k != "apikey"));
            },
        );
        t.it(
            &format!("({ct}) headers: false sends key to upstream"),
            || {
                let r = send(
                    &gw,
                    "GET",
                    "/request",
                    &[("Host", "key-auth1.test"), ("apikey", "kong")],
                    b"",
                );
                assert_eq!(r.status, 200);
                assert_eq!(up.last().header("apikey"), Some("kong"));
            },
        );
        t.it(
            &format!("({ct}) headers: true doesn't send key to upstream"),
            || {
                let r = send(
                    &gw,
                    "GET",
                    "/request",
                    &[("Host", "key-auth2.test"), ("apikey", "kong")],
                    b"",
                );
                assert_eq!(r.status, 200);
                assert_eq!(up.last().header("apikey"), None);
            },
        );
        t.it(
            &format!("({ct}) post_data.params: false sends key to upstream"),
            || {
                let (ctype, body) = encode_body(ct, &[("apikey", "kong")]);
                let r = send(
                    &gw,
                    "POST",
                    "/request",
                    &[("Host", "key-auth5.test"), ("Content-Type", &ctype)],
                    &body,
                );
                assert_eq!(r.status, 200);
                assert_eq!(post_params(&up.last())["apikey"], "kong");
            },
        );
        t.it(
            &format!("({ct}) post_data.params: true doesn't send key to upstream"),
            || {
                let (ctype, body) = encode_body(ct, &[("apikey", "kong")]);
                let r = send(
                    &gw,
                    "POST",
                    "/request",
                    &[("Host", "key-auth6.test"), ("Content-Type", &ctype)],
                    &body,
                );
                assert_eq!(r.status, 200);
                let got = up.last();
                assert!(
                    post_params(&got).get("apikey").is_none(),
                    "{:?}",
                    String::from_utf8_lossy(&got.body)
                );
                assert_eq!(
                    got.header("content-length"),
                    Some(got.body.len().to_string().as_str())
                );
            },
        );
        t.it(&format!("({ct}) true preserves body MIME type"), || {
            let (ctype, body) = encode_body(ct, &[("apikey", "kong"), ("foo", "bar")]);
            let r = send(
                &gw,
                "POST",
                "/request",
                &[("Host", "key-auth6.test"), ("Content-Type", &ctype)],
                &body,
            );
            assert_eq!(r.status, 200);
            let got = up.last();
            assert_eq!(got.header("content-type"), Some(ctype.as_str()));
            assert_eq!(post_params(&got)["foo"], "bar");
        });
    }
    t.it(
        "fails with 'key_in_body' and unsupported content type",
        || {
            let r = send(
                &gw,
                "POST",
                "/status/200",
                &[("Host", "key-auth6.test"), ("Content-Type", "text/plain")],
                b"foobar",
            );
            assert_401(&r, "No API key found in request", "Key");
        },
    );
    t.it(
        "does not remove apikey and preserves order of query parameters",
        || {
            let r = send(
                &gw,
                "GET",
                "/request?c=value1&b=value2&apikey=kong&a=value3",
                &[("Host", "key-auth1.test")],
                b"",
            );
            assert_eq!(r.status, 200);
            assert_eq!(
                up.last().target,
                "/request?c=value1&b=value2&apikey=kong&a=value3"
            );
        },
    );
    t.it(
        "removes apikey and preserves order of query parameters",
        || {
            let r = send(
                &gw,
                "GET",
                "/request?c=value1&b=value2&apikey=kong&a=value3",
                &[("Host", "key-auth2.test")],
                b"",
            );
            assert_eq!(r.status, 200);
            assert_eq!(up.last().target, "/request?c=value1&b=value2&a=value3");
        },
    );
    t.it(
        "removes apikey in encoded query and preserves order of query parameters",
        || {
            let r = send(
                &gw,
                "GET",
                "/request?c=valu%651&b=value2&api%6B%65%79=kong&a=valu%653",
                &[("Host", "key-auth2.test")],
                b"",
            );
            assert_eq!(r.status, 200);
            assert_eq!(up.last().target, "/request?c=value1&b=value2&a=value3");
        },
    );

    // describe("config.anonymous")
    t.it("works with right credentials and anonymous", || {
        let r = send(
            &gw,
            "GET",
            "/request?apikey=kong",
            &[("Host", "key-auth3.test")],
            b"",
        );
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(got.header("x-consumer-username"), Some("bob"));
        assert_eq!(got.header("x-credential-identifier"), Some(KONG_CRED));
        assert_eq!(got.header("x-anonymous-consumer"), None);
    });
    t.it("works with wrong credentials and anonymous", || {
        let r = send(
            &gw,
            "GET",
            "/request",
            &[
                ("Host", "key-auth3.test"),
                ("X-Credential-Identifier", "forged"),
            ],
            b"",
        );
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(got.header("x-anonymous-consumer"), Some("true"));
        assert_eq!(got.header("x-credential-identifier"), None);
        assert_eq!(got.header("x-consumer-username"), Some("no-body"));
        assert_eq!(got.header("x-consumer-id"), Some(NO_BODY));
    });
    t.it(
        "works with wrong credentials and username as anonymous",
        || {
            let r = send(&gw, "GET", "/request", &[("Host", "key-auth10.test")], b"");
            assert_eq!(r.status, 200);
            let got = up.last();
            assert_eq!(got.header("x-anonymous-consumer"), Some("true"));
            assert_eq!(got.header("x-consumer-username"), Some("no-body"));
        },
    );
    t.it("errors when anonymous user doesn't exist", || {
        let r = send(&gw, "GET", "/request", &[("Host", "key-auth4.test")], b"");
        assert_eq!(r.status, 500);
        assert_eq!(
            json_message(&r),
            format!("anonymous consumer {NONEXISTING} is configured but doesn't exist")
        );
    });
    t.finish();
}

const MULTI: &str = r#"_format_version: "3.0"
consumers:
- username: Anonymous
  id: 6f1b3c6a-0000-4000-8000-0000000000e0
- username: Mickey
  id: 6f1b3c6a-0000-4000-8000-0000000000e1
  keyauth_credentials: [{key: Mouse}]
- username: Aladdin
  id: 6f1b3c6a-0000-4000-8000-0000000000e2
  basicauth_credentials: [{username: Aladdin, password: OpenSesame}]
services:
- name: and
  url: http://{UP0}
  routes:
  - hosts: [logical-and.test]
    plugins:
    - name: basic-auth
    - name: key-auth
- name: or
  url: http://{UP0}/request
  routes:
  - hosts: [logical-or.test]
    plugins:
    - {name: basic-auth, config: {anonymous: 6f1b3c6a-0000-4000-8000-0000000000e0}}
    - {name: key-auth, config: {anonymous: 6f1b3c6a-0000-4000-8000-0000000000e0}}
"#;

const ANONYMOUS: &str = "6f1b3c6a-0000-4000-8000-0000000000e0";
const MICKEY: &str = "6f1b3c6a-0000-4000-8000-0000000000e1";
const ALADDIN: &str = "6f1b3c6a-0000-4000-8000-0000000000e2";
const ALADDIN_BASIC: &str = "Basic QWxhZGRpbjpPcGVuU2VzYW1l";

#[test]
fn key_auth_with_basic_auth_logical_and_or() {
    let up = Recorder::start();
    let gw = Gateway::start(&fill_ports(MULTI, &[up.port]));
    let mut t = Cases::new();
    // describe("multiple auth without anonymous, logical AND")
    t.it("AND: passes with all credentials provided", || {
        let r = send(
            &gw,
            "GET",
            "/request",
            &[
                ("Host", "logical-and.test"),
                ("apikey", "Mouse"),
                ("Authorization", ALADDIN_BASIC),
            ],
            b"",
        );
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(got.header("x-anonymous-consumer"), None);
        let id = got.header("x-consumer-id").unwrap();
        // key-auth runs first (1250 > 1100); basic-auth, last, wins.
        assert!(id == MICKEY || id == ALADDIN);
        assert_eq!(id, ALADDIN);
    });
    t.it(
        "AND: fails 401, with only the first credential provided",
        || {
            let r = send(
                &gw,
                "GET",
                "/request",
                &[("Host", "logical-and.test"), ("apikey", "Mouse")],
                b"",
            );
            assert_eq!(r.status, 401);
            assert_eq!(
                r.header("WWW-Authenticate"),
                Some("Basic realm=\"service\"")
            );
        },
    );
    t.it(
        "AND: fails 401, with only the second credential provided",
        || {
            let r = send(
                &gw,
                "GET",
                "/request",
                &[
                    ("Host", "logical-and.test"),
                    ("Authorization", ALADDIN_BASIC),
                ],
                b"",
            );
            assert_eq!(r.status, 401);
            assert_eq!(r.header("WWW-Authenticate"), Some("Key"));
        },
    );
    t.it("AND: fails 401, with no credential provided", || {
        let r = send(&gw, "GET", "/request", &[("Host", "logical-and.test")], b"");
        assert_eq!(r.status, 401);
        assert_eq!(r.header("WWW-Authenticate"), Some("Key"));
    });
    // describe("multiple auth with anonymous, logical OR")
    t.it("OR: passes with all credentials provided", || {
        let r = send(
            &gw,
            "GET",
            "/request",
            &[
                ("Host", "logical-or.test"),
                ("apikey", "Mouse"),
                ("Authorization", ALADDIN_BASIC),
            ],
            b"",
        );
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(got.header("x-anonymous-consumer"), None);
        let id = got.header("x-consumer-id").unwrap();
        assert_ne!(id, ANONYMOUS);
        // key-auth found a credential first; basic-auth then returns early.
        assert_eq!(id, MICKEY);
    });
    t.it("OR: passes with only the first credential provided", || {
        let r = send(
            &gw,
            "GET",
            "/request",
            &[("Host", "logical-or.test"), ("apikey", "Mouse")],
            b"",
        );
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(got.header("x-anonymous-consumer"), None);
        assert_eq!(got.header("x-consumer-id"), Some(MICKEY));
    });
    t.it(
        "OR: passes with only the second credential provided",
        || {
            let r = send(
                &gw,
                "GET",
                "/request",
                &[
                    ("Host", "logical-or.test"),
                    ("Authorization", ALADDIN_BASIC),
                ],
                b"",
            );
            assert_eq!(r.status, 200);
            let got = up.last();
            assert_eq!(got.header("x-anonymous-consumer"), None);
            assert_eq!(got.header("x-consumer-id"), Some(ALADDIN));
        },
    );
    t.it("OR: passes with no credential provided", || {
        let r = send(&gw, "GET", "/request", &[("Host", "logical-or.test")], b"");
        assert_eq!(r.status, 200);
        let got = up.last();
        assert_eq!(got.header("x-anonymous-consumer"), Some("true"));
        assert_eq!(got.header("x-consumer-id"), Some(ANONYMOUS));
    });
    t.finish();
}

#[test]
fn key_auth_auto_expiring_keys() {
    // it("authenticate for up to ttl"): `ttl` in a declarative payload is
    // the epoch second the credential expires at.
    let up = Recorder::start();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expires = now + 3;
    let yml = fill_ports(
        &format!(
            r#"_format_version: "3.0"
consumers:
- username: Jafar
  keyauth_credentials:
  - key: kong
    ttl: {expires}
  - key: gone
    ttl: {past}
services:
- url: http://{{UP0}}
  routes:
  - hosts: [key-ttl.test]
    plugins: [{{name: key-auth}}]
"#,
            past = now - 10
        ),
        &[up.port],
    );
    let gw = Gateway::start(&yml);
    let get = |key: &str| {
        send(
            &gw,
            "GET",
            "/status/200",
            &[("Host", "key-ttl.test"), ("apikey", key)],
            b"",
        )
    };
    assert_eq!(get("kong").status, 200);
    // Already expired in the file: unknown.
    let r = get("gone");
    assert_401(&r, "Unauthorized", "Key");
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let r = get("kong");
        if r.status == 401 {
            assert_401(&r, "Unauthorized", "Key");
            break;
        }
        assert!(Instant::now() < deadline, "the key did not expire");
        std::thread::sleep(Duration::from_millis(200));
    }
}

const COMBOS: &str = r#"_format_version: "3.0"
consumers:
- username: bob
  keyauth_credentials: [{key: right}]
services:
- url: http://{UP0}/status/200
  routes:
  - paths: [/ttt]
    plugins: [{name: key-auth, config: {key_in_header: true, key_in_query: true, key_in_body: true}}]
  - paths: [/ttf]
    plugins: [{name: key-auth, config: {key_in_header: true, key_in_query: true, key_in_body: false}}]
  - paths: [/tff]
    plugins: [{name: key-auth, config: {key_in_header: true, key_in_query: false, key_in_body: false}}]
  - paths: [/fff]
    plugins: [{name: key-auth, config: {key_in_header: false, key_in_query: false, key_in_body: false}}]
  - paths: [/fft]
    plugins: [{name: key-auth, config: {key_in_header: false, key_in_query: false, key_in_body: true}}]
  - paths: [/tft]
    plugins: [{name: key-auth, config: {key_in_header: true, key_in_query: false, key_in_body: true}}]
  - paths: [/ftf]
    plugins: [{name: key-auth, config: {key_in_header: false, key_in_query: true, key_in_body: false}}]
"#;

/// One row of Kong's table: header, query, body, path, status.
type Combination = (
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    &'static str,
    u16,
);

const TABLE: &[Combination] = &[
    (Some("right"), Some("right"), Some("right"), "/ttt", 200),
    (Some("right"), Some("right"), Some("right"), "/ttf", 200),
    (Some("right"), Some("right"), Some("right"), "/tff", 200),
    (Some("right"), Some("right"), Some("right"), "/fff", 401),
    (Some("right"), Some("right"), Some("right"), "/fft", 200),
    (Some("right"), Some("right"), Some("right"), "/tft", 200),
    (Some("right"), Some("right"), Some("right"), "/ftf", 200),
    (Some("right"), Some("right"), Some("wrong"), "/ttt", 200),
    (Some("right"), Some("right"), Some("wrong"), "/ttf", 200),
    (Some("right"), Some("right"), Some("wrong"), "/tff", 200),
    (Some("right"), Some("right"), Some("wrong"), "/fff", 401),
    (Some("right"), Some("right"), Some("wrong"), "/fft", 401),
    (Some("right"), Some("right"), Some("wrong"), "/tft", 200),
    (Some("right"), Some("right"), Some("wrong"), "/ftf", 200),
    (Some("right"), Some("wrong"), Some("wrong"), "/ttt", 200),
    (Some("right"), Some("wrong"), Some("wrong"), "/ttf", 200),
    (Some("right"), Some("wrong"), Some("wrong"), "/tff", 200),
    (Some("right"), Some("wrong"), Some("wrong"), "/fff", 401),
    (Some("right"), Some("wrong"), Some("wrong"), "/fft", 401),
    (Some("right"), Some("wrong"), Some("wrong"), "/tft", 200),
    (Some("right"), Some("wrong"), Some("wrong"), "/ftf", 401),
    (Some("wrong"), Some("wrong"), Some("wrong"), "/ttt", 401),
    (Some("wrong"), Some("wrong"), Some("wrong"), "/ttf", 401),
    (Some("wrong"), Some("wrong"), Some("wrong"), "/tff", 401),
    (Some("wrong"), Some("wrong"), Some("wrong"), "/fff", 401),
    (Some("wrong"), Some("wrong"), Some("wrong"), "/fft", 401),
    (Some("wrong"), Some("wrong"), Some("wrong"), "/tft", 401),
    (Some("wrong"), Some("wrong"), Some("wrong"), "/ftf", 401),
    (Some("wrong"), Some("wrong"), Some("right"), "/ttt", 401),
    (Some("wrong"), Some("wrong"), Some("right"), "/ttf", 401),
    (Some("wrong"), Some("wrong"), Some("right"), "/tff", 401),
    (Some("wrong"), Some("wrong"), Some("right"), "/fff", 401),
    (Some("wrong"), Some("wrong"), Some("right"), "/fft", 200),
    (Some("wrong"), Some("wrong"), Some("right"), "/tft", 401),
    (Some("wrong"), Some("wrong"), Some("right"), "/ftf", 401),
    (Some("right"), Some("wrong"), Some("right"), "/ttt", 200),
    (Some("right"), Some("wrong"), Some("right"), "/ttf", 200),
    (Some("right"), Some("wrong"), Some("right"), "/tff", 200),
    (Some("right"), Some("wrong"), Some("right"), "/fff", 401),
    (Some("right"), Some("wrong"), Some("right"), "/fft", 200),
    (Some("right"), Some("wrong"), Some("right"), "/tft", 200),
    (Some("right"), Some("wrong"), Some("right"), "/ftf", 401),
    (Some("wrong"), Some("right"), Some("wrong"), "/ttt", 401),
    (Some("wrong"), Some("right"), Some("wrong"), "/ttf", 401),
    (Some("wrong"), Some("right"), Some("wrong"), "/tff", 401),
    (Some("wrong"), Some("right"), Some("wrong"), "/fff", 401),
    (Some("wrong"), Some("right"), Some("wrong"), "/fft", 401),
    (Some("wrong"), Some("right"), Some("wrong"), "/tft", 401),
    (Some("wrong"), Some("right"), Some("wrong"), "/ftf", 200),
    (None, None, None, "/ttt", 401),
    (None, None, None, "/ttf", 401),
    (None, None, None, "/tff", 401),
    (None, None, None, "/fff", 401),
    (None, None, None, "/fft", 401),
    (None, None, None, "/tft", 401),
    (None, None, None, "/ftf", 401),
    (None, None, Some("wrong"), "/ttt", 401),
    (None, None, Some("wrong"), "/ttf", 401),
    (None, None, Some("wrong"), "/tff", 401),
    (None, None, Some("wrong"), "/fff", 401),
    (None, None, Some("wrong"), "/fft", 401),
    (None, None, Some("wrong"), "/tft", 401),
    (None, None, Some("wrong"), "/ftf", 401),
    (None, Some("wrong"), Some("wrong"), "/ttt", 401),
    (None, Some("wrong"), Some("wrong"), "/ttf", 401),
    (None, Some("wrong"), Some("wrong"), "/tff", 401),
    (None, Some("wrong"), Some("wrong"), "/fff", 401),
    (None, Some("wrong"), Some("wrong"), "/fft", 401),
    (None, Some("wrong"), Some("wrong"), "/tft", 401),
    (None, Some("wrong"), Some("wrong"), "/ftf", 401),
    (Some("wrong"), Some("wrong"), None, "/ttt", 401),
    (Some("wrong"), Some("wrong"), None, "/ttf", 401),
    (Some("wrong"), Some("wrong"), None, "/tff", 401),
    (Some("wrong"), Some("wrong"), None, "/fff", 401),
    (Some("wrong"), Some("wrong"), None, "/fft", 401),
    (Some("wrong"), Some("wrong"), None, "/tft", 401),
    (Some("wrong"), Some("wrong"), None, "/ftf", 401),
    (None, Some("wrong"), None, "/ttt", 401),
    (None, Some("wrong"), None, "/ttf", 401),
    (None, Some("wrong"), None, "/tff", 401),
    (None, Some("wrong"), None, "/fff", 401),
    (None, Some("wrong"), None, "/fft", 401),
    (None, Some("wrong"), None, "/tft", 401),
    (None, Some("wrong"), None, "/ftf", 401),
    (Some("wrong"), None, Some("wrong"), "/ttt", 401),
    (Some("wrong"), None, Some("wrong"), "/ttf", 401),
    (Some("wrong"), None, Some("wrong"), "/tff", 401),
    (Some("wrong"), None, Some("wrong"), "/fff", 401),
    (Some("wrong"), None, Some("wrong"), "/fft", 401),
    (Some("wrong"), None, Some("wrong"), "/tft", 401),
    (Some("wrong"), None, Some("wrong"), "/ftf", 401),
    (Some("right"), Some("right"), None, "/ttt", 200),
    (Some("right"), Some("right"), None, "/ttf", 200),
    (Some("right"), Some("right"), None, "/tff", 200),
    (Some("right"), Some("right"), None, "/fff", 401),
    (Some("right"), Some("right"), None, "/fft", 401),
    (Some("right"), Some("right"), None, "/tft", 200),
    (Some("right"), Some("right"), None, "/ftf", 200),
    (Some("right"), None, None, "/ttt", 200),
    (Some("right"), None, None, "/ttf", 200),
    (Some("right"), None, None, "/tff", 200),
    (Some("right"), None, None, "/fff", 401),
    (Some("right"), None, None, "/fft", 401),
    (Some("right"), None, None, "/tft", 200),
    (Some("right"), None, None, "/ftf", 401),
    (None, None, Some("right"), "/ttt", 200),
    (None, None, Some("right"), "/ttf", 401),
    (None, None, Some("right"), "/tff", 401),
    (None, None, Some("right"), "/fff", 401),
    (None, None, Some("right"), "/fft", 200),
    (None, None, Some("right"), "/tft", 200),
    (None, None, Some("right"), "/ftf", 401),
    (Some("right"), None, Some("right"), "/ttt", 200),
    (Some("right"), None, Some("right"), "/ttf", 200),
    (Some("right"), None, Some("right"), "/tff", 200),
    (Some("right"), None, Some("right"), "/fff", 401),
    (Some("right"), None, Some("right"), "/fft", 200),
    (Some("right"), None, Some("right"), "/tft", 200),
    (Some("right"), None, Some("right"), "/ftf", 401),
    (None, Some("right"), None, "/ttt", 200),
    (None, Some("right"), None, "/ttf", 200),
    (None, Some("right"), None, "/tff", 401),
    (None, Some("right"), None, "/fff", 401),
    (None, Some("right"), None, "/fft", 401),
    (None, Some("right"), None, "/tft", 401),
    (None, Some("right"), None, "/ftf", 200),
    (None, Some("right"), Some("wrong"), "/ttt", 200),
    (None, Some("right"), Some("wrong"), "/ttf", 200),
    (None, Some("right"), Some("wrong"), "/tff", 401),
    (None, Some("right"), Some("wrong"), "/fff", 401),
    (None, Some("right"), Some("wrong"), "/fft", 401),
    (None, Some("right"), Some("wrong"), "/tft", 401),
    (None, Some("right"), Some("wrong"), "/ftf", 200),
    (Some("right"), Some("wrong"), None, "/ttt", 200),
    (Some("right"), Some("wrong"), None, "/ttf", 200),
    (Some("right"), Some("wrong"), None, "/tff", 200),
    (Some("right"), Some("wrong"), None, "/fff", 401),
    (Some("right"), Some("wrong"), None, "/fft", 401),
    (Some("right"), Some("wrong"), None, "/tft", 200),
    (Some("right"), Some("wrong"), None, "/ftf", 401),
    (Some("right"), None, Some("wrong"), "/ttt", 200),
    (Some("right"), None, Some("wrong"), "/ttf", 200),
    (Some("right"), None, Some("wrong"), "/tff", 200),
    (Some("right"), None, Some("wrong"), "/fff", 401),
    (Some("right"), None, Some("wrong"), "/fft", 401),
    (Some("right"), None, Some("wrong"), "/tft", 200),
    (Some("right"), None, Some("wrong"), "/ftf", 401),
    (None, Some("wrong"), Some("right"), "/ttt", 401),
    (None, Some("wrong"), Some("right"), "/ttf", 401),
    (None, Some("wrong"), Some("right"), "/tff", 401),
    (None, Some("wrong"), Some("right"), "/fff", 401),
    (None, Some("wrong"), Some("right"), "/fft", 200),
    (None, Some("wrong"), Some("right"), "/tft", 200),
    (None, Some("wrong"), Some("right"), "/ftf", 401),
    (Some("wrong"), Some("right"), None, "/ttt", 401),
    (Some("wrong"), Some("right"), None, "/ttf", 401),
    (Some("wrong"), Some("right"), None, "/tff", 401),
    (Some("wrong"), Some("right"), None, "/fff", 401),
    (Some("wrong"), Some("right"), None, "/fft", 401),
    (Some("wrong"), Some("right"), None, "/tft", 401),
    (Some("wrong"), Some("right"), None, "/ftf", 200),
    (Some("wrong"), None, Some("right"), "/ttt", 401),
    (Some("wrong"), None, Some("right"), "/ttf", 401),
    (Some("wrong"), None, Some("right"), "/tff", 401),
    (Some("wrong"), None, Some("right"), "/fff", 401),
    (Some("wrong"), None, Some("right"), "/fft", 200),
    (Some("wrong"), None, Some("right"), "/tft", 401),
    (Some("wrong"), None, Some("right"), "/ftf", 401),
];

#[test]
fn key_auth_key_location_combinations() {
    let up = Recorder::start();
    let gw = Gateway::start(&fill_ports(COMBOS, &[up.port]));
    let mut t = Cases::new();
    assert_eq!(TABLE.len(), 168);
    for (i, (header, query, body, path, status)) in TABLE.iter().enumerate() {
        let input: String = [header, query, body]
            .iter()
            .map(|v| v.map_or('n', |s| s.chars().next().unwrap()))
            .collect();
        t.it(
            &format!("combination #{} ({input} => {}) works", i + 1, &path[1..]),
            || {
                let target = match query {
                    Some(q) => format!("{path}?apikey={q}"),
                    None => path.to_string(),
                };
                let body = body.map(|b| format!("apikey={b}")).unwrap_or_default();
                let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
                if let Some(h) = header {
                    headers.push(("apikey", h));
                }
                let r = send(&gw, "POST", &target, &headers, body.as_bytes());
                assert_eq!(r.status, *status);
                if *status == 401 {
                    assert_eq!(r.header("WWW-Authenticate"), Some("Key"));
                }
            },
        );
    }
    t.finish();
}

#[test]
fn key_auth_schema_errors_refuse_the_config() {
    // key_names elements are header names (typedefs.header_name).
    let out = Gateway::try_start(
        r#"_format_version: "3.0"
services:
- url: http://127.0.0.1:9
  routes:
  - paths: [/]
    plugins: [{name: key-auth, config: {key_names: ["bad key"]}}]
"#,
    )
    .err()
    .expect("config with a bad key name must be refused");
    assert!(
        out.contains(
            "bad header name 'bad key', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
        ),
        "{out}"
    );
    // no_consumer: key-auth cannot be scoped to a consumer.
    let out = Gateway::try_start(
        r#"_format_version: "3.0"
consumers:
- username: bob
  plugins: [{name: key-auth}]
"#,
    )
    .err()
    .expect("consumer-scoped key-auth must be refused");
    assert!(out.contains("value must be null"), "{out}");
}
