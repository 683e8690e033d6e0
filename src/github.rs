//! A small client for the GitHub REST API, as the documentation, architecture and component
//! skills use it: a repository's metadata, its file tree, raw file contents, commits since a
//! date and one commit's changed files. Base URL and token come from the config
//! (`NEXUSD_GITHUB_API_URL`, `GITHUB_TOKEN`), so tests point it at a local stand-in.
//!
//! Everything GitHub answers is outside data: every field is optional until checked, and every
//! failure becomes a [`GitHubError`] whose message says what to do (404, rate limit with its
//! reset time, other API errors). The token is only ever sent in the `Authorization` header and
//! never appears in messages or logs.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, USER_AGENT};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;

use crate::env::{Env, Var};
use crate::rules::Tree;

/// The variables read here, as `nexusd --help` lists them.
pub const VARIABLES: &[Var] = &[
    Var {
        name: "GITHUB_TOKEN",
        default: "unset",
        meaning: "enables the documentation and architecture skills (GitHub's REST API); without it they answer \"GITHUB_TOKEN not configured\"",
    },
    Var {
        name: "NEXUSD_GITHUB_API_URL",
        default: "https://api.github.com",
        meaning: "GitHub's REST API base (GitHub Enterprise, tests)",
    },
    Var {
        name: "NEXUSD_GITHUB_REPOSITORIES",
        default: "empty",
        meaning: "repositories (owner/repo or owner/*, comma-separated) the GitHub skills read for callers without credentials, besides those in the knowledge base; authenticated callers may name any",
    },
];

/// The GitHub REST API, for the documentation and architecture skills.
#[derive(Clone)]
pub struct GitHubConfig {
    /// `GITHUB_TOKEN`: without it the GitHub skills answer "GITHUB_TOKEN not configured" and the
    /// architecture skills are not registered, as in the original.
    pub token: Option<String>,
    /// `NEXUSD_GITHUB_API_URL` (default `https://api.github.com`).
    pub api_url: String,
    /// `NEXUSD_GITHUB_REPOSITORIES`: repositories (`owner/repo` or `owner/*`) callers without
    /// credentials may have read, besides the knowledge base's own.
    pub open_repositories: Vec<String>,
}

impl fmt::Debug for GitHubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubConfig")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("api_url", &self.api_url)
            .field("open_repositories", &self.open_repositories)
            .finish()
    }
}

pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

impl GitHubConfig {
    pub fn from_env(env: &mut Env<'_>) -> GitHubConfig {
        GitHubConfig {
            token: env.get("GITHUB_TOKEN"),
            api_url: env
                .url("NEXUSD_GITHUB_API_URL")
                .unwrap_or_else(|| DEFAULT_GITHUB_API_URL.to_string()),
            open_repositories: env.list("NEXUSD_GITHUB_REPOSITORIES").unwrap_or_default(),
        }
    }

    /// Whether `repository` is in [`GitHubConfig::open_repositories`] (names compare without
    /// case, as GitHub's do).
    pub fn is_open(&self, repository: &str) -> bool {
        let repository = repository.to_ascii_lowercase();
        self.open_repositories.iter().any(|entry| {
            let entry = entry.to_ascii_lowercase();
            match entry.strip_suffix("/*") {
                Some(owner) => repository.split_once('/').is_some_and(|(o, _)| o == owner),
                None => entry == repository,
            }
        })
    }
}

/// Time allowed for one GitHub request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// GitHub requests in flight at once for one skill call.
const CONCURRENT_REQUESTS: usize = 4;
/// Files larger than this (per the tree) are never downloaded.
pub const MAX_FILE_BYTES: u64 = 512 * 1024;

/// Why a GitHub call failed.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("GITHUB_TOKEN not configured")]
    NotConfigured,
    #[error("Invalid repository format. Expected 'owner/repo'")]
    InvalidRepository,
    /// 404 for the thing named.
    #[error("{0} not found (404)")]
    NotFound(String),
    /// 403/429 with the rate limit exhausted.
    #[error("{}", rate_limit_message(*.status, *.reset, *.retry_after))]
    RateLimited {
        status: u16,
        reset: Option<DateTime<Utc>>,
        retry_after: Option<u64>,
    },
    #[error("GitHub API returned HTTP {status}: {message}")]
    Api { status: u16, message: String },
    #[error("GitHub API unreachable: {0}")]
    Network(String),
    #[error("unexpected response from the GitHub API: {0}")]
    BadResponse(String),
}

