//! `anylb config` as an operator runs it: exit codes, summaries, located errors, JSON.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn anylb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anylb"))
        .args(args)
        .output()
        .expect("run anylb")
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn example(name: &str) -> String {
    root().join("examples").join(name).display().to_string()
}

#[test]
fn config_check_accepts_every_example() {
    for entry in std::fs::read_dir(root().join("examples")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let out = anylb(&["config", "check", p.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains(": ok: cluster "), "{stdout}");
        assert_eq!(stdout.lines().count(), 1, "one-line summary: {stdout}");
    }
}

#[test]
fn config_check_summarises_one_node() {
    let out = anylb(&["config", "check", &example("ecmp-cluster.toml"), "--node", "lb2"]);
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("node lb2: 1 nodes, 2 services, 5 backends, 2 neighbors, 1 local pools"),
        "{s}"
    );
    let out = anylb(&["config", "check", &example("ecmp-cluster.toml"), "--node", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no node named \"nope\""));
}

#[test]
fn config_check_reports_three_errors_and_exits_1() {
    let f = root().join("conf/tests/fixtures/three-errors.toml");
    let out = anylb(&["config", "check", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 3, "{err}");
    for (line, want) in lines.iter().zip([
        "three-errors.toml:8:1: ",
        "three-errors.toml:26:25: ",
        "three-errors.toml:30:7: ",
    ]) {
        assert!(line.contains(want), "{line} lacks {want}");
    }
    assert!(err.contains("3 errors"));

    let out = anylb(&["config", "check", f.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"].as_array().unwrap().len(), 3);
    assert_eq!(v["errors"][1]["path"], "services[0].backends[0].address");
    assert_eq!(v["errors"][1]["line"], 26);
}

#[test]
fn config_show_prints_the_resolved_node_in_toml_and_json() {
    let out = anylb(&["config", "show", &example("ecmp-cluster.toml"), "--node", "lb1"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let v: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(v["node"]["name"].as_str(), Some("lb1"));
    assert_eq!(v["node"]["bgp"]["neighbors"][0]["hold_time"].as_str(), Some("9s"));
    assert_eq!(v["services"][0]["timeouts"]["tcp_syn_recv"].as_str(), Some("30s"));

    let out = anylb(&[
        "config",
        "show",
        &example("ecmp-cluster.toml"),
        "--node",
        "lb1",
        "-j",
    ]);
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["node"]["bgp"]["asn"], 65010);
    assert_eq!(j["services"][1]["backends"][0]["port"], 53);
}

#[test]
fn config_diff_lists_changes() {
    let dir = tempfile::tempdir().unwrap();
    let old = std::fs::read_to_string(root().join("examples/ecmp-cluster.toml")).unwrap();
    let new = old.replacen("weight = 50", "weight = 70", 1);
    let newp = dir.path().join("new.toml");
    std::fs::write(&newp, new).unwrap();
    let out = anylb(&[
        "config",
        "diff",
        &example("ecmp-cluster.toml"),
        newp.to_str().unwrap(),
        "--node",
        "lb1",
    ]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "node lb1: service web: backend 198.51.100.103:8080 weight 50 -> 70"
    );
}

#[test]
fn wrong_arguments_are_a_usage_error() {
    let out = anylb(&["config", "show", &example("ecmp-cluster.toml")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--node"));
}

#[test]
fn output_to_a_closed_pipe_ends_quietly_like_a_unix_tool() {
    use std::os::unix::process::ExitStatusExt;
    let file = example("ecmp-cluster.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_anylb"))
        .args(["config", "show", file.as_str(), "--node", "lb1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before anything is written (`anylb config show … | head -0`).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.signal(),
        Some(13),
        "ended by SIGPIPE: {:?} {err}",
        out.status
    );
}

#[test]
fn with_json_an_error_is_json_too_and_the_exit_is_not_zero() {
    let out = anylb(&["-j", "-s", "/nonexistent/anylb.sock", "node"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("/nonexistent/anylb.sock")),
        "{v}"
    );
}

#[test]
fn version_completions_and_man_page_come_from_the_binary() {
    let v = anylb(&["--version"]);
    assert!(v.status.success());
    let text = String::from_utf8_lossy(&v.stdout);
    // "anylb 0.1.0 (commit 0123456789ab, built 2026-11-30, DPDK 22.11.x)"
    assert!(
        text.starts_with("anylb ")
            && text.contains("(commit ")
            && text.contains(", built 20")
            && text.contains(", DPDK 22."),
        "{text}"
    );
    for (shell, marker) in [
        ("bash", "_anylb()"),
        ("zsh", "#compdef anylb"),
        ("fish", "complete -c anylb"),
    ] {
        let o = anylb(&["completions", shell]);
        let script = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && script.contains(marker),
            "{shell}: {script:.200}"
        );
        assert!(
            script.contains("conns") && script.contains("state"),
            "{shell} completes subcommands and flags"
        );
    }
    let man = anylb(&["man"]);
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.status.success() && page.contains(".TH anylb 1") && page.contains("services"),
        "{page:.300}"
    );
    assert!(
        !anylb(&["completions", "tcsh"]).status.success(),
        "an unknown shell is a usage error"
    );
}
