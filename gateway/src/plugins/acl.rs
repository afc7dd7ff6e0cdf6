//! The `acl` plugin (Kong's `kong/plugins/acl`, `groups.lua`): lets the
//! consumer through by its `acls` groups (or the request's authenticated
//! groups) against an allow or a deny list.

use std::sync::Arc;

use async_trait::async_trait;
use config_sync::schema::{
    array, boolean, string, EntityCheck, PluginSchema, Record, PROTOCOLS_HTTP,
};
use serde::Deserialize;
use serde_json::Value;

use super::{Exit, Instance, Kong, Phases, Plugin, PluginDef, VERSION};

pub const NAME: &str = "acl";

pub const DEF: PluginDef = PluginDef {
    name: NAME,
    priority: 950,
    version: VERSION,
    schema,
    build,
};

const HEADER_CONSUMER_GROUPS: &str = "X-Consumer-Groups";
const HEADER_AUTHENTICATED_GROUPS: &str = "X-Authenticated-Groups";
const MSG_BLOCKED: &str = "You cannot consume this service";

fn schema() -> PluginSchema {
    PluginSchema {
        name: NAME,
        config: Record::new(vec![
            ("allow", array(string().len_min(1))),
            ("deny", array(string().len_min(1))),
            ("hide_groups_header", boolean().required().default(false)),
            (
                "always_use_authenticated_groups",
                boolean().required().default(false),
            ),
        ])
        .with_checks(vec![
            EntityCheck::OnlyOneOf(vec!["allow", "deny"]),
            EntityCheck::AtLeastOneOf(vec!["allow", "deny"]),
        ]),
        default_protocols: PROTOCOLS_HTTP,
        allowed_protocols: PROTOCOLS_HTTP,
        no_consumer: true,
        no_route: false,
        no_service: false,
        entity_checks: Vec::new(),
    }
}

/// `config` of an `acl` instance.
#[derive(Debug, Clone, Deserialize)]
struct Config {
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
    hide_groups_header: bool,
    always_use_authenticated_groups: bool,
}

fn build(i: &Instance<'_>) -> Result<Arc<dyn Plugin>, String> {
    let cfg: Config =
        serde_json::from_value(i.config.clone()).map_err(|e| format!("config: {e}"))?;
    // Kong: a deny list with a first element makes it a deny list.
    let deny = cfg.deny.as_ref().is_some_and(|d| !d.is_empty());
    let groups = if deny {
        cfg.deny.clone().unwrap_or_default()
    } else {
        cfg.allow.clone().unwrap_or_default()
    };
    Ok(Arc::new(Acl { cfg, deny, groups }))
}

struct Acl {
    cfg: Config,
    /// DENY (else ALLOW).
    deny: bool,
    /// The list that applies.
    groups: Vec<String>,
}

/// What the checks decided.
enum Verdict {
    Blocked,
    /// Allowed; the header value (the groups joined with `", "`).
    Pass(String),
}

impl Acl {
    /// Kong's `get_to_be_blocked`.
    fn decide(&self, groups: &[String]) -> Verdict {
        let in_group = self.groups.iter().any(|g| groups.contains(g));
        let blocked = if self.deny { in_group } else { !in_group };
        if blocked {
            Verdict::Blocked
        } else {
            Verdict::Pass(groups.join(", "))
        }
    }

    /// Kong's `groups.get_authenticated_groups()`: `kong.ctx.shared`
    /// first, then `ngx.ctx`.
    fn authenticated_groups(kong: &mut Kong<'_>) -> Option<Vec<String>> {
        if let Some(Value::Array(list)) = kong.shared().get("authenticated_groups") {
            return Some(
                list.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
            );
        }
        kong.authenticated_groups().map(<[String]>::to_vec)
    }
}

#[async_trait]
impl Plugin for Acl {
    fn phases(&self) -> Phases {
        Phases::ACCESS
    }

    async fn access(&self, kong: &mut Kong<'_>) -> Result<(), Exit> {
        let credential = kong.credential().is_some();
        let consumer = kong.consumer_index();
        let (verdict, header) = match consumer {
            None => {
                let Some(groups) = Self::authenticated_groups(kong) else {
                    if credential {
                        return Err(Exit::error(403, MSG_BLOCKED));
                    }
                    return Err(Exit::error(401, "Unauthorized"));
                };
                (self.decide(&groups), HEADER_AUTHENTICATED_GROUPS)
            }
            Some(c) => {
                // Authenticated groups override an anonymous consumer's.
                let authenticated = if !credential || self.cfg.always_use_authenticated_groups {
                    Self::authenticated_groups(kong)
                } else {
                    None
                };
                match authenticated {
                    Some(groups) => (self.decide(&groups), HEADER_AUTHENTICATED_GROUPS),
                    None => {
                        let groups = kong.consumers().groups(c).to_vec();
                        if groups.is_empty() && !self.deny {
                            if credential {
                                return Err(Exit::error(403, MSG_BLOCKED));
                            }
                            return Err(Exit::error(401, "Unauthorized"));
                        }
                        (self.decide(&groups), HEADER_CONSUMER_GROUPS)
                    }
                }
            }
        };
        match verdict {
            Verdict::Blocked => Err(Exit::error(403, MSG_BLOCKED)),
            Verdict::Pass(value) => {
                if !self.cfg.hide_groups_header {
                    // A consumer with no groups passing a deny list sends
                    // the header empty (Kong's spec checks `""`).
                    kong.set_upstream_header(header, &value);
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exactly_one_list() {
        let s = schema();
        let check = |v: Value| config_sync::schema::validate_record(&s.config, &v, "config");
        assert!(check(json!({"allow": ["a"]})).is_ok());
        assert!(check(json!({"deny": ["a"]})).is_ok());
        let e = check(json!({})).unwrap_err();
        assert_eq!(
            e[0].message,
            "exactly one of these fields must be non-empty: 'config.allow', 'config.deny'"
        );
        let e = check(json!({"allow": ["a"], "deny": ["b"]})).unwrap_err();
        assert_eq!(
            e[0].message,
            "exactly one of these fields must be non-empty: 'config.allow', 'config.deny'"
        );
    }

    #[test]
    fn allow_and_deny_decisions() {
        let acl = |deny: bool, groups: &[&str]| Acl {
            cfg: Config {
                allow: None,
                deny: None,
                hide_groups_header: false,
                always_use_authenticated_groups: false,
            },
            deny,
            groups: groups.iter().map(|s| s.to_string()).collect(),
        };
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(
            matches!(acl(false, &["admin"]).decide(&g(&["admin", "x"])), Verdict::Pass(h) if h == "admin, x")
        );
        assert!(matches!(
            acl(false, &["admin"]).decide(&g(&["x"])),
            Verdict::Blocked
        ));
        assert!(matches!(
            acl(true, &["admin"]).decide(&g(&["admin"])),
            Verdict::Blocked
        ));
        assert!(matches!(acl(true, &["admin"]).decide(&g(&[])), Verdict::Pass(h) if h.is_empty()));
    }
}
