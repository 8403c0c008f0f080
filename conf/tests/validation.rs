//! One test per validation rule: a valid base topology is changed in one place, and the error must name the
//! right key path, the line of the change and say what is wrong.

#![allow(clippy::unwrap_used)]

use anylb_conf::{load_str, Diagnostic};

const BASE: &str = r#"[cluster]
name = "t"
asn = 65010

[[nodes]]
name = "lb1"
router_id = "192.0.2.11"

[nodes.dataplane]
workers = [1, 2]

[[nodes.dataplane.ports]]
name = "p0"
device = "net_null0"
addresses = ["192.0.2.11/24"]

[[nodes.local_addresses]]
prefix = "198.51.100.16/29"
ports = "1024-65535"

[nodes.bgp]
[[nodes.bgp.neighbors]]
address = "192.0.2.1"
asn = 65000

[[nodes]]
name = "lb2"
router_id = "192.0.2.12"

[nodes.dataplane]
workers = [1]

[[nodes.dataplane.ports]]
name = "p0"
device = "net_null0"
addresses = ["192.0.2.12/24"]

[[nodes.local_addresses]]
prefix = "198.51.100.24/29"

[[services]]
name = "web"
vip = "203.0.113.10"
port = 80
protocol = "tcp"
backends = [{ address = "198.51.100.101", port = 8080 }]
"#;

/// Applies `from → to` once to the base, loads it, and returns the errors with the 1-based line of `needle`.
fn errors_after(from: &str, to: &str, needle: &str) -> (Vec<Diagnostic>, usize) {
    assert!(BASE.contains(from), "base has no {from:?}");
    let text = BASE.replacen(from, to, 1);
    // The needle is looked for from the change on; a table header ("[...") is looked for before it.
    let start = BASE.find(from).unwrap_or(0);
    let at = if needle.starts_with('[') {
        text[..start].rfind(needle)
    } else {
        text[start..].find(needle).map(|i| i + start)
    };
    let at = at
        .or_else(|| text.find(needle))
        .unwrap_or_else(|| panic!("no {needle:?} in text"));
    let line = text[..at].matches('\n').count() + 1;
    let errs = load_str(&text, "t.toml")
        .expect_err("the change must be rejected")
        .0;
    (errs, line)
}

/// Asserts exactly one error, at `path` on the line of `needle`, whose message contains `msg`.
fn expect(from: &str, to: &str, needle: &str, path: &str, msg: &str) {
    let (errs, line) = errors_after(from, to, needle);
    assert_eq!(errs.len(), 1, "expected one error, got: {errs:#?}");
    let e = &errs[0];
    assert_eq!(e.path, path, "{e}");
    assert_eq!(e.line, line, "{e}");
    assert_eq!(e.file, "t.toml");
    assert!(e.message.contains(msg), "message {:?} lacks {msg:?}", e.message);
}

#[test]
fn base_topology_is_valid() {
    load_str(BASE, "t.toml").unwrap();
}

#[test]
fn duplicate_vip_port_protocol_is_rejected() {
    let extra = "\n[[services]]\nname = \"web2\"\nvip = \"203.0.113.10\"\nport = 80\nprotocol = \"tcp\"\n";
    let text = format!("{BASE}{extra}");
    let errs = load_str(&text, "t.toml").unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].path, "services[1].vip");
    assert_eq!(errs[0].line, BASE.lines().count() + 4);
    assert_eq!(errs[0].column, 7);
    assert!(errs[0].message.contains("already service \"web\""), "{}", errs[0]);
}

#[test]
fn all_ports_service_overlaps_a_one_port_service() {
    let extra =
        "\n[[services]]\nname = \"any\"\nvip = \"203.0.113.10\"\nport = \"all\"\nprotocol = \"tcp\"\n";
    let errs = load_str(&format!("{BASE}{extra}"), "t.toml").unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0]
            .message
            .contains("tcp 203.0.113.10:all is already service"),
        "{}",
        errs[0]
    );
}

