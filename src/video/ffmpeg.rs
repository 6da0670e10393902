//! Video files through the system FFmpeg libraries (`ffmpeg` feature): the one-pass demux frame
//! index, pts-exact seeking, presentation-order decoding and the RGB24 conversion the ffmpeg
//! command line applies by default.
//!
//! Frames are identified by their presentation timestamp, never by counting after a seek: frame
//! N is the frame whose pts is the N-th smallest pts of the frame packets (packets flagged to be
//! discarded by an edit list and empty packets excluded).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use ff::codec::packet::{Mut as _, Ref as _};
use ff::ffi;
use ffmpeg_next as ff;

use super::error::VideoError;
use super::frame::{FrameInfo, RgbFrame, Transform};
use super::{ErrorPolicy, Sink, VideoInfo};

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = ff::init();
        ff::util::log::set_level(ff::util::log::Level::Fatal);
    });
}

/// One keyframe packet: its pts, its dts (if any) and the frame number its pts maps to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Keyframe {
    pub pts: i64,
    pub dts: Option<i64>,
    pub frame: usize,
}

/// The result of the demux pass over a file.
#[derive(Debug)]
pub(crate) struct FileIndex {
    pub path: PathBuf,
    pub stream_index: usize,
    pub time_base: (i32, i32),
    /// Sorted pts of every frame; frame N has pts `pts[N]`.
    pub pts: Vec<i64>,
    /// Keyframes in increasing pts order.
    pub keyframes: Vec<Keyframe>,
    pub transform: Transform,
    /// No pts on the packets (AVI with B-frames, raw H.264): frames are numbered by counting
    /// decoder output from the start of the file, and every seek decodes from the start.
    pub by_count: bool,
    pub info: VideoInfo,
}

impl FileIndex {
    /// Frame number of a pts, if it is one of the indexed frames.
    fn frame_of(&self, pts: i64) -> Option<usize> {
        self.pts.binary_search(&pts).ok()
    }

    /// Position in `keyframes` of the last keyframe whose pts is <= the pts of `frame`.
    fn keyframe_for(&self, frame: usize) -> Option<usize> {
        let t = self.pts[frame];
        let i = self.keyframes.partition_point(|k| k.pts <= t);
        i.checked_sub(1)
    }
}

fn ff_err(path: &Path, context: &str, e: impl std::fmt::Display) -> VideoError {
    VideoError::Ffmpeg {
        path: path.to_path_buf(),
        context: context.into(),
        reason: e.to_string(),
    }
}

fn rational(r: ffi::AVRational) -> Option<f64> {
    (r.num > 0 && r.den > 0).then(|| r.num as f64 / r.den as f64)
}

/// `av_read_frame` into a reused `packet`, releasing the buffer it still holds first.
/// `av_read_frame` (libavformat 59, FFmpeg 5.1) blanks the packet it is given without
/// unreferencing its buffer, and ffmpeg-next's `Packet::read` does not unreference it either, so
/// reading into one packet over and over leaked every packet read: the whole compressed file
/// during the index pass (`densam probe` peak RSS 152 / 176 / 234 MiB for the 2-, 10- and
/// 30-minute videos of scripts/bench-tracker-memory, 147 MiB for all three now), and every packet
/// demuxed by a decode pass.
fn read_packet(
    packet: &mut ff::Packet,
    input: &mut ff::format::context::Input,
) -> Result<(), ff::Error> {
    // SAFETY: the packet is valid (blank or filled by av_read_frame); unreferencing leaves it
    // blank.
    unsafe { ffi::av_packet_unref(packet.as_mut_ptr()) };
    packet.read(input)
}

/// `ff::format::input` for any path: that one converts the path through `&str` and panics on a
/// file name that is not UTF-8; here the path's bytes go to FFmpeg as they are.
fn open_format(path: &Path) -> Result<ff::format::context::Input, ff::Error> {
    use std::os::unix::ffi::OsStrExt;
    let c =
        std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| ff::Error::InvalidData)?;
    let mut ps = std::ptr::null_mut();
    // SAFETY: `c` is a NUL-terminated path; on success `ps` is an open format context, owned by
    // the returned `Input` (which closes it) or closed here when the stream info fails.
    unsafe {
        match ffi::avformat_open_input(&mut ps, c.as_ptr(), std::ptr::null(), std::ptr::null_mut())
        {
            0 => match ffi::avformat_find_stream_info(ps, std::ptr::null_mut()) {
                r if r >= 0 => Ok(ff::format::context::Input::wrap(ps)),
                e => {
                    ffi::avformat_close_input(&mut ps);
                    Err(ff::Error::from(e))
                }
            },
            e => Err(ff::Error::from(e)),
        }
    }
}