fn rate_limit_message(
    status: u16,
    reset: Option<DateTime<Utc>>,
    retry_after: Option<u64>,
) -> String {
    let mut message = format!("GitHub API rate limit exceeded (HTTP {status})");
    if let Some(reset) = reset {
        message.push_str(&format!(
            "; the limit resets at {}",
            reset.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    } else if let Some(seconds) = retry_after {
        message.push_str(&format!("; retry after {seconds} s"));
    }
    message.push_str(". Retry later or use a token with a higher limit.");
    message
}

impl GitHubError {
    /// A short machine-readable kind, returned as `error_type`.
    pub fn kind(&self) -> &'static str {
        match self {
            GitHubError::NotConfigured => "not_configured",
            GitHubError::InvalidRepository => "invalid_repository",
            GitHubError::NotFound(_) => "not_found",
            GitHubError::RateLimited { .. } => "rate_limited",
            GitHubError::Api { .. } => "github_api_error",
            GitHubError::Network(_) => "github_unreachable",
            GitHubError::BadResponse(_) => "github_bad_response",
        }
    }

    /// The reference's messages for a failure while reading `repository`: not configured and
    /// invalid format as they are, 404 as "Repository not found: …", anything else prefixed
    /// with "GitHub API error when accessing repository".
    pub fn describe_for(&self, repository: &str) -> String {
        match self {
            GitHubError::NotConfigured | GitHubError::InvalidRepository => self.to_string(),
            GitHubError::NotFound(_) => format!(
                "Repository not found: {repository} (404). Verify repository name and token permissions."
            ),
            other => format!("GitHub API error when accessing repository: {other}"),
        }
    }
}

/// Checks `owner/repo` (GitHub's character set, no `.`/`..` segments).
pub fn parse_repository(text: &str) -> Result<(&str, &str), GitHubError> {
    let text = text.trim();
    let (owner, repo) = text.split_once('/').ok_or(GitHubError::InvalidRepository)?;
    let valid = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.len() <= 100
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if valid(owner) && valid(repo) {
        Ok((owner, repo))
    } else {
        Err(GitHubError::InvalidRepository)
    }
}

/// One process-wide HTTP client (connection pooling, TLS roots loaded once).
fn http() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .connect_timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default()
        })
        .clone()
}

/// A repository on GitHub.
#[derive(Debug, Clone)]
pub struct RepoInfo {
    pub default_branch: String,
}

/// One commit as listed.
#[derive(Debug, Clone)]
pub struct CommitSummary {
    pub sha: String,
    pub date: Option<DateTime<Utc>>,
    pub message: String,
}

/// One commit with the files it changed.
#[derive(Debug, Clone)]
pub struct CommitDetail {
    pub summary: CommitSummary,
    pub files: Vec<String>,
}

#[derive(Deserialize)]
struct RepoJson {
    default_branch: Option<String>,
}

#[derive(Deserialize)]
struct TreeJson {
    #[serde(default)]
    tree: Vec<TreeEntryJson>,
    #[serde(default)]
    truncated: bool,
}

#[derive(Deserialize)]
struct TreeEntryJson {
    path: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    size: Option<u64>,
}

#[derive(Deserialize)]
struct CommitJson {
    sha: Option<String>,
    commit: Option<CommitInnerJson>,
    #[serde(default)]
    files: Vec<CommitFileJson>,
}