#[test]
fn same_vip_port_on_other_protocol_is_fine() {
    let extra = "\n[[services]]\nname = \"web-udp\"\nvip = \"203.0.113.10\"\nport = 80\nprotocol = \"udp\"\n";
    load_str(&format!("{BASE}{extra}"), "t.toml").unwrap();
}

#[test]
fn fullnat_needs_a_pool_of_the_backend_family() {
    expect(
        "backends = [{ address = \"198.51.100.101\", port = 8080 }]",
        "backends = [{ address = \"2001:db8:20::1\", port = 8080 }]",
        "2001:db8:20::1",
        "services[0].backends[0].address",
        "NAT46 is not supported",
    );
    let text = BASE
        .replacen("vip = \"203.0.113.10\"", "vip = \"2001:db8::10\"", 1)
        .replacen(
            "backends = [{ address = \"198.51.100.101\", port = 8080 }]",
            "backends = [{ address = \"2001:db8:20::1\", port = 8080 }]",
            1,
        );
    let errs = load_str(&text, "t.toml").unwrap_err().0;
    assert_eq!(errs.len(), 2, "{errs:#?}");
    for (e, node) in errs.iter().zip(["lb1", "lb2"]) {
        assert_eq!(e.path, "services[0].backends");
        assert!(
            e.message
                .contains(&format!("IPv6 local-address pool on node \"{node}\"")),
            "{e}"
        );
    }
}

#[test]
fn nat64_needs_an_ipv4_pool() {
    let text = BASE
        .replacen("vip = \"203.0.113.10\"", "vip = \"2001:db8::10\"", 1)
        .replacen(
            "[[nodes.local_addresses]]\nprefix = \"198.51.100.24/29\"\n",
            "",
            1,
        );
    let errs = load_str(&text, "t.toml").unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].path, "services[0].backends");
    assert!(errs[0]
        .message
        .contains("NAT64 to IPv4 backends needs an IPv4 local-address pool on node \"lb2\""));
    // Serving the service only where a pool exists is valid.
    let limited = text.replacen(
        "protocol = \"tcp\"\n",
        "protocol = \"tcp\"\nnodes = [\"lb1\"]\n",
        1,
    );
    load_str(&limited, "t.toml").unwrap();
}

#[test]
fn overlapping_pools_across_nodes_are_rejected() {
    expect(
        "prefix = \"198.51.100.24/29\"",
        "prefix = \"198.51.100.20/30\"",
        "198.51.100.20/30",
        "nodes[1].local_addresses[0].prefix",
        "overlaps 198.51.100.16/29 of node \"lb1\"",
    );
}

#[test]
fn overlapping_pools_within_a_node_are_rejected() {
    let text = BASE.replacen(
        "ports = \"1024-65535\"\n",
        "ports = \"1024-65535\"\n\n[[nodes.local_addresses]]\nprefix = \"198.51.100.16/28\"\n",
        1,
    );
    let errs = load_str(&text, "t.toml").unwrap_err().0;
    assert!(errs
        .iter()
        .any(|e| e.path == "nodes[0].local_addresses[1].prefix" && e.message.contains("overlaps")));
}

#[test]
fn duplicated_worker_cores_are_rejected() {
    expect(
        "workers = [1, 2]",
        "workers = [1, 2, 1]",
        "workers = [1, 2, 1]",
        "nodes[0].dataplane.workers[2]",
        "core 1 is listed twice",
    );
}

#[test]
fn unknown_node_names_are_rejected() {
    expect(
        "protocol = \"tcp\"\n",
        "protocol = \"tcp\"\nnodes = [\"lb1\", \"lb9\"]\n",
        "lb9",
        "services[0].nodes[1]",
        "unknown node \"lb9\"",
    );
}

#[test]
fn unknown_backup_node_is_rejected() {
    expect(
        "prefix = \"198.51.100.24/29\"\n",
        "prefix = \"198.51.100.24/29\"\nbackup = \"lb7\"\n",
        "lb7",
        "nodes[1].local_addresses[0].backup",
        "unknown node \"lb7\"",
    );
}