/// Opens the input and picks the video stream: the largest non-cover-art video stream.
fn open_input(path: &Path) -> Result<(ff::format::context::Input, usize), VideoError> {
    init();
    if !path.exists() {
        return Err(VideoError::NotFound {
            path: path.to_path_buf(),
        });
    }
    let input = open_format(path).map_err(|e| match e {
        // The container parsed but ended before any packet: a video without frames.
        ff::Error::Eof => VideoError::NoFrames {
            path: path.to_path_buf(),
        },
        e => VideoError::NotAVideo {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    })?;
    let mut best: Option<(usize, i64)> = None;
    for st in input.streams() {
        let par = st.parameters();
        if par.medium() != ff::media::Type::Video {
            continue;
        }
        if st
            .disposition()
            .contains(ff::format::stream::Disposition::ATTACHED_PIC)
        {
            continue;
        }
        // SAFETY: codecpar of a stream of an open input is valid.
        let (w, h) = unsafe { ((*par.as_ptr()).width as i64, (*par.as_ptr()).height as i64) };
        if best.is_none_or(|(_, a)| w * h > a) {
            best = Some((st.index(), w * h));
        }
    }
    let Some((stream_index, _)) = best else {
        return Err(VideoError::NoVideoStream {
            path: path.to_path_buf(),
        });
    };
    Ok((input, stream_index))
}

/// Makes the demuxer skip every stream but ours.
fn discard_other_streams(input: &mut ff::format::context::Input, stream_index: usize) {
    // SAFETY: the streams array of an open input has nb_streams valid entries.
    unsafe {
        let ctx = input.as_mut_ptr();
        for i in 0..(*ctx).nb_streams as usize {
            if i != stream_index {
                (**(*ctx).streams.add(i)).discard = ffi::AVDiscard::AVDISCARD_ALL;
            }
        }
    }
}

fn display_transform(input: &ff::format::context::Input, stream_index: usize) -> Transform {
    let Some(st) = input.stream(stream_index) else {
        return Transform::Identity;
    };
    for sd in st.side_data() {
        if sd.kind() == ff::codec::packet::side_data::Type::DisplayMatrix && sd.data().len() >= 36 {
            let d = sd.data();
            let mut m = [0i32; 9];
            for (i, v) in m.iter_mut().enumerate() {
                *v = i32::from_ne_bytes([d[4 * i], d[4 * i + 1], d[4 * i + 2], d[4 * i + 3]]);
            }
            return Transform::from_display_matrix(&m);
        }
    }
    Transform::Identity
}

const PKT_FLAG_DISCARD: i32 = ffi::AV_PKT_FLAG_DISCARD;

/// Builds the frame index with one demux pass (no decoding).
pub(crate) fn index_file(path: &Path) -> Result<FileIndex, VideoError> {
    let (mut input, stream_index) = open_input(path)?;
    discard_other_streams(&mut input, stream_index);
    let transform = display_transform(&input, stream_index);
    let st = input.stream(stream_index).expect("picked stream exists");
    // SAFETY: stream and codecpar pointers of an open input are valid.
    let (tb, avg, nominal, st_duration, nb_frames, cw, ch, codec, pix_fmt) = unsafe {
        let s = st.as_ptr();
        let par = (*s).codecpar;
        let pix = ff::format::Pixel::from(std::mem::transmute::<i32, ffi::AVPixelFormat>(
            (*par).format,
        ));
        (
            (*s).time_base,
            (*s).avg_frame_rate,
            (*s).r_frame_rate,
            (*s).duration,
            (*s).nb_frames,
            (*par).width as usize,
            (*par).height as usize,
            st.parameters().id().name().to_string(),
            pix.descriptor().map(|d| d.name().to_string()),
        )
    };
    let fmt_duration = unsafe { (*input.as_ptr()).duration };
    // mov/mp4 list every sample up front (nb_frames is exact there, a hint elsewhere).
    let is_mov = input.format().name().contains("mov");

    let mut pts = Vec::new();
    let mut keys: Vec<(i64, Option<i64>)> = Vec::new();
    let mut missing_pts = 0usize;
    let mut discarded = 0usize;
    let mut demux_error = None;
    let mut packet = ff::Packet::empty();
    loop {
        match read_packet(&mut packet, &mut input) {
            Ok(()) => {}
            Err(ff::Error::Eof) => break,
            Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => continue,
            Err(e) => {
                demux_error = Some(e.to_string());
                break;
            }
        }
        if packet.stream() != stream_index || packet.size() == 0 {
            continue;
        }
        // SAFETY: the packet was just filled by av_read_frame.
        let flags = unsafe { (*packet.as_ptr()).flags };
        if flags & PKT_FLAG_DISCARD != 0 {
            discarded += 1;
            continue;
        }
        match packet.pts() {
            Some(p) => {
                pts.push(p);
                if packet.is_key() {
                    keys.push((p, packet.dts()));
                }
            }
            None => missing_pts += 1,
        }
    }
    let by_count = missing_pts > 0;
    if by_count {
        tracing::warn!(
            "{}: {missing_pts} frame packets have no pts; indexing by decoding the whole file, \
             and every seek decodes from the start (remux to .mkv/.mp4 to avoid this)",
            path.display()
        );
        pts = decode_timestamps(path)?;
        keys.clear();
    }
    if pts.is_empty() {
        return Err(VideoError::NoFrames {
            path: path.to_path_buf(),
        });
    }
    pts.sort_unstable();
    if let Some(w) = pts.windows(2).find(|w| w[0] == w[1]) {
        return Err(VideoError::NoTimestamps {
            path: path.to_path_buf(),
            reason: format!("two frame packets share pts {}", w[0]),
        });
    }
    keys.sort_unstable_by_key(|k| k.0);
    let keyframes: Vec<Keyframe> = keys
        .into_iter()
        .map(|(p, d)| Keyframe {
            pts: p,
            dts: d,
            frame: pts.binary_search(&p).unwrap_or(0),
        })
        .collect();

    let stream_tbf = tb.num as f64 / tb.den.max(1) as f64;
    let mut tb = tb;
    if by_count {
        // Frame numbers as pts, in a time base of one frame at the nominal rate.
        tb = match rational(nominal) {
            Some(_) => ffi::AVRational {
                num: nominal.den,
                den: nominal.num,
            },
            None => ffi::AVRational { num: 1, den: 25 },
        };
    }
    let tbf = tb.num as f64 / tb.den.max(1) as f64;
    let n = pts.len();
    let span = (pts[n - 1] - pts[0]) as f64 * tbf;
    let fps_avg = rational(avg).unwrap_or(if n > 1 && span > 0.0 {
        (n - 1) as f64 / span
    } else {
        0.0
    });
    let fps_nominal = rational(nominal).unwrap_or(fps_avg);
    let fps_avg = if by_count { 1.0 / tbf } else { fps_avg };
    let duration_s = if st_duration > 0 {
        st_duration as f64 * stream_tbf
    } else if fmt_duration > 0 {
        fmt_duration as f64 / ffi::AV_TIME_BASE as f64
    } else if fps_avg > 0.0 {
        span + 1.0 / fps_avg
    } else {
        span
    };
    let vfr = is_vfr(&pts);
    if is_mov && demux_error.is_none() && nb_frames > (n + discarded) as i64 {
        // mov/mp4 list every sample up front: fewer packets than samples is a truncated file.
        demux_error = Some(format!(
            "the container lists {nb_frames} frames but only {n} could be read (truncated file?)"
        ));
    }
    let (width, height) = if transform.swaps_axes() {
        (ch, cw)
    } else {
        (cw, ch)
    };
    let info = VideoInfo {
        source: "file".into(),
        width,
        height,
        frame_count: n,
        container_frame_count: (nb_frames > 0).then_some(nb_frames as u64),
        fps_avg,
        fps_nominal,
        duration_s,
        codec,
        pix_fmt,
        rotation: transform.degrees(),
        vfr,
        time_base: (tb.num, tb.den),
        first_pts: pts[0],
        last_pts: pts[n - 1],
        demux_error,
    };
    Ok(FileIndex {
        path: path.to_path_buf(),
        stream_index,
        time_base: (tb.num, tb.den),
        pts,
        keyframes,
        transform,
        by_count,
        info,
    })
}

/// Frame numbers 0..N of a file whose packets carry no pts, N counted by decoding it all.
fn decode_timestamps(path: &Path) -> Result<Vec<i64>, VideoError> {
    let (mut input, mut decoder) = open_decoder(path, 0)?;
    let stream_index = open_input(path)?.1;
    let mut ts = Vec::new();
    let mut frame = ff::frame::Video::empty();
    let mut packet = ff::Packet::empty();
    let mut drain = |decoder: &mut ff::decoder::Video, ts: &mut Vec<()>| {
        while decoder.receive_frame(&mut frame).is_ok() {
            ts.push(());
        }
    };
    loop {
        match read_packet(&mut packet, &mut input) {
            Ok(()) => {
                if packet.stream() == stream_index && packet.size() > 0 {
                    let _ = decoder.send_packet(&packet);
                    drain(&mut decoder, &mut ts);
                }
            }
            Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => {}
            Err(_) => break,
        }
    }
    let _ = decoder.send_eof();
    drain(&mut decoder, &mut ts);
    Ok((0..ts.len() as i64).collect())
}

/// Variable frame rate: some pts step differs from the median step by more than rounding.
fn is_vfr(pts: &[i64]) -> bool {
    if pts.len() < 3 {
        return false;
    }
    let mut d: Vec<i64> = pts.windows(2).map(|w| w[1] - w[0]).collect();
    d.sort_unstable();
    let med = d[d.len() / 2];
    let tol = 1.max(med / 100);
    d[0] < med - tol || d[d.len() - 1] > med + tol
}

/// Converts decoded frames to packed RGB24 like the ffmpeg CLI's auto-inserted scale filter:
/// swscale with `SWS_BICUBIC`, the input matrix from the frame's colorspace (BT.601 when
/// unspecified) and the input range from the frame's color range.
struct Converter {
    key: (i32, u32, u32, i32, i32),
    sws: ff::software::scaling::Context,
    out: ff::frame::Video,
}

fn convert(
    conv: &mut Option<Converter>,
    frame: &ff::frame::Video,
    path: &Path,
) -> Result<RgbFrame, VideoError> {
    // SAFETY: the frame was produced by the decoder and is valid.
    let (fmt, cs, range) = unsafe {
        (
            (*frame.as_ptr()).format,
            (*frame.as_ptr()).colorspace,
            (*frame.as_ptr()).color_range,
        )
    };
    let (w, h) = (frame.width(), frame.height());
    let key = (fmt, w, h, cs as i32, range as i32);
    if conv.as_ref().is_none_or(|c| c.key != key) {
        let mut sws = ff::software::scaling::Context::get(
            frame.format(),
            w,
            h,
            ff::format::Pixel::RGB24,
            w,
            h,
            ff::software::scaling::Flags::BICUBIC,
        )
        .map_err(|e| ff_err(path, "cannot set up RGB conversion", e))?;
        // SAFETY: plain swscale calls on a valid context; the coefficient tables are static.
        unsafe {
            let ctx = sws.as_mut_ptr();
            let mut inv_table: *mut i32 = std::ptr::null_mut();
            let mut table: *mut i32 = std::ptr::null_mut();
            let (mut src_range, mut dst_range, mut bri, mut con, mut sat) = (0, 0, 0, 0, 0);
            ffi::sws_getColorspaceDetails(
                ctx,
                &mut inv_table,
                &mut src_range,
                &mut table,
                &mut dst_range,
                &mut bri,
                &mut con,
                &mut sat,
            );
            // vf_scale's parse_yuv_type("auto", colorspace).
            let mut space = cs as i32;
            if !(1..=10).contains(&space) || space == 8 {
                space = ffi::AVColorSpace::AVCOL_SPC_BT470BG as i32;
            }
            let coeffs = ffi::sws_getCoefficients(space);
            if range != ffi::AVColorRange::AVCOL_RANGE_UNSPECIFIED {
                src_range = (range == ffi::AVColorRange::AVCOL_RANGE_JPEG) as i32;
            }
            ffi::sws_setColorspaceDetails(ctx, coeffs, src_range, coeffs, dst_range, bri, con, sat);
        }
        *conv = Some(Converter {
            key,
            sws,
            out: ff::frame::Video::empty(),
        });
    }
    let c = conv.as_mut().expect("converter set above");
    c.sws
        .run(frame, &mut c.out)
        .map_err(|e| ff_err(path, "RGB conversion failed", e))?;
    let (w, h) = (w as usize, h as usize);
    let stride = c.out.stride(0);
    let src = c.out.data(0);
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        data.extend_from_slice(&src[y * stride..y * stride + w * 3]);
    }
    Ok(RgbFrame {
        width: w,
        height: h,
        data,
    })
}

