//! The JSONL result format of `densam annotate`: one line per output frame, in frame order,
//!
//! ```text
//! {"frame_number":N,"time_s":t,"objects":[{"id":..,"label":..,["assoc_id":..,"assoc_name":..,]
//!   "bbox":[xmin,ymin,xmax,ymax],"score":s,"iou":i,"area":a,
//!   "segmentation":{"size":[h,w],"counts":"<COCO RLE>"}}]}
//! ```
//!
//! with its serde types, a streaming writer (deterministic bytes, one flush per line, frame
//! order enforced, byte offset for checkpoints and resume) and a streaming reader whose errors
//! name the file and the line.

use crate::mask::{CocoRle, Rle, RleError};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Errors of the output formats; every variant names the file, and where it applies the line,
/// frame and object.
#[derive(Debug, Error)]
pub enum OutputError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: malformed result line: {source}")]
    Parse {
        path: PathBuf,
        line: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}:{line}: frame {frame}{}: {reason}", object.as_ref().map(|o| format!(", object {o:?}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        /// 1-based line number (0 where the record was not read from a file).
        line: u64,
        frame: u64,
        object: Option<String>,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Other { path: PathBuf, reason: String },
    /// A file to resume is shorter than the offset to resume at.
    #[error("{path}: cannot resume at byte {offset}: the file has only {len} bytes")]
    Truncated {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

impl OutputError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. }
            | Self::Parse { path, .. }
            | Self::Invalid { path, .. }
            | Self::Other { path, .. }
            | Self::Truncated { path, .. } => path,
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// An error about `object` (if any) on `frame` at `path:line`.
    pub fn invalid(
        path: &Path,
        line: u64,
        frame: u64,
        object: Option<&str>,
        reason: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            path: path.to_path_buf(),
            line,
            frame,
            object: object.map(str::to_string),
            reason: reason.into(),
        }
    }

    pub fn other(path: &Path, reason: impl Into<String>) -> Self {
        Self::Other {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// One object on one frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub id: String,
    #[serde(default)]
    pub label: String,
    /// HD-EPIC association id (when the prompts came from HD-EPIC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assoc_id: Option<String>,
    /// HD-EPIC association name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assoc_name: Option<String>,
    /// `[xmin, ymin, xmax, ymax]`, original pixels, pixel-edge (xmax = last column + 1).
    pub bbox: [u32; 4],
    /// Object-score probability.
    pub score: f32,
    /// Predicted IoU of the chosen mask.
    pub iou: f32,
    /// Foreground pixels.
    pub area: u64,
    pub segmentation: CocoRle,
}

impl ObjectRecord {
    /// The record of a mask, with area and box computed from it; `None` for an empty mask
    /// (objects with no mask on a frame are left out of the frame).
    pub fn from_rle(
        id: impl Into<String>,
        label: impl Into<String>,
        rle: &Rle,
        score: f32,
        iou: f32,
    ) -> Option<Self> {
        let bbox = rle.bbox_xyxy()?;
        Some(Self {
            id: id.into(),
            label: label.into(),
            assoc_id: None,
            assoc_name: None,
            bbox,
            score,
            iou,
            area: rle.area(),
            segmentation: CocoRle::from_rle(rle),
        })
    }

    /// The decoded RLE.
    pub fn rle(&self) -> Result<Rle, RleError> {
        self.segmentation.to_rle()
    }
}

/// One output line: the objects with a mask on one frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameRecord {
    /// Presentation-order frame number, from 0.
    pub frame_number: u64,
    /// Presentation time in seconds.
    pub time_s: f64,
    pub objects: Vec<ObjectRecord>,
}