#[test]
fn inverted_port_range_is_rejected() {
    expect(
        "ports = \"1024-65535\"",
        "ports = \"5000-4000\"",
        "5000-4000",
        "nodes[0].local_addresses[0].ports",
        "invalid port range 5000-4000",
    );
}

#[test]
fn port_range_from_zero_is_rejected() {
    expect(
        "ports = \"1024-65535\"",
        "ports = \"0-100\"",
        "0-100",
        "nodes[0].local_addresses[0].ports",
        "invalid port range 0-100",
    );
}

#[test]
fn unparsable_port_range_is_rejected() {
    expect(
        "ports = \"1024-65535\"",
        "ports = \"1024-70000\"",
        "70000",
        "nodes[0].local_addresses[0].ports",
        "expected a port range",
    );
}

#[test]
fn bgp_neighbor_without_asn_is_rejected() {
    expect(
        "asn = 65000\n",
        "\n",
        "[[nodes.bgp.neighbors]]",
        "nodes[0].bgp.neighbors[0].asn",
        "has no asn",
    );
}

#[test]
fn ipv4_vip_with_ipv6_backend_in_dr_mode_is_rejected() {
    expect(
        "protocol = \"tcp\"\nbackends = [{ address = \"198.51.100.101\", port = 8080 }]",
        "protocol = \"tcp\"\nforwarding = \"dr\"\nbackends = [{ address = \"2001:db8::5\" }]",
        "2001:db8::5",
        "services[0].backends[0].address",
        "dr forwarding keeps the address family",
    );
}

#[test]
fn dr_cannot_change_the_port() {
    expect(
        "protocol = \"tcp\"\n",
        "protocol = \"tcp\"\nforwarding = \"dr\"\n",
        "port = 8080",
        "services[0].backends[0].port",
        "cannot change the port",
    );
}

#[test]
fn snat_as_a_service_points_to_snat_rules() {
    expect(
        "protocol = \"tcp\"\n",
        "protocol = \"tcp\"\nforwarding = \"snat\"\n",
        "snat",
        "services[0].forwarding",
        "[[snat]]",
    );
}

#[test]
fn unknown_key_names_the_expected_keys() {
    expect(
        "asn = 65010\n",
        "asn = 65010\nasm = 1\n",
        "asm",
        "cluster.asm",
        "expected one of: name, asn, bgp",
    );
}

#[test]
fn unknown_enum_value_lists_the_choices() {
    expect(
        "protocol = \"tcp\"",
        "protocol = \"sctp\"",
        "sctp",
        "services[0].protocol",
        "expected `tcp` or `udp`",
    );
}

#[test]
fn bad_duration_is_rejected() {
    expect(
        "asn = 65010\n",
        "asn = 65010\n[cluster.bgp]\nhold_time = \"9 seconds\"\n",
        "9 seconds",
        "cluster.bgp.hold_time",
        "expected a duration",
    );
}

#[test]
fn short_hold_time_is_rejected() {
    expect(
        "asn = 65000\n",
        "asn = 65000\nhold_time = \"2s\"\n",
        "2s",
        "nodes[0].bgp.neighbors[0].hold_time",
        "at least 3s",
    );
}

#[test]
fn keepalive_longer_than_a_third_of_hold_is_rejected() {
    expect(
        "asn = 65000\n",
        "asn = 65000\nhold_time = \"9s\"\nkeepalive = \"4s\"\n",
        "keepalive",
        "nodes[0].bgp.neighbors[0].keepalive",
        "more than a third",
    );
}

#[test]
fn ipv6_over_ipv4_session_needs_a_next_hop() {
    expect(
        "asn = 65000\n",
        "asn = 65000\nfamilies = [\"ipv4-unicast\", \"ipv6-unicast\"]\n",
        "[[nodes.bgp.neighbors]]",
        "nodes[0].bgp.neighbors[0].ipv6_next_hop",
        "need ipv6_next_hop",
    );
}

