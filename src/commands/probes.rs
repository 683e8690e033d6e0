//! The checks of `nexusd check` that try what a later job will do rather than read the
//! configuration: a write, read and delete of a probe object in the backup store, the database
//! rights `backup verify` and `restore` need, and `NEXUSD_*` variables nexusd does not know (a
//! misspelt name is otherwise silently ignored and its default used).

use bytes::Bytes;
use sqlx::PgConnection;

use crate::backup::config::BackupConfig;
use crate::backup::store::Store;

/// What a probe found, printed by `check` as one line each.
pub enum Finding {
    Ok(String),
    Warn(String),
    Fail(String),
}

/// Writes, reads back and deletes a small object in the configured store.
pub async fn backup_store(config: &BackupConfig) -> Finding {
    let where_ = config.destination.describe();
    let store = match Store::open(config).await {
        Ok(store) => store,
        Err(e) => return Finding::Fail(format!("backup store {where_}: {e}")),
    };
    let name = format!(
        "nexusd-check-probe-{}-{}",
        std::process::id(),
        chrono::Utc::now().format("%Y%m%dT%H%M%S%6f")
    );
    let content = Bytes::from(format!("nexusd check probe {name}\n"));
    if let Err(e) = store.put(&name, content.clone(), "text/plain").await {
        return Finding::Fail(format!(
            "backup store {where_}: writing a probe object failed: {e} (backup run would fail)"
        ));
    }
    let read = store.read_all(&name).await;
    let deleted = store.delete(&name, None).await;
    match (read, deleted) {
        (Ok(back), Ok(())) if back == content => Finding::Ok(format!(
            "backup store {where_}: a probe object was written, read back and deleted"
        )),
        (Ok(_), Ok(())) => Finding::Fail(format!(
            "backup store {where_}: a probe object read back differs from what was written"
        )),
        (Err(e), _) => Finding::Fail(format!(
            "backup store {where_}: reading a probe object back failed: {e} (restore and verify would fail)"
        )),
        (Ok(_), Err(e)) => Finding::Fail(format!(
            "backup store {where_}: deleting the probe object {name} failed: {e} (pruning old \
             backups would fail; delete it by hand)"
        )),
    }
}

/// Whether the connected role may do what `backup verify` (a scratch database: CREATEDB) and
/// `restore --force` (dropping and recreating the knowledge-base tables: owning them) need.
pub async fn restore_rights(conn: &mut PgConnection) -> Vec<Finding> {
    let facts: Result<(String, bool, bool, i64), sqlx::Error> = sqlx::query_as(
        "SELECT current_user::text, r.rolsuper, r.rolcreatedb,
                (SELECT count(*) FROM pg_tables t
                  WHERE t.schemaname = 'public' AND t.tableowner <> current_user)
           FROM pg_roles r WHERE r.rolname = current_user",
    )
    .fetch_one(conn)
    .await;
    let (role, superuser, createdb, foreign) = match facts {
        Ok(facts) => facts,
        Err(e) => {
            return vec![Finding::Warn(format!(
                "could not read the role's rights: {e}"
            ))];
        }
    };
    if superuser {
        return vec![Finding::Ok(format!(
            "role {role} is a superuser: backup verify and restore may run"
        ))];
    }
    let mut findings = vec![if createdb {
        Finding::Ok(format!(
            "role {role} has CREATEDB: backup verify may create its scratch database"
        ))
    } else {
        Finding::Warn(format!(
            "role {role} lacks CREATEDB: the weekly backup verify (and restore --into) cannot \
             create its scratch database; ALTER ROLE {role} CREATEDB as a superuser, or set \
             NEXUSD_BACKUP_VERIFY_SCHEDULE=off"
        ))
    }];
    if foreign > 0 {
        findings.push(Finding::Warn(format!(
            "{foreign} tables in schema public are owned by another role than {role}: restore \
             --force cannot replace them; run restore as their owner or a superuser"
        )));
    }
    findings
}

/// A warning for each `NEXUSD_*` name in `names` that nexusd does not read, with the known name
/// nearest to it.
pub fn unknown_variables<'a>(names: impl Iterator<Item = &'a str>) -> Vec<Finding> {
    let known: Vec<&str> = crate::config::variables().map(|v| v.name).collect();
    let mut unknown: Vec<&str> = names
        .filter(|n| n.starts_with("NEXUSD_") && !known.contains(n))
        .collect();
    unknown.sort_unstable();
    unknown
        .into_iter()
        .map(|name| {
            let hint = known
                .iter()
                .map(|k| (distance(name, k), *k))
                .min()
                .filter(|(d, _)| *d <= name.len() / 3 + 1)
                .map(|(_, k)| format!(" (did you mean {k}?)"))
                .unwrap_or_default();
            Finding::Warn(format!(
                "{name} is not a variable nexusd reads, so it is ignored{hint}; nexusd --help lists them"
            ))
        })
        .collect()
}

/// Levenshtein distance (insertions, deletions and substitutions of one character).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(findings: Vec<Finding>) -> Vec<String> {
        findings
            .into_iter()
            .map(|f| match f {
                Finding::Ok(t) | Finding::Warn(t) | Finding::Fail(t) => t,
            })
            .collect()
    }

    #[test]
    fn misspelt_names_are_named_with_the_nearest_known_one() {
        let found = texts(unknown_variables(
            [
                "NEXUSD_BACKUP_BUKET",
                "NEXUSD_STATE_DIR",
                "DATABASE_URL",
                "NEXUSD_SOMETHING_ELSE_ENTIRELY",
            ]
            .into_iter(),
        ));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("NEXUSD_BACKUP_BUKET is not a variable"));
        assert!(found[0].contains("did you mean NEXUSD_BACKUP_BUCKET?"));
        assert!(!found[1].contains("did you mean"), "{}", found[1]);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
