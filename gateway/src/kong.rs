//! Identity this data plane presents: the Kong version it is compatible with.
//!
//! Kong's control plane compares `node_version` with its own, and Kong's
//! specs assert `Server: kong/<version>`; both must name a real Kong release.

/// The Kong release whose behaviour this gateway implements.
pub const KONG_VERSION: &str = "3.10.0";

/// `Server` / `Via` token, e.g. `kong/3.10.0`.
pub const SERVER_TOKEN: &str = "kong/3.10.0";