#[test]
fn local_pref_is_for_ibgp_only() {
    expect(
        "asn = 65000\n",
        "asn = 65000\nlocal_pref = 200\n",
        "local_pref",
        "nodes[0].bgp.neighbors[0].local_pref",
        "iBGP",
    );
}

#[test]
fn reserved_asn_is_rejected() {
    expect("asn = 65010", "asn = 23456", "23456", "cluster.asn", "reserved");
}

#[test]
fn missing_local_asn_is_rejected() {
    expect(
        "asn = 65010\n",
        "\n",
        "[nodes.bgp]\n",
        "nodes[0].bgp.asn",
        "no local ASN",
    );
}

#[test]
fn duplicate_node_names_are_rejected() {
    expect(
        "name = \"lb2\"",
        "name = \"lb1\"",
        "name = \"lb1\"",
        "nodes[1].name",
        "duplicate node name",
    );
}

#[test]
fn duplicate_router_ids_are_rejected() {
    expect(
        "router_id = \"192.0.2.12\"",
        "router_id = \"192.0.2.11\"",
        "192.0.2.11",
        "nodes[1].router_id",
        "also node",
    );
}

#[test]
fn duplicate_port_addresses_across_nodes_are_rejected() {
    expect(
        "addresses = [\"192.0.2.12/24\"]",
        "addresses = [\"192.0.2.11/24\"]",
        "192.0.2.11/24",
        "nodes[1].dataplane.ports[0].addresses[0]",
        "also on node \"lb1\"",
    );
}

#[test]
fn vip_inside_a_pool_is_rejected() {
    expect(
        "vip = \"203.0.113.10\"",
        "vip = \"198.51.100.17\"",
        "198.51.100.17",
        "services[0].vip",
        "inside node \"lb1\"'s local pool",
    );
}

#[test]
fn min_healthy_above_backend_count_is_rejected() {
    expect(
        "protocol = \"tcp\"\n",
        "protocol = \"tcp\"\nmin_healthy = 2\n",
        "min_healthy",
        "services[0].min_healthy",
        "could never be announced",
    );
}

#[test]
fn health_timeout_must_be_shorter_than_interval() {
    expect(
        "protocol = \"tcp\"\n",
        "protocol = \"tcp\"\nhealth = { kind = \"tcp\", interval = \"1s\", timeout = \"2s\" }\n",
        "health",
        "services[0].health.timeout",
        "shorter than interval",
    );
}

#[test]
fn health_fields_of_another_kind_are_rejected() {
    expect(
        "protocol = \"tcp\"\n",
        "protocol = \"tcp\"\nhealth = { kind = \"tcp\", path = \"/x\" }\n",
        "health",
        "services[0].health.path",
        "applies to http and https checks only",
    );
}

#[test]
fn dns_check_needs_a_valid_name() {
    expect(
        "protocol = \"tcp\"\n",
        "protocol = \"tcp\"\nhealth = { kind = \"dns\", rcode = \"NXDOMAIN\" }\n",
        "health",
        "services[0].health.query",
        "needs a name to query",
    );
    expect(
        "protocol = \"tcp\"\n",
        "protocol = \"tcp\"\nhealth = { kind = \"dns\", query = \"a..example\" }\n",
        "a..example",
        "services[0].health.query",
        "empty label",
    );
}

#[test]
fn check_keys_follow_their_kind() {
    // tls_verify on a cleartext gRPC check, send on an http check, a dns key on a tcp check.
    for (health, key, says) in [
        (
            "{ kind = \"grpc\", tls_verify = true }",
            "tls_verify",
            "https and grpc with tls = true",
        ),
        (
            "{ kind = \"http\", send = \"x\" }",
            "send",
            "applies to tcp checks only",
        ),
        (
            "{ kind = \"tcp\", answer = \"192.0.2.1\" }",
            "answer",
            "applies to dns checks only",
        ),
        (
            "{ kind = \"https\", grpc_service = \"web\" }",
            "grpc_service",
            "applies to grpc checks only",
        ),
    ] {
        expect(
            "protocol = \"tcp\"\n",
            &format!("protocol = \"tcp\"\nhealth = {health}\n"),
            "health",
            &format!("services[0].health.{key}"),
            says,
        );
    }
}

