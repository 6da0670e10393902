//! The threaded frame stream: a decoding thread fills a bounded crossbeam channel, the consumer
//! iterates over it, so decoding overlaps model work with bounded memory.

use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, bounded};

use super::error::VideoError;
use super::frame::Frame;
use super::model_input::model_input;
use super::{StreamOptions, VideoSource};

/// Default queue capacity in frames: 4 decoded RGB frames (4 × 1408² × 3 B ≈ 24 MB for a 1408²
/// video, 4 × 1920 × 1080 × 3 B ≈ 25 MB for 1080p).
pub const DEFAULT_QUEUE_FRAMES: usize = 4;

/// Frames in presentation order, each `Ok(Frame)` (number, pts, seconds, RGB) or a frame error
/// (`VideoError::CorruptFrame` / `MissingFrame`, naming the frame; the stream ends after it
/// under `ErrorPolicy::Stop`, goes on under `Skip`) or a fatal error (last item).
///
/// Dropping the stream stops the decoding thread (after the frame it is decoding).
pub struct FrameStream {
    rx: Option<Receiver<Result<Frame, VideoError>>>,
    handle: Option<JoinHandle<()>>,
    path: std::path::PathBuf,
    total: usize,
}

impl FrameStream {
    pub(crate) fn spawn(source: VideoSource, wanted: Vec<usize>, options: StreamOptions) -> Self {
        let (tx, rx) = bounded(options.queue_frames.max(1));
        let path = source.path().to_path_buf();
        let total = wanted.len();
        let handle = std::thread::Builder::new()
            .name("densam-decode".into())
            .spawn(move || {
                let size = options.model_input_size;
                let mut sink = |mut item: Result<Frame, VideoError>| {
                    if let (Ok(frame), Some(s)) = (&mut item, size) {
                        frame.model_input = Some(model_input(&frame.rgb, s));
                    }
                    tx.send(item).is_ok()
                };
                if let Err(e) = source.read_into(&wanted, options, &mut sink) {
                    let _ = tx.send(Err(e));
                }
            })
            .ok();
        FrameStream {
            rx: Some(rx),
            handle,
            path,
            total,
        }
    }

    /// How many frames the selection asks for.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

impl Iterator for FrameStream {
    type Item = Result<Frame, VideoError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rx = self.rx.as_ref()?;
        match rx.recv() {
            Ok(item) => Some(item),
            Err(_) => {
                // The thread has finished: normally, or by a panic (then say so once).
                self.rx = None;
                let panicked = match self.handle.take() {
                    Some(h) => h.join().is_err(),
                    None => true,
                };
                panicked.then(|| {
                    Err(VideoError::DecoderThread {
                        path: self.path.clone(),
                    })
                })
            }
        }
    }
}

impl Drop for FrameStream {
    fn drop(&mut self) {
        // Closing the receiver makes the thread's next send fail, and the thread returns.
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
