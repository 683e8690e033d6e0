//! Auth and CORS over real HTTP: Google ID tokens signed with a key made here, served as a JWKS
//! by a local HTTP server standing in for Google's; static API tokens; the allow-list, audience,
//! issuer, expiry and not-before checks; `/health` details for authenticated callers only; CORS
//! preflights and headers.

mod support;

use std::process::Command;

use axum::Router;
use axum::routing::get;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{Nexusd, http, shared_db};

const AUDIENCE: &str = "https://nexusd.test";
const ACCOUNT: &str = "agent@proj.iam.gserviceaccount.com";
const API_TOKEN: &str = "test-api-token-0123456789abcdef";

/// An RSA key pair made by openssl: the signing key and its public JWK.
struct TestKey {
    encoding: EncodingKey,
    jwk: Value,
}

fn rsa_key(kid: &str) -> TestKey {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("key.pem");
    run(Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&pem)
        .arg("2048"));
    let modulus = run(Command::new("openssl")
        .args(["rsa", "-noout", "-modulus", "-in"])
        .arg(&pem));
    let hex = modulus.trim().trim_start_matches("Modulus=");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    TestKey {
        encoding: EncodingKey::from_rsa_pem(&std::fs::read(&pem).unwrap()).unwrap(),
        jwk: json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": n, "e": "AQAB"}),
    }
}

