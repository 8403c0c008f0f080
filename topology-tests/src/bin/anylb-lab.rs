//! `anylb-lab`: containerlab topologies on network namespaces, without Docker.
//!
//! ```text
//! anylb-lab up FILE [--anylb PATH]                      bring the lab up and leave it running
//! anylb-lab down FILE                                   stop it (SIGTERM, then SIGKILL) and remove it
//! anylb-lab exec FILE NODE -- CMD...                    run a command in a node
//! anylb-lab demo FILE [--anylb PATH]                    up, the README demo, down
//! anylb-lab soak FILE [--seconds N] [--threads N]       the soak with faults, its table, down
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use topology_tests::clab::Lab;

/// Containerlab topologies on network namespaces: each node a namespace, each link a veth pair.
#[derive(Debug, Parser)]
#[command(name = "anylb-lab", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The `anylb` binary the lab runs.
#[derive(Debug, Args)]
struct Binary {
    /// The anylb binary (default: `anylb` next to this program).
    #[arg(long, value_name = "PATH")]
    anylb: Option<PathBuf>,
}

impl Binary {
    fn path(&self) -> PathBuf {
        self.anylb.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("anylb")))
                .unwrap_or_else(|| "anylb".into())
        })
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Bring the lab up and leave it running.
    Up {
        /// The containerlab file.
        file: PathBuf,
        #[command(flatten)]
        bin: Binary,
    },
    /// Stop the lab's processes (SIGTERM, SIGKILL after 5 s) and remove its namespaces, also after a crash.
    Down {
        /// The containerlab file.
        file: PathBuf,
    },
    /// Run a command in a node's namespace.
    Exec {
        /// The containerlab file.
        file: PathBuf,
        /// The node.
        node: String,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Bring the lab up, run the README demo, take it down.
    Demo {
        /// The containerlab file.
        file: PathBuf,
        #[command(flatten)]
        bin: Binary,
    },
    /// Bring a scratch copy of the lab up, run the soak with faults on a schedule, print its table, take it down.
    Soak {
        /// The containerlab file.
        file: PathBuf,
        /// How long.
        #[arg(long, default_value_t = 300)]
        seconds: u64,
        /// Client threads.
        #[arg(long, default_value_t = 16)]
        threads: u32,
        #[command(flatten)]
        bin: Binary,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = std::env::temp_dir().join("anylb-lab-logs");
    let result = match cli.cmd {
        Cmd::Up { file, bin } => Lab::up(&file, &bin.path(), &logs).map(|lab| {
            println!(
                "lab {} is up (namespaces {}*); logs in {}",
                lab.clab.name,
                lab.prefix(),
                logs.display()
            );
            lab.keep();
        }),
        Cmd::Down { file } => Lab::down(&file),
        Cmd::Exec { file, node, cmd } => Lab::ns_name(&file, &node).and_then(|ns| {
            let st = std::process::Command::new("ip")
                .args(["netns", "exec", &ns])
                .args(&cmd)
                .status()?;
            if st.success() {
                Ok(())
            } else {
                Err(std::io::Error::other(format!("exit {st}")))
            }
        }),
        Cmd::Soak {
            file,
            seconds,
            threads,
            bin,
        } => soak(&file, &bin.path(), seconds, threads, &logs),
        Cmd::Demo { file, bin } => {
            let _ = Lab::down(&file);
            Lab::up(&file, &bin.path(), &logs).and_then(|mut lab| {
                let r = topology_tests::demo::run(&mut lab, &bin.path());
                println!("\n=== tearing down");
                drop(lab);
                let _ = Lab::down(&file);
                r
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e} (node logs in {})", logs.display());
            ExitCode::from(1)
        }
    }
}

/// `anylb-lab soak FILE`: the lab from a scratch copy of FILE's directory, the soak on it, its table, and an
/// error when it found problems.
fn soak(file: &Path, anylb: &Path, seconds: u64, threads: u32, logs: &Path) -> std::io::Result<()> {
    let scratch = std::env::temp_dir().join(format!("anylb-soak-{}", std::process::id()));
    let dir = file.parent().unwrap_or(Path::new("."));
    topology_tests::clab::copy_dir(dir, &scratch)?;
    let copy = scratch.join(file.file_name().unwrap_or_default());
    let _ = Lab::down(&copy);
    let result = Lab::up(&copy, anylb, logs).and_then(|mut lab| {
        topology_tests::demo::ready(&lab, anylb)?;
        println!("soak: {seconds} s, {threads} client threads, faults on a schedule");
        let r = topology_tests::soak::run(
            &mut lab,
            anylb,
            &scratch.join("demo/cluster.toml"),
            seconds,
            threads,
        )?;
        print!("{}", r.table());
        drop(lab);
        let problems = r.problems(32 * 1024);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(std::io::Error::other(problems.join("; ")))
        }
    });
    let _ = Lab::down(&copy);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
