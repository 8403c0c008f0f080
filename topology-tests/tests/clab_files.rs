//! Every containerlab file of the repository deploys on a real containerlab, not only on the namespace runner:
//! it passes containerlab's own JSON schema (vendored in `topology-tests/schemas/`, checked with Debian's
//! python3-jsonschema), and it avoids what the schema cannot see but containerlab would trip on.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use topology_tests::clab::Clab;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn clab_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("topologies"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".clab.yml"))
        .collect();
    v.sort();
    v
}

/// Runs containerlab's schema over `files`: Ok, or the validator's complaints.
fn validate(files: &[PathBuf]) -> Result<(), String> {
    let schemas = root().join("schemas");
    let o = Command::new("/usr/bin/python3")
        .arg(schemas.join("validate_clab.py"))
        .arg(schemas.join("clab.schema.json"))
        .args(files)
        .output()
        .expect("python3 with jsonschema and yaml (Debian python3-jsonschema, python3-yaml)");
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

#[test]
fn every_clab_file_passes_containerlabs_schema() {
    let files = clab_files();
    assert!(files.len() >= 2, "{files:?}");
    validate(&files).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_schema_check_refuses_what_containerlab_refuses() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        (
            "kind.clab.yml",
            "name: x\ntopology:\n  nodes:\n    a: { kind: no-such-kind }\n",
        ),
        (
            "exec.clab.yml",
            "name: x\ntopology:\n  nodes:\n    a: { kind: linux, exec: 3 }\n",
        ),
        (
            "link.clab.yml",
            "name: x\ntopology:\n  nodes: {}\n  links:\n    - endpoints: [\"a:e1\"]\n      colour: blue\n",
        ),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let e = validate(&[p]).expect_err(name);
        assert!(e.contains(name), "{e}");
    }
}

#[test]
fn every_node_runs_an_image_with_what_its_lines_need() {
    for path in clab_files() {
        let clab = Clab::load(&path).unwrap();
        let dir = path.parent().unwrap();
        for (name, node) in &clab.topology.nodes {
            let at = format!("{}: node {name}", path.display());
            // containerlab's `bridge` kind attaches to a bridge that must already exist on the host.
            assert_ne!(node.kind, "bridge", "{at}: use a linux node with a bridge inside");
            let image = node.image.as_deref().unwrap_or_else(|| panic!("{at}: no image"));
            // `exec` lines call ip and sysctl, and `cmd` must wait for the links: only the anylb image (built by
            // the repository's Dockerfile, entrypoint included) and FRR's have them.
            assert!(
                image == "anylb:latest" || image.starts_with("quay.io/frrouting/frr:"),
                "{at}: image {image} lacks iproute2 or the waiting entrypoint"
            );
            if node.cmd.is_some() {
                assert_eq!(
                    image, "anylb:latest",
                    "{at}: a cmd needs the entrypoint that waits for the links"
                );
            }
            for b in &node.binds {
                let host = b.split(':').next().unwrap();
                assert!(dir.join(host).exists(), "{at}: bound file {host} missing");
            }
        }
    }
}

#[test]
fn the_dockerfile_builds_the_image_the_files_name() {
    let repo = root().join("..");
    let dockerfile = std::fs::read_to_string(repo.join("Dockerfile")).unwrap();
    for needed in [
        "libdpdk-dev",
        "cargo build --release --locked -p anylb",
        "install -y dpdk",
        "iproute2",
        "python3",
        "ENTRYPOINT [\"/usr/local/bin/anylb-entrypoint\"]",
    ] {
        assert!(dockerfile.contains(needed), "Dockerfile lacks {needed:?}");
    }
    let entry = std::fs::read_to_string(repo.join("packaging/entrypoint.sh")).unwrap();
    assert!(entry.contains("CLAB_INTFS"));
}

#[test]
fn the_entrypoint_waits_for_the_interfaces_then_runs_the_command() {
    let script = root().join("../packaging/entrypoint.sh");
    // Outside containerlab: at once.
    let o = Command::new("sh")
        .arg(&script)
        .args(["echo", "ran"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ran\n");
    // Interfaces already there (this machine has at least lo; ask for none besides): at once too, with the
    // command's own exit status.
    let o = Command::new("sh")
        .arg(&script)
        .args(["sh", "-c", "exit 7"])
        .env("CLAB_INTFS", "0")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(7));
}
