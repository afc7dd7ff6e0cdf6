//! The `request-size-limiting` plugin (Kong's
//! `kong/plugins/request-size-limiting`): refuses request bodies larger
//! than `allowed_payload_size` (413, or 417 for `Expect: 100-continue`).
//!
//! Kong decides before proxying: by `Content-Length`, or by measuring the
//! body it has read whole (in memory or in a temp file). Here a declared
//! length is checked in access, and so is a body without one that fits in
//! `client_body_buffer_size` (read before access). A larger body without a
//! length is not buffered whole (the limit defaults to 128 MiB per
//! request): it streams, and once more than the limit has come from the
//! client the request fails with the same answer, before any response
//! goes out. The upstream may then have seen the start of that request,
//! which Kong would not have sent it.

use std::sync::Arc;

use async_trait::async_trait;
use config_sync::schema::{boolean, integer, string, PluginSchema, Record, PROTOCOLS_HTTP};
use serde::Deserialize;

use super::{Exit, Instance, Kong, Phases, Plugin, PluginDef, VERSION};

pub const NAME: &str = "request-size-limiting";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 951,
    version: VERSION,
    schema,
    build,
};

/// `size_units`, the first being the default.
const SIZE_UNITS: [&str; 3] = ["megabytes", "kilobytes", "bytes"];

fn schema() -> PluginSchema {
    let config = Record::new(vec![
        ("allowed_payload_size", integer().default(128)),
        (
            "size_unit",
            string()
                .required()
                .default(SIZE_UNITS[0])
                .one_of(&SIZE_UNITS),
        ),
        (
            "require_content_length",
            boolean().required().default(false),
        ),
    ]);
    PluginSchema {
        name: NAME,
        config,
        default_protocols: PROTOCOLS_HTTP,
        allowed_protocols: PROTOCOLS_HTTP,
        no_consumer: false,
        no_route: false,
        no_service: false,
        entity_checks: Vec::new(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SizeUnit {
    Megabytes,
    Kilobytes,
    Bytes,
}

impl SizeUnit {
    /// `unit_multiplication_factor`.
    fn factor(self) -> i64 {
        match self {
            SizeUnit::Bytes => 1,
            SizeUnit::Kilobytes => 1024,
            SizeUnit::Megabytes => 1_048_576,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Config {
    /// Only null when configured so; Kong then fails at runtime.
    allowed_payload_size: Option<i64>,
    size_unit: SizeUnit,
    require_content_length: bool,
}

fn build(i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Config = serde_json::from_value(i.config.clone()).map_err(|e| e.to_string())?;
    // `allowed_size * factor`, in Lua numbers: a negative size allows no
    // body byte; a null one is an error in Kong's handler (500).
    let allowed = conf
        .allowed_payload_size
        .map(|n| n.saturating_mul(conf.size_unit.factor()));
    Ok(Arc::new(RequestSizeLimiting {
        allowed,
        require_content_length: conf.require_content_length,
    }))
}

struct RequestSizeLimiting {
    /// The limit in bytes (may be negative).
    allowed: Option<i64>,
    require_content_length: bool,
}

impl RequestSizeLimiting {
    /// `check_size`'s answer for a body over the limit.
    fn refusal(kong: &Kong<'_>) -> Exit {
        let expect = kong
            .header("expect")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
        Exit::error(
            if expect { 417 } else { 413 },
            "Request size limit exceeded",
        )
    }

    fn check_size(&self, kong: &Kong<'_>, allowed: i64, length: u64) -> Result<(), Exit> {
        if i128::from(length) > i128::from(allowed) {
            return Err(Self::refusal(kong));
        }
        Ok(())
    }
}

#[async_trait]
impl Plugin for RequestSizeLimiting {
    fn phases(&self) -> Phases {
        Phases::ACCESS
    }

    /// Bodies without a length are measured; one that fits in
    /// `client_body_buffer_size` is read before access.
    fn needs_request_body(&self) -> bool {
        true
    }

    async fn access(&self, kong: &mut Kong<'_>) -> Result<(), Exit> {
        let Some(allowed) = self.allowed else {
            log::error!("request-size-limiting: allowed_payload_size is null");
            return Err(Exit::error(500, "An unexpected error occurred"));
        };
        let declared = kong
            .header("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(length) = declared {
            return self.check_size(kong, allowed, length);
        }
        // Kong compares the raw header with "chunked".
        let chunked = kong.headers().get_all("transfer-encoding").iter().count() == 1
            && kong.header("transfer-encoding") == Some("chunked");
        if self.require_content_length && !chunked {
            return Err(Exit::error(
                411,
                "A valid Content-Length header is required",
            ));
        }
        if let Some(body) = kong.request_body() {
            let length = body.len() as u64;
            return self.check_size(kong, allowed, length);
        }
        // Larger than the buffer: counted while it streams.
        let max = u64::try_from(allowed).unwrap_or(0);
        let exit = Self::refusal(kong);
        if allowed < 0 {
            // Any body at all is over a negative limit; one is coming.
            return Err(exit);
        }
        kong.limit_request_body(max, exit)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use config_sync::schema::validate_record;
    use serde_json::json;

    #[test]
    fn schema_defaults_and_units() {
        let v = validate_record(&schema().config, &json!({}), "config").unwrap();
        assert_eq!(
            v,
            json!({"allowed_payload_size": 128, "size_unit": "megabytes", "require_content_length": false})
        );
        let c: Config = serde_json::from_value(v).unwrap();
        // 128 MiB, not the 128000000 the field's description says.
        assert_eq!(
            c.allowed_payload_size.unwrap() * c.size_unit.factor(),
            128 * 1_048_576
        );
        let e = validate_record(
            &schema().config,
            &json!({"size_unit": "gigabytes"}),
            "config",
        )
        .unwrap_err();
        assert_eq!(e[0].path, "config.size_unit");
        assert_eq!(e[0].message, "expected one of: megabytes, kilobytes, bytes");
        let e = validate_record(
            &schema().config,
            &json!({"allowed_payload_size": 1.5}),
            "config",
        )
        .unwrap_err();
        assert_eq!(e[0].message, "expected an integer");
        for (u, f) in [("bytes", 1), ("kilobytes", 1024), ("megabytes", 1_048_576)] {
            let c: Config = serde_json::from_value(
                json!({"allowed_payload_size": 2, "size_unit": u, "require_content_length": false}),
            )
            .unwrap();
            assert_eq!(c.size_unit.factor(), f);
        }
    }
}
