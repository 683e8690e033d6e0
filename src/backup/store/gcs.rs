//! The Google Cloud Storage store. Uploads and downloads go through `google-cloud-storage`:
//! a resumable upload with `ifGenerationMatch=0` (never overwrite) whose CRC32C the crate sends
//! and checks on the last chunk, and streamed, CRC-checked reads. The crate offers list and
//! delete only over gRPC, which emulators do not speak, so those two use the JSON API with the
//! same credentials. Credentials: Application Default Credentials (on the VM, the metadata
//! server); none with `NEXUSD_GCS_ENDPOINT` (emulators). A credential failure names every
//! source tried ([`credential_sources`]).
//!
//! No request can hang a backup: every request has its own deadline (`NEXUSD_BACKUP_REQUEST_TIMEOUT`).
//! Reads and writes of small objects are bounded as a whole; a streamed upload fails when the
//! store has not taken data or answered for that long while data was waiting (the storage
//! crate sends each buffered chunk as one request, so this is a deadline per request). List and
//! delete are retried like uploads: transient failures (no connection, timeouts, 429, 5xx) with
//! exponential backoff until `NEXUSD_BACKUP_RETRY_SECONDS` have passed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use google_cloud_gax::retry_policy::RetryPolicyExt;
use google_cloud_storage::client::Storage;
use google_cloud_storage::retry_policy::RetryableErrors;
use google_cloud_storage::streaming_source::StreamingSource;
use serde::Deserialize;

use super::{Listing, ObjectInfo, StoreError, UploadChunk, UploadChunks};
use crate::telemetry::error_chain;

const GOOGLE_STORAGE: &str = "https://storage.googleapis.com";

pub struct GcsStore {
    client: Storage,
    credentials: Credentials,
    http: reqwest::Client,
    /// Base URL of the JSON API (`https://storage.googleapis.com` or the emulator).
    json_base: String,
    bucket: String,
    prefix: String,
    /// Deadline of one request.
    request_timeout: Duration,
    /// How long list and delete are retried.
    retry_time_limit: Duration,
}

/// A failure of one list or delete attempt: worth retrying or not.
enum Attempt {
    Transient(String),
    Final(StoreError),
}

impl Attempt {
    fn from_status(context: &str, status: u16, body: String) -> Attempt {
        let message = other(context, format!("HTTP {status}: {body}"));
        if status == 429 || status == 408 || status >= 500 {
            Attempt::Transient(message.to_string())
        } else {
            Attempt::Final(message)
        }
    }
}

fn other(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("{context}: {e}"))
}

/// Maps a client error, naming the object.
fn gcs_error(context: &str, name: &str, e: google_cloud_storage::Error) -> StoreError {
    match e.http_status_code() {
        Some(412) => StoreError::AlreadyExists(name.to_string()),
        Some(404) => StoreError::NotFound(name.to_string()),
        _ if e.is_authentication() => StoreError::Other(format!(
            "{context} {name}: {}; {}",
            error_chain(&e),
            credential_sources()
        )),
        _ => StoreError::Other(format!("{context} {name}: {}", error_chain(&e))),
    }
}

/// Where Application Default Credentials were looked for, in the order the auth crate tries
/// them, and what was found: an operator whose credentials fail learns which source was used
/// and which were not there.
fn credential_sources() -> String {
    let from_env = match std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
        Some(path) => format!("set to {}", std::path::Path::new(&path).display()),
        None => "not set".to_string(),
    };
    let file = match std::env::var_os("HOME") {
        Some(home) => {
            let path = std::path::Path::new(&home)
                .join(".config/gcloud/application_default_credentials.json");
            let found = if path.exists() { "found" } else { "not found" };
            format!("{} ({found})", path.display())
        }
        None => "in $HOME/.config/gcloud (HOME not set)".to_string(),
    };
    format!(
        "credential sources tried, in order: GOOGLE_APPLICATION_CREDENTIALS ({from_env}), the \
         Application Default Credentials file {file} (gcloud auth application-default login), \
         then the metadata server (metadata.google.internal: the VM's service account, only on \
         Google Cloud)"
    )
}

