//! PgBouncer on 127.0.0.1 in front of a test cluster, with a generated configuration, run as
//! postgres (it refuses root); stopped at drop.
//!
//! Transaction pooling needs PgBouncer ≥ 1.21 (`max_prepared_statements`): Debian 12's package
//! is 1.18, so `scripts/setup-debian --test` builds a newer one into [`BUILT`].

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, temp_root};

/// Where `scripts/setup-debian --test` installs PgBouncer ≥ 1.21.
pub const BUILT: &str = "/usr/local/lib/nexusd/pgbouncer/bin/pgbouncer";
/// Server connections per database and user in transaction mode: few, so that a client's
/// statements land on different server connections from one transaction to the next.
pub const POOL_SIZE: u32 = 4;

pub struct PgBouncer {
    pub port: u16,
    child: Child,
    _root: PathBuf,
}

impl PgBouncer {
    /// PgBouncer ≥ 1.21 in transaction mode, `max_prepared_statements = 200`, [`POOL_SIZE`]
    /// server connections. `NEXUSD_TEST_PGBOUNCER` names another binary (e.g. Debian's
    /// `/usr/sbin/pgbouncer`, to see what an older one does).
    pub fn transaction(server_port: u16) -> PgBouncer {
        let binary = std::env::var("NEXUSD_TEST_PGBOUNCER").unwrap_or_else(|_| BUILT.to_string());
        assert!(
            std::path::Path::new(&binary).is_file(),
            "{binary} is missing: run `scripts/setup-debian --test` as root (it builds PgBouncer \
             >= 1.21 from Debian trixie's source package; Debian 12's 1.18 cannot pool \
             transactions for sqlx)"
        );
        Self::start(
            &binary,
            server_port,
            &format!(
                "pool_mode = transaction\nmax_prepared_statements = 200\n\
                 default_pool_size = {POOL_SIZE}\n"
            ),
        )
    }

    /// `binary` with `settings` added to the `[pgbouncer]` section.
    pub fn start(binary: &str, server_port: u16, settings: &str) -> PgBouncer {
        let root = temp_root("nexusd-pgbouncer-");
        let port = free_port();
        let users = root.join("userlist.txt");
        std::fs::write(&users, "\"postgres\" \"\"\n").unwrap();
        let ini = root.join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host=127.0.0.1 port={server_port}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {}\nadmin_users = postgres\n\
                 max_client_conn = 200\n\
                 ignore_startup_parameters = extra_float_digits,options\n{settings}",
                users.display()
            ),
        )
        .unwrap();
        let child = Command::new("runuser")
            .args(["-u", "postgres", "--", binary, "-q"])
            .arg(&ini)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "pgbouncer did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        PgBouncer {
            port,
            child,
            _root: root,
        }
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The backend pids of PgBouncer's server connections (`SHOW SERVERS` on its admin
    /// console, which speaks only the simple protocol: asked with psql).
    pub fn server_pids(&self) -> Vec<i32> {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", "pgbouncer", "-X", "-A", "-F", "|"])
            .args(["-c", "SHOW SERVERS"])
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "SHOW SERVERS: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split('|').collect();
        let column = header
            .iter()
            .position(|c| *c == "remote_pid")
            .unwrap_or_else(|| panic!("no remote_pid in SHOW SERVERS: {text}"));
        lines
            .filter_map(|l| l.split('|').nth(column)?.parse().ok())
            .filter(|pid| *pid != 0)
            .collect()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // runuser passes SIGTERM on to pgbouncer.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}
