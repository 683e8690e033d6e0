//! Which database a one-off command acts on, driven through the real binary: the environment
//! file the systemd unit reads (`--env-file`, the environment winning over it), the one-line
//! refusal of every command but `serve` and `bootstrap` when nothing is configured and no
//! embedded cluster exists — creating nothing, wherever it is run from — the XDG state directory
//! of a user who is not root, and a backup of a database without the knowledge base refused.

mod support;

use std::borrow::BorrowMut;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::backups::{Where, backup_name, seed, text};
use support::{nexusd_command, shared_db, spawn_guardian, temp_root};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/knowledge_base.json")
}

fn run(mut cmd: impl BorrowMut<Command>) -> Output {
    cmd.borrow_mut().output().expect("running nexusd")
}

/// Runs `cmd` as the unprivileged user `nobody`, from `dir`, with `home` as its home.
fn as_nobody<'a>(cmd: &'a mut Command, dir: &Path, home: &Path) -> &'a mut Command {
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("looking up nobody")
        .expect("a nobody user");
    cmd.uid(nobody.uid.as_raw())
        .gid(nobody.gid.as_raw())
        .current_dir(dir)
        .env("HOME", home)
}

/// A directory `nobody` owns.
fn nobodys(path: PathBuf) -> PathBuf {
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    std::fs::create_dir_all(&path).unwrap();
    nix::unistd::chown(&path, Some(nobody.uid), Some(nobody.gid)).unwrap();
    path
}

/// Every path under `dir`, for "nothing was created" checks.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        out.push(entry.path());
        if entry.path().is_dir() {
            out.extend(tree(&entry.path()));
        }
    }
    out
}

async fn repositories(db: &support::TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM repositories")
        .fetch_one(&db.pool().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_env_file_points_every_command_at_the_configured_database() {
    let db = shared_db().await;
    db.bootstrap().await;
    let store = Where::local();
    let Where::Local(dir) = &store else {
        unreachable!()
    };
    let conf = temp_root("nexusd-env-");
    let env_file = conf.join("nexusd.env");
    std::fs::write(
        &env_file,
        format!(
            "# the daemon's settings, as systemd reads them\n\
             DATABASE_URL='{}'\n\
             ; a comment of the other kind\n\
             NEXUSD_BACKUP_DIR=\"{}\"\n\
             NEXUSD_BACKUP_SCHEDULE=off\n",
            db.url(),
            dir.display()
        ),
    )
    .unwrap();
    let env_arg = env_file.to_str().unwrap();

    // No variable set: import-json and backup run use the file's database and store.
    let import = run(nexusd_command(
        &[
            "--env-file",
            env_arg,
            "import-json",
            fixture().to_str().unwrap(),
        ],
        &[],
    )
    .current_dir(&conf));
    assert!(import.status.success(), "{}", text(&import));
    assert!(repositories(&db).await > 0, "import-json wrote elsewhere");
    let backup = run(nexusd_command(
        &["backup", "run", "--env-file", env_arg],
        &[],
    ));
    assert!(backup.status.success(), "{}", text(&backup));
    let name = backup_name(&backup);
    assert!(
        dir.join(&name).is_file(),
        "the backup is not in the file's store"
    );

    // The environment wins over the file: an empty database there is refused, by name.
    let empty = shared_db().await;
    let refused = run(nexusd_command(
        &["--env-file", env_arg, "backup", "run"],
        &[("DATABASE_URL", &empty.url())],
    ));
    assert!(!refused.status.success(), "{}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!(
            "database {} holds none of the knowledge-base tables",
            empty.name
        )),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(dir).unwrap().count(),
        2,
        "a backup of nothing was stored"
    );

    // A missing --env-file is a configuration error naming it.
    let missing = run(nexusd_command(
        &["--env-file", "/nonexistent/nexusd.env", "backup", "list"],
        &[],
    ));
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
    assert!(text(&missing).contains("/nonexistent/nexusd.env"));
}