impl FrameRecord {
    /// Structural checks shared by writer and reader: finite numbers, unique ids.
    fn check(&self, path: &Path, line: u64) -> Result<(), OutputError> {
        let frame = self.frame_number;
        if !self.time_s.is_finite() {
            return Err(OutputError::invalid(
                path,
                line,
                frame,
                None,
                "time_s is not finite",
            ));
        }
        let mut seen = HashSet::new();
        for o in &self.objects {
            if !seen.insert(o.id.as_str()) {
                return Err(OutputError::invalid(
                    path,
                    line,
                    frame,
                    Some(&o.id),
                    "object id appears twice on the frame",
                ));
            }
            let [h, w] = o.segmentation.size;
            if u64::from(h) * u64::from(w) > crate::mask::MAX_PIXELS {
                return Err(OutputError::invalid(
                    path,
                    line,
                    frame,
                    Some(&o.id),
                    format!(
                        "mask size {h}x{w} is larger than any video frame (at most {} pixels)",
                        crate::mask::MAX_PIXELS
                    ),
                ));
            }
            if !o.score.is_finite() || !o.iou.is_finite() {
                return Err(OutputError::invalid(
                    path,
                    line,
                    frame,
                    Some(&o.id),
                    "score or iou is not finite",
                ));
            }
        }
        Ok(())
    }
}

/// Streaming writer of result lines. Each line is written whole and flushed; frame numbers
/// must strictly increase. [`JsonlWriter::bytes_written`] is the offset after the last line,
/// which a checkpoint stores and [`JsonlWriter::resume`] truncates back to.
pub struct JsonlWriter<W: Write> {
    out: W,
    path: PathBuf,
    last_frame: Option<u64>,
    bytes: u64,
    lines: u64,
    buf: Vec<u8>,
}

impl JsonlWriter<BufWriter<File>> {
    /// Creates (truncates) `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, OutputError> {
        let path = path.as_ref();
        let f = crate::files::create_new(path).map_err(|e| OutputError::io(path, e))?;
        Ok(Self::new(BufWriter::new(f), path))
    }

    /// Reopens `path` after a checkpoint: cuts it to `offset` (the `bytes_written` saved with
    /// the checkpoint) and continues after `last_frame`, the last frame written before it.
    pub fn resume(
        path: impl AsRef<Path>,
        offset: u64,
        last_frame: Option<u64>,
    ) -> Result<Self, OutputError> {
        let path = path.as_ref();
        let f = open_truncated(path, offset, false)?;
        let mut w = Self::new(BufWriter::new(f), path);
        w.bytes = offset;
        w.last_frame = last_frame;
        Ok(w)
    }

    /// Flushes and fsyncs the file.
    pub fn sync(&mut self) -> Result<(), OutputError> {
        self.out
            .flush()
            .map_err(|e| OutputError::io(&self.path, e))?;
        self.out
            .get_ref()
            .sync_all()
            .map_err(|e| OutputError::io(&self.path, e))
    }

    /// Flushes, fsyncs and closes the file.
    pub fn close(mut self) -> Result<(), OutputError> {
        self.sync()
    }
}

/// Opens `path` to continue writing after its first `offset` bytes (a resumed output): what
/// follows them is cut off and the file positioned there. With `create`, a missing file is
/// created (empty, so only `offset` 0 fits). A file shorter than `offset` is
/// [`OutputError::Truncated`]. The one "truncate and continue" of the resumable outputs
/// ([`JsonlWriter::resume`] and the annotate job's partial output).
pub fn open_truncated(path: &Path, offset: u64, create: bool) -> Result<File, OutputError> {
    let io = |e| OutputError::io(path, e);
    // Never through a symlink planted under the output's name.
    let mut f = OpenOptions::new()
        .custom_flags(libc::O_NOFOLLOW)
        .create(create)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    if len < offset {
        return Err(OutputError::Truncated {
            path: path.to_path_buf(),
            offset,
            len,
        });
    }
    f.set_len(offset).map_err(io)?;
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    Ok(f)
}

