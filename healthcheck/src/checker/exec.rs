//! The exec check: a command whose exit status is the result; `{address}` and `{port}` in its arguments are
//! replaced by the target's. Abandoned at the timeout, the command is killed with its whole process group.

use super::{Check, CheckError};

pub(super) async fn check(c: &Check, cmd: &[String]) -> Result<(), CheckError> {
    let args: Vec<String> = cmd
        .iter()
        .map(|a| {
            a.replace("{address}", &c.target.ip().to_string())
                .replace("{port}", &c.target.port().to_string())
        })
        .collect();
    let (prog, rest) = args.split_first().ok_or(CheckError::EmptyCommand)?;
    let mut child = tokio::process::Command::new(prog)
        .args(rest)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| CheckError::Spawn {
            program: prog.clone(),
            source,
        })?;
    // Kill the whole process group if the check is abandoned at its timeout.
    let mut guard = GroupKill(child.id());
    let st = child.wait().await.map_err(|source| CheckError::Spawn {
        program: prog.clone(),
        source,
    })?;
    guard.0 = None;
    if st.success() {
        Ok(())
    } else {
        Err(CheckError::Exit(st))
    }
}

/// Kills a process group when dropped before the command finished (the check timed out).
struct GroupKill(Option<u32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}
