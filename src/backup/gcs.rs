//! The Google Cloud Storage store. Uploads and downloads go through `google-cloud-storage`:
//! a resumable upload with `ifGenerationMatch=0` (never overwrite) whose CRC32C the crate sends
//! and checks on the last chunk, and streamed, CRC-checked reads. The crate offers list and
//! delete only over gRPC, which emulators do not speak, so those two use the JSON API with the
//! same credentials. Credentials: Application Default Credentials (on the VM, the metadata
//! server); none with `NEXUSD_GCS_ENDPOINT` (emulators).

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use google_cloud_gax::retry_policy::RetryPolicyExt;
use google_cloud_storage::client::Storage;
use google_cloud_storage::retry_policy::RetryableErrors;
use google_cloud_storage::streaming_source::StreamingSource;
use serde::Deserialize;

use super::store::{Listing, ObjectInfo, StoreError, UploadChunk, UploadChunks};
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
}

fn other(context: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("{context}: {e}"))
}

/// Maps a client error, naming the object.
fn gcs_error(context: &str, name: &str, e: google_cloud_storage::Error) -> StoreError {
    match e.http_status_code() {
        Some(412) => StoreError::AlreadyExists(name.to_string()),
        Some(404) => StoreError::NotFound(name.to_string()),
        _ => StoreError::Other(format!("{context} {name}: {}", error_chain(&e))),
    }
}

impl GcsStore {
    pub async fn open(
        bucket: &str,
        prefix: &str,
        endpoint: Option<&str>,
        retry_time_limit: Duration,
    ) -> Result<Self, StoreError> {
        let credentials = match endpoint {
            Some(_) => google_cloud_auth::credentials::anonymous::Builder::new().build(),
            None => google_cloud_auth::credentials::Builder::default()
                .build()
                .map_err(|e| other("Google credentials (Application Default Credentials)", e))?,
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
            .timeout(Duration::from_secs(60))
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
        })
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
        let source = ChannelSource {
            rx: chunks,
            ended: false,
        };
        let object = self
            .client
            .write_object(self.bucket_path(), self.object_name(name), source)
            .set_if_generation_match(0)
            .set_content_type(content_type)
            .send_buffered()
            .await
            .map_err(|e| match e.http_status_code() {
                Some(412) => StoreError::AlreadyExists(name.to_string()),
                // Our own source reported the failure: say what it was.
                _ if e.is_serialization() => StoreError::Aborted(error_chain(&e)),
                _ => StoreError::Other(format!("uploading {name}: {}", error_chain(&e))),
            })?;
        Ok(self.info(name, &object))
    }

    pub async fn put(
        &self,
        name: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<ObjectInfo, StoreError> {
        let object = self
            .client
            .write_object(self.bucket_path(), self.object_name(name), bytes)
            .set_if_generation_match(0)
            .set_content_type(content_type)
            .send_buffered()
            .await
            .map_err(|e| gcs_error("writing", name, e))?;
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
        let response = self
            .client
            .read_object(self.bucket_path(), self.object_name(name))
            .send()
            .await
            .map_err(|e| gcs_error("reading", name, e))?;
        Ok(GcsReader {
            response,
            name: name.to_string(),
        })
    }

    async fn auth_headers(&self) -> Result<reqwest::header::HeaderMap, StoreError> {
        match self
            .credentials
            .headers(http::Extensions::new())
            .await
            .map_err(|e| other("Google credentials", e))?
        {
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
        let url = format!("{}/storage/v1/b/{}/o", self.json_base, self.bucket);
        let mut listing = Listing::default();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("prefix", self.prefix.clone())];
            if let Some(t) = &token {
                query.push(("pageToken", t.clone()));
            }
            let response = self
                .http
                .get(&url)
                .headers(self.auth_headers().await?)
                .query(&query)
                .send()
                .await
                .map_err(|e| other("listing the bucket", error_chain(&e)))?;
            if !response.status().is_success() {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                return Err(other(
                    &format!("listing gs://{}", self.bucket),
                    format!("HTTP {status}: {body}"),
                ));
            }
            if listing.server_time.is_none() {
                listing.server_time = response
                    .headers()
                    .get(reqwest::header::DATE)
                    .and_then(|d| d.to_str().ok())
                    .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
                    .map(|d| d.with_timezone(&Utc));
            }
            let page: Page = response
                .json()
                .await
                .map_err(|e| other("reading the bucket listing", e))?;
            for item in page.items {
                let Some(name) = item.name.strip_prefix(&self.prefix).map(str::to_string) else {
                    continue;
                };
                if name.is_empty() || name.contains('/') {
                    continue;
                }
                let created = item
                    .time_created
                    .as_deref()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc));
                let Some(created) = created else {
                    continue;
                };
                listing.objects.push(ObjectInfo {
                    name,
                    size: item.size.and_then(|s| s.parse().ok()).unwrap_or(0),
                    created,
                    generation: item.generation.and_then(|g| g.parse().ok()),
                    crc32c: item.crc32c.as_deref().and_then(decode_crc32c),
                });
            }
            match page.next_page_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        listing.objects.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listing)
    }

    /// Deletes over the JSON API, guarded by the listed generation so a name re-used since the
    /// listing is not deleted by mistake.
    pub async fn delete(&self, name: &str, generation: Option<i64>) -> Result<(), StoreError> {
        let encoded = percent_encoding::utf8_percent_encode(
            &self.object_name(name),
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string();
        let url = format!(
            "{}/storage/v1/b/{}/o/{encoded}",
            self.json_base, self.bucket
        );
        let mut request = self.http.delete(&url).headers(self.auth_headers().await?);
        if let Some(g) = generation {
            request = request.query(&[("ifGenerationMatch", g.to_string())]);
        }
        let response = request
            .send()
            .await
            .map_err(|e| other(&format!("deleting {name}"), error_chain(&e)))?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            404 => Err(StoreError::NotFound(name.to_string())),
            412 => Err(other(
                &format!("deleting {name}"),
                "it changed since it was listed",
            )),
            status => Err(other(
                &format!("deleting {name}"),
                format!(
                    "HTTP {status}: {}",
                    response.text().await.unwrap_or_default()
                ),
            )),
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
}

impl StreamingSource for ChannelSource {
    type Error = std::io::Error;

    async fn next(&mut self) -> Option<Result<Bytes, Self::Error>> {
        if self.ended {
            return None;
        }
        match self.rx.recv().await {
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
}

impl GcsReader {
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        match self.response.next().await {
            None => Ok(None),
            Some(Ok(bytes)) => Ok(Some(bytes)),
            Some(Err(e)) => Err(StoreError::Other(format!(
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
