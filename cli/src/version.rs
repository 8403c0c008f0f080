//! What this binary is: anylb's version, the commit and date it was built from, the DPDK it was built against.

/// The commit (12 hex digits), or "unknown" outside a git clone.
pub const COMMIT: &str = env!("ANYLB_COMMIT");
/// The build date (UTC).
pub const BUILD_DATE: &str = env!("ANYLB_BUILD_DATE");
/// The DPDK version pkg-config found at build time.
pub const DPDK: &str = env!("ANYLB_DPDK");

/// `anylb --version`'s text.
pub const TEXT: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("ANYLB_COMMIT"),
    ", built ",
    env!("ANYLB_BUILD_DATE"),
    ", DPDK ",
    env!("ANYLB_DPDK"),
    ")"
);

/// The labels of `anylb_build_info`.
pub fn labels() -> [(&'static str, &'static str); 4] {
    [
        ("version", env!("CARGO_PKG_VERSION")),
        ("commit", COMMIT),
        ("build_date", BUILD_DATE),
        ("dpdk", DPDK),
    ]
}
