//! `anylb-lab`: containerlab topologies on network namespaces.
//!
//! ```text
//! anylb-lab up FILE [--anylb PATH]      bring the lab up and leave it running
//! anylb-lab down FILE                   remove it (also after a crash)
//! anylb-lab exec FILE NODE -- CMD...    run a command in a node
//! anylb-lab demo FILE [--anylb PATH]    up, the README demo, down
//! ```

use std::path::PathBuf;
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
    let usage = "usage: anylb-lab up|down|demo FILE [--anylb PATH] | anylb-lab exec FILE NODE -- CMD...";
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
