//! Build facts for `anylb --version` and `anylb_build_info`: the commit (from git, when built from a clone),
//! the build date (SOURCE_DATE_EPOCH when set, for reproducible builds) and the DPDK version pkg-config finds.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(cmd).args(args).output().ok()?;
    let s = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    (o.status.success() && !s.is_empty()).then_some(s)
}

fn main() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    // A build without the clone's .git (a container build) is told the commit.
    println!("cargo:rerun-if-env-changed=ANYLB_COMMIT");
    let commit = std::env::var("ANYLB_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| output("git", &["-C", root, "rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    if let Some(git_dir) = output("git", &["-C", root, "rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        if let Some(r) = output("git", &["-C", root, "symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={git_dir}/{r}");
        }
    }
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
    let dpdk = output("pkg-config", &["--modversion", "libdpdk"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ANYLB_COMMIT={commit}");
    let date =
        output("date", &["-u", "-d", &format!("@{secs}"), "+%Y-%m-%d"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ANYLB_BUILD_DATE={date}");
    println!("cargo:rustc-env=ANYLB_DPDK={dpdk}");
}