/// Where a decode restarts: a keyframe (position in `FileIndex::keyframes`) or a fresh open.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Restart {
    Key(usize),
    Open,
}

/// A decoder positioned somewhere in the file.
pub(crate) struct FileReader {
    index: Arc<FileIndex>,
    threads: usize,
    input: ff::format::context::Input,
    decoder: ff::decoder::Video,
    packet: ff::Packet,
    /// A decoded frame not consumed yet (frame number, frame).
    pending: Option<(usize, ff::frame::Video)>,
    /// Frame number of the last frame the decoder gave (None after a restart).
    last: Option<usize>,
    /// The first frame number that came out since the last restart.
    first_out: Option<usize>,
    /// Freshly opened: nothing read yet, so the next frame out is frame 0's GOP.
    fresh: bool,
    /// Every frame the decoder gave, indexed or not (for `--decode-count`).
    raw_out: usize,
    /// Frames out since the file was opened (numbering of `FileIndex::by_count` files).
    counted: usize,
    sent_eof: bool,
    finished: bool,
    conv: Option<Converter>,
}

fn open_decoder(
    path: &Path,
    threads: usize,
) -> Result<(ff::format::context::Input, ff::decoder::Video), VideoError> {
    let (mut input, stream_index) = open_input(path)?;
    discard_other_streams(&mut input, stream_index);
    let st = input.stream(stream_index).expect("stream exists");
    let mut ctx = ff::codec::context::Context::from_parameters(st.parameters())
        .map_err(|e| ff_err(path, "cannot set up the decoder", e))?;
    // SAFETY: setting plain fields of a codec context that is not open yet.
    unsafe {
        let c = ctx.as_mut_ptr();
        (*c).thread_count = threads as i32;
        (*c).pkt_timebase = (*st.as_ptr()).time_base;
    }
    let decoder = ctx
        .decoder()
        .video()
        .map_err(|e| ff_err(path, "cannot open the decoder", e))?;
    Ok((input, decoder))
}