impl GcsStore {
    pub async fn open(
        bucket: &str,
        prefix: &str,
        endpoint: Option<&str>,
        retry_time_limit: Duration,
        request_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let credentials = match endpoint {
            Some(_) => google_cloud_auth::credentials::anonymous::Builder::new().build(),
            None => google_cloud_auth::credentials::Builder::default()
                .build()
                .map_err(|e| {
                    other(
                        "Google credentials (Application Default Credentials)",
                        format!("{e}; {}", credential_sources()),
                    )
                })?,
        };
        let mut builder = Storage::builder()
            .with_credentials(credentials.clone())
            .with_retry_policy(RetryableErrors.with_time_limit(retry_time_limit));
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let client = builder
            .build()
            .await
            .map_err(|e| other("building the storage client", e))?;
        let http = reqwest::Client::builder()
            .connect_timeout(request_timeout)
            .timeout(request_timeout)
            .build()
            .map_err(|e| other("building an HTTP client", e))?;
        Ok(GcsStore {
            client,
            credentials,
            http,
            json_base: endpoint
                .unwrap_or(GOOGLE_STORAGE)
                .trim_end_matches('/')
                .to_string(),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            request_timeout,
            retry_time_limit,
        })
    }

    /// `what`'s attempts, retried while they fail transiently and the retry window lasts.
    async fn retried<T, F>(
        &self,
        what: &str,
        mut attempt: impl FnMut() -> F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, Attempt>>,
    {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(500);
        loop {
            match attempt().await {
                Ok(value) => return Ok(value),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Transient(e))
                    if started.elapsed() + backoff > self.retry_time_limit =>
                {
                    return Err(StoreError::Other(format!(
                        "{e} (still failing after {} s of retries)",
                        started.elapsed().as_secs()
                    )));
                }
                Err(Attempt::Transient(e)) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "{what} failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// `future` within one request deadline.
    async fn within<T>(
        &self,
        what: &str,
        future: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.request_timeout, future).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Other(format!(
                "{what}: no answer from {} within {} s (NEXUSD_BACKUP_REQUEST_TIMEOUT)",
                self.json_base,
                self.request_timeout.as_secs()
            ))),
        }
    }

    pub fn describe(&self) -> String {
        format!("gs://{}/{}", self.bucket, self.prefix)
    }

    fn bucket_path(&self) -> String {
        format!("projects/_/buckets/{}", self.bucket)
    }

    fn object_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub async fn upload(
        &self,
        name: &str,
        content_type: &str,
        chunks: UploadChunks,
    ) -> Result<ObjectInfo, StoreError> {
        let activity = Activity::new();
        let source = ChannelSource {
            rx: chunks,
            ended: false,
            activity: activity.clone(),
        };
        let upload = self
            .client
            .write_object(self.bucket_path(), self.object_name(name), source)
            .set_if_generation_match(0)
            .set_content_type(content_type)
            .send_buffered();
        let object = tokio::select! {
            object = upload => object.map_err(|e| match e.http_status_code() {
                Some(412) => StoreError::AlreadyExists(name.to_string()),
                // Our own source reported the failure: say what it was.
                _ if e.is_serialization() => StoreError::Aborted(error_chain(&e)),
                _ => StoreError::Other(format!("uploading {name}: {}", error_chain(&e))),
            })?,
            stalled = activity.stalled(self.request_timeout) => {
                return Err(StoreError::Other(format!(
                    "uploading {name}: no answer from {} for {} s (NEXUSD_BACKUP_REQUEST_TIMEOUT); the upload was abandoned",
                    self.json_base,
                    stalled.as_secs()
                )));
            }
        };
        Ok(self.info(name, &object))
    }

