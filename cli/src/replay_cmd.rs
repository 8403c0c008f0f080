//! `anylb replay`: one worker's pipeline over a capture, offline and deterministic.

use std::path::PathBuf;
use std::process::ExitCode;

use anylb_dataplane::pcap;
use anylb_dataplane::replay;
use anylb_dataplane::stats::DropReason;
use anylb_dataplane::worker::Verdict;
use clap::Args;

/// Arguments of `anylb replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Topology file.
    #[arg(long)]
    config: PathBuf,
    /// Node whose dataplane runs.
    #[arg(long)]
    node: String,
    /// Input capture (pcap, Ethernet).
    #[arg(long)]
    input: PathBuf,
    /// Where to write every transmitted frame (pcap).
    #[arg(long)]
    output: Option<PathBuf>,
}

fn verdict_text(v: &Verdict, ports: &[String]) -> String {
    let name = |p: &u16| {
        ports
            .get(usize::from(*p))
            .cloned()
            .unwrap_or_else(|| p.to_string())
    };
    match v {
        Verdict::Forward { port } => format!("forward {}", name(port)),
        Verdict::Reply { port } => format!("reply {}", name(port)),
        Verdict::IcmpError { port, reason } => format!("icmp-error {} ({})", name(port), reason.name()),
        Verdict::Kernel => "kernel".to_owned(),
        Verdict::Redirect { worker } => format!("redirect worker {worker}"),
        Verdict::Held => "held".to_owned(),
        Verdict::Spliced => "spliced (SYN-proxy handshakes joined)".to_owned(),
        Verdict::Parked => "parked (fragment before its first)".to_owned(),
        Verdict::Drop { reason } => format!("drop {}", reason.name()),
    }
}

/// Runs `anylb replay`.
pub fn run(a: ReplayArgs, json: bool) -> ExitCode {
    let topo = match anylb_conf::load_file(&a.config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let Some(cfg) = topo.resolve(&a.node) else {
        eprintln!("error: {}: no node named {:?}", a.config.display(), a.node);
        return ExitCode::from(1);
    };
    let records = match std::fs::File::open(&a.input)
        .map_err(pcap::Error::from)
        .and_then(|f| pcap::read(std::io::BufReader::new(f)))
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {}: {e}", a.input.display());
            return ExitCode::from(1);
        }
    };
    // The node's own cookie key, so that a capture of its SYN-proxy replays as it ran; without it (a
    // topology away from its key files) the replay goes on with cookies keyed by the cluster's name.
    let secret = cfg.syn_proxy.as_ref().and_then(|sp| {
        let base = a.config.parent().unwrap_or(std::path::Path::new("."));
        crate::node::assemble::read_key("cluster.syn_proxy.key_file", &base.join(&sp.key_file))
            .map_err(|e| {
                eprintln!("warning: {e}; SYN cookies are keyed by the cluster's name, not as on the node");
            })
            .ok()
    });
    let result = match replay::run(&cfg, &records, secret.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot build the dataplane of {}: {e}", a.node);
            return ExitCode::from(1);
        }
    };
    if let Some(out) = &a.output {
        let written =
            std::fs::File::create(out).and_then(|f| pcap::write(std::io::BufWriter::new(f), &result.output));
        if let Err(e) = written {
            eprintln!("error: {}: {e}", out.display());
            return ExitCode::from(1);
        }
    }
    if json {
        match serde_json::to_string_pretty(&result) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
        return ExitCode::SUCCESS;
    }
    let ports: Vec<String> = cfg.node.dataplane.ports.iter().map(|p| p.name.clone()).collect();
    let t0 = records.first().map_or(0, |r| r.ts_ns);
    println!(
        "{:>5}  {:>10}  {:<8}  {:<28}  packet",
        "#", "time", "in", "verdict"
    );
    for p in &result.packets {
        let t = (p.ts_ns.saturating_sub(t0)) as f64 / 1e9;
        println!(
            "{:>5}  {:>10.6}  {:<8}  {:<28}  {}",
            p.index,
            t,
            p.in_port,
            verdict_text(&p.verdict, &ports),
            p.summary
        );
        for (port, what) in &p.sent {
            println!(
                "{:>5}  {:>10}  {:<8}  {:<28}  {}",
                "",
                "",
                "",
                format!("-> {port}"),
                what
            );
        }
    }
    let s = &result.stats;
    let drops: Vec<String> = DropReason::ALL
        .iter()
        .filter(|r| s.drops_of(**r) > 0)
        .map(|r| format!("{} {}", r.name(), s.drops_of(*r)))
        .collect();
    println!(
        "{} frames in, {} out, {} to the kernel, {} new connections; drops: {}",
        s.rx_packets,
        result.output.len(),
        s.to_kernel,
        s.new_connections,
        if drops.is_empty() {
            "none".to_owned()
        } else {
            drops.join(", ")
        }
    );
    ExitCode::SUCCESS
}
