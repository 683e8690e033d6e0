//! Finding PostgreSQL programs: one search list for the embedded cluster's server binaries
//! (`postgres`, `initdb`) and for the client tools backups run (`pg_dump`, `pg_restore`, `psql`),
//! and one reading of their `--version`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Programs of one version found in one directory.
#[derive(Debug, Clone)]
pub struct Found {
    pub bindir: PathBuf,
    /// What the program printed, e.g. `pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)`.
    pub banner: String,
    /// The version number, e.g. `15.20`.
    pub version: String,
    pub major: u32,
}

/// Where to look: `explicit` alone when given (`NEXUSD_PG_BINDIR`), else `pg_config --bindir`,
/// `/usr/lib/postgresql/*/bin` (Debian; newest first), `/usr/pgsql-*/bin` (PGDG on RPM
/// systems; newest first), `/usr/local/pgsql/bin` (source builds) and `PATH`.
pub fn search_dirs(explicit: Option<&Path>) -> Vec<PathBuf> {
    if let Some(dir) = explicit {
        return vec![dir.to_path_buf()];
    }
    let mut dirs = Vec::new();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        dirs.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    dirs.extend(versioned("/usr/lib/postgresql", "", "bin"));
    dirs.extend(versioned("/usr", "pgsql-", "bin"));
    dirs.push(PathBuf::from("/usr/local/pgsql/bin"));
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let mut unique = Vec::new();
    for d in dirs {
        if !unique.contains(&d) {
            unique.push(d);
        }
    }
    unique
}

/// `<parent>/<prefix><major>/<suffix>` directories, newest major first.
fn versioned(parent: &str, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(parent)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            let major = name.strip_prefix(prefix)?.parse().ok()?;
            Some((major, entry.path().join(suffix)))
        })
        .collect();
    found.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    found.into_iter().map(|(_, p)| p).collect()
}

/// `dir` when it holds every one of `programs`; the version is the first one's `--version`.
pub fn probe(dir: &Path, programs: &[&str]) -> Option<Found> {
    if !programs.iter().all(|p| dir.join(p).is_file()) {
        return None;
    }
    let output = Command::new(dir.join(programs.first()?))
        .arg("--version")
        .output()
        .ok()?;
    let banner = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let (version, major) = parse_version(&banner)?;
    Some(Found {
        bindir: dir.to_path_buf(),
        banner,
        version,
        major,
    })
}

/// `postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)` → (`15.20`, 15).
fn parse_version(banner: &str) -> Option<(String, u32)> {
    let version = banner.split_whitespace().nth(2)?;
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().ok()?;
    Some((version.to_string(), major))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_the_banner() {
        assert_eq!(
            parse_version("postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"),
            Some(("15.20".to_string(), 15))
        );
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 17devel"),
            Some(("17devel".to_string(), 17))
        );
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn an_explicit_directory_is_the_only_one_searched() {
        assert_eq!(
            search_dirs(Some(Path::new("/opt/pg/bin"))),
            [PathBuf::from("/opt/pg/bin")]
        );
    }
}
