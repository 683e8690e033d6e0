//! The local-directory store (the default when no bucket is set). An upload is written to
//! `<name>.<pid>.partial`, fsynced, then hard-linked to its final name (which fails if the name
//! exists, so nothing is ever overwritten) and the partial removed. A crash leaves only a
//! `.partial` file, which is never listed as an object and is pruned after a day.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Listing, ObjectInfo, StoreError, UploadChunk, UploadChunks};

const PARTIAL_SUFFIX: &str = ".partial";
const READ_CHUNK: usize = 1 << 20;

pub struct LocalStore {
    dir: PathBuf,
}

fn io(context: &str, path: &Path, e: std::io::Error) -> StoreError {
    match e.kind() {
        std::io::ErrorKind::NotFound => StoreError::NotFound(path.display().to_string()),
        std::io::ErrorKind::AlreadyExists => StoreError::AlreadyExists(path.display().to_string()),
        _ => StoreError::Other(format!("{context} {}: {e}", path.display())),
    }
}

/// Object names are plain file names: no directories, nothing hidden.
fn check_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(StoreError::Other(format!(
            "{name:?} is not a valid backup object name"
        )));
    }
    Ok(())
}

impl LocalStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
        // Private to its owner; a traverse bit given to the embedded cluster's user (so its
        // archiver reaches the `wal` directory inside, see src/db/cluster.rs) is kept.
        let kept = std::fs::metadata(dir)
            .map(|m| m.permissions().mode() & 0o011)
            .unwrap_or(0);
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700 | kept))
            .map_err(|e| io("restricting", dir, e))?;
        Ok(LocalStore {
            dir: dir.to_path_buf(),
        })
    }

    pub fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    pub async fn upload(
        &self,
        name: &str,
        mut chunks: UploadChunks,
    ) -> Result<ObjectInfo, StoreError> {
        check_name(name)?;
        let target = self.dir.join(name);
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            return Err(StoreError::AlreadyExists(name.to_string()));
        }
        let partial = self
            .dir
            .join(format!("{name}.{}{PARTIAL_SUFFIX}", std::process::id()));
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .await
            .map_err(|e| io("creating", &partial, e))?;
        let outcome = loop {
            match chunks.recv().await {
                Some(UploadChunk::Data(bytes)) => {
                    if let Err(e) = file.write_all(&bytes).await {
                        break Err(io("writing", &partial, e));
                    }
                }
                Some(UploadChunk::End) => break Ok(()),
                Some(UploadChunk::Abort(why)) => break Err(StoreError::Aborted(why)),
                None => {
                    break Err(StoreError::Aborted(
                        "the producer stopped without finishing".into(),
                    ));
                }
            }
        };
        let finished = match outcome {
            Ok(()) => {
                async {
                    file.flush().await.map_err(|e| io("writing", &partial, e))?;
                    file.sync_all()
                        .await
                        .map_err(|e| io("syncing", &partial, e))?;
                    drop(file);
                    tokio::fs::hard_link(&partial, &target)
                        .await
                        .map_err(|e| io("publishing", &target, e))?;
                    Ok(())
                }
                .await
            }
            Err(e) => Err(e),
        };
        // The partial goes either way: published under its name, or abandoned.
        let _ = tokio::fs::remove_file(&partial).await;
        finished?;
        sync_dir(&self.dir).await;
        self.info(name).await
    }

    pub async fn put(&self, name: &str, bytes: Bytes) -> Result<ObjectInfo, StoreError> {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        // Capacity 2: both messages fit without a reader.
        let _ = tx.send(UploadChunk::Data(bytes)).await;
        let _ = tx.send(UploadChunk::End).await;
        self.upload(name, rx).await
    }

    async fn info(&self, name: &str) -> Result<ObjectInfo, StoreError> {
        let path = self.dir.join(name);
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| io("reading", &path, e))?;
        Ok(ObjectInfo {
            name: name.to_string(),
            size: meta.len(),
            created: modified(&meta),
            generation: None,
            crc32c: None,
        })
    }

    pub async fn read(&self, name: &str) -> Result<LocalReader, StoreError> {
        check_name(name)?;
        let path = self.dir.join(name);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io("opening", &path, e))?;
        Ok(LocalReader { file, path })
    }

    pub async fn list(&self) -> Result<Listing, StoreError> {
        let mut listing = Listing::default();
        let mut entries = tokio::fs::read_dir(&self.dir)
            .await
            .map_err(|e| io("listing", &self.dir, e))?;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| io("listing", &self.dir, e))?
        {
            let Ok(meta) = entry.metadata().await else {
                continue;
            };
            let name = entry.file_name().to_string_lossy().to_string();
            if !meta.is_file() || name.starts_with('.') {
                continue;
            }
            let info = ObjectInfo {
                name: name.clone(),
                size: meta.len(),
                created: modified(&meta),
                generation: None,
                crc32c: None,
            };
            if name.ends_with(PARTIAL_SUFFIX) {
                listing.partials.push(info);
            } else {
                listing.objects.push(info);
            }
        }
        listing.objects.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(listing)
    }

    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        if name.is_empty() || name.contains('/') {
            return Err(StoreError::Other(format!(
                "{name:?} is not a valid backup object name"
            )));
        }
        let path = self.dir.join(name);
        tokio::fs::remove_file(&path)
            .await
            .map_err(|e| io("deleting", &path, e))?;
        sync_dir(&self.dir).await;
        Ok(())
    }
}

fn modified(meta: &std::fs::Metadata) -> DateTime<Utc> {
    meta.modified()
        .map(DateTime::<Utc>::from)
        .unwrap_or_else(|_| Utc::now())
}

/// Makes a rename or removal durable (best effort).
async fn sync_dir(dir: &Path) {
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
}

pub struct LocalReader {
    file: tokio::fs::File,
    path: PathBuf,
}

impl LocalReader {
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, StoreError> {
        let mut buf = vec![0u8; READ_CHUNK];
        let n = self
            .file
            .read(&mut buf)
            .await
            .map_err(|e| io("reading", &self.path, e))?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some(Bytes::from(buf)))
    }
}