enum Next {
    Frame(usize, ff::frame::Video),
    /// A packet the decoder rejected; the frame it belongs to, if known.
    Bad(Option<usize>, String),
    End,
}

impl FileReader {
    pub(crate) fn open(index: Arc<FileIndex>, threads: usize) -> Result<Self, VideoError> {
        let (input, decoder) = open_decoder(&index.path, threads)?;
        Ok(FileReader {
            index,
            threads,
            input,
            decoder,
            packet: ff::Packet::empty(),
            pending: None,
            last: None,
            first_out: None,
            fresh: true,
            raw_out: 0,
            counted: 0,
            sent_eof: false,
            finished: false,
            conv: None,
        })
    }

    fn path(&self) -> &Path {
        &self.index.path
    }

    fn restart(&mut self, at: Restart) -> Result<(), VideoError> {
        self.pending = None;
        self.last = None;
        self.first_out = None;
        self.fresh = at == Restart::Open;
        self.sent_eof = false;
        self.finished = false;
        match at {
            Restart::Open => {
                self.counted = 0;
                let (input, decoder) = open_decoder(&self.index.path, self.threads)?;
                self.input = input;
                self.decoder = decoder;
            }
            Restart::Key(k) => {
                let key = self.index.keyframes[k];
                let ts = key.dts.map_or(key.pts, |d| d.min(key.pts));
                // SAFETY: seeking an open input; the stream index is valid.
                let r = unsafe {
                    ffi::avformat_seek_file(
                        self.input.as_mut_ptr(),
                        self.index.stream_index as i32,
                        i64::MIN,
                        ts,
                        ts,
                        0,
                    )
                };
                if r < 0 {
                    return self.restart(Restart::Open);
                }
                self.decoder.flush();
            }
        }
        Ok(())
    }

