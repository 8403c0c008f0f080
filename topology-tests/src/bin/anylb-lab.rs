//! `anylb-lab`: containerlab topologies on network namespaces.
//!
//! ```text
//! anylb-lab up FILE [--anylb PATH]      bring the lab up and leave it running
//! anylb-lab down FILE                   remove it (also after a crash)
//! anylb-lab exec FILE NODE -- CMD...    run a command in a node
//! anylb-lab demo FILE [--anylb PATH]    up, the README demo, down
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use topology_tests::clab::Lab;

fn anylb_path(args: &[String]) -> PathBuf {
    args.windows(2)
        .find(|w| w[0] == "--anylb")
        .map(|w| PathBuf::from(&w[1]))
        .unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("anylb")))
                .unwrap_or_else(|| "anylb".into())
        })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: anylb-lab up|down|demo FILE [--anylb PATH] | anylb-lab soak FILE [--seconds N] [--threads N] [--anylb PATH] | anylb-lab exec FILE NODE -- CMD...";
    let (Some(verb), Some(file)) = (args.first(), args.get(1)) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let file = PathBuf::from(file);
    let logs = std::env::temp_dir().join("anylb-lab-logs");
    let result = match verb.as_str() {
        "up" => Lab::up(&file, &anylb_path(&args), &logs).map(|lab| {
            println!(
                "lab {} is up (namespaces {}*); logs in {}",
                lab.clab.name,
                lab.prefix(),
                logs.display()
            );
            lab.keep();
        }),
        "down" => Lab::down(&file),
        "exec" => {
            let (Some(node), Some(sep)) = (args.get(2), args.iter().position(|a| a == "--")) else {
                eprintln!("{usage}");
                return ExitCode::from(2);
            };
            let cmd = &args[sep + 1..];
            Lab::ns_name(&file, node).and_then(|ns| {
                let st = std::process::Command::new("ip")
                    .args(["netns", "exec", &ns])
                    .args(cmd)
                    .status()?;
                if st.success() {
                    Ok(())
                } else {
                    Err(std::io::Error::other(format!("exit {st}")))
                }
            })
        }
        "soak" => soak(&file, &anylb_path(&args), &args, &logs),
        "demo" => {
            let _ = Lab::down(&file);
            Lab::up(&file, &anylb_path(&args), &logs).and_then(|mut lab| {
                let r = topology_tests::demo::run(&mut lab, &anylb_path(&args));
                println!("\n=== tearing down");
                drop(lab);
                let _ = Lab::down(&file);
                r
            })
        }
        _ => {
            eprintln!("{usage}");
            return ExitCode::from(2);
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

/// `anylb-lab soak FILE`: the lab from a scratch copy of FILE's directory, the soak on it (default 300 s, 16
/// threads), its table, and an error when it found problems.
fn soak(file: &Path, anylb: &Path, args: &[String], logs: &Path) -> std::io::Result<()> {
    let opt = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (seconds, threads) = (opt("--seconds", 300), opt("--threads", 16));
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
            threads as u32,
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
