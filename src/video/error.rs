//! The error type of the video stage: one variant per kind of bad input, each message one line
//! that names the file.

use std::path::{Path, PathBuf};

/// Everything that can go wrong while opening, indexing, decoding or converting a video.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// The path does not exist.
    #[error("{}: no such file or directory", path.display())]
    NotFound { path: PathBuf },
    /// A FIFO, a device or a socket: reading one could block forever or never end.
    #[error("{}: not a regular file or a folder (FIFOs, devices and sockets are refused)", path.display())]
    NotRegular { path: PathBuf },
    /// The file exists but is not something densam can read as a video.
    #[error("{}: not a video ({reason})", path.display())]
    NotAVideo { path: PathBuf, reason: String },
    /// The container has no video stream (audio-only, subtitles, ...).
    #[error("{}: no video stream (audio-only or data file)", path.display())]
    NoVideoStream { path: PathBuf },
    /// The video stream has no frames at all.
    #[error("{}: the video has no frames", path.display())]
    NoFrames { path: PathBuf },
    /// The container gives no presentation timestamps, so frames cannot be numbered exactly.
    #[error("{}: no presentation timestamps for frame packets ({reason})", path.display())]
    NoTimestamps { path: PathBuf, reason: String },
    /// A frame failed to decode (corrupt data).
    #[error("{}: frame {frame} is corrupt ({reason})", path.display())]
    CorruptFrame {
        path: PathBuf,
        frame: usize,
        reason: String,
    },
    /// A frame listed in the index never came out of the decoder (truncated or corrupt file).
    #[error("{}: frame {frame} is missing (truncated or corrupt file)", path.display())]
    MissingFrame { path: PathBuf, frame: usize },
    /// A frame number at or past the end was asked for.
    #[error("{}: frame {frame} is past the end (the video has {count} frames)", path.display())]
    PastEnd {
        path: PathBuf,
        frame: usize,
        count: usize,
    },
    /// A frame directory that is not usable (mixed names, mixed sizes, ...).
    #[error("{}: {reason}", path.display())]
    FrameDir { path: PathBuf, reason: String },
    /// An image file could not be read or decoded.
    #[error("{}: cannot read image ({reason})", path.display())]
    Image { path: PathBuf, reason: String },
    /// Video files need the `ffmpeg` feature, which this build lacks.
    #[error("{}: video files need a densam built with the `ffmpeg` feature (this build reads frame directories and images only)", path.display())]
    NoFfmpeg { path: PathBuf },
    /// An FFmpeg call failed outside the cases above.
    #[error("{}: {context}: {reason}", path.display())]
    Ffmpeg {
        path: PathBuf,
        context: String,
        reason: String,
    },
    /// Writing an output file failed.
    #[error("{}: cannot write ({reason})", path.display())]
    Write { path: PathBuf, reason: String },
    /// A bad argument (image size 0, an unsorted frame list, ...).
    #[error("{}: {reason}", path.display())]
    InvalidArgument { path: PathBuf, reason: String },
    /// The decoding thread went away without saying why (it panicked).
    #[error("{}: the decoding thread stopped unexpectedly", path.display())]
    DecoderThread { path: PathBuf },
}

/// The kinds of [`VideoError`] a command maps to exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Usage,
    Input,
    Output,
    Internal,
}

impl VideoError {
    /// The frame number the error is about, for errors about one frame.
    pub fn frame(&self) -> Option<usize> {
        match self {
            VideoError::CorruptFrame { frame, .. }
            | VideoError::MissingFrame { frame, .. }
            | VideoError::PastEnd { frame, .. } => Some(*frame),
            _ => None,
        }
    }

    /// What kind of failure this is, for a command's exit code: a bad argument, an output that
    /// could not be written, a failure of densam itself, or (everything else) bad input.
    pub fn kind(&self) -> ErrorKind {
        match self {
            VideoError::InvalidArgument { .. } => ErrorKind::Usage,
            VideoError::Write { .. } => ErrorKind::Output,
            VideoError::DecoderThread { .. } => ErrorKind::Internal,
            _ => ErrorKind::Input,
        }
    }

    /// Whether the error concerns a single frame, so a stream may skip it and go on.
    pub fn is_frame_error(&self) -> bool {
        matches!(
            self,
            VideoError::CorruptFrame { .. } | VideoError::MissingFrame { .. }
        )
    }

    pub(crate) fn invalid(path: &Path, reason: impl Into<String>) -> Self {
        VideoError::InvalidArgument {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
