//! Video input: opening a video (a file through FFmpeg, a directory of numbered JPEG/PNG
//! frames, or a single image), its exact frame index (frame N = N-th frame in presentation
//! order, with pts and seconds), frame-accurate random access, a threaded frame stream over all
//! frames / a stride / a range / an explicit list, and the conversion of frames to SAM 2's S×S
//! uint8 RGB model image (Pillow-exact bicubic resize; the normalisation that follows is the
//! model's, `crate::model::image_input`).
//!
//! ```no_run
//! use densam::video::{model_input_rgb, Selection, StreamOptions, VideoSource};
//! let video = VideoSource::open("clip.mp4".as_ref())?;
//! for frame in video.frames(Selection::Stride { start: 0, end: None, step: 2 }, StreamOptions::default())? {
//!     let frame = frame?;
//!     let image = model_input_rgb(&frame.rgb, 1024); // 1024 x 1024 RGB bytes
//!     # let _ = image;
//! }
//! # Ok::<(), densam::video::VideoError>(())
//! ```

mod cli;
mod dir;
mod error;
#[cfg(feature = "ffmpeg")]
mod ffmpeg;
mod frame;
mod jpeg;
mod model_input;
mod resize;
mod stream;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use cli::{BenchReport, bench_decode, extract, probe_json};
pub use dir::read_image;
pub use error::{ErrorKind, VideoError};
pub use frame::{Frame, FrameInfo, RgbFrame, Transform};
pub use model_input::{DEFAULT_IMAGE_SIZE, model_input_rgb, model_rgb_tensor};
pub use resize::resize_bicubic;
pub use stream::{DEFAULT_QUEUE_FRAMES, FrameStream};

/// What a frame error does to a stream (a corrupt frame, or a frame of the index that the
/// decoder never produced, as in a truncated file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ErrorPolicy {
    /// Yield the error and end the stream.
    #[default]
    Stop,
    /// Yield the error and go on with the next wanted frame.
    Skip,
}

/// Which frames a stream yields (frame numbers in presentation order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Every frame.
    All,
    /// Frames `start..end` (`end` clipped to the frame count; `None` = to the end).
    Range { start: usize, end: Option<usize> },
    /// Frames `start, start + step, ...` below `end` (`None` = to the end).
    Stride {
        start: usize,
        end: Option<usize>,
        step: usize,
    },
    /// An explicit strictly increasing list; every entry must be below the frame count.
    List(Vec<usize>),
}

/// Options of a frame stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamOptions {
    /// Decoded RGB frames the queue holds ahead of the consumer (at least 1). Memory held by the
    /// queue is at most `queue_frames * width * height * 3` bytes, plus one frame being
    /// converted and FFmpeg's own decoder buffers (a few frames).
    pub queue_frames: usize,
    /// Corrupt or missing frames: stop or skip.
    pub on_error: ErrorPolicy,
    /// Decoder threads (0 = FFmpeg's automatic choice, one per core).
    pub threads: usize,
    /// Also compute each frame's S×S uint8 model image (`Frame::model_rgb`), optionally after a
    /// first downscale of the source frame to a fixed size, so the resize overlaps the
    /// consumer's work.
    pub model_rgb: Option<ModelRgb>,
    /// Threads that compute the model images (`model_rgb`) while the
    /// decoding thread goes on decoding; frames still come out in order. 0 or 1: on the
    /// decoding thread. At most `queue_frames` frames are in flight in total.
    pub prepare_threads: usize,
}

/// The S×S uint8 model image a stream computes per frame (see [`StreamOptions::model_rgb`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelRgb {
    /// SAM 2's input size S.
    pub size: usize,
    /// A first Pillow-bicubic downscale of the source frame to `(width, height)` (`annotate
    /// --video-scale-factor`, the seed script's `--video_scale_factor`), before the resize to
    /// S×S.
    pub pre_resize: Option<(usize, usize)>,
}

impl ModelRgb {
    /// The model image of a decoded frame: the optional first downscale, then S×S.
    pub fn apply(&self, rgb: &RgbFrame) -> RgbFrame {
        match self.pre_resize {
            Some((w, h)) => model_input_rgb(&resize_bicubic(rgb, w, h), self.size),
            None => model_input_rgb(rgb, self.size),
        }
    }
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            queue_frames: DEFAULT_QUEUE_FRAMES,
            on_error: ErrorPolicy::Stop,
            threads: 0,
            model_rgb: None,
            prepare_threads: 0,
        }
    }
}

/// Options for opening a video.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpenOptions {
    /// Frame rate assumed for frame directories and images (which carry no timing).
    pub dir_fps: f64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions { dir_fps: 30.0 }
    }
}