#[test]
fn a_dns_query_type_or_rcode_that_does_not_exist_is_a_type_error() {
    expect(
        "protocol = \"tcp\"\n",
        "protocol = \"tcp\"\nhealth = { kind = \"dns\", query = \"a.test\", query_type = \"AXFR\" }\n",
        "AXFR",
        "services[0].health.query_type",
        "unknown variant",
    );
}

#[test]
fn quic_routing_needs_udp_and_a_server_id_per_backend() {
    let base = "protocol = \"tcp\"\nbackends = [{ address = \"198.51.100.101\", port = 8080 }]\n";
    expect(
        base,
        "protocol = \"tcp\"\nquic = { server_id_length = 2 }\nbackends = [{ address = \"198.51.100.101\", port = 8080, server_id = \"0a01\" }]\n",
        "quic",
        "services[0].quic",
        "needs protocol udp",
    );
    for (backends, path, says) in [
        ("{ address = \"198.51.100.101\", port = 8080 }", "services[0].backends[0].server_id", "needs a server_id"),
        ("{ address = \"198.51.100.101\", port = 8080, server_id = \"0a\" }", "services[0].backends[0].server_id", "server_id_length is 2"),
        ("{ address = \"198.51.100.101\", port = 8080, server_id = \"zz01\" }", "services[0].backends[0].server_id", "not a server ID in hex"),
        (
            "{ address = \"198.51.100.101\", port = 8080, server_id = \"0a01\" }, { address = \"198.51.100.102\", port = 8080, server_id = \"0x0A01\" }",
            "services[0].backends[1].server_id",
            "backends[0]'s server_id too",
        ),
    ] {
        expect(
            base,
            &format!("protocol = \"udp\"\nquic = {{ server_id_length = 2 }}\nbackends = [{backends}]\n"),
            if path.ends_with("[1].server_id") { "0x0A01" } else { "backends" },
            path,
            says,
        );
    }
    expect(
        base,
        "protocol = \"tcp\"\nbackends = [{ address = \"198.51.100.101\", port = 8080, server_id = \"0a01\" }]\n",
        "backends",
        "services[0].backends[0].server_id",
        "for services with a quic table",
    );
}

#[test]
fn limits_and_thresholds_are_checked() {
    let base = "protocol = \"tcp\"\nbackends = [{ address = \"198.51.100.101\", port = 8080 }]\n";
    for (service, path, says) in [
        (
            "protocol = \"tcp\"\nrate_limit = { cps = 0 }\nbackends = [{ address = \"198.51.100.101\", port = 8080 }]\n",
            "services[0].rate_limit.cps",
            "at least 1",
        ),
        (
            "protocol = \"udp\"\nrate_limit = { cps = 5, action = \"reset\" }\nbackends = [{ address = \"198.51.100.101\", port = 8080 }]\n",
            "services[0].rate_limit.action",
            "for tcp services only",
        ),
        (
            "protocol = \"tcp\"\nbackends = [{ address = \"198.51.100.101\", port = 8080, upper_threshold = 10, lower_threshold = 10 }]\n",
            "services[0].backends[0].lower_threshold",
            "must be below upper_threshold 10",
        ),
        (
            "protocol = \"tcp\"\nbackends = [{ address = \"198.51.100.101\", port = 8080, lower_threshold = 3 }]\n",
            "services[0].backends[0].lower_threshold",
            "needs an upper_threshold",
        ),
    ] {
        let needle = path.rsplit('.').next().unwrap_or(path).split('[').next().unwrap_or(path);
        let needle = match needle {
            "cps" | "action" => "rate_limit",
            _ => "backends",
        };
        expect(base, service, needle, path, says);
    }
}

