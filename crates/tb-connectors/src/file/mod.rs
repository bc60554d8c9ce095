//! `file`: read a file to its end, follow it as it grows, or write events to it.
//!
//! `tail` keeps a checkpoint in `data_dir/checkpoints/<id>.json` holding the offset just past
//! the last chunk whose events were all settled (never past one still in flight), so a
//! restart resumes there: events confirmed are not read twice, events not confirmed are.
//! See `tail.rs` for errored chunks (sent again) and rejected ones (recorded and passed).

mod checkpoint;
mod tail;

use std::path::PathBuf;

use serde::Deserialize;
use tb_codec::{CodecKind, Encoder, InterceptorConfig};
use tb_event::{ComponentId, KeyString, ObjectMap, StreamId, Value};
use tokio::io::AsyncSeekExt;

use crate::core::parallel_reader::LineSplit;
use crate::core::{
    AtEnd, BuildError, Connector, ConnectorBuilder, ConnectorContext, ConnectorError, IngestTarget,
    Roles, RunningConnector, StartFuture, StreamDecoder, ingest_reader, parse_config,
    write_batches,
};
use checkpoint::{Checkpoint, FileIdentity, find_rotated};

/// What a file connector does with its file.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileMode {
    /// Read from the start to the end, then finish.
    Read,
    /// Read from the checkpoint (or the start), then follow appended bytes.
    Tail,
    /// Write events at the end of the file, creating it if needed.
    Append,
    /// Empty the file at start, then write events to it.
    Truncate,
}

/// `kind = "file"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file's path, relative to the working directory.
    pub path: PathBuf,
    /// read | tail | append | truncate; default `read` without `inputs`, `append` with them.
    #[serde(default)]
    pub mode: Option<FileMode>,
    /// How frames become values and back: json | msgpack | csv | string | bytes.
    #[serde(default = "crate::core::defaults::codec")]
    pub codec: CodecKind,
    /// Byte transforms in receive order (reversed when writing); default `lines`.
    #[serde(default = "crate::core::defaults::line_interceptors")]
    pub interceptors: Vec<InterceptorConfig>,
}

/// Builds file connectors.
pub struct FileBuilder;

impl ConnectorBuilder for FileBuilder {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn roles(&self, has_inputs: bool) -> Roles {
        Roles {
            produces: !has_inputs,
            consumes: has_inputs,
        }
    }

    fn build(
        &self,
        _id: &ComponentId,
        config: serde_json::Value,
        has_inputs: bool,
    ) -> Result<Box<dyn Connector>, BuildError> {
        let config: FileConfig = parse_config(config)?;
        let mode = config.mode.unwrap_or(if has_inputs {
            FileMode::Append
        } else {
            FileMode::Read
        });
        let writes = matches!(mode, FileMode::Append | FileMode::Truncate);
        if writes != has_inputs {
            let message = if writes {
                "mode writes to the file, so the connector needs `inputs`; use mode = \"read\" or \"tail\" to read it"
            } else {
                "mode reads the file, so the connector takes no `inputs`; use mode = \"append\" or \"truncate\" to write it"
            };
            return Err(BuildError::at("mode", message));
        }
        if mode == FileMode::Tail && !checkpointable(&config) {
            return Err(BuildError::at(
                "mode",
                "tail keeps a byte-offset checkpoint, which needs line framing and a codec with no \
                 state across lines: use interceptors = [{ kind = \"lines\" }] and a codec other \
                 than csv, or mode = \"read\"",
            ));
        }
        Ok(Box::new(FileConnector { config, mode }))
    }
}

/// Whether a checkpoint offset always falls between whole frames: only for a chain of just
/// `lines` (offsets inside a compressed stream, or in the middle of a length-prefixed frame,
/// mean nothing on restart) and a codec that keeps no state across lines (a csv header).
fn checkpointable(config: &FileConfig) -> bool {
    matches!(
        config.interceptors.as_slice(),
        [InterceptorConfig::Lines { .. }]
    ) && config.codec != CodecKind::Csv
}

struct FileConnector {
    config: FileConfig,
    mode: FileMode,
}

impl Connector for FileConnector {
    fn start(self: Box<Self>, context: ConnectorContext) -> StartFuture {
        Box::pin(async move {
            match self.mode {
                FileMode::Read | FileMode::Tail => self.start_reader(context).await,
                FileMode::Append | FileMode::Truncate => self.start_writer(context).await,
            }
        })
    }

    fn check_environment(&self) -> Vec<BuildError> {
        let path = &self.config.path;
        let problem = match self.mode {
            FileMode::Read | FileMode::Tail => std::fs::File::open(path)
                .err()
                .map(|error| format!("cannot read {}: {error}", path.display())),
            FileMode::Append | FileMode::Truncate => writable_folder_problem(path),
        };
        problem
            .map(|message| BuildError::at("path", message))
            .into_iter()
            .collect()
    }
}

/// Why a file could not be written at `path`, if it could not: its nearest existing folder
/// must take a new file (checked with a temporary file, removed at once; nothing else is
/// created).
fn writable_folder_problem(path: &std::path::Path) -> Option<String> {
    if path.is_dir() {
        return Some(format!("{} is a folder, not a file", path.display()));
    }
    let folder = path
        .ancestors()
        .skip(1)
        .map(|ancestor| {
            if ancestor.as_os_str().is_empty() {
                std::path::Path::new(".")
            } else {
                ancestor
            }
        })
        .find(|ancestor| ancestor.exists())?;
    if !folder.is_dir() {
        return Some(format!("{} is not a folder", folder.display()));
    }
    let probe = folder.join(format!(".tightbeam-check-{}", std::process::id()));
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe);
    match created {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            None
        }
        Err(error) => Some(format!("cannot write in {}: {error}", folder.display())),
    }
}

