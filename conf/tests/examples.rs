//! Every example loads, prints back and loads to the same value; resolution and diff behave on them; the
//! three-error fixture reports exactly its three errors with their locations.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use anylb_conf::{diff, load_file, load_str, Change, Topology};

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    assert!(v.len() >= 4, "examples missing in {}", dir.display());
    v
}

fn load(name: &str) -> Topology {
    load_file(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(name),
    )
    .unwrap()
}

#[test]
fn every_example_loads_and_prints_back_to_the_same_value() {
    for p in examples() {
        let t = load_file(&p).unwrap_or_else(|e| panic!("{e}"));
        let text = t.to_toml().unwrap();
        let back = load_str(&text, "printed")
            .unwrap_or_else(|e| panic!("{}: printed form fails:\n{e}\n{text}", p.display()));
        assert_eq!(t, back, "{}", p.display());
    }
}

#[test]
fn every_resolved_node_prints_back_to_the_same_value() {
    for p in examples() {
        let t = load_file(&p).unwrap();
        for n in &t.nodes {
            let r = t.resolve(&n.name).unwrap();
            let text = toml::to_string_pretty(&r).unwrap();
            let back: anylb_conf::NodeConfig = toml::from_str(&text).unwrap();
            assert_eq!(r, back);
        }
    }
}

#[test]
fn resolution_fills_defaults() {
    let t = load("ecmp-cluster.toml");
    let r = t.resolve("lb2").unwrap();
    let bgp = r.node.bgp.as_ref().unwrap();
    assert_eq!(bgp.asn, Some(65010));
    assert_eq!(bgp.neighbors[0].hold_time.unwrap().as_secs(), 9);
    assert_eq!(r.node.dataplane.main_core, Some(0));
    let web = &r.services[0];
    assert_eq!(web.timeouts.unwrap().tcp_established.unwrap().as_secs(), 900);
    assert_eq!(web.timeouts.unwrap().tcp_fin_wait.unwrap().as_secs(), 120);
    let dns = &r.services[1];
    assert_eq!(dns.backends[0].port, Some(53));
    assert_eq!(dns.backends[0].weight, Some(100));
    assert!(t.resolve("lb9").is_none());
}

#[test]
fn three_errors_fixture_reports_three_located_errors() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/three-errors.toml");
    let errs = load_file(&p).unwrap_err().0;
    let got: Vec<(usize, usize, &str)> = errs.iter().map(|e| (e.line, e.column, e.path.as_str())).collect();
    assert_eq!(
        got,
        [
            (8, 1, "nodes[0].colour"),
            (26, 25, "services[0].backends[0].address"),
            (30, 7, "services[1].vip")
        ],
        "{errs:#?}"
    );
    assert!(errs.iter().all(|e| e.file.ends_with("three-errors.toml")));
}

#[test]
fn diff_reports_backend_weight_service_and_neighbor_changes() {
    let old = load("ecmp-cluster.toml");
    let mut new = old.clone();
    new.services[0].backends[2].weight = Some(80);
    new.services[0].backends.push(anylb_conf::Backend {
        address: "198.51.100.104".parse().unwrap(),
        port: Some(8080),
        weight: None,
        drained: false,
        upper_threshold: None,
        lower_threshold: None,
        server_id: None,
    });
    new.services[1].scheduler = anylb_conf::Scheduler::Rr;
    new.nodes[0].bgp.as_mut().unwrap().neighbors[1].med = Some(10);
    new.nodes[0].local_addresses[0].ports = Some("2000-3000".parse().unwrap());
    let changes = diff(&old, &new, "lb1");
    let want = vec![
        Change::ServiceChanged {
            service: "dns".into(),
            fields: vec!["scheduler".into()],
        },
        Change::BackendWeight {
            service: "web".into(),
            backend: "198.51.100.103:8080".into(),
            old: 50,
            new: 80,
        },
        Change::BackendAdded {
            service: "web".into(),
            backend: "198.51.100.104:8080".into(),
        },
        Change::NeighborChanged {
            address: "192.0.2.17".into(),
            fields: vec!["med".into()],
        },
        Change::PoolChanged {
            prefix: "198.51.100.32/29".into(),
            fields: vec!["ports".into()],
        },
    ];
    assert_eq!(changes, want);
    assert!(changes.iter().all(|c| !c.needs_restart()));
    // lb2 sees the service changes but not lb1's neighbour and pool.
    assert_eq!(diff(&old, &new, "lb2").len(), 3);
}

#[test]
fn diff_of_identical_topologies_is_empty_and_ports_need_restart() {
    let old = load("ecmp-cluster.toml");
    assert!(diff(&old, &old, "lb1").is_empty());
    let mut new = old.clone();
    new.nodes[0].dataplane.workers = vec![1, 2];
    new.services.retain(|s| s.name != "dns");
    let changes = diff(&old, &new, "lb1");
    assert!(matches!(&changes[0], Change::RestartRequired { fields } if fields == &["dataplane.workers"]));
    assert!(changes[0].needs_restart());
    assert_eq!(
        changes[1],
        Change::ServiceRemoved {
            service: "dns".into()
        }
    );
}
