//! anylb-healthcheck: backend health checks, rise/fall and announce decisions (issue 6).
//!
//! Not built yet: this crate only holds its place in the workspace.