impl FileConnector {
    fn display_path(&self) -> String {
        self.config.path.display().to_string()
    }

    async fn start_reader(
        self: Box<Self>,
        context: ConnectorContext,
    ) -> Result<RunningConnector, ConnectorError> {
        let path = self.display_path();
        let file = tokio::fs::File::open(&self.config.path)
            .await
            .map_err(|source| ConnectorError::File {
                action: "cannot open",
                path: path.clone(),
                source,
            })?;
        if self.mode == FileMode::Tail {
            let checkpoint = Checkpoint::load(&context.data_dir, &context.id, &path);
            let segment = self.tail_start(file, &checkpoint, &path).await?;
            return Ok(self.follow(context, segment, checkpoint));
        }
        Ok(Box::pin(async move {
            let mut fields = ObjectMap::new();
            fields.insert(KeyString::from("path"), Value::from(path.as_str()));
            let mut decoder = StreamDecoder::new(
                context.id.clone(),
                StreamId(0),
                self.config.codec,
                &self.config.interceptors,
                Some(std::sync::Arc::new(fields)),
            );
            let target = IngestTarget {
                id: &context.id,
                output: &context.output,
                errors: &context.errors,
                metrics: &context.metrics,
                intake: &context.intake,
            };
            let result = ingest_reader(file, &mut decoder, target, 0, AtEnd::Last, |_| {}).await;
            result.map(|_| ()).map_err(|source| ConnectorError::File {
                action: "cannot read",
                path,
                source,
            })
        }))
    }

    /// Where a tail starts: in the file its checkpoint names, at the checkpoint's offset.
    /// That file may be the one at the path, or one rotated away while Tightbeam was stopped
    /// (found in the same folder by device and inode, read to its end first); one shorter
    /// than the offset was truncated and is read from its start.
    async fn tail_start(
        &self,
        file: tokio::fs::File,
        checkpoint: &Checkpoint,
        path: &str,
    ) -> Result<tail::Segment, ConnectorError> {
        let watched = &self.config.path;
        let current = FileIdentity::of(watched);
        let saved = checkpoint.position();
        let (file, identity, offset) = match (&saved.file, &current) {
            (Some(saved_file), Some(current)) if saved_file.same_file(current) => {
                (file, Some(current.clone()), saved.offset)
            }
            (Some(saved_file), _) => match find_rotated(watched, saved_file) {
                Some(rotated) => {
                    tracing::info!(path, rotated = %rotated.display(), "The file was rotated while stopped; finishing the old one first.");
                    let old = tokio::fs::File::open(&rotated).await.map_err(|source| {
                        ConnectorError::File {
                            action: "cannot open",
                            path: rotated.display().to_string(),
                            source,
                        }
                    })?;
                    (old, Some(saved_file.clone()), saved.offset)
                }
                None => {
                    tracing::warn!(
                        path,
                        "The file the checkpoint names is gone; reading the one at the path from its start."
                    );
                    (file, current, 0)
                }
            },
            // A checkpoint from before files were identified: trust its offset.
            (None, _) => (file, current, saved.offset),
        };
        let length = file.metadata().await.map(|meta| meta.len()).unwrap_or(0);
        let offset = if offset > length {
            tracing::warn!(
                path,
                offset,
                length,
                "File is shorter than its checkpoint; reading from the start."
            );
            0
        } else {
            offset
        };
        let mut file = file;
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|source| ConnectorError::File {
                action: "cannot seek in",
                path: path.to_owned(),
                source,
            })?;
        Ok(tail::Segment {
            file,
            identity,
            offset,
        })
    }

    /// The tail's run: follow the file, moving the checkpoint with the confirmed position.
    fn follow(
        self: Box<Self>,
        context: ConnectorContext,
        segment: tail::Segment,
        mut checkpoint: Checkpoint,
    ) -> RunningConnector {
        Box::pin(async move {
            let lines = match self.config.interceptors.as_slice() {
                [
                    InterceptorConfig::Lines {
                        delimiter,
                        max_length,
                    },
                ] => LineSplit {
                    delimiter: delimiter.as_bytes().to_vec(),
                    max_length: *max_length,
                },
                // `build` lets tail run only on a chain of just `lines`.
                _ => LineSplit {
                    delimiter: b"\n".to_vec(),
                    max_length: usize::MAX,
                },
            };
            let result = tail::follow(
                segment,
                &context,
                (self.config.codec, &self.config.interceptors),
                lines,
                &self.config.path,
                &mut checkpoint,
            )
            .await;
            checkpoint.save().await;
            result.map_err(|source| ConnectorError::File {
                action: "cannot read",
                path: self.display_path(),
                source,
            })
        })
    }

    async fn start_writer(
        self: Box<Self>,
        context: ConnectorContext,
    ) -> Result<RunningConnector, ConnectorError> {
        let path = self.display_path();
        let open_error = |source| ConnectorError::File {
            action: "cannot open for writing",
            path: path.clone(),
            source,
        };
        if let Some(parent) = self
            .config
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(open_error)?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(self.mode == FileMode::Append)
            .truncate(self.mode == FileMode::Truncate)
            .open(&self.config.path)
            .await
            .map_err(open_error)?;
        Ok(Box::pin(async move {
            let Some(input) = context.input else {
                return Ok(());
            };
            let encoder = Encoder::new(self.config.codec, &self.config.interceptors);
            write_batches(input, encoder, file, &context.metrics)
                .await
                .map_err(|source| ConnectorError::File {
                    action: "cannot write",
                    path,
                    source,
                })
        }))
    }
}
