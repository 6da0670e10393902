//! The threaded frame stream: a decoding thread fills a bounded crossbeam channel, the consumer
//! iterates over it, so decoding overlaps model work with bounded memory. Optionally a pool of
//! preparing threads computes the model images (resizes) of several frames at once, and the
//! consumer puts them back in order.

use std::collections::BTreeMap;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded};

use super::error::VideoError;
use super::frame::Frame;
use super::{StreamOptions, VideoSource};

type Item = Result<Frame, VideoError>;

/// Computes what `options` asks for beyond the decoded frame (model images).
fn prepare(item: &mut Item, options: &StreamOptions) {
    let Ok(frame) = item else { return };
    if let Some(m) = options.model_rgb {
        frame.model_rgb = Some(m.apply(&frame.rgb));
    }
}

/// The in-order end of a stream with a preparing pool: results arrive tagged with their
/// sequence number, possibly out of order; a slot token goes back to the decoder for every
/// item handed out, which bounds the items in flight.
struct Pool {
    rx: Receiver<(usize, Item)>,
    slots: Sender<()>,
    pending: BTreeMap<usize, Item>,
    next: usize,
    workers: Vec<JoinHandle<()>>,
}

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
    pool: Option<Pool>,
    handle: Option<JoinHandle<()>>,
    path: std::path::PathBuf,
    total: usize,
}

impl FrameStream {
    pub(crate) fn spawn(source: VideoSource, wanted: Vec<usize>, options: StreamOptions) -> Self {
        let path = source.path().to_path_buf();
        let total = wanted.len();
        if options.prepare_threads > 1 && options.model_rgb.is_some() {
            return Self::spawn_pool(source, wanted, options, path, total);
        }
        let (tx, rx) = bounded(options.queue_frames.max(1));
        let handle = std::thread::Builder::new()
            .name("densam-decode".into())
            .spawn(move || {
                let mut sink = |mut item: Item| {
                    prepare(&mut item, &options);
                    tx.send(item).is_ok()
                };
                if let Err(e) = source.read_into(&wanted, options, &mut sink) {
                    let _ = tx.send(Err(e));
                }
            })
            .ok();
        FrameStream {
            rx: Some(rx),
            pool: None,
            handle,
            path,
            total,
        }
    }

    /// Decoding thread → `prepare_threads` preparing threads → in-order consumer, with at most
    /// `queue_frames` (at least `prepare_threads`) frames in flight.
    fn spawn_pool(
        source: VideoSource,
        wanted: Vec<usize>,
        options: StreamOptions,
        path: std::path::PathBuf,
        total: usize,
    ) -> Self {
        let n = options.prepare_threads;
        let cap = options.queue_frames.max(n);
        let (slots_tx, slots_rx) = bounded::<()>(cap);
        for _ in 0..cap {
            let _ = slots_tx.send(());
        }
        let (work_tx, work_rx) = bounded::<(usize, Item)>(cap);
        let (done_tx, done_rx) = bounded::<(usize, Item)>(cap);
        let handle = std::thread::Builder::new()
            .name("densam-decode".into())
            .spawn(move || {
                let mut seq = 0usize;
                let mut sink = |item: Item| {
                    // Wait for a free slot (none comes back once the consumer is gone).
                    if slots_rx.recv().is_err() {
                        return false;
                    }
                    let ok = work_tx.send((seq, item)).is_ok();
                    seq += 1;
                    ok
                };
                if let Err(e) = source.read_into(&wanted, options, &mut sink) {
                    let _ = work_tx.send((seq, Err(e)));
                }
            })
            .ok();
        let workers = (0..n)
            .filter_map(|i| {
                let rx = work_rx.clone();
                let tx = done_tx.clone();
                std::thread::Builder::new()
                    .name(format!("densam-prepare-{i}"))
                    .spawn(move || {
                        while let Ok((k, mut item)) = rx.recv() {
                            prepare(&mut item, &options);
                            if tx.send((k, item)).is_err() {
                                break;
                            }
                        }
                    })
                    .ok()
            })
            .collect();
        FrameStream {
            rx: None,
            pool: Some(Pool {
                rx: done_rx,
                slots: slots_tx,
                pending: BTreeMap::new(),
                next: 0,
                workers,
            }),
            handle,
            path,
            total,
        }
    }

    /// The next item of a pooled stream, in order; `None` once every thread has finished and
    /// nothing is pending.
    fn next_pooled(&mut self) -> Option<Option<Item>> {
        let pool = self.pool.as_mut()?;
        loop {
            if let Some(item) = pool.pending.remove(&pool.next) {
                pool.next += 1;
                let _ = pool.slots.send(());
                return Some(Some(item));
            }
            match pool.rx.recv() {
                Ok((k, item)) => {
                    pool.pending.insert(k, item);
                }
                Err(_) => {
                    // All preparing threads are done: nothing more will come. A gap can only
                    // follow a thread that died (a panic); hand out what is left in order.
                    if let Some((_, item)) = pool.pending.pop_first() {
                        return Some(Some(item));
                    }
                    return Some(None);
                }
            }
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
        if self.pool.is_some() {
            if let Some(Some(item)) = self.next_pooled() {
                return Some(item);
            }
            let pool = self.pool.take()?;
            drop(pool.rx);
            return self.finish(pool.workers);
        }
        let rx = self.rx.as_ref()?;
        match rx.recv() {
            Ok(item) => Some(item),
            Err(_) => {
                self.rx = None;
                self.finish(Vec::new())
            }
        }
    }
}

impl FrameStream {
    /// The end of the stream, once nothing more will come: joins the preparing threads and the
    /// decoder, which finished normally or by a panic (or never started): then an error, once.
    fn finish(&mut self, workers: Vec<JoinHandle<()>>) -> Option<Item> {
        let mut panicked = false;
        for w in workers {
            panicked |= w.join().is_err();
        }
        panicked |= match self.handle.take() {
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

impl Drop for FrameStream {
    fn drop(&mut self) {
        // Closing the receiver makes the thread's next send fail, and the thread returns.
        self.rx = None;
        if let Some(pool) = self.pool.take() {
            // No more slots and no receiver: the decoder and the preparing threads stop.
            drop(pool.slots);
            drop(pool.rx);
            for w in pool.workers {
                let _ = w.join();
            }
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
