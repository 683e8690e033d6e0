//! Where backups live, behind one small interface: a local directory (the default) or a Google
//! Cloud Storage bucket. Uploads are streamed from a channel and only finalised when the
//! channel closes cleanly; an `Err` chunk (or a dropped sender) abandons the upload and leaves
//! no object behind.

mod gcs;
mod local;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::config::{BackupConfig, BackupDestination};
use gcs::{GcsReader, GcsStore};
use local::{LocalReader, LocalStore};

/// One message of an upload. Only an explicit `End` finalises the object: a producer that stops
/// (fails, is cancelled, panics) without sending it abandons the upload.
#[derive(Debug)]
pub enum UploadChunk {
    Data(Bytes),
    End,
    Abort(String),
}

/// The messages of an upload.
pub type UploadChunks = mpsc::Receiver<UploadChunk>;

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Name relative to the store (no bucket prefix).
    pub name: String,
    pub size: u64,
    /// When the store created it (GCS `timeCreated`, a file's modification time).
    pub created: DateTime<Utc>,
    /// GCS generation, for guarded deletes.
    pub generation: Option<i64>,
    /// CRC32C of the content when the store knows it.
    pub crc32c: Option<u32>,
}

/// What a store holds.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub objects: Vec<ObjectInfo>,
    /// Unfinished uploads the store can see (local partial files; GCS keeps none).
    pub partials: Vec<ObjectInfo>,
    /// The store's own clock when it listed (GCS `Date` header), to judge ages without
    /// trusting the local clock.
    pub server_time: Option<DateTime<Utc>>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("the upload was abandoned: {0}")]
    Aborted(String),
    #[error("{0}")]
    Other(String),
}

pub enum Store {
    Local(LocalStore),
    Gcs(Box<GcsStore>),
}

impl Store {
    pub async fn open(config: &BackupConfig) -> Result<Store, StoreError> {
        match &config.destination {
            BackupDestination::Local { dir } => Ok(Store::Local(LocalStore::open(dir)?)),
            BackupDestination::Gcs { bucket, prefix } => {
                let store = GcsStore::open(
                    bucket,
                    prefix,
                    config.gcs_endpoint.as_deref(),
                    config.retry_time_limit,
                    config.request_timeout,
                )
                .await?;
                Ok(Store::Gcs(Box::new(store)))
            }
        }
    }

    /// `gs://bucket/prefix/` or the directory.
    pub fn describe(&self) -> String {
        match self {
            Store::Local(s) => s.describe(),
            Store::Gcs(s) => s.describe(),
        }
    }

    /// `gcs` or `local`, for manifests and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Local(_) => "local",
            Store::Gcs(_) => "gcs",
        }
    }

    /// Streams `chunks` into a new object `name` (never overwriting one).
    pub async fn upload(
        &self,
        name: &str,
        content_type: &str,
        chunks: UploadChunks,
    ) -> Result<ObjectInfo, StoreError> {
        match self {
            Store::Local(s) => s.upload(name, chunks).await,
            Store::Gcs(s) => s.upload(name, content_type, chunks).await,
        }
    }

    /// Writes a small object (a manifest) in one go, never overwriting one.
    pub async fn put(
        &self,
        name: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<ObjectInfo, StoreError> {
        match self {
            Store::Local(s) => s.put(name, bytes).await,
            Store::Gcs(s) => s.put(name, bytes, content_type).await,
        }
    }

    /// Writes `value` as a small JSON object (a manifest, a marker, a record), never
    /// overwriting one.
    pub async fn put_json<T: serde::Serialize>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<ObjectInfo, StoreError> {
        let body = serde_json::to_vec_pretty(value)
            .map_err(|e| StoreError::Other(format!("serialising {name}: {e}")))?;
        self.put(name, Bytes::from(body), "application/json").await
    }

    /// Reads a small JSON object; `None`, with a warning, when it cannot be read or parsed
    /// (metadata that is unreadable is ignored rather than failing a listing).
    pub async fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        match self.read_all(name).await {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(%name, error = %e, "unreadable backup metadata; ignoring it");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(%name, error = %e, "cannot read backup metadata");
                None
            }
        }
    }

    /// Opens an object for streaming.
    pub async fn read(&self, name: &str) -> Result<Reader, StoreError> {
        match self {
            Store::Local(s) => Ok(Reader::Local(s.read(name).await?)),
            Store::Gcs(s) => Ok(Reader::Gcs(s.read(name).await?)),
        }
    }

    /// Reads a small object whole.
    pub async fn read_all(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let mut reader = self.read(name).await?;
        let mut all = Vec::new();
        while let Some(chunk) = reader.next_chunk().await? {
            all.extend_from_slice(&chunk);
        }
        Ok(all)
    }

    pub async fn list(&self) -> Result<Listing, StoreError> {
        match self {
            Store::Local(s) => s.list().await,
            Store::Gcs(s) => s.list().await,
        }
    }

    /// Deletes `name`; with a generation (GCS), only that version of it.
    pub async fn delete(&self, name: &str, generation: Option<i64>) -> Result<(), StoreError> {
        match self {
            Store::Local(s) => s.delete(name).await,
            Store::Gcs(s) => s.delete(name, generation).await,
        }
    }
}

/// An object being read.
pub enum Reader {
    Local(LocalReader),
    Gcs(GcsReader),
}

impl Reader {
    /// The next chunk, `None` at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        match self {
            Reader::Local(r) => r.next_chunk().await,
            Reader::Gcs(r) => r.next_chunk().await,
        }
    }
}
