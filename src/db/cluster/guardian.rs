//! The guardian: a small shell process started with each server, so the server never outlives
//! nexusd — even when nexusd is killed with SIGKILL, aborts, or exits on a second Ctrl-C.
//!
//! It reads a pipe whose only writer is nexusd (Rust opens every descriptor close-on-exec, so no
//! other child holds it). When nexusd goes, however it goes, the kernel closes the pipe and the
//! guardian sees end-of-file at once — no polling, no PID that could be reused. It then asks the
//! server for a fast shutdown (SIGINT, what `pg_ctl stop -m fast` sends), and for an immediate one
//! (SIGQUIT) if that takes more than 30 s — but only while `postmaster.pid` still names the server
//! it was started for, so a cluster that nexusd already stopped, or that a new nexusd has started
//! since, is left alone. On a clean stop nexusd stops the server first and then closes the pipe.
//!
//! Why a process and not `PR_SET_PDEATHSIG`: that signal follows the thread that spawned the
//! child (tokio's blocking threads come and go) and needs `unsafe` (the crate forbids it). The
//! guardian runs as the server's user in a process group of its own, ignoring SIGHUP and SIGINT,
//! so the hangup or Ctrl-C that reaches nexusd does not reach it.

use std::path::Path;
use std::process::Stdio;

use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// `$1` the server's PID, `$2` its data directory.
const SCRIPT: &str = r#"trap '' HUP INT
while read -r _; do :; done
pidfile="$2/postmaster.pid"
read -r running < "$pidfile" || exit 0
[ "$running" = "$1" ] || exit 0
kill -INT "$1" || exit 0
n=0
while [ -e "$pidfile" ] && kill -0 "$1"; do
    n=$((n + 1))
    [ "$n" -eq 150 ] && kill -QUIT "$1"
    [ "$n" -ge 300 ] && exit 1
    sleep 0.2
done
"#;

/// Starts the guardian of the server `pid` on `data_dir`. `cmd` is `/bin/sh` set up to run as the
/// server's user. `None` (with a warning) if it cannot start: the server then runs unguarded.
pub(super) fn spawn(mut cmd: Command, pid: Pid, data_dir: &Path) -> Option<Child> {
    cmd.arg("-c")
        .arg(SCRIPT)
        .arg("nexusd-pg-guardian")
        .arg(pid.as_raw().to_string())
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    match cmd.spawn() {
        Ok(child) => Some(child),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "cannot start the guardian that stops PostgreSQL if nexusd is killed; it would \
                 then keep running after nexusd"
            );
            None
        }
    }
}

/// Closes the pipe (the server is already stopped, so the guardian just exits) and reaps it.
pub(super) async fn release(mut guardian: Child) {
    drop(guardian.stdin.take());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), guardian.wait()).await;
}
