//! anylb-healthcheck: active health checks of backends.
//!
//! [`checker`] runs one check (TCP, HTTP, UDP, ICMP, exec); [`state`] turns results into up/down transitions
//! with rise and fall and computes slow-start weights; [`monitor`] schedules every backend's checks with jitter,
//! keeps the last transitions, applies manual drains, and tells the daemon each backend's effective weight and
//! each service's announce decision; the backends it checks by SYN probe wait for their next check in a
//! calendar of its grid points.

mod calendar;
pub mod checker;
pub mod icmp;
pub mod latency;
pub mod monitor;
pub mod state;
pub mod syn;