/// What `densam probe` reports about a video.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct VideoInfo {
    /// "file", "frames_dir" or "image".
    pub source: String,
    /// Displayed width (after the rotation metadata is applied).
    pub width: usize,
    /// Displayed height (after the rotation metadata is applied).
    pub height: usize,
    /// Exact number of frames, from the index.
    pub frame_count: usize,
    /// The container's own frame count (a hint only).
    pub container_frame_count: Option<u64>,
    /// Average frame rate (FFmpeg's avg_frame_rate, else from the index).
    pub fps_avg: f64,
    /// Nominal frame rate (FFmpeg's r_frame_rate).
    pub fps_nominal: f64,
    pub duration_s: f64,
    pub codec: String,
    pub pix_fmt: Option<String>,
    /// Clockwise rotation applied for display, degrees (0, 90, 180, 270).
    pub rotation: i32,
    /// Variable frame rate: the pts steps are not all equal.
    pub vfr: bool,
    /// Time base of the pts, (num, den).
    pub time_base: (i32, i32),
    pub first_pts: i64,
    pub last_pts: i64,
    /// A read error that ended the demux pass early (truncated file); frames after it are not
    /// in the index.
    pub demux_error: Option<String>,
}

impl VideoInfo {
    /// Frames the container lists past the end of the index, when a read error ended the demux
    /// pass early (a truncated file): `(first such frame, the container's frame count, the
    /// error)`. The count is exact for mov/mp4, whose sample tables list every frame up front
    /// (a faststart file cut short keeps them); elsewhere it is the container's hint.
    pub fn unreadable_tail(&self) -> Option<(u64, u64, &str)> {
        let error = self.demux_error.as_deref()?;
        let listed = self.container_frame_count?;
        let have = self.frame_count as u64;
        (listed > have).then_some((have, listed, error))
    }
}

#[derive(Debug)]
enum Kind {
    Dir(Arc<dir::DirIndex>),
    #[cfg(feature = "ffmpeg")]
    File(Arc<ffmpeg::FileIndex>),
}

/// An opened video with its frame index. Cheap to share by reference; each stream or seek opens
/// its own decoder.
#[derive(Debug)]
pub struct VideoSource {
    path: PathBuf,
    kind: Kind,
}

/// Hands one frame (or frame error) to a consumer; false = stop.
pub(crate) type Sink<'a> = &'a mut dyn FnMut(Result<Frame, VideoError>) -> bool;

impl VideoSource {
    /// Opens a video file, a frame directory or a single image, and builds its frame index
    /// (for files one demux pass, no decoding).
    pub fn open(path: &Path) -> Result<Self, VideoError> {
        Self::open_with(path, OpenOptions::default())
    }

    /// [`VideoSource::open`] with options.
    pub fn open_with(path: &Path, options: OpenOptions) -> Result<Self, VideoError> {
        if !path.exists() {
            return Err(VideoError::NotFound {
                path: path.to_path_buf(),
            });
        }
        if !path.is_dir() && !path.is_file() {
            // A FIFO, a device or a socket: reading it could block forever or never end.
            return Err(VideoError::NotRegular {
                path: path.to_path_buf(),
            });
        }
        if options.dir_fps.is_nan() || options.dir_fps <= 0.0 {
            return Err(VideoError::invalid(path, "the frame rate must be positive"));
        }
        let kind = if path.is_dir() {
            Kind::Dir(Arc::new(dir::index_dir(path, options.dir_fps)?))
        } else if dir::is_image_path(path) {
            Kind::Dir(Arc::new(dir::index_image(path, options.dir_fps)?))
        } else {
            Self::open_file(path)?
        };
        Ok(VideoSource {
            path: path.to_path_buf(),
            kind,
        })
    }

    #[cfg(feature = "ffmpeg")]
    fn open_file(path: &Path) -> Result<Kind, VideoError> {
        Ok(Kind::File(Arc::new(ffmpeg::index_file(path)?)))
    }