#[test]
fn a_syn_proxy_needs_tcp_fullnat_and_the_cluster_key() {
    let base = "protocol = \"tcp\"\nbackends = [{ address = \"198.51.100.101\", port = 8080 }]\n";
    let key = "asn = 65010\n\n[cluster.syn_proxy]\nkey_file = \"cookie.key\"\n";
    expect(
        base,
        "protocol = \"tcp\"\nsyn_proxy = true\nbackends = [{ address = \"198.51.100.101\", port = 8080 }]\n",
        "syn_proxy",
        "services[0].syn_proxy",
        "needs [cluster.syn_proxy]",
    );
    let with_key = BASE.replacen("asn = 65010\n", key, 1);
    load_str(
        &with_key.replacen(base, &format!("syn_proxy = true\n{base}"), 1),
        "t.toml",
    )
    .expect("a tcp fullnat service with the cluster key");
    let udp = with_key.replacen(
        base,
        "protocol = \"udp\"\nsyn_proxy = true\nbackends = [{ address = \"198.51.100.101\", port = 8080 }]\n",
        1,
    );
    let errs = load_str(&udp, "t.toml").expect_err("udp").0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].path, "services[0].syn_proxy");
    assert!(errs[0].message.contains("for tcp services only"), "{}", errs[0]);
    let wide = with_key.replacen(
        "key_file = \"cookie.key\"\n",
        "key_file = \"cookie.key\"\nwscale = 15\n",
        1,
    );
    let errs = load_str(&wide, "t.toml").expect_err("wscale").0;
    assert_eq!(errs[0].path, "cluster.syn_proxy.wscale");
    assert!(errs[0].message.contains("above 14"), "{}", errs[0]);
}

#[test]
fn deny_and_allow_take_prefixes() {
    expect(
        "protocol = \"tcp\"\n",
        "protocol = \"tcp\"\ndeny = [\"192.0.2.0/33\"]\n",
        "deny",
        "services[0].deny[0]",
        "",
    );
}

#[test]
fn udp_check_needs_a_payload() {
    expect(
        "protocol = \"tcp\"\n",
        "protocol = \"tcp\"\nhealth = { kind = \"udp\" }\n",
        "health",
        "services[0].health.payload",
        "needs a payload",
    );
}

#[test]
fn bad_status_code_is_rejected() {
    expect(
        "protocol = \"tcp\"\n",
        "protocol = \"tcp\"\nhealth = { kind = \"http\", status = [200, 999] }\n",
        "health",
        "services[0].health.status[1]",
        "not an HTTP status code",
    );
}

#[test]
fn maglev_table_size_must_be_prime() {
    expect(
        "asn = 65010\n",
        "asn = 65010\n[cluster.maglev]\ntable_size = 65536\n",
        "65536",
        "cluster.maglev.table_size",
        "not a prime",
    );
}

#[test]
fn static_neighbor_on_unknown_port_is_rejected() {
    expect(
        "ports = \"1024-65535\"\n",
        "ports = \"1024-65535\"\n\n[[nodes.neighbors]]\naddress = \"192.0.2.1\"\nmac = \"02:00:00:00:00:01\"\nport = \"p9\"\n",
        "p9",
        "nodes[0].neighbors[0].port",
        "no dataplane port named \"p9\"",
    );
}

#[test]
fn route_next_hop_of_other_family_is_rejected() {
    expect(
        "ports = \"1024-65535\"\n",
        "ports = \"1024-65535\"\n\n[[nodes.routes]]\nprefix = \"0.0.0.0/0\"\nvia = [\"2001:db8::1\"]\n",
        "2001:db8::1",
        "nodes[0].routes[0].via[0]",
        "not of the family",
    );
}

#[test]
fn snat_rule_on_node_without_the_out_port_is_rejected() {
    let extra = "\n[[snat]]\nname = \"u\"\nsources = [\"192.0.2.0/24\"]\nout_port = \"wan0\"\npool = [\"203.0.113.16/30\"]\n";
    let text = format!("{BASE}{extra}");
    let errs = load_str(&text, "t.toml").unwrap_err().0;
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs
        .iter()
        .all(|e| e.path == "snat[0].out_port" && e.message.contains("no dataplane port named \"wan0\"")));
}

