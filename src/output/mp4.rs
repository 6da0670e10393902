//! In-process H.264 MP4 writing through the FFmpeg libraries (ffmpeg-next): packed RGB
//! frames -> YUV 4:2:0 (odd sizes padded by one edge pixel) -> libx264 (or FFmpeg's default
//! H.264 encoder) -> MP4, constant frame rate.

use crate::output::jsonl::OutputError;
use crate::video::RgbFrame;
use ff::format::Pixel;
use ff::{Dictionary, Packet, Rational};
use ffmpeg_next as ff;
use std::path::{Path, PathBuf};

/// An open MP4 being written frame by frame.
pub struct Mp4Writer {
    octx: ff::format::context::Output,
    enc: ff::encoder::Video,
    scaler: ff::software::scaling::Context,
    rgb: ff::frame::Video,
    yuv: ff::frame::Video,
    enc_tb: Rational,
    ost_tb: Rational,
    next_pts: i64,
    width: usize,
    height: usize,
    path: PathBuf,
}

fn fferr(path: &Path, what: &str, e: impl std::fmt::Display) -> OutputError {
    OutputError::other(path, format!("{what}: {e}"))
}

impl Mp4Writer {
    /// Opens `path` for `width` x `height` frames at `fps`, x264 quality `crf`.
    pub fn create(
        path: &Path,
        width: usize,
        height: usize,
        fps: f64,
        crf: u32,
    ) -> Result<Self, OutputError> {
        if width == 0 || height == 0 {
            return Err(OutputError::other(path, "empty frame size"));
        }
        let _ = ff::init();
        let (ew, eh) = ((width + width % 2) as u32, (height + height % 2) as u32);
        let mut octx = ff::format::output(path).map_err(|e| fferr(path, "cannot create", e))?;
        let global = octx
            .format()
            .flags()
            .contains(ff::format::Flags::GLOBAL_HEADER);
        let codec = ff::encoder::find_by_name("libx264")
            .or_else(|| ff::encoder::find(ff::codec::Id::H264))
            .ok_or_else(|| OutputError::other(path, "FFmpeg has no H.264 encoder"))?;
        let mut ost = octx
            .add_stream(codec)
            .map_err(|e| fferr(path, "add stream", e))?;
        let mut enc = ff::codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| fferr(path, "encoder", e))?;
        // Frame rate as a rational with millisecond precision.
        let num = (fps * 1000.0).round().clamp(1.0, i32::MAX as f64) as i32;
        let rate = Rational::new(num, 1000).reduce();
        let enc_tb = rate.invert();
        enc.set_width(ew);
        enc.set_height(eh);
        enc.set_format(Pixel::YUV420P);
        enc.set_frame_rate(Some(rate));
        enc.set_time_base(enc_tb);
        if global {
            enc.set_flags(ff::codec::Flags::GLOBAL_HEADER);
        }
        let mut opts = Dictionary::new();
        opts.set("crf", &crf.to_string());
        opts.set("preset", "veryfast");
        let enc = enc
            .open_with(opts)
            .map_err(|e| fferr(path, "open H.264 encoder", e))?;
        ost.set_parameters(&enc);
        ost.set_time_base(enc_tb);
        ost.set_rate(rate);
        ost.set_avg_frame_rate(rate);
        octx.write_header()
            .map_err(|e| fferr(path, "write header", e))?;
        let ost_tb = octx.stream(0).map(|s| s.time_base()).unwrap_or(enc_tb);
        let scaler = ff::software::scaling::Context::get(
            Pixel::RGB24,
            ew,
            eh,
            Pixel::YUV420P,
            ew,
            eh,
            ff::software::scaling::Flags::BILINEAR,
        )
        .map_err(|e| fferr(path, "scaler", e))?;
        Ok(Self {
            octx,
            enc,
            scaler,
            rgb: ff::frame::Video::new(Pixel::RGB24, ew, eh),
            yuv: ff::frame::Video::new(Pixel::YUV420P, ew, eh),
            enc_tb,
            ost_tb,
            next_pts: 0,
            width,
            height,
            path: path.to_path_buf(),
        })
    }

    fn drain(&mut self) -> Result<(), OutputError> {
        let mut pkt = Packet::empty();
        while self.enc.receive_packet(&mut pkt).is_ok() {
            pkt.set_stream(0);
            pkt.rescale_ts(self.enc_tb, self.ost_tb);
            pkt.write_interleaved(&mut self.octx)
                .map_err(|e| fferr(&self.path, "write packet", e))?;
        }
        Ok(())
    }

    /// Appends one frame (must have the size given to [`Mp4Writer::create`]).
    pub fn write(&mut self, f: &RgbFrame) -> Result<(), OutputError> {
        if (f.width, f.height) != (self.width, self.height) {
            return Err(OutputError::other(
                &self.path,
                format!(
                    "frame of {}x{} in a {}x{} video",
                    f.width, f.height, self.width, self.height
                ),
            ));
        }
        let stride = self.rgb.stride(0);
        let (w, h) = (self.width, self.height);
        let (ew, eh) = (w + w % 2, h + h % 2);
        let data = self.rgb.data_mut(0);
        for y in 0..eh {
            let sy = y.min(h - 1);
            let src = &f.data[sy * w * 3..(sy + 1) * w * 3];
            let dst = &mut data[y * stride..y * stride + ew * 3];
            dst[..w * 3].copy_from_slice(src);
            if ew > w {
                dst[w * 3..].copy_from_slice(&src[(w - 1) * 3..]);
            }
        }
        self.scaler
            .run(&self.rgb, &mut self.yuv)
            .map_err(|e| fferr(&self.path, "colour conversion", e))?;
        self.yuv.set_pts(Some(self.next_pts));
        self.next_pts += 1;
        self.enc
            .send_frame(&self.yuv)
            .map_err(|e| fferr(&self.path, "encode", e))?;
        self.drain()
    }

    /// Flushes the encoder and writes the trailer.
    pub fn finish(mut self) -> Result<(), OutputError> {
        self.enc
            .send_eof()
            .map_err(|e| fferr(&self.path, "flush encoder", e))?;
        self.drain()?;
        self.octx
            .write_trailer()
            .map_err(|e| fferr(&self.path, "write trailer", e))
    }
}