    /// The next frame out of the decoder, in presentation order.
    fn next_decoded(&mut self) -> Result<Next, VideoError> {
        if let Some((n, f)) = self.pending.take() {
            return Ok(Next::Frame(n, f));
        }
        let mut frame = ff::frame::Video::empty();
        loop {
            if self.finished {
                return Ok(Next::End);
            }
            match self.decoder.receive_frame(&mut frame) {
                Ok(()) => {
                    self.raw_out += 1;
                    self.fresh = false;
                    let n = if self.index.by_count {
                        self.counted += 1;
                        self.counted - 1
                    } else {
                        match frame
                            .pts()
                            .or(frame.timestamp())
                            .and_then(|p| self.index.frame_of(p))
                        {
                            Some(n) => n,
                            None => continue,
                        }
                    };
                    if n >= self.index.pts.len() {
                        continue;
                    }
                    self.last = Some(n);
                    self.first_out.get_or_insert(n);
                    return Ok(Next::Frame(n, frame));
                }
                Err(ff::Error::Eof) => {
                    self.finished = true;
                    return Ok(Next::End);
                }
                Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => {}
                Err(e) => return Ok(Next::Bad(None, e.to_string())),
            }
            if self.sent_eof {
                // Draining produced EAGAIN: nothing more will come.
                self.finished = true;
                return Ok(Next::End);
            }
            // Feed one packet of our stream.
            loop {
                match read_packet(&mut self.packet, &mut self.input) {
                    Ok(()) => {
                        if self.packet.stream() != self.index.stream_index
                            || self.packet.size() == 0
                        {
                            continue;
                        }
                        if let Err(e) = self.decoder.send_packet(&self.packet) {
                            let n = self.packet.pts().and_then(|p| self.index.frame_of(p));
                            return Ok(Next::Bad(n, e.to_string()));
                        }
                        break;
                    }
                    Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => {}
                    Err(_) => {
                        // End of file or a read error (truncated file): drain the decoder.
                        let _ = self.decoder.send_eof();
                        self.sent_eof = true;
                        break;
                    }
                }
            }
        }
    }