    pub async fn put(
        &self,
        name: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<ObjectInfo, StoreError> {
        let write = async {
            self.client
                .write_object(self.bucket_path(), self.object_name(name), bytes)
                .set_if_generation_match(0)
                .set_content_type(content_type)
                .send_buffered()
                .await
                .map_err(|e| gcs_error("writing", name, e))
        };
        let object = self.within(&format!("writing {name}"), write).await?;
        Ok(self.info(name, &object))
    }

    fn info(&self, name: &str, object: &google_cloud_storage::model::Object) -> ObjectInfo {
        let created = object
            .create_time
            .as_ref()
            .and_then(|t| DateTime::from_timestamp(t.seconds(), t.nanos().max(0) as u32))
            .unwrap_or_else(Utc::now);
        ObjectInfo {
            name: name.to_string(),
            size: object.size.max(0) as u64,
            created,
            generation: Some(object.generation),
            crc32c: object.checksums.as_ref().and_then(|c| c.crc32c),
        }
    }

    pub async fn read(&self, name: &str) -> Result<GcsReader, StoreError> {
        let open = async {
            self.client
                .read_object(self.bucket_path(), self.object_name(name))
                .send()
                .await
                .map_err(|e| gcs_error("reading", name, e))
        };
        let response = self.within(&format!("reading {name}"), open).await?;
        Ok(GcsReader {
            response,
            name: name.to_string(),
            request_timeout: self.request_timeout,
        })
    }

    async fn auth_headers(&self) -> Result<reqwest::header::HeaderMap, StoreError> {
        match self
            .credentials
            .headers(http::Extensions::new())
            .await
            .map_err(|e| {
                other(
                    "Google credentials",
                    format!("{e}; {}", credential_sources()),
                )
            })? {
            CacheableResource::New { data, .. } => {
                let mut headers = reqwest::header::HeaderMap::new();
                for (k, v) in &data {
                    if let (Ok(k), Ok(v)) = (
                        reqwest::header::HeaderName::from_bytes(k.as_str().as_bytes()),
                        reqwest::header::HeaderValue::from_bytes(v.as_bytes()),
                    ) {
                        headers.insert(k, v);
                    }
                }
                Ok(headers)
            }
            CacheableResource::NotModified => {
                Err(other("Google credentials", "no headers returned"))
            }
        }
    }

    /// Lists the prefix over the JSON API (all pages), with the server's clock.
    pub async fn list(&self) -> Result<Listing, StoreError> {
        let mut listing = Listing::default();
        let mut token: Option<String> = None;
        loop {
            let (page, server_time) = self
                .retried("listing the bucket", || self.list_page(token.as_deref()))
                .await?;
            listing.server_time = listing.server_time.or(server_time);
            listing
                .objects
                .extend(page.items.into_iter().filter_map(|i| self.object_info(i)));
            match page.next_page_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        listing.objects.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listing)
    }

    /// One page of the listing, and the server's `Date`.
    async fn list_page(
        &self,
        token: Option<&str>,
    ) -> Result<(Page, Option<DateTime<Utc>>), Attempt> {
        let url = format!("{}/storage/v1/b/{}/o", self.json_base, self.bucket);
        let mut query = vec![("prefix", self.prefix.clone())];
        if let Some(t) = token {
            query.push(("pageToken", t.to_string()));
        }
        let context = format!("listing gs://{}", self.bucket);
        let headers = self.auth_headers().await.map_err(Attempt::Final)?;
        let response = self
            .http
            .get(&url)
            .headers(headers)
            .query(&query)
            .send()
            .await
            .map_err(|e| Attempt::Transient(other(&context, error_chain(&e)).to_string()))?;
        let status = response.status().as_u16();
        if !response.status().is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(Attempt::from_status(&context, status, body));
        }
        let server_time = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
            .map(|d| d.with_timezone(&Utc));
        let page: Page = response
            .json()
            .await
            .map_err(|e| Attempt::Transient(other("reading the bucket listing", e).to_string()))?;
        Ok((page, server_time))
    }