#[derive(Deserialize)]
struct CommitInnerJson {
    author: Option<SignatureJson>,
    committer: Option<SignatureJson>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct SignatureJson {
    date: Option<String>,
}

#[derive(Deserialize)]
struct CommitFileJson {
    filename: Option<String>,
}

#[derive(Deserialize)]
struct ErrorJson {
    message: Option<String>,
}

impl CommitJson {
    fn summary(self) -> Result<(CommitSummary, Vec<CommitFileJson>), GitHubError> {
        let sha = self
            .sha
            .filter(|s| !s.is_empty())
            .ok_or_else(|| GitHubError::BadResponse("a commit without a sha".into()))?;
        let inner = self.commit;
        let date = inner
            .as_ref()
            .and_then(|c| c.author.as_ref().or(c.committer.as_ref()))
            .and_then(|s| s.date.as_deref())
            .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
            .map(|d| d.with_timezone(&Utc));
        let message = inner.and_then(|c| c.message).unwrap_or_default();
        Ok((CommitSummary { sha, date, message }, self.files))
    }
}

/// A GitHub API client for one skill call.
#[derive(Clone)]
pub struct GitHub {
    http: reqwest::Client,
    api: url::Url,
    token: Arc<str>,
    limit: Arc<Semaphore>,
}

impl GitHub {
    /// The client for the configured API, or `GITHUB_TOKEN not configured`.
    pub fn new(config: &GitHubConfig) -> Result<Self, GitHubError> {
        let token = config
            .token
            .as_deref()
            .filter(|t| !t.trim().is_empty())
            .ok_or(GitHubError::NotConfigured)?;
        let api = url::Url::parse(&config.api_url).map_err(|e| {
            GitHubError::Network(format!("NEXUSD_GITHUB_API_URL is not a URL: {e}"))
        })?;
        Ok(GitHub {
            http: http(),
            api,
            token: Arc::from(token.trim()),
            limit: Arc::new(Semaphore::new(CONCURRENT_REQUESTS)),
        })
    }

    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> url::Url {
        let mut url = self.api.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// GET with the token; non-2xx answers become errors (`what` names the object for 404s).
    async fn get(
        &self,
        url: url::Url,
        accept: &str,
        what: &str,
    ) -> Result<reqwest::Response, GitHubError> {
        let _permit = self
            .limit
            .acquire()
            .await
            .map_err(|_| GitHubError::Network("client closed".into()))?;
        let response = self
            .http
            .get(url)
            .header(AUTHORIZATION, format!("Bearer {}", self.token))
            .header(ACCEPT, accept)
            .header(USER_AGENT, concat!("nexusd/", env!("CARGO_PKG_VERSION")))
            .header("X-GitHub-Api-Version", "2022-11-28")
            .send()
            .await
            .map_err(|e| GitHubError::Network(describe_reqwest(e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_default();
        let message = serde_json::from_slice::<ErrorJson>(&body)
            .ok()
            .and_then(|e| e.message)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        Err(classify_failure(status, &headers, message, what))
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        url: url::Url,
        what: &str,
    ) -> Result<T, GitHubError> {
        let response = self.get(url, "application/vnd.github+json", what).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| GitHubError::Network(describe_reqwest(e)))?;
        serde_json::from_slice(&bytes).map_err(|e| GitHubError::BadResponse(format!("{what}: {e}")))
    }

    /// `GET /repos/{owner}/{repo}`.
    pub async fn repository(&self, repository: &str) -> Result<RepoInfo, GitHubError> {
        let (owner, repo) = parse_repository(repository)?;
        let json: RepoJson = self
            .get_json(self.url(&["repos", owner, repo], &[]), "Repository")
            .await?;
        Ok(RepoInfo {
            default_branch: json
                .default_branch
                .filter(|b| !b.is_empty())
                .unwrap_or_else(|| "main".into()),
        })
    }

    /// `GET /repos/{owner}/{repo}/git/trees/{branch}?recursive=1`: every file and directory.
    pub async fn tree(&self, repository: &str, branch: &str) -> Result<Tree, GitHubError> {
        let (owner, repo) = parse_repository(repository)?;
        let mut segments = vec!["repos", owner, repo, "git", "trees"];
        segments.extend(branch.split('/'));
        let json: TreeJson = self
            .get_json(self.url(&segments, &[("recursive", "1")]), "Branch")
            .await?;
        let mut tree = Tree {
            truncated: json.truncated,
            ..Tree::default()
        };
        for entry in json.tree {
            let Some(path) = entry.path.filter(|p| !p.is_empty()) else {
                continue;
            };
            match entry.kind.as_deref() {
                Some("blob") => {
                    tree.files.insert(path, entry.size.unwrap_or(0));
                }
                Some("tree") => {
                    tree.dirs.insert(path);
                }
                _ => {}
            }
        }
        Ok(tree)
    }

    /// `GET /repos/{owner}/{repo}/contents/{path}?ref={branch}` as raw text (invalid UTF-8
    /// replaced).
    pub async fn file(
        &self,
        repository: &str,
        branch: &str,
        path: &str,
    ) -> Result<String, GitHubError> {
        let (owner, repo) = parse_repository(repository)?;
        let mut segments = vec!["repos", owner, repo, "contents"];
        segments.extend(path.split('/'));
        let url = self.url(&segments, &[("ref", branch)]);
        let response = self
            .get(
                url,
                "application/vnd.github.raw+json",
                &format!("File {path}"),
            )
            .await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| GitHubError::Network(describe_reqwest(e)))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Several files at once (at most [`CONCURRENT_REQUESTS`] in flight): path → text. Files
    /// GitHub no longer has (404) are left out; any other failure fails the whole read.
    pub async fn files(
        &self,
        repository: &str,
        branch: &str,
        paths: Vec<String>,
    ) -> Result<BTreeMap<String, String>, GitHubError> {
        let mut tasks = tokio::task::JoinSet::new();
        for path in paths {
            let gh = self.clone();
            let repository = repository.to_string();
            let branch = branch.to_string();
            tasks.spawn(async move {
                let text = gh.file(&repository, &branch, &path).await;
                (path, text)
            });
        }
        let mut contents = BTreeMap::new();
        while let Some(joined) = tasks.join_next().await {
            let (path, text) =
                joined.map_err(|e| GitHubError::Network(format!("a file read failed: {e}")))?;
            match text {
                Ok(text) => {
                    contents.insert(path, text);
                }
                Err(GitHubError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(contents)
    }

    /// `GET /repos/{owner}/{repo}/commits/{sha}`.
    pub async fn commit(&self, repository: &str, sha: &str) -> Result<CommitDetail, GitHubError> {
        let (owner, repo) = parse_repository(repository)?;
        let json: CommitJson = self
            .get_json(
                self.url(&["repos", owner, repo, "commits", sha], &[]),
                &format!("Commit {sha}"),
            )
            .await?;
        let (summary, files) = json.summary()?;
        Ok(CommitDetail {
            summary,
            files: files.into_iter().filter_map(|f| f.filename).collect(),
        })
    }

    /// `GET /repos/{owner}/{repo}/commits?since=…`, newest first, at most `max` commits.
    pub async fn commits_since(
        &self,
        repository: &str,
        since: DateTime<Utc>,
        max: usize,
    ) -> Result<(Vec<CommitSummary>, bool), GitHubError> {
        let (owner, repo) = parse_repository(repository)?;
        let since = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut commits = Vec::new();
        let pages = max.div_ceil(100).max(1);
        for page in 1..=pages {
            let page = page.to_string();
            let url = self.url(
                &["repos", owner, repo, "commits"],
                &[("since", &since), ("per_page", "100"), ("page", &page)],
            );
            let batch: Vec<CommitJson> = self.get_json(url, "Repository").await?;
            let last_page = batch.len() < 100;
            for json in batch {
                commits.push(json.summary()?.0);
            }
            if last_page {
                break;
            }
        }
        // A full last page means GitHub may have more than we asked for.
        let more = commits.len() >= pages * 100 || commits.len() > max;
        commits.truncate(max);
        Ok((commits, more))
    }
}

/// 404 → not found; 429, or 403 with the limit exhausted or a rate-limit message → rate
/// limited (reset time from `x-ratelimit-reset`, or `retry-after`); anything else → API error.
fn classify_failure(
    status: StatusCode,
    headers: &HeaderMap,
    message: String,
    what: &str,
) -> GitHubError {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let exhausted = header("x-ratelimit-remaining").is_some_and(|r| r.trim() == "0");
    let rate_message = message.to_lowercase().contains("rate limit");
    if status == StatusCode::NOT_FOUND {
        return GitHubError::NotFound(what.to_string());
    }
    if status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::FORBIDDEN && (exhausted || rate_message))
    {
        let reset = header("x-ratelimit-reset")
            .and_then(|r| r.trim().parse::<i64>().ok())
            .and_then(|epoch| DateTime::from_timestamp(epoch, 0));
        let retry_after = header("retry-after").and_then(|r| r.trim().parse::<u64>().ok());
        return GitHubError::RateLimited {
            status: status.as_u16(),
            reset,
            retry_after,
        };
    }
    let message = if message.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        message
    };
    GitHubError::Api {
        status: status.as_u16(),
        message,
    }
}

/// A reqwest error without its URL's query (nothing secret is in URLs, but keep it short).
fn describe_reqwest(e: reqwest::Error) -> String {
    if e.is_timeout() {
        format!("timed out after {} s", REQUEST_TIMEOUT.as_secs())
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        e.without_url().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn repository_names_are_owner_slash_repo() {
        assert_eq!(parse_repository("acme/api").ok(), Some(("acme", "api")));
        assert_eq!(parse_repository(" a-b/c.d_e ").ok(), Some(("a-b", "c.d_e")));
        for bad in ["acme", "acme/", "/api", "a/b/c", "a/..", "a b/c", "a/b?x"] {
            assert!(parse_repository(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn failures_are_classified() {
        let mut headers = HeaderMap::new();
        let e = classify_failure(
            StatusCode::NOT_FOUND,
            &headers,
            "Not Found".into(),
            "Repository",
        );
        assert!(matches!(e, GitHubError::NotFound(_)));

        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        headers.insert("x-ratelimit-reset", HeaderValue::from_static("1800000000"));
        let e = classify_failure(
            StatusCode::FORBIDDEN,
            &headers,
            "API rate limit exceeded".into(),
            "x",
        );
        assert_eq!(
            e.to_string(),
            "GitHub API rate limit exceeded (HTTP 403); the limit resets at 2027-01-15T08:00:00Z. \
             Retry later or use a token with a higher limit."
        );
        assert_eq!(e.kind(), "rate_limited");

        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("60"));
        let e = classify_failure(StatusCode::TOO_MANY_REQUESTS, &headers, String::new(), "x");
        assert!(e.to_string().contains("retry after 60 s"), "{e}");

        // A 403 that is not about rate limits is a plain API error.
        let e = classify_failure(
            StatusCode::FORBIDDEN,
            &HeaderMap::new(),
            "Resource not accessible".into(),
            "x",
        );
        assert_eq!(
            e.to_string(),
            "GitHub API returned HTTP 403: Resource not accessible"
        );
    }

    #[test]
    fn repository_errors_use_the_reference_messages() {
        let msg = |e: GitHubError| e.describe_for("acme/x");
        assert_eq!(
            msg(GitHubError::NotConfigured),
            "GITHUB_TOKEN not configured"
        );
        assert_eq!(
            msg(GitHubError::InvalidRepository),
            "Invalid repository format. Expected 'owner/repo'"
        );
        assert_eq!(
            msg(GitHubError::NotFound("Repository".into())),
            "Repository not found: acme/x (404). Verify repository name and token permissions."
        );
        assert!(
            msg(GitHubError::Api {
                status: 500,
                message: "boom".into()
            })
            .starts_with("GitHub API error when accessing repository: ")
        );
    }

    #[test]
    fn open_repositories_match_by_name_or_owner() {
        let config = GitHubConfig {
            token: None,
            api_url: DEFAULT_GITHUB_API_URL.into(),
            open_repositories: vec!["Acme/*".into(), "other/one".into()],
        };
        assert!(config.is_open("acme/anything"));
        assert!(config.is_open("Other/One"));
        assert!(!config.is_open("other/two"));
        assert!(!config.is_open("acmeco/x"));
    }
}