impl<W: Write> JsonlWriter<W> {
    /// A writer on any sink; `name` is used in error messages.
    pub fn new(out: W, name: impl AsRef<Path>) -> Self {
        Self {
            out,
            path: name.as_ref().to_path_buf(),
            last_frame: None,
            bytes: 0,
            lines: 0,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Writes one frame's line and flushes it.
    pub fn write_frame(&mut self, rec: &FrameRecord) -> Result<(), OutputError> {
        let line = self.lines + 1;
        if let Some(prev) = self.last_frame
            && rec.frame_number <= prev
        {
            return Err(OutputError::invalid(
                &self.path,
                line,
                rec.frame_number,
                None,
                format!("frames must be written in increasing order (previous frame {prev})"),
            ));
        }
        rec.check(&self.path, line)?;
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, rec).map_err(|e| {
            OutputError::invalid(&self.path, line, rec.frame_number, None, e.to_string())
        })?;
        self.buf.push(b'\n');
        self.out
            .write_all(&self.buf)
            .and_then(|()| self.out.flush())
            .map_err(|e| OutputError::io(&self.path, e))?;
        self.bytes += self.buf.len() as u64;
        self.lines += 1;
        self.last_frame = Some(rec.frame_number);
        Ok(())
    }

    /// Bytes of complete lines written so far (including any resumed prefix).
    pub fn bytes_written(&self) -> u64 {
        self.bytes
    }

    /// The last frame number written.
    pub fn last_frame(&self) -> Option<u64> {
        self.last_frame
    }

    /// Flushes and returns the sink.
    pub fn into_inner(mut self) -> Result<W, OutputError> {
        self.out
            .flush()
            .map_err(|e| OutputError::io(&self.path, e))?;
        Ok(self.out)
    }
}

/// Streaming reader of result lines: an iterator of [`FrameRecord`]s. Blank lines are
/// skipped; frame numbers must strictly increase and object ids be unique per frame.
pub struct JsonlReader<R: BufRead> {
    inner: R,
    path: PathBuf,
    line: u64,
    last_frame: Option<u64>,
    buf: String,
    failed: bool,
}

impl JsonlReader<BufReader<File>> {
    /// Opens `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OutputError> {
        let path = path.as_ref();
        let f = File::open(path).map_err(|e| OutputError::io(path, e))?;
        Ok(Self::new(BufReader::with_capacity(1 << 16, f), path))
    }
}

impl<R: BufRead> JsonlReader<R> {
    /// A reader on any source; `name` is used in error messages.
    pub fn new(inner: R, name: impl AsRef<Path>) -> Self {
        Self {
            inner,
            path: name.as_ref().to_path_buf(),
            line: 0,
            last_frame: None,
            buf: String::new(),
            failed: false,
        }
    }

    /// The file name used in messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The 1-based line number of the record returned last.
    pub fn line(&self) -> u64 {
        self.line
    }

    fn read_one(&mut self) -> Option<Result<FrameRecord, OutputError>> {
        loop {
            self.buf.clear();
            match self.inner.read_line(&mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => {
                    return Some(Err(OutputError::Other {
                        path: self.path.clone(),
                        reason: format!("line {}: {e}", self.line + 1),
                    }));
                }
            }
            self.line += 1;
            if self.buf.trim().is_empty() {
                continue;
            }
            let rec: FrameRecord = match serde_json::from_str(&self.buf) {
                Ok(r) => r,
                Err(source) => {
                    return Some(Err(OutputError::Parse {
                        path: self.path.clone(),
                        line: self.line,
                        source,
                    }));
                }
            };
            if let Some(prev) = self.last_frame
                && rec.frame_number <= prev
            {
                return Some(Err(OutputError::invalid(
                    &self.path,
                    self.line,
                    rec.frame_number,
                    None,
                    format!("frame numbers must increase (previous line has frame {prev})"),
                )));
            }
            if let Err(e) = rec.check(&self.path, self.line) {
                return Some(Err(e));
            }
            self.last_frame = Some(rec.frame_number);
            return Some(Ok(rec));
        }
    }

    /// Decodes the mask of `obj` (read from the line returned last), naming file, line,
    /// frame and object on failure.
    pub fn decode(&self, frame: u64, obj: &ObjectRecord) -> Result<Rle, OutputError> {
        obj.rle().map_err(|e| {
            OutputError::invalid(&self.path, self.line, frame, Some(&obj.id), e.to_string())
        })
    }
}

impl<R: BufRead> Iterator for JsonlReader<R> {
    type Item = Result<FrameRecord, OutputError>;

    /// The next record; after an error the iteration ends.
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let r = self.read_one();
        if matches!(r, Some(Err(_))) {
            self.failed = true;
        }
        r
    }
}