    /// A listed item as an object of this prefix (`None` for other prefixes' or odd entries).
    fn object_info(&self, item: Item) -> Option<ObjectInfo> {
        let name = item.name.strip_prefix(&self.prefix)?.to_string();
        if name.is_empty() || name.contains('/') {
            return None;
        }
        let created = item
            .time_created
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())?
            .with_timezone(&Utc);
        Some(ObjectInfo {
            name,
            size: item.size.and_then(|s| s.parse().ok()).unwrap_or(0),
            created,
            generation: item.generation.and_then(|g| g.parse().ok()),
            crc32c: item.crc32c.as_deref().and_then(decode_crc32c),
        })
    }

    /// Deletes over the JSON API, guarded by the listed generation so a name re-used since the
    /// listing is not deleted by mistake.
    pub async fn delete(&self, name: &str, generation: Option<i64>) -> Result<(), StoreError> {
        self.retried(&format!("deleting {name}"), || {
            self.delete_once(name, generation)
        })
        .await
    }

    async fn delete_once(&self, name: &str, generation: Option<i64>) -> Result<(), Attempt> {
        let encoded = percent_encoding::utf8_percent_encode(
            &self.object_name(name),
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string();
        let url = format!(
            "{}/storage/v1/b/{}/o/{encoded}",
            self.json_base, self.bucket
        );
        let context = format!("deleting {name}");
        let headers = self.auth_headers().await.map_err(Attempt::Final)?;
        let mut request = self.http.delete(&url).headers(headers);
        if let Some(g) = generation {
            request = request.query(&[("ifGenerationMatch", g.to_string())]);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Attempt::Transient(other(&context, error_chain(&e)).to_string()))?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            404 => Err(Attempt::Final(StoreError::NotFound(name.to_string()))),
            412 => Err(Attempt::Final(other(
                &context,
                "it changed since it was listed",
            ))),
            status => {
                let body = response.text().await.unwrap_or_default();
                Err(Attempt::from_status(&context, status, body))
            }
        }
    }
}

/// One page of a JSON API listing.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    #[serde(default)]
    items: Vec<Item>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    name: String,
    size: Option<String>,
    time_created: Option<String>,
    generation: Option<String>,
    crc32c: Option<String>,
}

/// When the upload last moved: the store took data or answered, or it is waiting for the
/// pipeline (which is not the store's stall).
#[derive(Clone)]
struct Activity(Arc<Mutex<(Instant, bool)>>);

impl Activity {
    fn new() -> Self {
        Activity(Arc::new(Mutex::new((Instant::now(), false))))
    }

    /// The upload asks the pipeline for data (`true`) or got it (`false`).
    fn waiting_for_data(&self, waiting: bool) {
        if let Ok(mut state) = self.0.lock() {
            *state = (Instant::now(), waiting);
        }
    }

    /// Resolves once the store has been silent for `limit` while data was waiting for it.
    async fn stalled(&self, limit: Duration) -> Duration {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (since, waiting) = match self.0.lock() {
                Ok(state) => *state,
                Err(_) => continue,
            };
            if !waiting && since.elapsed() >= limit {
                return since.elapsed();
            }
        }
    }
}

/// GCS reports CRC32C as the base64 of its 4 big-endian bytes.
fn decode_crc32c(text: &str) -> Option<u32> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

/// Feeds an upload from the pipeline's channel; only an explicit `End` ends it successfully.
struct ChannelSource {
    rx: UploadChunks,
    ended: bool,
    activity: Activity,
}

impl StreamingSource for ChannelSource {
    type Error = std::io::Error;

    async fn next(&mut self) -> Option<Result<Bytes, Self::Error>> {
        if self.ended {
            return None;
        }
        self.activity.waiting_for_data(true);
        let message = self.rx.recv().await;
        self.activity.waiting_for_data(false);
        match message {
            Some(UploadChunk::Data(bytes)) => Some(Ok(bytes)),
            Some(UploadChunk::End) => {
                self.ended = true;
                None
            }
            Some(UploadChunk::Abort(why)) => Some(Err(std::io::Error::other(why))),
            None => Some(Err(std::io::Error::other(
                "the producer stopped without finishing",
            ))),
        }
    }
}

pub struct GcsReader {
    response: google_cloud_storage::read_object::ReadObjectResponse,
    name: String,
    request_timeout: Duration,
}

impl GcsReader {
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        let next = tokio::time::timeout(self.request_timeout, self.response.next()).await;
        match next {
            Err(_) => Err(StoreError::Other(format!(
                "reading {}: no data for {} s (NEXUSD_BACKUP_REQUEST_TIMEOUT)",
                self.name,
                self.request_timeout.as_secs()
            ))),
            Ok(None) => Ok(None),
            Ok(Some(Ok(bytes))) => Ok(Some(bytes)),
            Ok(Some(Err(e))) => Err(StoreError::Other(format!(
                "reading {}: {}",
                self.name,
                error_chain(&e)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_as_gcs_writes_it() {
        // crc32c("hello world") = 0xc99465aa, base64 of its big-endian bytes.
        assert_eq!(decode_crc32c("yZRlqg=="), Some(0xc994_65aa));
        assert_eq!(decode_crc32c("not base64!"), None);
    }
}
