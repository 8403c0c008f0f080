//! `anylb`: the node daemon and the operator CLI. The grammar is `anylb <noun> [object] [verb]`, with
//! `-j/--json` on every command for machines and tables for people.

mod config_cmd;
mod replay_cmd;
mod run_cmd;
mod speak_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// anylb: an anycast layer-4 load-balancing router.
#[derive(Debug, Parser)]
#[command(name = "anylb", version, about, propagate_version = true)]
struct Cli {
    /// Print JSON instead of tables.
    #[arg(short = 'j', long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check, show and compare topology files.
    #[command(subcommand)]
    Config(config_cmd::ConfigCmd),
    /// Run a node: its dataplane on DPDK (BGP and health checks arrive in their own issues).
    Run(run_cmd::RunArgs),
    /// Run only the BGP speaker: announce prefixes to neighbours and watch the sessions (like ExaBGP).
    Speak(speak_cmd::SpeakArgs),
    /// Run one worker's pipeline over a capture: a verdict per frame, transmitted frames to a pcap.
    Replay(replay_cmd::ReplayArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(if matches!(cli.command, Command::Run(_)) {
                    "info"
                } else {
                    "warn"
                })
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Config(cmd) => config_cmd::run(cmd, cli.json),
        Command::Replay(args) => replay_cmd::run(args, cli.json),
        Command::Run(args) => run_cmd::run(args),
        Command::Speak(args) => speak_cmd::run(args, cli.json),
    }
}
