//! The tail checkpoint: which file (device, inode and its first bytes) and the offset in it
//! up to which every event was settled.
//!
//! A path alone does not say which file: after `mv log log.1` and a new `log`, the path
//! names another file, and an offset in the old one means nothing in the new one. So the
//! checkpoint names the file as mature tailers do: by device and inode, with a fingerprint
//! of its first bytes against inode reuse. Writes are atomic (a temporary file, fsync'd,
//! then renamed, and the folder fsync'd) and run on a blocking thread, off the runtime's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tb_event::ComponentId;

/// How often an advancing checkpoint is written; it is always written at stop.
const SAVE_INTERVAL: Duration = Duration::from_millis(500);

/// Bytes at the start of a file kept as its fingerprint.
pub(super) const FINGERPRINT_BYTES: usize = 64;

/// Which file: device and inode, and (as far as it was written) its first bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FileIdentity {
    pub(super) device: u64,
    pub(super) inode: u64,
    /// Hex of up to [`FINGERPRINT_BYTES`] first bytes, as many as the file had when seen.
    pub(super) head: String,
}

impl FileIdentity {
    /// The identity of the file at `path` now, if there is one.
    pub(super) fn of(path: &Path) -> Option<Self> {
        let metadata = std::fs::metadata(path).ok()?;
        let (device, inode) = device_and_inode(&metadata);
        Some(Self {
            device,
            inode,
            head: head_of(path),
        })
    }

    /// Whether `other` is the same file, which may have grown since this was taken.
    pub(super) fn same_file(&self, other: &Self) -> bool {
        self.device == other.device
            && self.inode == other.inode
            && (other.head.starts_with(&self.head) || self.head.starts_with(&other.head))
    }
}

#[cfg(unix)]
fn device_and_inode(metadata: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (metadata.dev(), metadata.ino())
}

#[cfg(not(unix))]
fn device_and_inode(_metadata: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

fn head_of(path: &Path) -> String {
    use std::io::Read;
    let mut head = [0u8; FINGERPRINT_BYTES];
    let read = std::fs::File::open(path)
        .and_then(|mut file| file.read(&mut head))
        .unwrap_or(0);
    head[..read]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Where the tail stands: a file and an offset in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Position {
    pub(super) file: Option<FileIdentity>,
    pub(super) offset: u64,
}

/// A checkpoint file and the position it records.
pub(super) struct Checkpoint {
    file: PathBuf,
    watched_path: String,
    position: Position,
    saved: Option<Position>,
    saved_at: Instant,
}

impl Checkpoint {
    /// Loads `data_dir/checkpoints/<id>.json`; a missing, unreadable or other-path checkpoint
    /// has no file and offset 0.
    pub(super) fn load(data_dir: &Path, id: &ComponentId, watched_path: &str) -> Self {
        let file = data_dir.join("checkpoints").join(format!("{id}.json"));
        let saved = std::fs::read(&file)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .filter(|saved| saved["path"].as_str() == Some(watched_path));
        let position = saved.as_ref().map_or(
            Position {
                file: None,
                offset: 0,
            },
            |saved| Position {
                file: match (saved["device"].as_u64(), saved["inode"].as_u64()) {
                    (Some(device), Some(inode)) => Some(FileIdentity {
                        device,
                        inode,
                        head: saved["head"].as_str().unwrap_or("").to_owned(),
                    }),
                    _ => None,
                },
                offset: saved["offset"].as_u64().unwrap_or(0),
            },
        );
        Self {
            file,
            watched_path: watched_path.to_owned(),
            saved: saved.map(|_| position.clone()),
            position,
            saved_at: Instant::now(),
        }
    }

    /// The position recorded.
    pub(super) fn position(&self) -> &Position {
        &self.position
    }

    /// Moves the checkpoint, saving it if the last save is old enough.
    pub(super) async fn advance(&mut self, position: Position) {
        self.position = position;
        if self.saved_at.elapsed() >= SAVE_INTERVAL {
            self.save().await;
        }
    }

    /// Writes the checkpoint, atomically and durably, on a blocking thread.
    pub(super) async fn save(&mut self) {
        if self.saved.as_ref() == Some(&self.position) {
            return;
        }
        let body = serde_json::json!({
            "path": self.watched_path,
            "offset": self.position.offset,
            "device": self.position.file.as_ref().map(|file| file.device),
            "inode": self.position.file.as_ref().map(|file| file.inode),
            "head": self.position.file.as_ref().map(|file| file.head.clone()),
        })
        .to_string();
        let target = self.file.clone();
        let written = tokio::task::spawn_blocking(move || write_durably(&target, &body)).await;
        match written {
            Ok(Ok(())) => {
                self.saved = Some(self.position.clone());
                self.saved_at = Instant::now();
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, file = %self.file.display(), "Checkpoint could not be saved.")
            }
            Err(error) => {
                tracing::warn!(%error, file = %self.file.display(), "Checkpoint save did not run.")
            }
        }
    }
}

/// A temporary file, fsync'd, renamed over `target`, and the folder fsync'd: after a crash
/// the checkpoint is the old one or the new one, never a torn one.
fn write_durably(target: &Path, body: &str) -> std::io::Result<()> {
    use std::io::Write;
    let folder = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(folder)?;
    let temporary = target.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(body.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, target)?;
    std::fs::File::open(folder)?.sync_all()
}

/// Finds, in `path`'s folder, the file that `identity` names (the rotated file, after `mv`).
pub(super) fn find_rotated(path: &Path, identity: &FileIdentity) -> Option<PathBuf> {
    let folder = match path.parent() {
        Some(folder) if !folder.as_os_str().is_empty() => folder,
        _ => Path::new("."),
    };
    std::fs::read_dir(folder)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|candidate| {
            FileIdentity::of(candidate).is_some_and(|found| identity.same_file(&found))
        })
}