#[test]
fn invalid_address_reports_what_was_expected() {
    expect(
        "router_id = \"192.0.2.11\"",
        "router_id = \"lb-one\"",
        "lb-one",
        "nodes[0].router_id",
        "expected an address such as 192.0.2.1",
    );
}

#[test]
fn bad_values_in_a_required_key_do_not_hide_other_errors() {
    // A bad VIP (required) removes its service for the schema pass; an unknown key elsewhere and a semantic
    // error in another section are still reported.
    let text = BASE
        .replacen("vip = \"203.0.113.10\"", "vip = \"203.0.113.999\"", 1)
        .replacen("workers = [1, 2]", "workers = [1, 2]\nturbo = true", 1)
        .replacen("ports = \"1024-65535\"", "ports = \"9-1\"", 1);
    let errs = load_str(&text, "t.toml").unwrap_err().0;
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "nodes[0].dataplane.turbo",
            "nodes[0].local_addresses[0].ports",
            "services[0].vip"
        ],
        "{errs:#?}"
    );
}

#[test]
fn missing_required_key_is_reported_at_its_table() {
    expect(
        "protocol = \"tcp\"\n",
        "\n",
        "[[services]]",
        "services[0]",
        "missing key `protocol`",
    );
}

#[test]
fn client_address_needs_fullnat() {
    expect(
        "protocol = \"tcp\"\nbackends",
        "protocol = \"tcp\"\nforwarding = \"nat\"\nclient_address = \"proxy_v2\"\nbackends",
        "client_address",
        "services[0].client_address",
        "client_address is for fullnat services",
    );
}

#[test]
fn client_address_fits_the_protocol() {
    expect(
        "protocol = \"tcp\"\nbackends",
        "protocol = \"udp\"\nclient_address = \"toa\"\nbackends",
        "client_address",
        "services[0].client_address",
        "toa is a TCP option",
    );
    expect(
        "protocol = \"tcp\"\nbackends",
        "protocol = \"tcp\"\nclient_address = \"uoa\"\nbackends",
        "client_address",
        "services[0].client_address",
        "uoa is for udp",
    );
    expect(
        "protocol = \"tcp\"\nbackends",
        "protocol = \"tcp\"\nclient_address_datagrams = 1\nbackends",
        "client_address_datagrams",
        "services[0].client_address_datagrams",
        "for udp services with a client_address",
    );
}

#[test]
fn client_address_accepts_toa_and_proxy_v2() {
    for kind in ["toa", "proxy_v2", "none"] {
        let text = BASE.replacen(
            "protocol = \"tcp\"\nbackends",
            &format!("protocol = \"tcp\"\nclient_address = \"{kind}\"\nbackends"),
            1,
        );
        load_str(&text, "t.toml").unwrap_or_else(|e| panic!("{kind}: {e}"));
    }
}

#[test]
fn encapsulation_is_for_tunnel_services() {
    expect(
        "protocol = \"tcp\"\nbackends",
        "protocol = \"tcp\"\nencapsulation = \"gue\"\nbackends",
        "encapsulation",
        "services[0].encapsulation",
        "encapsulation is for tunnel forwarding",
    );
}

#[test]
fn gue_port_needs_gue() {
    let text = BASE.replacen(
        "port = 80\nprotocol = \"tcp\"\nbackends = [{ address = \"198.51.100.101\", port = 8080 }]",
        "port = 80\nprotocol = \"tcp\"\nforwarding = \"tunnel\"\ngue_port = 9886\nbackends = [{ address = \"198.51.100.101\" }]",
        1,
    );
    let errs = load_str(&text, "t.toml").unwrap_err().0;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].path, "services[0].gue_port");
    assert!(errs[0].message.contains("needs encapsulation"), "{}", errs[0]);
    let ok = text.replacen("gue_port = 9886", "encapsulation = \"gue\"\ngue_port = 9886", 1);
    load_str(&ok, "t.toml").unwrap();
}

