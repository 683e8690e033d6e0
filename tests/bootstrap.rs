//! Bootstrap against real PostgreSQL 15 clusters: the reference schema column by column,
//! idempotence, the fixes over the original, adopting an original database, extension
//! privileges, a server without pg_stat_statements preloaded, and the `bootstrap`/`check` CLI.

mod support;

use std::collections::BTreeMap;

use nexusd::bootstrap::{self, BootstrapError, StatementsStatus};
use sqlx::{Executor, PgPool};
use support::{TestCluster, nexusd_command, shared_db};

/// (column, type, NOT NULL, default).
type ColumnSpec = (&'static str, &'static str, bool, Option<&'static str>);

/// Every table of dev-nexus reference §4.2 with its columns, in order.
const REFERENCE_SCHEMA: &[(&str, &[ColumnSpec])] = &[
    (
        "repositories",
        &[
            (
                "id",
                "integer",
                true,
                Some("nextval('repositories_id_seq'::regclass)"),
            ),
            ("name", "character varying(255)", true, None),
            ("problem_domain", "text", false, None),
            (
                "last_analyzed",
                "timestamp with time zone",
                false,
                Some("now()"),
            ),
            ("last_commit_sha", "character varying(40)", false, None),
            (
                "created_at",
                "timestamp with time zone",
                false,
                Some("now()"),
            ),
            (
                "updated_at",
                "timestamp with time zone",
                false,
                Some("now()"),
            ),
        ],
    ),
    (
        "patterns",
        &[
            (
                "id",
                "integer",
                true,
                Some("nextval('patterns_id_seq'::regclass)"),
            ),
            ("repo_id", "integer", false, None),
            ("name", "character varying(500)", true, None),
            ("description", "text", false, None),
            ("context", "text", false, None),
            ("embedding", "vector(1536)", false, None),
            (
                "created_at",
                "timestamp with time zone",
                false,
                Some("now()"),
            ),
        ],
    ),
    (
        "technical_decisions",
        &[
            (
                "id",
                "integer",
                true,
                Some("nextval('technical_decisions_id_seq'::regclass)"),
            ),
            ("repo_id", "integer", false, None),
            ("what", "text", true, None),
            ("why", "text", false, None),
            ("alternatives", "text", false, None),
            (
                "created_at",
                "timestamp with time zone",
                false,
                Some("now()"),
            ),
        ],
    ),
    (
        "reusable_components",
        &[
            (
                "id",
                "integer",
                true,
                Some("nextval('reusable_components_id_seq'::regclass)"),
            ),
            ("repo_id", "integer", false, None),
            ("name", "character varying(500)", true, None),
            ("purpose", "text", false, None),
            ("location", "text", false, None),
            (
                "created_at",
                "timestamp with time zone",
                false,
                Some("now()"),
            ),
            ("component_id", "text", false, None),
            (
                "component_type",
                "character varying(50)",
                false,
                Some("'unknown'::character varying"),
            ),
            (
                "language",
                "character varying(50)",
                false,
                Some("'unknown'::character varying"),
            ),
            ("api_signature", "text", false, None),
            ("imports", "jsonb", false, Some("'[]'::jsonb")),
            ("keywords", "jsonb", false, Some("'[]'::jsonb")),
            ("lines_of_code", "integer", false, Some("0")),
            ("cyclomatic_complexity", "double precision", false, None),
            ("public_methods", "jsonb", false, Some("'[]'::jsonb")),
            (
                "first_seen",
                "timestamp without time zone",
                false,
                Some("now()"),
            ),
            ("derived_from", "text", false, None),
            (
                "sync_status",
                "character varying(50)",
                false,
                Some("'unknown'::character varying"),
            ),
        ],
    ),
    (
        "keywords",
        &[
            (
                "id",
                "integer",
                true,
                Some("nextval('keywords_id_seq'::regclass)"),
            ),
            ("keyword", "character varying(200)", true, None),
        ],
    ),
    (
        "pattern_keywords",
        &[
            ("pattern_id", "integer", true, None),
            ("keyword_id", "integer", true, None),
        ],
    ),
    (
        "dependencies",
        &[
            (
                "id",
                "integer",
                true,
                Some("nextval('dependencies_id_seq'::regclass)"),
            ),
            ("repo_id", "integer", false, None),
            ("dependency_name", "character varying(500)", true, None),
            ("dependency_version", "character varying(100)", false, None),
            ("dependency_type", "character varying(50)", false, None),
            (
                "created_at",
                "timestamp with time zone",
                false,
                Some("now()"),
            ),
        ],
    ),
    (
        "repository_relationships",
        &[
            (
                "id",
                "integer",
                true,
                Some("nextval('repository_relationships_id_seq'::regclass)"),
            ),
            ("source_repo_id", "integer", false, None),
            ("target_repo_id", "integer", false, None),
            ("relationship_type", "character varying(50)", true, None),
            ("description", "text", false, None),
            (
                "created_at",
                "timestamp with time zone",
                false,
                Some("now()"),
            ),
        ],
    ),
    (
        "deployment_scripts",
        &[
            (
                "id",
                "integer",
                true,
                Some("nextval('deployment_scripts_id_seq'::regclass)"),
            ),
            ("repo_id", "integer", false, None),
            ("name", "character varying(500)", true, None),
            ("description", "text", false, None),
            ("commands", "jsonb", false, None),
            ("environment_variables", "jsonb", false, None),
            (
                "created_at",
                "timestamp with time zone",
                false,
                Some("now()"),
            ),
        ],
    ),
    (
        "lessons_learned",
        &[
            (
                "id",
                "integer",
                true,
                Some("nextval('lessons_learned_id_seq'::regclass)"),
            ),
            ("repo_id", "integer", false, None),
            ("title", "character varying(500)", true, None),
            ("description", "text", false, None),
            ("category", "character varying(100)", false, None),
            ("impact", "character varying(50)", false, None),
            ("date", "timestamp with time zone", false, Some("now()")),
            (
                "created_at",
                "timestamp with time zone",
                false,
                Some("now()"),
            ),
        ],
    ),
    (
        "analysis_history",
        &[
            (
                "id",
                "integer",
                true,
                Some("nextval('analysis_history_id_seq'::regclass)"),
            ),
            ("repo_id", "integer", false, None),
            ("commit_sha", "character varying(40)", false, None),
            (
                "analyzed_at",
                "timestamp with time zone",
                false,
                Some("now()"),
            ),
            ("patterns_count", "integer", false, Some("0")),
            ("decisions_count", "integer", false, Some("0")),
            ("components_count", "integer", false, Some("0")),
        ],
    ),
    (
        "test_frameworks",
        &[
            (
                "id",
                "integer",
                true,
                Some("nextval('test_frameworks_id_seq'::regclass)"),
            ),
            ("repo_id", "integer", false, None),
            ("framework_name", "character varying(200)", true, None),
            ("coverage_percentage", "numeric(5,2)", false, None),
            (
                "created_at",
                "timestamp with time zone",
                false,
                Some("now()"),
            ),
        ],
    ),
    (
        "security_patterns",
        &[
            (
                "id",
                "integer",
                true,
                Some("nextval('security_patterns_id_seq'::regclass)"),
            ),
            ("repo_id", "integer", false, None),
            ("pattern_name", "character varying(500)", true, None),
            ("description", "text", false, None),
            (
                "authentication_method",
                "character varying(200)",
                false,
                None,
            ),
            ("compliance_standard", "character varying(200)", false, None),
            (
                "created_at",
                "timestamp with time zone",
                false,
                Some("now()"),
            ),
        ],
    ),
    (
        "runtime_issues",
        &[
            (
                "id",
                "integer",
                true,
                Some("nextval('runtime_issues_id_seq'::regclass)"),
            ),
            ("repo_id", "integer", false, None),
            ("issue_id", "character varying(100)", true, None),
            ("detected_at", "timestamp with time zone", true, None),
            ("issue_type", "character varying(50)", true, None),
            ("severity", "character varying(20)", true, None),
            ("service_type", "character varying(50)", true, None),
            ("log_snippet", "text", false, None),
            ("root_cause", "text", false, None),
            ("suggested_fix", "text", false, None),
            ("pattern_reference", "character varying(500)", false, None),
            ("github_issue_url", "character varying(500)", false, None),
            (
                "status",
                "character varying(50)",
                false,
                Some("'open'::character varying"),
            ),
            ("metrics", "jsonb", false, None),
            ("resolution_time", "timestamp with time zone", false, None),
            (
                "created_at",
                "timestamp with time zone",
                false,
                Some("now()"),
            ),
        ],
    ),
    (
        "component_vectors",
        &[
            ("vector_id", "character varying(255)", true, None),
            ("component_id", "character varying(255)", false, None),
            ("repository", "character varying(255)", false, None),
            ("component_name", "character varying(255)", false, None),
            ("vector", "vector(300)", false, None),
            ("embedding_dimension", "integer", false, None),
            (
                "created_at",
                "timestamp without time zone",
                false,
                Some("now()"),
            ),
            (
                "last_updated",
                "timestamp without time zone",
                false,
                Some("now()"),
            ),
        ],
    ),
];

/// Indexes of the reference (§4.2), minus the two ivfflat ones nexusd replaces with HNSW.
const REFERENCE_INDEXES: &[&str] = &[
    "idx_repositories_name",
    "idx_repositories_last_analyzed",
    "idx_patterns_repo_id",
    "idx_patterns_name",
    "idx_patterns_description_fts",
    "idx_patterns_context_fts",
    "idx_decisions_repo_id",
    "idx_components_repo_id",
    "idx_components_name",
    "idx_reusable_components_component_id",
    "idx_keywords_keyword",
    "idx_dependencies_repo_id",
    "idx_dependencies_name",
    "idx_repo_relationships_source",
    "idx_repo_relationships_target",
    "idx_deployment_scripts_repo_id",
    "idx_lessons_repo_id",
    "idx_lessons_category",
    "idx_lessons_date",
    "idx_lessons_description_fts",
    "idx_history_repo_id",
    "idx_history_analyzed_at",
    "idx_history_commit_sha",
    "idx_test_frameworks_repo_id",
    "idx_security_patterns_repo_id",
    "idx_runtime_issues_repo_id",
    "idx_runtime_issues_detected_at",
    "idx_runtime_issues_issue_type",
    "idx_runtime_issues_severity",
    "idx_runtime_issues_repo_detected",
    "idx_runtime_issues_log_fts",
    "idx_runtime_issues_root_cause_fts",
];

type Column = (String, String, bool, Option<String>);

/// Every migration this build carries, oldest first.
fn all_migrations() -> Vec<i64> {
    bootstrap::MIGRATOR.iter().map(|m| m.version).collect()
}

fn latest() -> i64 {
    bootstrap::latest_known_migration()
}

async fn columns(pool: &PgPool, table: &str) -> Vec<Column> {
    sqlx::query_as(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                pg_get_expr(d.adbin, d.adrelid)
           FROM pg_attribute a
           LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
          ORDER BY a.attnum",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap_or_else(|e| panic!("reading columns of {table}: {e}"))
}

async fn index_defs(pool: &PgPool) -> BTreeMap<String, String> {
    sqlx::query_as::<_, (String, String)>(
        "SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

async fn unique_constraints(pool: &PgPool, table: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint
          WHERE conrelid = $1::regclass AND contype IN ('u', 'p') ORDER BY 1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Everything a migration could have changed, as text, to compare two states.
async fn schema_snapshot(pool: &PgPool) -> String {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT format('%s %s %s %s %s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                       a.attnotnull, pg_get_expr(d.adbin, d.adrelid))
           FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
           LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          WHERE a.attnum > 0 AND NOT a.attisdropped
         UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'
         UNION ALL SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
                   WHERE connamespace = 'public'::regnamespace
         UNION ALL SELECT tgname || ' ' || pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal
         UNION ALL SELECT viewname || ' ' || definition FROM pg_views WHERE schemaname = 'public'
         UNION ALL SELECT format('migration %s %s %s', version, success, encode(checksum, 'hex'))
                     FROM _sqlx_migrations
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n")
}

fn assert_reference_columns(
    table: &str,
    actual: &[Column],
    expected: &[(&str, &str, bool, Option<&str>)],
) {
    let expected: Vec<Column> = expected
        .iter()
        .map(|(n, t, nn, d)| (n.to_string(), t.to_string(), *nn, d.map(str::to_string)))
        .collect();
    // Later migrations may add columns; the reference ones come first and exactly as specified.
    assert!(
        actual.len() >= expected.len() && actual[..expected.len()] == expected[..],
        "table {table} differs from the reference\nexpected: {expected:#?}\nactual: {actual:#?}"
    );
}

#[tokio::test]
async fn bootstrap_creates_every_reference_table_column_and_index() {
    let db = shared_db().await;
    let report = db.bootstrap().await;
    assert_eq!(report.applied_now, all_migrations());
    assert_eq!(
        report.migration_version,
        bootstrap::latest_known_migration()
    );
    assert_eq!(report.pgvector_version, "0.8.0");
    assert_eq!(report.statements, StatementsStatus::Ready);

    let pool = db.pool().await;
    for (table, expected) in REFERENCE_SCHEMA {
        let actual = columns(&pool, table).await;
        assert_reference_columns(table, &actual, expected);
    }
    // The per-table metrics cover exactly the tables the migrations create.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' \
            AND tablename <> '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(tables, bootstrap::KNOWLEDGE_BASE_TABLES);

    let indexes = index_defs(&pool).await;
    for name in REFERENCE_INDEXES {
        assert!(
            indexes.contains_key(*name),
            "index {name} missing; have {:?}",
            indexes.keys()
        );
    }
    let hnsw = &indexes["idx_patterns_embedding_hnsw"];
    assert!(
        hnsw.contains("USING hnsw (((embedding)::halfvec(1536)) halfvec_cosine_ops)")
            && hnsw.contains("m='16'")
            && hnsw.contains("ef_construction='64'"),
        "unexpected pattern vector index: {hnsw}"
    );
    assert!(
        indexes["idx_component_vectors_hnsw"].contains("USING hnsw (vector vector_cosine_ops)")
    );
    assert!(
        !indexes.values().any(|def| def.contains("ivfflat")),
        "an ivfflat index remains: {indexes:?}"
    );

    // The reference's unique keys, plus the two the original's upserts needed.
    let uniques = [
        ("repositories", "UNIQUE (name)"),
        ("patterns", "UNIQUE (repo_id, name)"),
        ("reusable_components", "UNIQUE (component_id)"),
        ("keywords", "UNIQUE (keyword)"),
        ("pattern_keywords", "PRIMARY KEY (pattern_id, keyword_id)"),
        (
            "repository_relationships",
            "UNIQUE (source_repo_id, target_repo_id, relationship_type)",
        ),
        ("runtime_issues", "UNIQUE (issue_id)"),
        ("component_vectors", "UNIQUE (component_id)"),
        ("deployment_scripts", "UNIQUE (repo_id, name)"),
        ("technical_decisions", "UNIQUE (repo_id, what)"),
    ];
    for (table, def) in uniques {
        let have = unique_constraints(&pool, table).await;
        assert!(
            have.iter().any(|d| d == def),
            "{table} lacks {def}; has {have:?}"
        );
    }

    let view_columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns
          WHERE table_name = 'pattern_similarity_view' ORDER BY ordinal_position",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        view_columns,
        [
            "pattern1_id",
            "pattern1_name",
            "repo1_id",
            "pattern2_id",
            "pattern2_name",
            "repo2_id",
            "similarity_score"
        ]
    );
}

#[tokio::test]
async fn second_bootstrap_changes_nothing() {
    let db = shared_db().await;
    db.bootstrap().await;
    let pool = db.pool().await;
    let before = schema_snapshot(&pool).await;
    let report = db.bootstrap().await;
    assert!(
        report.applied_now.is_empty(),
        "second run applied {:?}",
        report.applied_now
    );
    assert_eq!(
        report.migration_version,
        bootstrap::latest_known_migration()
    );
    let after = schema_snapshot(&pool).await;
    assert_eq!(before, after);
}

#[tokio::test]
async fn updated_at_follows_changes_and_upsert_keys_hold() {
    let db = shared_db().await;
    db.bootstrap().await;
    let pool = db.pool().await;
    let id: i32 = sqlx::query_scalar(
        "INSERT INTO repositories (name, updated_at) VALUES ('a/b', now() - interval '1 day') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let stale: bool = sqlx::query_scalar(
        "SELECT updated_at < now() - interval '1 hour' FROM repositories WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(stale);
    sqlx::query("UPDATE repositories SET problem_domain = 'search' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let fresh: bool = sqlx::query_scalar(
        "SELECT updated_at > now() - interval '1 minute' FROM repositories WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(fresh, "updated_at was not bumped by the update");

    // The upserts the original attempted now work.
    for _ in 0..2 {
        sqlx::query(
            "INSERT INTO deployment_scripts (repo_id, name, description) VALUES ($1, 'cloud_run', 'x')
             ON CONFLICT (repo_id, name) DO UPDATE SET description = EXCLUDED.description",
        )
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO technical_decisions (repo_id, what) VALUES ($1, 'Use Rust')
             ON CONFLICT (repo_id, what) DO NOTHING",
        )
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    }
    let counts: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM deployment_scripts), (SELECT count(*) FROM technical_decisions)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(counts, (1, 1));
}

#[tokio::test]
async fn vector_queries_use_the_hnsw_halfvec_index() {
    let db = shared_db().await;
    db.bootstrap().await;
    let pool = db.pool().await;
    let mut conn = pool.acquire().await.unwrap();
    conn.execute("SET enable_seqscan = off").await.unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id FROM patterns
          ORDER BY embedding::halfvec(1536) <=> array_fill(0.1, ARRAY[1536])::vector::halfvec(1536) LIMIT 5",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("idx_patterns_embedding_hnsw"),
        "plan does not use the index:\n{plan}"
    );
}

#[tokio::test]
async fn adopts_a_database_built_by_the_original_without_losing_data() {
    let db = shared_db().await;
    let pool = db.pool().await;
    sqlx::raw_sql(include_str!("fixtures/original_schema.sql"))
        .execute(&pool)
        .await
        .expect("loading the original schema");

    let report = db.bootstrap().await;
    assert_eq!(report.applied_now, all_migrations());

    for (table, expected) in REFERENCE_SCHEMA {
        assert_reference_columns(table, &columns(&pool, table).await, expected);
    }
    let indexes = index_defs(&pool).await;
    assert!(
        !indexes.contains_key("idx_patterns_embedding"),
        "the ivfflat index was kept"
    );
    assert!(
        !indexes.contains_key("idx_component_vector_cosine"),
        "the ivfflat index was kept"
    );
    assert!(indexes.contains_key("idx_patterns_embedding_hnsw"));

    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT 'repositories', count(*) FROM repositories
         UNION ALL SELECT 'patterns', count(*) FROM patterns
         UNION ALL SELECT 'dependencies', count(*) FROM dependencies
         UNION ALL SELECT 'lessons', count(*) FROM lessons_learned
         UNION ALL SELECT 'decisions', count(*) FROM technical_decisions
         UNION ALL SELECT 'deployments', count(*) FROM deployment_scripts",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let counts: BTreeMap<String, i64> = rows.into_iter().collect();
    assert_eq!(counts["repositories"], 2);
    assert_eq!(counts["patterns"], 2);
    assert_eq!(counts["dependencies"], 1);
    assert_eq!(counts["lessons"], 1);
    // Duplicates collapse to one row each: the first decision, the newest deployment.
    assert_eq!(counts["decisions"], 2);
    assert_eq!(counts["deployments"], 1);
    let why: String =
        sqlx::query_scalar("SELECT why FROM technical_decisions WHERE what = 'Use PostgreSQL'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(why, "first");
    let description: String = sqlx::query_scalar("SELECT description FROM deployment_scripts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(description, r#"{"region":"us-central1"}"#);
}

#[tokio::test]
async fn app_role_needs_the_bootstrap_url_to_create_extensions() {
    let db = shared_db().await;
    let role = db.app_role("").await;
    let admin = db.pool().await;
    let app = db.options().username(&role);

    // Without a superuser connection: a clear error, and nothing created.
    let err = bootstrap::run(&app, "app", None).await.unwrap_err();
    assert!(
        matches!(
            err,
            BootstrapError::ExtensionPrivilege {
                extension: "vector",
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("CREATE EXTENSION vector;")
            && message.contains("NEXUSD_BOOTSTRAP_DATABASE_URL")
    );
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .fetch_one(&admin)
            .await
            .unwrap();
    assert_eq!(tables, 0, "a failed bootstrap created tables");

    // With it: extensions by the superuser, the schema owned by the app role.
    let config = nexusd::config::Config::from_lookup(|k| {
        (k == "NEXUSD_BOOTSTRAP_DATABASE_URL").then(|| db.url())
    })
    .expect("config");
    let report = bootstrap::run(&app, "app", config.database.bootstrap.as_ref())
        .await
        .unwrap();
    assert_eq!(report.applied_now, all_migrations());
    assert_eq!(report.statements, StatementsStatus::Ready);
    let owner: String =
        sqlx::query_scalar("SELECT tableowner::text FROM pg_tables WHERE tablename = 'patterns'")
            .fetch_one(&admin)
            .await
            .unwrap();
    assert_eq!(owner, role);
    let extensions: Vec<String> =
        sqlx::query_scalar("SELECT extname::text FROM pg_extension ORDER BY 1")
            .fetch_all(&admin)
            .await
            .unwrap();
    assert!(
        extensions.contains(&"vector".to_string())
            && extensions.contains(&"pg_stat_statements".to_string())
    );

    // A bootstrap URL pointing at another database is refused rather than half-used.
    let other = shared_db().await;
    let config = nexusd::config::Config::from_lookup(|k| {
        (k == "NEXUSD_BOOTSTRAP_DATABASE_URL").then(|| other.url())
    })
    .expect("config");
    let fresh = shared_db().await;
    let fresh_admin = fresh.pool().await;
    fresh_admin
        .execute(
            format!(
                "ALTER DATABASE {} OWNER TO {role}; ALTER SCHEMA public OWNER TO {role}",
                fresh.name
            )
            .as_str(),
        )
        .await
        .unwrap();
    let err = bootstrap::run(
        &fresh.options().username(&role),
        "app",
        config.database.bootstrap.as_ref(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, BootstrapError::WrongBootstrapDatabase { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn without_preloaded_statements_bootstrap_says_which_setting_to_change() {
    let cluster = TestCluster::start_without_preload().await;
    let db = cluster.create_db().await;
    let report = db.bootstrap().await;
    assert_eq!(
        report.applied_now,
        all_migrations(),
        "the rest of bootstrap must still work"
    );
    match &report.statements {
        StatementsStatus::NotPreloaded { fix } => {
            assert!(
                fix.contains("shared_preload_libraries = 'pg_stat_statements'"),
                "{fix}"
            );
        }
        other => panic!("expected NotPreloaded, got {other:?}"),
    }

    // The CLI says the same, and `check` flags it as a warning, not a failure.
    let output = nexusd_command(&["bootstrap"], &[("DATABASE_URL", &db.url())])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("schema already current (migration {})", latest())),
        "{stdout}"
    );
    assert!(
        stdout.contains("pg_stat_statements: off") && stdout.contains("shared_preload_libraries"),
        "{stdout}"
    );
    let output = nexusd_command(&["check"], &[("DATABASE_URL", &db.url())])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("warn  pg_stat_statements not preloaded"),
        "{stdout}"
    );
}

#[tokio::test]
async fn bootstrap_command_applies_then_reports_current() {
    let db = shared_db().await;
    let url = db.url();
    let first = nexusd_command(&["bootstrap"], &[("DATABASE_URL", &url)])
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        stdout.contains(&format!("applied migrations {:?}", all_migrations())),
        "{stdout}"
    );
    assert!(
        stdout.contains("pgvector 0.8.0") && stdout.contains("pg_stat_statements: ready"),
        "{stdout}"
    );

    let second = nexusd_command(&["bootstrap"], &[("DATABASE_URL", &url)])
        .output()
        .unwrap();
    assert!(second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stdout)
            .contains(&format!("schema already current (migration {})", latest()))
    );

    let check = nexusd_command(&["check"], &[("DATABASE_URL", &url)])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("ok    schema current (migration {})", latest())),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok    pgvector 0.8.0 installed"),
        "{stdout}"
    );
}

#[tokio::test]
async fn check_reports_pending_migrations_and_unreachable_servers() {
    let db = shared_db().await;
    let output = nexusd_command(&["check"], &[("DATABASE_URL", &db.url())])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "pending migrations are a warning: {stdout}"
    );
    assert!(
        stdout.contains(&format!("warn  migrations pending {:?}", all_migrations())),
        "{stdout}"
    );
    // check changed nothing.
    let pool = db.pool().await;
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(tables, 0);

    let closed = format!(
        "postgresql://nobody:pw@127.0.0.1:{}/x",
        support::free_port()
    );
    let output = nexusd_command(&["check"], &[("DATABASE_URL", &closed)])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  cannot connect to PostgreSQL at postgresql://nobody:***@127.0.0.1"),
        "{stdout}"
    );
    assert!(!stdout.contains(":pw@"), "password printed: {stdout}");
}

#[tokio::test]
async fn bad_configuration_is_refused_with_the_variable_named() {
    let output = nexusd_command(
        &["serve"],
        &[("NEXUSD_API_ADDR", "nowhere"), ("USE_POSTGRESQL", "false")],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("USE_POSTGRESQL: is false"), "{stderr}");
    assert!(
        stderr.contains("NEXUSD_API_ADDR: \"nowhere\" is not valid"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");

    let output = nexusd_command(&["check"], &[("POSTGRES_PORT", "port")])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains("FAIL  POSTGRES_PORT: \"port\" is not valid")
    );

    let help = nexusd_command(&["--help"], &[]).output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "serve",
        "bootstrap",
        "check",
        "DATABASE_URL",
        "NEXUSD_STATE_DIR",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}: {text}");
    }
}