    /// Decodes forward until frame `target` or a later one comes out. `Ok(Some)` is the frame;
    /// `Ok(None)` means the target did not come out (a later frame did, kept pending, or the
    /// stream ended). Frame errors met on the way are passed to `sink` if they concern a frame
    /// in `wanted` (else ignored); `Err` is a failure to go on.
    fn scan_to(
        &mut self,
        target: usize,
        first_bad: &mut Option<String>,
    ) -> Result<Option<ff::frame::Video>, VideoError> {
        loop {
            match self.next_decoded()? {
                Next::Frame(n, f) if n < target => drop(f),
                Next::Frame(n, f) if n == target => return Ok(Some(f)),
                Next::Frame(n, f) => {
                    self.pending = Some((n, f));
                    return Ok(None);
                }
                Next::Bad(n, reason) => {
                    if n.is_none_or(|n| n == target) && first_bad.is_none() {
                        *first_bad = Some(reason);
                    }
                }
                Next::End => return Ok(None),
            }
        }
    }

    /// Restart points to try for `target`, best first.
    fn plan(&self, target: usize) -> Vec<Option<Restart>> {
        let key = self.index.keyframe_for(target);
        let key_frame = key.map(|k| self.index.keyframes[k].frame);
        // The smallest frame number that can still come out without a restart.
        let next_out = match (&self.pending, self.last) {
            (Some((n, _)), _) => Some(*n),
            (None, Some(l)) if !self.finished => Some(l + 1),
            (None, None) if self.fresh => Some(0),
            _ => None,
        };
        // Decoding on is right when the target is ahead and no keyframe lies in between.
        let continue_ok =
            next_out.is_some_and(|p| p <= target && key_frame.is_none_or(|kf| kf <= p));
        let mut plan = Vec::new();
        if continue_ok {
            plan.push(None);
        }
        if let Some(k) = key {
            plan.push(Some(Restart::Key(k)));
            if k > 0 {
                plan.push(Some(Restart::Key(k - 1)));
            }
        }
        plan.push(Some(Restart::Open));
        plan
    }

