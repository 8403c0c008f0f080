//! `anylb`: the node daemon and the operator CLI. The grammar is `anylb <noun> [object] [verb]`, with
//! `-j/--json` on every command for machines and tables for people.

mod api;
mod config_cmd;
mod counters_cmd;
mod node;
mod replay_cmd;
mod run_cmd;
mod show_cmd;
mod speak_cmd;
mod version;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// anylb: an anycast layer-4 load-balancing router.
#[derive(Debug, Parser)]
#[command(name = "anylb", version = version::TEXT, about, propagate_version = true)]
struct Cli {
    /// Print JSON instead of tables.
    #[arg(short = 'j', long, global = true)]
    json: bool,
    /// The node's control socket (default: $ANYLB_SOCKET, or the only socket in /run/anylb).
    #[arg(short = 's', long, global = true)]
    socket: Option<std::path::PathBuf>,
    /// Log lines (on stderr) as text, or as one JSON object per line for log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check, show and compare topology files.
    #[command(subcommand)]
    Config(config_cmd::ConfigCmd),
    /// Run a node: its DPDK dataplane, BGP speaker, BFD and health checks, from the topology.
    Run(run_cmd::RunArgs),
    /// The node: status, or drain / undrain all its routes.
    Node {
        #[command(subcommand)]
        cmd: Option<show_cmd::NodeCmd>,
    },
    /// BGP sessions and routes.
    #[command(subcommand)]
    Bgp(show_cmd::BgpCmd),
    /// BFD sessions: state, discriminators, timers, detection time, up/down counts, last down reason.
    Bfd,
    /// Connection sync with the other nodes: who is alive, whose records are held, takeovers, counters.
    Cluster,
    /// The dataplane's route table.
    Route,
    /// The dataplane's neighbour table (ARP / NDP), merged over the workers.
    Neigh,
    /// Services with health and announcement; with --stats or --rate, their and their backends' counters.
    Services {
        /// Connections (active, inactive, scheduled), packets and bytes each way, as `ipvsadm -Ln --stats`.
        #[arg(long)]
        stats: bool,
        /// Connections, packets and bytes per second over the daemon's last seconds, as `ipvsadm -Ln --rate`.
        #[arg(long, conflicts_with = "stats")]
        rate: bool,
    },
    /// Local-address pools: ports of each address in use and free per protocol, connections refused for want
    /// of a port.
    Pools,
    /// Dataplane ports: link, NIC counters (packets, bytes, missed, errors, no-mbuf) and rates.
    Ports,
    /// Backends with health, drain and weights.
    Backends {
        /// Only this service.
        service: Option<String>,
    },
    /// Backend health with recent transitions.
    Health {
        /// Only this service.
        service: Option<String>,
    },
    /// Drain or undrain a backend on this node only (its existing connections continue); for every node,
    /// set `drained = true` on the backend in the topology and reload each node.
    #[command(subcommand)]
    Backend(show_cmd::BackendCmd),
    /// Connections in the dataplane: the first that match the filters, and how many match in all.
    Conns(show_cmd::ConnsQuery),
    /// Dataplane counters.
    Stats {
        /// One line per worker.
        #[arg(long)]
        per_worker: bool,
        /// Repeat every SECONDS with rates.
        #[arg(long, value_name = "SECONDS")]
        watch: Option<u64>,
    },
    /// Re-read the topology file and apply what changed for this node.
    Reload,
    /// Run only the BGP speaker: announce prefixes to neighbours and watch the sessions (like ExaBGP).
    Speak(speak_cmd::SpeakArgs),
    /// Run one worker's pipeline over a capture: a verdict per frame, transmitted frames to a pcap.
    Replay(replay_cmd::ReplayArgs),
    /// Print a shell completion script (`anylb completions bash > /etc/bash_completion.d/anylb`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page, in roff (`anylb man | man -l -`).
    Man,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if matches!(cli.command, Command::Run(_)) {
            "info"
        } else {
            "warn"
        })
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    if !matches!(cli.command, Command::Run(_) | Command::Speak(_)) {
        // A one-shot command whose output goes to a pipe that closes (`anylb conns | head`) ends quietly.
        os_sys::default_sigpipe();
    }
    match cli.command {
        Command::Config(cmd) => config_cmd::run(cmd, cli.json),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "anylb", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        Command::Replay(args) => replay_cmd::run(args, cli.json),
        Command::Run(args) => run_cmd::run(args),
        Command::Speak(args) => speak_cmd::run(args, cli.json),
        Command::Node { cmd } => show_cmd::run(cli.socket, cli.json, |s| match cmd {
            None => show_cmd::status(s, cli.json),
            Some(c) => show_cmd::node(s, cli.json, c),
        }),
        Command::Bgp(cmd) => show_cmd::run(cli.socket, cli.json, |s| show_cmd::bgp(s, cli.json, cmd)),
        Command::Bfd => show_cmd::run(cli.socket, cli.json, |s| show_cmd::bfd(s, cli.json)),
        Command::Cluster => show_cmd::run(cli.socket, cli.json, |s| show_cmd::cluster(s, cli.json)),
        Command::Route => show_cmd::run(cli.socket, cli.json, |s| show_cmd::route(s, cli.json)),
        Command::Neigh => show_cmd::run(cli.socket, cli.json, |s| show_cmd::neigh(s, cli.json)),
        Command::Services { stats, rate } => show_cmd::run(cli.socket, cli.json, |s| {
            let view = match (stats, rate) {
                (true, _) => counters_cmd::ServiceView::Stats,
                (_, true) => counters_cmd::ServiceView::Rate,
                _ => return show_cmd::services(s, cli.json),
            };
            counters_cmd::services(s, cli.json, view)
        }),
        Command::Pools => show_cmd::run(cli.socket, cli.json, |s| counters_cmd::pools(s, cli.json)),
        Command::Ports => show_cmd::run(cli.socket, cli.json, |s| counters_cmd::ports(s, cli.json)),
        Command::Backends { service } => show_cmd::run(cli.socket, cli.json, |s| {
            show_cmd::backends(s, cli.json, service, false)
        }),
        Command::Health { service } => show_cmd::run(cli.socket, cli.json, |s| {
            show_cmd::backends(s, cli.json, service, true)
        }),
        Command::Backend(cmd) => show_cmd::run(cli.socket, cli.json, |s| show_cmd::backend(s, cli.json, cmd)),
        Command::Conns(q) => show_cmd::run(cli.socket, cli.json, |s| show_cmd::conns(s, cli.json, q)),
        Command::Stats { per_worker, watch } => show_cmd::run(cli.socket, cli.json, |s| {
            counters_cmd::stats(s, cli.json, per_worker, watch)
        }),
        Command::Reload => show_cmd::run(cli.socket, cli.json, |s| show_cmd::reload(s, cli.json)),
    }
}