    #[cfg(not(feature = "ffmpeg"))]
    fn open_file(path: &Path) -> Result<Kind, VideoError> {
        Err(VideoError::NoFfmpeg {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Width, height, frame count, frame rates, codec, rotation, ...
    pub fn info(&self) -> &VideoInfo {
        match &self.kind {
            Kind::Dir(d) => &d.info,
            #[cfg(feature = "ffmpeg")]
            Kind::File(f) => &f.info,
        }
    }

    pub fn frame_count(&self) -> usize {
        self.info().frame_count
    }

    /// Displayed width (after rotation).
    pub fn width(&self) -> usize {
        self.info().width
    }

    /// Displayed height (after rotation).
    pub fn height(&self) -> usize {
        self.info().height
    }

    /// The pts of every frame, in frame order (strictly increasing).
    pub fn pts(&self) -> &[i64] {
        match &self.kind {
            Kind::Dir(d) => &d.pts,
            #[cfg(feature = "ffmpeg")]
            Kind::File(f) => &f.pts,
        }
    }

    /// Frame number, pts and seconds of frame `n`.
    pub fn frame_info(&self, n: usize) -> Result<FrameInfo, VideoError> {
        self.check_frame(n)?;
        Ok(match &self.kind {
            Kind::Dir(d) => d.frame_info(n),
            #[cfg(feature = "ffmpeg")]
            Kind::File(f) => ffmpeg::frame_info(f, n),
        })
    }

    fn check_frame(&self, n: usize) -> Result<(), VideoError> {
        let count = self.frame_count();
        if n >= count {
            return Err(VideoError::PastEnd {
                path: self.path.clone(),
                frame: n,
                count,
            });
        }
        Ok(())
    }

    /// Frame `n` (frame-accurate seek: keyframe seek, then decode to the frame with N's pts).
    pub fn read_frame(&self, n: usize) -> Result<Frame, VideoError> {
        self.check_frame(n)?;
        let mut out = None;
        self.read_into(
            &[n],
            StreamOptions {
                threads: 0,
                ..Default::default()
            },
            &mut |r| {
                out = Some(r);
                false
            },
        )?;
        out.unwrap_or(Err(VideoError::MissingFrame {
            path: self.path.clone(),
            frame: n,
        }))
    }

    /// The sorted, unique frame numbers of a selection.
    pub fn resolve(&self, selection: &Selection) -> Result<Vec<usize>, VideoError> {
        let count = self.frame_count();
        let clip = |end: Option<usize>| end.map_or(count, |e| e.min(count));
        Ok(match selection {
            Selection::All => (0..count).collect(),
            Selection::Range { start, end } => (*start..clip(*end)).collect(),
            Selection::Stride { start, end, step } => {
                if *step == 0 {
                    return Err(VideoError::invalid(
                        &self.path,
                        "the frame stride must be >= 1",
                    ));
                }
                (*start..clip(*end)).step_by(*step).collect()
            }
            Selection::List(list) => {
                if list.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(VideoError::invalid(
                        &self.path,
                        "the frame list must be strictly increasing",
                    ));
                }
                if let Some(&last) = list.last() {
                    self.check_frame(last)?;
                }
                list.clone()
            }
        })
    }

    /// Decodes `wanted` on the calling thread, handing each frame to `sink`.
    pub(crate) fn read_into(
        &self,
        wanted: &[usize],
        options: StreamOptions,
        sink: Sink<'_>,
    ) -> Result<(), VideoError> {
        match &self.kind {
            Kind::Dir(d) => d.read(wanted, options.on_error, sink),
            #[cfg(feature = "ffmpeg")]
            Kind::File(f) => {
                let mut reader = ffmpeg::FileReader::open(f.clone(), options.threads)?;
                reader.read(wanted, options.on_error, sink);
            }
        }
        Ok(())
    }

    /// A stream of the selected frames in presentation order, decoded on its own thread into a
    /// bounded queue (see [`StreamOptions::queue_frames`]). Only the selected frames are
    /// converted to RGB.
    pub fn frames(
        &self,
        selection: Selection,
        options: StreamOptions,
    ) -> Result<FrameStream, VideoError> {
        let wanted = self.resolve(&selection)?;
        let source = VideoSource {
            path: self.path.clone(),
            kind: self.kind.share(),
        };
        Ok(FrameStream::spawn(source, wanted, options))
    }

    /// Times the RGB conversion of the first `k` frames: (seconds, frames converted).
    pub(crate) fn time_conversion(
        &self,
        threads: usize,
        k: usize,
    ) -> Result<(f64, usize), VideoError> {
        let _ = (threads, k);
        match &self.kind {
            Kind::Dir(_) => Ok((0.0, 0)),
            #[cfg(feature = "ffmpeg")]
            Kind::File(f) => ffmpeg::time_conversion(f.clone(), threads, k),
        }
    }

    /// Decodes the whole video and counts the frames the decoder gives (double check of the
    /// index, `probe --decode-count`).
    pub fn count_decoded_frames(&self, threads: usize) -> Result<usize, VideoError> {
        let _ = threads;
        match &self.kind {
            Kind::Dir(d) => Ok(d.files.len()),
            #[cfg(feature = "ffmpeg")]
            Kind::File(f) => ffmpeg::FileReader::open(f.clone(), threads)?.count_decoded(),
        }
    }
}

impl Kind {
    fn share(&self) -> Kind {
        match self {
            Kind::Dir(d) => Kind::Dir(d.clone()),
            #[cfg(feature = "ffmpeg")]
            Kind::File(f) => Kind::File(f.clone()),
        }
    }
}