#[tokio::test]
async fn the_file_s_variables_reach_what_nexusd_runs_as_under_systemd() {
    // pg_dump inherits nexusd's environment: a wrapper that fails when the file says so shows
    // that the file's variables became the process's, not only nexusd's configuration.
    let db = shared_db().await;
    seed(&db).await;
    let tools = nexusd::db::ClientTools::locate(None, 15).unwrap();
    let bin = temp_root("nexusd-bin-");
    for program in ["psql", "pg_restore"] {
        std::os::unix::fs::symlink(tools.program(program), bin.join(program)).unwrap();
    }
    let wrapper = bin.join("pg_dump");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] && exec '{real}' --version\n\
             [ \"$NEXUSD_TEST_MARK\" = from-the-file ] && {{ echo 'pg_dump: error: marked' >&2; exit 1; }}\n\
             exec '{real}' \"$@\"\n",
            real = tools.program("pg_dump").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = Where::local();
    let Where::Local(dir) = &store else {
        unreachable!()
    };
    let env_file = temp_root("nexusd-env-").join("nexusd.env");
    std::fs::write(
        &env_file,
        format!(
            "DATABASE_URL={}\nNEXUSD_BACKUP_DIR={}\nNEXUSD_PG_BINDIR={}\nNEXUSD_TEST_MARK=from-the-file\n",
            db.url(),
            dir.display(),
            bin.display()
        ),
    )
    .unwrap();
    let out = run(nexusd_command(
        &["--env-file", env_file.to_str().unwrap(), "backup", "run"],
        &[],
    ));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("pg_dump: error: marked"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn without_configuration_only_bootstrap_creates_a_cluster_and_in_the_xdg_directory() {
    let root = temp_root("nexusd-xdg-");
    let home = nobodys(root.join("home"));
    let work = nobodys(root.join("elsewhere"));
    let state = home.join(".local/state/nexusd");
    spawn_guardian(&state.join("pg"), &root);
    let fixture = fixture();

    for args in [
        vec!["import-json", fixture.to_str().unwrap()],
        vec!["backup", "run"],
        vec!["backup", "list"],
        vec!["restore", "latest", "--force"],
        vec!["status"],
    ] {
        let out = run(as_nobody(&mut nexusd_command(&args, &[]), &work, &home));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(
            stderr.contains(&format!("no embedded cluster in {}", state.display()))
                && stderr.contains("/etc/nexusd/nexusd.env")
                && stderr.contains("nexusd bootstrap")
                && stderr.contains("--env-file"),
            "{args:?}: {stderr}"
        );
        assert_eq!(tree(&home), Vec::<PathBuf>::new(), "{args:?} created files");
        assert_eq!(tree(&work), Vec::<PathBuf>::new(), "{args:?} created files");
    }

    // An environment file that exists but cannot be read: one line naming it and the fix.
    let secret = root.join("nexusd.env");
    std::fs::write(&secret, "DATABASE_URL=postgresql://x@localhost/x\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(as_nobody(
        &mut nexusd_command(&["--env-file", secret.to_str().unwrap(), "status"], &[]),
        &work,
        &home,
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(secret.to_str().unwrap()) && stderr.contains("sudo"),
        "{stderr}"
    );

    // bootstrap creates the embedded cluster, in the XDG state directory; then the others work.
    let out = run(as_nobody(
        &mut nexusd_command(&["bootstrap"], &[]),
        &work,
        &home,
    ));
    assert!(out.status.success(), "{}", text(&out));
    assert!(state.join("pg/PG_VERSION").is_file());
    assert_eq!(
        tree(&work),
        Vec::<PathBuf>::new(),
        "bootstrap wrote into the current directory"
    );
    let out = run(as_nobody(
        &mut nexusd_command(&["import-json", fixture.to_str().unwrap()], &[]),
        &work,
        &home,
    ));
    assert!(out.status.success(), "{}", text(&out));
    let out = run(as_nobody(
        &mut nexusd_command(&["backup", "run"], &[]),
        &work,
        &home,
    ));
    assert!(out.status.success(), "{}", text(&out));
    assert!(state.join("backups").join(backup_name(&out)).is_file());
}
