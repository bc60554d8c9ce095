//! The tail checkpoint: the offset up to which every event was acknowledged.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tb_event::ComponentId;

/// How often an advancing checkpoint is written; it is always written at stop.
const SAVE_INTERVAL: Duration = Duration::from_millis(500);

/// A checkpoint file and the offset it records.
pub(super) struct Checkpoint {
    file: PathBuf,
    watched_path: String,
    offset: u64,
    saved_offset: u64,
    saved_at: Instant,
}

impl Checkpoint {
    /// Loads `data_dir/checkpoints/<id>.json`; a missing, unreadable or other-file checkpoint
    /// starts at 0.
    pub(super) fn load(data_dir: &Path, id: &ComponentId, watched_path: &str) -> Self {
        let file = data_dir.join("checkpoints").join(format!("{id}.json"));
        let offset = std::fs::read(&file)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .filter(|saved| saved["path"].as_str() == Some(watched_path))
            .and_then(|saved| saved["offset"].as_u64())
            .unwrap_or(0);
        Self {
            file,
            watched_path: watched_path.to_owned(),
            offset,
            saved_offset: offset,
            saved_at: Instant::now(),
        }
    }

    pub(super) fn offset(&self) -> u64 {
        self.offset
    }

    /// Moves the checkpoint to `offset`, saving it if the last save is old enough.
    pub(super) fn advance(&mut self, offset: u64) {
        self.offset = offset;
        if self.saved_at.elapsed() >= SAVE_INTERVAL {
            self.save();
        }
    }

    /// Writes the checkpoint atomically (temporary file, then rename).
    pub(super) fn save(&mut self) {
        if self.offset == self.saved_offset && self.file.exists() {
            return;
        }
        let body = serde_json::json!({ "path": self.watched_path, "offset": self.offset });
        let temporary = self.file.with_extension("json.tmp");
        let written = self
            .file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&temporary, body.to_string()))
            .and_then(|()| std::fs::rename(&temporary, &self.file));
        match written {
            Ok(()) => {
                self.saved_offset = self.offset;
                self.saved_at = Instant::now();
            }
            Err(error) => {
                tracing::warn!(%error, file = %self.file.display(), "Checkpoint could not be saved.")
            }
        }
    }
}