fn run(cmd: &mut Command) -> String {
    let output = cmd
        .output()
        .expect("openssl (scripts/setup-debian --test installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Serves `keys` as a JWKS on 127.0.0.1; returns its URL. Lives as long as the test's runtime.
async fn serve_jwks(keys: Vec<Value>) -> String {
    let body = json!({"keys": keys}).to_string();
    let app = Router::new().route(
        "/certs",
        get(move || {
            let body = body.clone();
            async move {
                (
                    [
                        ("content-type", "application/json"),
                        ("cache-control", "public, max-age=300"),
                    ],
                    body,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    format!("http://{addr}/certs")
}

fn token(key: &TestKey, kid: &str, claims: Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
}

fn claims(overrides: Value) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut c = json!({
        "iss": "https://accounts.google.com", "aud": AUDIENCE, "email": ACCOUNT, "email_verified": true,
        "sub": "1234", "iat": now, "exp": now + 3600,
    });
    for (k, v) in overrides.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn lesson(repo: &str) -> Value {
    json!({"repository": repo, "category": "security", "lesson": "Rotate keys", "context": "Key leaked"})
}

#[tokio::test]
async fn protected_skills_accept_google_id_tokens_and_api_tokens_only() {
    let key = rsa_key("k1");
    let other = rsa_key("k1");
    let certs = serve_jwks(vec![key.jwk.clone()]).await;
    let db = shared_db().await;
    let nexusd = Nexusd::ready(
        &db.url(),
        &[
            ("NEXUSD_GOOGLE_CERTS_URL", certs.as_str()),
            ("NEXUSD_AUTH_AUDIENCE", AUDIENCE),
            ("ALLOWED_SERVICE_ACCOUNTS", ACCOUNT),
            ("NEXUSD_API_TOKENS", API_TOKEN),
        ],
    )
    .await;

    // No credentials: the reference's 401 shape, checked before input validation.
    let (status, body) = nexusd.exec("add_lesson_learned", json!({})).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "Authentication required");
    assert_eq!(
        body["message"],
        "Skill 'add_lesson_learned' requires A2A authentication"
    );
    assert_eq!(body["skill"], "add_lesson_learned");

    // Reads and unknown skills are public.
    assert_eq!(nexusd.exec("get_repository_list", json!({})).await.0, 200);
    assert_eq!(nexusd.exec("no_such_skill", json!({})).await.0, 200);

    // A static API token, exactly "Bearer <token>".
    let bearer = format!("Bearer {API_TOKEN}");
    let (status, body) = nexusd
        .exec_with("add_lesson_learned", lesson("tok/repo"), Some(&bearer))
        .await;
    assert_eq!(
        (status, body["success"].clone()),
        (200, json!(true)),
        "{body}"
    );
    for header in [
        format!("bearer {API_TOKEN}"),
        format!("Basic {API_TOKEN}"),
        "Bearer wrong-token".into(),
    ] {
        let (status, _) = nexusd
            .exec_with("add_lesson_learned", lesson("tok/repo"), Some(&header))
            .await;
        assert_eq!(status, 401, "{header}");
    }

    // A valid Google ID token for an allowed account.
    let good = token(&key, "k1", claims(json!({})));
    let (status, body) = nexusd
        .exec_with(
            "add_lesson_learned",
            lesson("id/repo"),
            Some(&format!("Bearer {good}")),
        )
        .await;
    assert_eq!(
        (status, body["success"].clone()),
        (200, json!(true)),
        "{body}"
    );
    let plain_issuer = token(&key, "k1", claims(json!({"iss": "accounts.google.com"})));
    let (status, _) = nexusd
        .exec_with(
            "add_lesson_learned",
            lesson("id/repo"),
            Some(&format!("Bearer {plain_issuer}")),
        )
        .await;
    assert_eq!(status, 200, "both Google issuer spellings are accepted");

    // Every way an ID token can be wrong.
    let now = chrono::Utc::now().timestamp();
    let bad = [
        (
            "wrong audience",
            token(&key, "k1", claims(json!({"aud": "https://someone-else"}))),
        ),
        (
            "expired",
            token(
                &key,
                "k1",
                claims(json!({"exp": now - 3600, "iat": now - 7200})),
            ),
        ),
        (
            "not allowed",
            token(&key, "k1", claims(json!({"email": "intruder@gmail.com"}))),
        ),
        (
            "unverified email",
            token(&key, "k1", claims(json!({"email_verified": false}))),
        ),
        (
            "foreign issuer",
            token(&key, "k1", claims(json!({"iss": "https://evil.example"}))),
        ),
        (
            "other key, same kid",
            token(&other, "k1", claims(json!({}))),
        ),
        ("unknown kid", token(&key, "k9", claims(json!({})))),
        (
            "HS256",
            jsonwebtoken::encode(
                &Header {
                    kid: Some("k1".into()),
                    ..Header::new(Algorithm::HS256)
                },
                &claims(json!({})),
                &EncodingKey::from_secret(b"secret"),
            )
            .unwrap(),
        ),
    ];
    for (why, jwt) in bad {
        let (status, body) = nexusd
            .exec_with(
                "add_lesson_learned",
                lesson("bad/repo"),
                Some(&format!("Bearer {jwt}")),
            )
            .await;
        assert_eq!(status, 401, "{why}: {body}");
    }
    let pool = db.pool().await;
    let bad_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM repositories WHERE name = 'bad/repo'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(bad_rows, 0, "a refused write landed");
    let log = nexusd.log_text();
    assert!(log.contains("authentication failed"), "refusals are logged");
    assert!(
        !log.contains(API_TOKEN) && !log.contains(&good),
        "a credential reached the log"
    );
}

#[tokio::test]
async fn id_tokens_are_refused_without_allow_list_or_keys_but_api_tokens_still_work() {
    let key = rsa_key("k1");
    let certs = serve_jwks(vec![key.jwk.clone()]).await;
    let db = shared_db().await;
    let good = format!("Bearer {}", token(&key, "k1", claims(json!({}))));

    // Empty allow-list: the original admitted any Google account; nexusd admits none.
    let nexusd = Nexusd::ready(
        &db.url(),
        &[
            ("NEXUSD_GOOGLE_CERTS_URL", certs.as_str()),
            ("NEXUSD_AUTH_AUDIENCE", AUDIENCE),
        ],
    )
    .await;
    assert_eq!(
        nexusd
            .exec_with("add_lesson_learned", lesson("a/b"), Some(&good))
            .await
            .0,
        401
    );
    drop(nexusd);

    // Google's keys unreachable: ID tokens fail closed, API tokens keep working.
    let closed = format!("http://127.0.0.1:{}/certs", support::free_port());
    let nexusd = Nexusd::ready(
        &db.url(),
        &[
            ("NEXUSD_GOOGLE_CERTS_URL", closed.as_str()),
            ("NEXUSD_AUTH_AUDIENCE", AUDIENCE),
            ("ALLOWED_SERVICE_ACCOUNTS", ACCOUNT),
            ("NEXUSD_API_TOKENS", API_TOKEN),
        ],
    )
    .await;
    assert_eq!(
        nexusd
            .exec_with("add_lesson_learned", lesson("a/b"), Some(&good))
            .await
            .0,
        401
    );
    let bearer = format!("Bearer {API_TOKEN}");
    assert_eq!(
        nexusd
            .exec_with("add_lesson_learned", lesson("a/b"), Some(&bearer))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn operators_choose_what_is_protected() {
    let db = shared_db().await;

    let nexusd = Nexusd::ready(&db.url(), &[("NEXUSD_PROTECTED_SKILLS", "add_repository")]).await;
    let (status, _) = nexusd
        .exec("add_repository", json!({"repository": "a/b"}))
        .await;
    assert_eq!(status, 401);
    let (_, card) = nexusd.get("/.well-known/agent.json").await.unwrap();
    let entry = card["skills"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "add_repository")
        .unwrap()
        .clone();
    assert_eq!(entry["requires_authentication"], true);
    // Added to the write skills' protection, not instead of it.
    let (status, _) = nexusd.exec("add_lesson_learned", lesson("a/b")).await;
    assert_eq!(status, 401);
    drop(nexusd);

    let open = Nexusd::ready(&db.url(), &[("REQUIRE_AUTH_FOR_WRITE", "false")]).await;
    let (status, body) = open.exec("add_lesson_learned", lesson("open/repo")).await;
    assert_eq!((status, body["success"].clone()), (200, json!(true)));
    let (_, card) = open.get("/.well-known/agent.json").await.unwrap();
    assert!(
        card["skills"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["requires_authentication"] == false)
    );
    drop(open);

    let output = support::nexusd_command(
        &["serve"],
        &[
            ("DATABASE_URL", &db.url()),
            ("NEXUSD_PROTECTED_SKILLS", "nope"),
        ],
    )
    .output()
    .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("NEXUSD_PROTECTED_SKILLS names an unknown skill \"nope\"")
    );
}

/// `POST /a2a/execute` of `skill` with an optional `Authorization`: status and `WWW-Authenticate`.
async fn challenge_of(nexusd: &Nexusd, skill: &str, authorization: Option<&str>) -> (u16, String) {
    let mut request = http()
        .post(format!("{}/a2a/execute", nexusd.api))
        .json(&json!({"skill_id": skill, "input": lesson("a/b")}));
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let response = request.send().await.expect("POST /a2a/execute");
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (response.status().as_u16(), challenge)
}

/// Every 401 names the scheme to use (RFC 6750); the operator is warned at start when writes
/// are open to anyone or closed to everyone, and not when credentials are configured.
#[tokio::test]
async fn a_401_names_the_bearer_scheme_and_open_writes_are_warned_about_at_start() {
    let db = shared_db().await;
    let nexusd = Nexusd::ready(&db.url(), &[("NEXUSD_API_TOKENS", API_TOKEN)]).await;
    assert_eq!(
        challenge_of(&nexusd, "add_lesson_learned", None).await,
        (401, "Bearer realm=\"nexusd\"".to_string())
    );
    assert_eq!(
        challenge_of(
            &nexusd,
            "add_lesson_learned",
            Some("Bearer wrong-token-0123456789")
        )
        .await,
        (
            401,
            "Bearer realm=\"nexusd\", error=\"invalid_token\"".to_string()
        )
    );
    let (status, challenge) = challenge_of(
        &nexusd,
        "add_lesson_learned",
        Some(&format!("Bearer {API_TOKEN}")),
    )
    .await;
    assert_eq!((status, challenge.as_str()), (200, ""));
    assert!(
        !nexusd.log_text().contains("REQUIRE_AUTH_FOR_WRITE"),
        "{}",
        nexusd.log_text()
    );
    drop(nexusd);

    let open = Nexusd::ready(&db.url(), &[("REQUIRE_AUTH_FOR_WRITE", "false")]).await;
    let log = open.log_text();
    assert!(
        log.contains("WARN")
            && log.contains(
                "REQUIRE_AUTH_FOR_WRITE is false: anyone who reaches the API may call every skill"
            ),
        "{log}"
    );
    drop(open);

    let closed = Nexusd::ready(&db.url(), &[]).await;
    let log = closed.log_text();
    assert!(
        log.contains("no credential is configured")
            && log.contains("nobody can call the protected skills"),
        "{log}"
    );
}

fn cors_headers(response: &reqwest::Response) -> [Option<String>; 5] {
    let get = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    [
        get("access-control-allow-origin"),
        get("access-control-allow-credentials"),
        get("access-control-allow-methods"),
        get("access-control-allow-headers"),
        get("vary"),
    ]
}

#[tokio::test]
async fn cors_as_the_original_plus_vary_and_the_regex() {
    let db = shared_db().await;
    let nexusd = Nexusd::ready(&db.url(), &[]).await;
    let client = http();
    let allowed = |origin: &str| {
        [
            Some(origin.to_string()),
            Some("true".to_string()),
            Some("GET,POST,OPTIONS".to_string()),
            Some("Content-Type,Authorization".to_string()),
            Some("Origin".to_string()),
        ]
    };
    let refused = [None, None, None, None, Some("Origin".to_string())];

    for (origin, expect) in [
        ("http://localhost:5173", allowed("http://localhost:5173")),
        (
            "https://dev-nexus-frontend.vercel.app",
            allowed("https://dev-nexus-frontend.vercel.app"),
        ),
        (
            "https://preview-42.vercel.app",
            allowed("https://preview-42.vercel.app"),
        ),
        ("http://preview-42.vercel.app", refused.clone()),
        ("https://evil.example", refused.clone()),
    ] {
        // Preflight on any path: 204, before routing and auth.
        let response = client
            .request(reqwest::Method::OPTIONS, format!("{}/any/path", nexusd.api))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204, "{origin}");
        assert_eq!(cors_headers(&response), expect, "preflight from {origin}");
        assert!(response.bytes().await.unwrap().is_empty());
    }

    // Real requests carry the headers too, 401s included.
    let response = client
        .get(format!("{}/health", nexusd.api))
        .header("Origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(cors_headers(&response), allowed("http://localhost:3000"));
    let response = client
        .post(format!("{}/a2a/execute", nexusd.api))
        .header("Origin", "http://localhost:3000")
        .json(&json!({"skill_id": "add_lesson_learned", "input": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(cors_headers(&response), allowed("http://localhost:3000"));
    drop(nexusd);

    // CORS_ORIGINS replaces the defaults; ALLOWED_ORIGIN_REGEX must match whole origins.
    let custom = Nexusd::ready(
        &db.url(),
        &[
            ("CORS_ORIGINS", "https://only.example.com"),
            ("ALLOWED_ORIGIN_REGEX", r"https://[a-z]+\.example\.org"),
        ],
    )
    .await;
    for (origin, ok) in [
        ("https://only.example.com", true),
        ("https://app.example.org", true),
        ("https://app.example.org.evil.net", false),
        ("http://localhost:5173", false),
    ] {
        let response = client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/a2a/execute", custom.api),
            )
            .header("Origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(cors_headers(&response)[0].is_some(), ok, "{origin}");
    }
}

#[tokio::test]
async fn id_tokens_not_valid_yet_are_refused() {
    let key = rsa_key("k1");
    let certs = serve_jwks(vec![key.jwk.clone()]).await;
    let db = shared_db().await;
    let nexusd = Nexusd::ready(
        &db.url(),
        &[
            ("NEXUSD_GOOGLE_CERTS_URL", certs.as_str()),
            ("NEXUSD_AUTH_AUDIENCE", AUDIENCE),
            ("ALLOWED_SERVICE_ACCOUNTS", ACCOUNT),
        ],
    )
    .await;
    let now = chrono::Utc::now().timestamp();
    // Refused while `nbf` is ahead of the clock by more than the leeway `exp` gets (60 s).
    for (ahead, want) in [(3600, 401), (600, 401), (20, 200), (-60, 200)] {
        let jwt = token(&key, "k1", claims(json!({"nbf": now + ahead})));
        let (status, body) = nexusd
            .exec_with(
                "add_lesson_learned",
                lesson("nbf/repo"),
                Some(&format!("Bearer {jwt}")),
            )
            .await;
        assert_eq!(status, want, "nbf {ahead} s ahead: {body}");
    }
    let pool = db.pool().await;
    let lessons: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM lessons_learned l JOIN repositories r ON r.id = l.repo_id
          WHERE r.name = 'nbf/repo'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(lessons, 2, "only the tokens already valid may write");
}

/// Every path of keys in a JSON value, for comparing shapes.
fn key_paths(value: &Value, prefix: &str, out: &mut Vec<String>) {
    if let Value::Object(map) = value {
        for (k, v) in map {
            let path = format!("{prefix}/{k}");
            key_paths(v, &path, out);
            out.push(path);
        }
    }
}

async fn health_with(nexusd: &Nexusd, authorization: Option<&str>) -> Value {
    let mut request = http().get(format!("{}/health", nexusd.api));
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn health_shows_where_things_run_only_to_callers_with_credentials() {
    let key = rsa_key("k1");
    let certs = serve_jwks(vec![key.jwk.clone()]).await;
    let db = shared_db().await;
    let nexusd = Nexusd::ready(
        &db.url(),
        &[
            ("NEXUSD_GOOGLE_CERTS_URL", certs.as_str()),
            ("NEXUSD_AUTH_AUDIENCE", AUDIENCE),
            ("ALLOWED_SERVICE_ACCOUNTS", ACCOUNT),
            ("NEXUSD_API_TOKENS", API_TOKEN),
        ],
    )
    .await;
    let id_token = format!("Bearer {}", token(&key, "k1", claims(json!({}))));
    let api_token = format!("Bearer {API_TOKEN}");
    let host = format!("127.0.0.1:{}", db.port);

    let shown = [
        health_with(&nexusd, Some(&api_token)).await,
        health_with(&nexusd, Some(&id_token)).await,
    ];
    for body in &shown {
        assert_eq!(body["database"]["host"], host.as_str(), "{body}");
        assert_eq!(body["database"]["database"], db.name.as_str());
        assert!(
            body["database"]["version"]
                .as_str()
                .is_some_and(|v| v.starts_with("PostgreSQL 15")),
            "{body}"
        );
        assert_eq!(body["database"]["pgvector_version"], "0.8.0");
        assert!(
            body["backup"]["store"]
                .as_str()
                .is_some_and(|s| s.contains("backups")),
            "{body}"
        );
    }

    let mut shape = vec![];
    key_paths(&shown[0], "", &mut shape);
    for authorization in [None, Some("Bearer wrong-token-0123456789"), Some("Basic x")] {
        let body = health_with(&nexusd, authorization).await;
        let mut keys = vec![];
        key_paths(&body, "", &mut keys);
        assert_eq!(keys, shape, "the same keys for everyone");
        assert_eq!(body["status"], "healthy");
        assert_eq!(body["database"]["status"], "healthy");
        for (object, key) in [
            ("database", "host"),
            ("database", "database"),
            ("database", "version"),
            ("database", "pgvector_version"),
            ("backup", "store"),
        ] {
            assert_eq!(body[object][key], "redacted", "{object}.{key}: {body}");
        }
        let text = body.to_string();
        assert!(
            !text.contains(&host) && !text.contains(&db.name) && !text.contains("PostgreSQL"),
            "{authorization:?} saw where things run: {body}"
        );
    }
    drop(nexusd);

    // Writes open to everyone (no credentials asked for): nothing to hide behind.
    let open = Nexusd::ready(
        &db.url(),
        &[
            ("REQUIRE_AUTH_FOR_WRITE", "false"),
            ("NEXUSD_API_TOKENS", API_TOKEN),
        ],
    )
    .await;
    let body = health_with(&open, None).await;
    assert_eq!(body["database"]["host"], host.as_str(), "{body}");
    assert_eq!(body["database"]["database"], db.name.as_str());
}
