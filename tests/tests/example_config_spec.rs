//! The bundled `examples/kong.yml` (what `scripts/run-gateway` serves) loads
//! and does what the README says, with the upstream address swapped for a
//! recording one.
#![allow(clippy::unwrap_used)]

use gw_tests::gateway::{Cases, Gateway, Recorder};
use gw_tests::request;

#[test]
fn bundled_example_config_serves_as_documented() {
    let up = Recorder::start();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/kong.yml");
    let yml = std::fs::read_to_string(path)
        .unwrap()
        .replace("127.0.0.1:9000", &format!("127.0.0.1:{}", up.port));
    let gw = Gateway::start(&yml);
    let mut t = Cases::new();
    t.it(
        "strip_path: /httpbin/anything reaches the upstream as /anything",
        || {
            let r = request(gw.port, "GET", "/httpbin/anything?x=1", &[], b"");
            assert_eq!(r.status, 200, "{}", r.body_str());
            assert_eq!(up.last().target, "/anything?x=1");
        },
    );
    t.it("the protected route wants an API key", || {
        let r = request(gw.port, "GET", "/protected/headers", &[], b"");
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["message"], "No API key found in request");
        assert_eq!(r.header("www-authenticate"), Some("Key"));
    });
    t.it("the demo consumer's key passes key-auth and acl", || {
        let r = request(
            gw.port,
            "GET",
            "/protected/headers",
            &[("apikey", "demo-key")],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.body_str());
        let seen = up.last();
        assert_eq!(seen.target, "/headers");
        assert_eq!(seen.header("x-consumer-username"), Some("demo"));
        assert_eq!(seen.header("x-consumer-custom-id"), Some("demo-1"));
        assert_eq!(seen.header("x-consumer-groups"), Some("demo"));
        // correlation-id echoes the id it sent upstream.
        let id = seen.header("kong-request-id").unwrap();
        assert_eq!(r.header("kong-request-id"), Some(id));
    });
    t.finish();
}