    /// Reads frame `target`: `Ok(Ok(frame))`, or `Ok(Err(error))` for a frame error (corrupt or
    /// missing) after which reading may go on, or `Err` when reading cannot go on.
    fn read_one(
        &mut self,
        target: usize,
    ) -> Result<Result<ff::frame::Video, VideoError>, VideoError> {
        let mut first_bad = None;
        let plan = self.plan(target);
        for (i, restart) in plan.iter().enumerate() {
            if let Some(r) = restart {
                self.restart(*r)?;
            }
            if let Some(f) = self.scan_to(target, &mut first_bad)? {
                return Ok(Ok(f));
            }
            // Retry from further back only when the restart landed after the target (an
            // imprecise seek); a frame that is skipped while decoding from before it is
            // missing from the file.
            let overshot = restart.is_some()
                && match &self.pending {
                    Some((n, _)) => self.first_out == Some(*n),
                    None => self.first_out.is_none(),
                };
            if !overshot || i + 1 == plan.len() {
                break;
            }
        }
        let path = self.path().to_path_buf();
        Ok(Err(match first_bad {
            Some(reason) => VideoError::CorruptFrame {
                path,
                frame: target,
                reason,
            },
            None => VideoError::MissingFrame {
                path,
                frame: target,
            },
        }))
    }

    /// Converts a decoded frame of number `n` to displayed RGB, reporting decode errors the
    /// decoder flagged on the frame.
    fn finish(&mut self, n: usize, f: ff::frame::Video) -> Result<super::Frame, VideoError> {
        if f.is_corrupt() || f.has_decode_errors() {
            return Err(VideoError::CorruptFrame {
                path: self.path().to_path_buf(),
                frame: n,
                reason: "the decoder flagged decode errors".into(),
            });
        }
        let rgb = convert(&mut self.conv, &f, &self.index.path)?.transformed(self.index.transform);
        Ok(super::Frame {
            info: frame_info(&self.index, n),
            rgb,
            model_rgb: None,
        })
    }

    /// Decodes the frames `wanted` (sorted, unique, all < frame count) and hands each to
    /// `sink`, converting only those. Stops early when `sink` returns false, or at the first
    /// frame error under `ErrorPolicy::Stop`.
    pub(crate) fn read(&mut self, wanted: &[usize], policy: ErrorPolicy, sink: Sink<'_>) {
        for &n in wanted {
            let item = match self.read_one(n) {
                Ok(Ok(f)) => self.finish(n, f),
                Ok(Err(e)) => Err(e),
                Err(e) => {
                    sink(Err(e));
                    return;
                }
            };
            let is_err = item.is_err();
            let fatal = matches!(&item, Err(e) if !e.is_frame_error());
            if !sink(item) || fatal || (is_err && policy == ErrorPolicy::Stop) {
                return;
            }
        }
    }

    /// Counts the frames a full decode produces (for `probe --decode-count`).
    pub(crate) fn count_decoded(&mut self) -> Result<usize, VideoError> {
        self.restart(Restart::Open)?;
        self.raw_out = 0;
        loop {
            if let Next::End = self.next_decoded()? {
                return Ok(self.raw_out);
            }
        }
    }
}

pub(crate) fn frame_info(index: &FileIndex, n: usize) -> FrameInfo {
    let (num, den) = index.time_base;
    let seconds = (index.pts[n] - index.pts[0]) as f64 * num as f64 / den.max(1) as f64;
    FrameInfo {
        number: n,
        pts: index.pts[n],
        seconds,
    }
}

/// Decodes the first `k` frames and times their RGB conversion alone: (seconds, frames).
pub(crate) fn time_conversion(
    index: Arc<FileIndex>,
    threads: usize,
    k: usize,
) -> Result<(f64, usize), VideoError> {
    let mut reader = FileReader::open(index, threads)?;
    let (mut secs, mut done) = (0.0, 0);
    while done < k {
        match reader.next_decoded()? {
            Next::Frame(_, f) => {
                let t = std::time::Instant::now();
                let rgb = convert(&mut reader.conv, &f, &reader.index.path)?;
                std::hint::black_box(rgb.transformed(reader.index.transform));
                secs += t.elapsed().as_secs_f64();
                done += 1;
            }
            Next::Bad(..) => {}
            Next::End => break,
        }
    }
    Ok((secs, done))
}
