//! Finds the system DPDK with pkg-config, generates bindings with bindgen over its full cflags, and compiles
//! the C shim for the static-inline functions.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.h");
    println!("cargo:rerun-if-changed=csrc/shim.c");
    let lib = pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
        .unwrap_or_else(|e| panic!("DPDK 22.11 not found by pkg-config (install libdpdk-dev): {e}"));
    let cflags = pkg_config::get_variable("libdpdk", "cflags").ok();
    let raw = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let flags: Vec<String> = raw
        .split_whitespace()
        .map(str::to_owned)
        .chain(cflags.into_iter().filter(|c| !c.is_empty()))
        .collect();

    let mut cc = cc::Build::new();
    cc.file("csrc/shim.c").opt_level(3).warnings(false);
    for p in &lib.include_paths {
        cc.include(p);
    }
    for f in &flags {
        if !f.starts_with("-I") {
            cc.flag_if_supported(f);
        }
    }
    // `-include rte_config.h` must reach the compiler as two arguments.
    let mut it = flags.iter();
    while let Some(f) = it.next() {
        if f == "-include" {
            if let Some(h) = it.next() {
                cc.flag("-include").flag(h);
            }
        }
    }
    cc.compile("anylb_dpdk_shim");

    let mut b = bindgen::Builder::default()
        .header("csrc/shim.h")
        .clang_args(
            flags
                .iter()
                .filter(|f| f.starts_with("-I") || f.starts_with("-D") || f.starts_with("-m")),
        )
        .clang_arg("-include")
        .clang_arg("rte_config.h")
        .allowlist_function("anylb_.*")
        .allowlist_function("rte_eal_init")
        .allowlist_function("rte_eal_cleanup")
        .allowlist_function("rte_eal_get_runtime_dir")
        .allowlist_function("rte_eal_remote_launch")
        .allowlist_function("rte_eal_mp_wait_lcore")
        .allowlist_function("rte_eal_wait_lcore")
        .allowlist_function("rte_socket_id")
        .allowlist_function("rte_lcore_count")
        .allowlist_function("rte_get_main_lcore")
        .allowlist_function("rte_lcore_to_socket_id")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_pktmbuf_pool_create")
        .allowlist_function("rte_mempool_free")
        .allowlist_function("rte_mempool_avail_count")
        .allowlist_function("rte_mempool_in_use_count")
        .allowlist_function("rte_ring_create")
        .allowlist_function("rte_ring_free")
        .allowlist_function("rte_eth_.*")
        .allowlist_function("rte_flow_validate")
        .allowlist_function("rte_flow_create")
        .allowlist_function("rte_flow_destroy")
        .allowlist_function("rte_flow_flush")
        .allowlist_function("rte_vdev_init")
        .allowlist_type("rte_flow_attr")
        .allowlist_type("rte_flow_item")
        .allowlist_type("rte_flow_action")
        .allowlist_type("rte_flow_action_queue")
        .allowlist_type("rte_flow_error")
        .allowlist_type("rte_flow_item_type")
        .allowlist_type("rte_flow_action_type")
        .opaque_type("rte_flow_item_flex_handle")
        .allowlist_var("RTE_ETH_.*")
        .allowlist_var("RTE_MBUF_.*")
        .allowlist_var("RTE_PKTMBUF_HEADROOM")
        .allowlist_var("RTE_MAX_ETHPORTS")
        .allowlist_var("RING_F_.*")
        .allowlist_var("SOCKET_ID_ANY")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false);
    b = b.parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    let bindings = b
        .generate()
        .unwrap_or_else(|e| panic!("bindgen over DPDK headers failed: {e}"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings");

    for l in &lib.libs {
        println!("cargo:rustc-link-lib={l}");
    }
}
