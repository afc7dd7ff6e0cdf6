//! The `correlation-id` plugin (Kong's `kong/plugins/correlation-id`): makes
//! sure the upstream request carries an id header (keeping a non-empty one
//! the client sent), exposes it to the log serializer as `correlation_id`,
//! and optionally echoes it on the response.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use config_sync::schema::{boolean, string, PluginSchema, Record, PROTOCOLS_HTTP};
use pingora::http::ResponseHeader;
use serde::Deserialize;
use serde_json::Value;

use super::{Exit, Instance, Kong, Phases, Plugin, PluginDef, VERSION};

pub const NAME: &str = "correlation-id";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 100001,
    version: VERSION,
    schema,
    build,
};

fn schema() -> PluginSchema {
    let config = Record::new(vec![
        ("header_name", string().default("Kong-Request-ID")),
        (
            "generator",
            string().required().default("uuid#counter").one_of(&[
                "uuid",
                "uuid#counter",
                "tracker",
            ]),
        ),
        ("echo_downstream", boolean().required().default(false)),
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
enum Generator {
    #[serde(rename = "uuid")]
    Uuid,
    #[serde(rename = "uuid#counter")]
    UuidCounter,
    #[serde(rename = "tracker")]
    Tracker,
}

#[derive(Debug, Deserialize)]
struct Config {
    /// Absent only when configured as null (Kong then looks up a nil name,
    /// finds no header and sets none).
    header_name: Option<String>,
    generator: Generator,
    echo_downstream: bool,
}

fn build(i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    let conf: Config = serde_json::from_value(i.config.clone()).map_err(|e| e.to_string())?;
    Ok(Arc::new(CorrelationId { conf }))
}

/// `generators[conf.generator]()`.
fn generate(kong: &Kong<'_>, generator: Generator) -> String {
    match generator {
        Generator::Uuid => uuid::Uuid::new_v4().to_string(),
        Generator::UuidCounter => {
            // Kong keeps one uuid and counter per worker (`init_worker`).
            let worker = &kong.env().worker;
            let n = worker.counter.fetch_add(1, Ordering::Relaxed) + 1;
            format!("{}#{n}", worker.uuid)
        }
        Generator::Tracker => {
            // `server_addr-server_port-pid-connection-connection_requests-now`
            let (addr, port) = match kong.server_addr() {
                Some(a) => (a.ip().to_string(), a.port()),
                None => (String::new(), 0),
            };
            let (connection, requests) = kong.count_connection_request().unwrap_or((0, 1));
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            format!(
                "{addr}-{port}-{}-{connection}-{requests}-{now:.3}",
                std::process::id()
            )
        }
    }
}

struct CorrelationId {
    conf: Config,
}

/// `kong.ctx.plugin.correlation_id`, for header_filter.
#[derive(Default)]
struct Id(Option<String>);

/// A header value as Kong reads it: nginx drops surrounding blanks, so a
/// value of only spaces is empty.
fn present(v: Option<&str>) -> Option<&str> {
    v.map(|s| s.trim_matches([' ', '\t']))
        .filter(|s| !s.is_empty())
}

#[async_trait]
impl Plugin for CorrelationId {
    fn phases(&self) -> Phases {
        Phases::ACCESS | Phases::HEADER_FILTER
    }

    async fn access(&self, kong: &mut Kong<'_>) -> Result<(), Exit> {
        let Some(name) = self.conf.header_name.as_deref() else {
            return Ok(());
        };
        let id = match present(kong.header(name)) {
            Some(v) => v.to_string(),
            None => {
                let id = generate(kong, self.conf.generator);
                kong.set_upstream_header(name, &id);
                id
            }
        };
        kong.set_serialize_value("correlation_id", Value::String(id.clone()));
        if self.conf.echo_downstream {
            kong.state::<Id>().0 = Some(id);
        }
        Ok(())
    }

    fn header_filter(&self, kong: &mut Kong<'_>, resp: &mut ResponseHeader) {
        if !self.conf.echo_downstream {
            return;
        }
        let Some(name) = self.conf.header_name.as_deref() else {
            return;
        };
        // Set in access; or, when access did not run, the client's value
        // or a new one.
        let id = match kong.state::<Id>().0.clone() {
            Some(id) => id,
            None => match present(kong.header(name)) {
                Some(v) => v.to_string(),
                None => generate(kong, self.conf.generator),
            },
        };
        if resp.insert_header(name.to_string(), id).is_err() {
            log::debug!("correlation-id: header {name} not set");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use config_sync::schema::validate_record;
    use serde_json::json;

    #[test]
    fn schema_matches_kongs_spec() {
        // 02-schema_spec.lua: "requried field must be included".
        let e =
            validate_record(&schema().config, &json!({"generator": null}), "config").unwrap_err();
        assert_eq!(e[0].path, "config.generator");
        assert_eq!(e[0].message, "required field missing");
        let v = validate_record(&schema().config, &json!({}), "config").unwrap();
        assert_eq!(
            v,
            json!({"header_name": "Kong-Request-ID", "generator": "uuid#counter", "echo_downstream": false})
        );
        let e =
            validate_record(&schema().config, &json!({"generator": "x"}), "config").unwrap_err();
        assert_eq!(e[0].message, "expected one of: uuid, uuid#counter, tracker");
        let c: Config = serde_json::from_value(v).unwrap();
        assert_eq!(c.generator, Generator::UuidCounter);
    }

    #[test]
    fn blank_values_are_absent() {
        assert_eq!(present(Some("")), None);
        assert_eq!(present(Some("  ")), None);
        assert_eq!(present(Some("foobar")), Some("foobar"));
        assert_eq!(present(None), None);
    }
}