#[test]
fn descriptors_must_be_a_power_of_two_in_range() {
    expect(
        "workers = [1, 2]\n",
        "workers = [1, 2]\ndescriptors = 1000\n",
        "descriptors",
        "nodes[0].dataplane.descriptors",
        "power of two from 64 to 16384, not 1000",
    );
}

#[test]
fn too_few_mbufs_for_the_queues_are_rejected() {
    // Two workers, one port, 1,024 descriptors: 2 × 1024 × 2 + 2 × 1280 + 1024 = 7,680 buffers at least.
    expect(
        "workers = [1, 2]\n",
        "workers = [1, 2]\nmbufs = 4095\n",
        "mbufs",
        "nodes[0].dataplane.mbufs",
        "at least 7680 are needed",
    );
}

/// The base with connection sync on: `sync` is the `[cluster.sync]` table's body, and each node's
/// `sync_address` is given (or left out when `None`).
fn with_sync(sync: &str, addresses: [Option<&str>; 2]) -> String {
    let mut text = BASE.replacen(
        "asn = 65010\n",
        &format!("asn = 65010\n\n[cluster.sync]\nkey_file = \"sync.key\"\n{sync}\n"),
        1,
    );
    for (router_id, a) in [("192.0.2.11", addresses[0]), ("192.0.2.12", addresses[1])] {
        if let Some(a) = a {
            text = text.replacen(
                &format!("router_id = \"{router_id}\"\n"),
                &format!("router_id = \"{router_id}\"\nsync_address = \"{a}\"\n"),
                1,
            );
        }
    }
    text
}

/// The single error of a topology: its key path and message.
fn one_error(text: &str) -> (String, String) {
    let errs = load_str(text, "t.toml").expect_err("rejected").0;
    assert_eq!(errs.len(), 1, "expected one error, got: {errs:#?}");
    (errs[0].path.clone(), errs[0].message.clone())
}

#[test]
fn sync_resolves_every_member_with_its_pools() {
    let t = load_str(&with_sync("", [Some("192.0.2.11"), Some("192.0.2.12")]), "t.toml").unwrap();
    let s = t.resolve("lb2").unwrap().sync.unwrap();
    assert_eq!(s.settings.port, 7946);
    let names: Vec<&str> = s.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["lb1", "lb2"]);
    assert_eq!(s.members[0].pools[0].0.to_string(), "198.51.100.16/29");
    assert_eq!(s.members[1].address, Some("192.0.2.12".parse().unwrap()));
}

#[test]
fn sync_needs_a_sync_address_of_the_node_itself_on_every_node() {
    let (path, msg) = one_error(&with_sync("", [Some("192.0.2.11"), None]));
    assert_eq!(path, "nodes[1]");
    assert!(msg.contains("needs a sync_address"), "{msg}");
    let (path, msg) = one_error(&with_sync("", [Some("192.0.2.99"), Some("192.0.2.12")]));
    assert_eq!(path, "nodes[0].sync_address");
    assert!(msg.contains("not one of the node's own"), "{msg}");
}

#[test]
fn sync_timers_and_replicas_must_make_sense() {
    let both = [Some("192.0.2.11"), Some("192.0.2.12")];
    for (body, path, msg) in [
        (
            "heartbeat = \"500ms\"\ndead_after = \"1s\"",
            "cluster.sync.dead_after",
            "three heartbeats",
        ),
        ("replicas = 2", "cluster.sync.replicas", "from 1 to 1"),
        (
            "threshold = \"2m\"\nrefresh = \"1m\"",
            "cluster.sync.refresh",
            "longer than threshold",
        ),
        ("port = 0", "cluster.sync.port", "must not be 0"),
    ] {
        let (p, m) = one_error(&with_sync(body, both));
        assert_eq!(p, path, "{body}");
        assert!(m.contains(msg), "{body}: {m}");
    }
}
