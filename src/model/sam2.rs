//! `Sam2Model`: the whole SAM 2 / 2.1 model as the tracker uses it (official
//! `modeling/sam2_base.py`, docs/sam2-inference.md §3.6, §3.7, §4.4): image encoding, the SAM
//! heads wrapper (`_forward_sam_heads`, NO_OBJ_SCORE masking, object pointer and its no-object
//! gating), the mask-as-output path, memory conditioning of tracked frames, and the memory
//! encoder wrapper (with the bf16 rounding of stored memories).
//!
//! Everything is per object batch `B`: objects sharing one frame's features are stacked along
//! dim 0. All tensors are f32 on the model's device, except under `Precision::Bf16`
//! ([`Sam2Model::set_precision`]), where every entry point runs under the autocast emulation of
//! `layers` and `BackboneOut::feat_s0/feat_s1` are bf16 as in the official code; the step
//! outputs, memories and pointers are still returned as f32 (exact widenings).

use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::checkpoint;
use super::config::{D_MODEL, MEM_DIM, NO_OBJ_SCORE, NUM_MASKMEM, Sam2Config};
use super::image_encoder::ImageEncoder;
use super::layers::{self, AutocastGuard, Conv2d, ConvCfg, Linear, Mlp, Precision};
use super::mask_decoder::MaskDecoder;
use super::memory_attention::MemoryAttention;
use super::memory_encoder::MemoryEncoder;
use super::position_encoding::sine_pe_1d;
use super::prompt_encoder::PromptEncoder;
use super::weights::{Weights, WeightsError};

/// Errors of [`Sam2Model`].
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("{0}")]
    Checkpoint(String),
    #[error("invalid input: {0}")]
    Input(String),
}

/// Backbone features of one frame (or B frames / B copies of one frame).
#[derive(Debug)]
pub struct BackboneOut {
    /// `[B, 256, f, f]` L2, raw (no `no_mem_embed`), f = image_size / 16.
    pub vision_feat: Tensor,
    /// `[B, 256, f, f]` sine PE of L2.
    pub vision_pos: Tensor,
    /// `[B, 32, 4f, 4f]` `conv_s0(L0)`.
    pub feat_s0: Tensor,
    /// `[B, 64, 2f, 2f]` `conv_s1(L1)`.
    pub feat_s1: Tensor,
}

impl BackboneOut {
    /// The features of item `i` repeated `n` times along the batch (objects sharing a frame).
    pub fn expand_item(&self, i: i64, n: i64) -> BackboneOut {
        let e = |t: &Tensor| {
            let s = t.narrow(0, i, 1);
            let mut size = s.size();
            size[0] = n;
            s.expand(size.as_slice(), false)
        };
        BackboneOut {
            vision_feat: e(&self.vision_feat),
            vision_pos: e(&self.vision_pos),
            feat_s0: e(&self.feat_s0),
            feat_s1: e(&self.feat_s1),
        }
    }

    pub fn batch_size(&self) -> i64 {
        self.vision_feat.size()[0]
    }
}

/// Point prompts (box corners included as labels 2/3, prepended).
#[derive(Debug)]
pub struct PointInputs {
    /// `[B, N, 2]` (x, y) in model-input pixels (`x / W_video · S`).
    pub coords: Tensor,
    /// `[B, N]` int: 1 positive, 0 negative, 2/3 box corners.
    pub labels: Tensor,
}

/// Result of one SAM step for B objects.
#[derive(Debug)]
pub struct StepOutput {
    /// `[B, 1, r, r]` chosen mask logits (r = image_size / 4), before hole filling.
    pub low_res_masks: Tensor,
    /// `[B, 1, S, S]` bilinear upsample of `low_res_masks`.
    pub high_res_masks: Tensor,
    /// `[B, 1]` predicted IoU of the chosen mask.
    pub ious: Tensor,
    /// `[B, 256]`.
    pub obj_ptr: Tensor,
    /// `[B, 1]`.
    pub object_score_logits: Tensor,
    /// `[B, 1]` int64: which of the multimask outputs was chosen (the best predicted IoU);
    /// `None` for a single-mask output.
    pub mask_index: Option<Tensor>,
}

/// A stored spatial memory.
#[derive(Debug)]
pub struct MemoryEntry {
    /// `[B, 64, f, f]`, already rounded through bf16, held as f32.
    pub features: Tensor,
    /// `[B, 64, f, f]`.
    pub pos_enc: Tensor,
    /// Index into `maskmem_tpos_enc`: conditioning frames 6, frame t−1 → 0, …, t−6 → 5.
    pub tpos_index: i64,
}

/// A stored object pointer.
#[derive(Debug)]
pub struct PointerEntry {
    /// `[B, 256]`.
    pub ptr: Tensor,
    /// Temporal offset (signed for 2.1, absolute for 2.0; docs/sam2-inference.md §4.4 step 4).
    pub pos: i64,
}

/// One object's memory bank for the batched tracking step (entries of batch size 1).
#[derive(Debug, Clone, Copy)]
pub struct ObjectMemory<'a> {
    pub memories: &'a [MemoryEntry],
    pub pointers: &'a [PointerEntry],
}

/// The assembled memory of a tracked frame (docs/sam2-inference.md §4.4 step 5), batch first.
#[derive(Debug)]
pub struct AssembledMemory {
    /// `[B, Nm, 64]`
    pub memory: Tensor,
    /// `[B, Nm, 64]`
    pub memory_pos: Tensor,
    /// Number of object-pointer tokens at the end of `memory` (4 per pointer).
    pub num_obj_ptr_tokens: i64,
}

/// Fixed memory capacities of one object in the batched tracking step (`--static-shapes`, see
/// [`Sam2Model::track_frame_batched_padded`]): the spatial memories and pointer tokens of every
/// object are padded to at least these counts, so that a steady-state frame has the same tensor
/// shapes as the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryCapacity {
    /// Spatial memory frames: the conditioning frames the selection can yield + 6 recent
    /// (docs/sam2-inference.md §4.4 steps 1–2).
    pub memory_frames: i64,
    /// Object pointers (4 tokens of 64 channels each): the selected conditioning frames + up to
    /// `max_ptr − 1` recent ones (docs/sam2-inference.md §4.4 step 4).
    pub pointers: i64,
}

impl MemoryCapacity {
    /// The capacity for at most `cond_frames` selected conditioning frames and
    /// `max_ptr = min(num_frames, 16)`.
    pub fn new(cond_frames: i64, max_ptr: i64) -> Self {
        MemoryCapacity {
            memory_frames: cond_frames.max(0) + NUM_MASKMEM - 1,
            pointers: cond_frames.max(0) + (max_ptr - 1).max(0),
        }
    }
}

/// All outputs of `_forward_sam_heads`.
#[derive(Debug)]
pub struct HeadsOutput {
    /// `[B, M, r, r]` (after NO_OBJ_SCORE masking).
    pub low_res_multimasks: Tensor,
    /// `[B, M]`.
    pub ious_all: Tensor,
    pub step: StepOutput,
}

/// The SAM 2 model.
#[derive(Debug)]
pub struct Sam2Model {
    pub config: Sam2Config,
    pub device: Device,
    pub image_encoder: ImageEncoder,
    pub prompt_encoder: PromptEncoder,
    pub mask_decoder: MaskDecoder,
    pub memory_encoder: MemoryEncoder,
    pub memory_attention: MemoryAttention,
    pub obj_ptr_proj: Mlp,
    /// 2.1 only.
    pub obj_ptr_tpos_proj: Option<Linear>,
    pub mask_downsample: Conv2d,
    /// `[7, 1, 1, 64]`.
    pub maskmem_tpos_enc: Tensor,
    /// `[1, 1, 256]`.
    pub no_mem_embed: Tensor,
    /// `[1, 256]`.
    pub no_obj_ptr: Tensor,
    /// `[1, 64]`, 2.1 only.
    pub no_obj_embed_spatial: Option<Tensor>,
    /// `[1, 256, f, f]` prompt-encoder dense PE (a constant, computed in `precision`).
    dense_pe: Tensor,
    /// The compute precision of every entry point.
    precision: Precision,
    /// The last key mask of [`Self::key_mask`] with its layout.
    key_mask: std::cell::RefCell<Option<(Vec<i64>, Tensor)>>,
}

impl Sam2Model {
    /// Loads an official checkpoint (`.pt` zip as Meta publishes it, or `.safetensors`); size and
    /// version are detected from the keys and shapes. `image_size`: multiple of 64 in 256..=1024.
    pub fn load(path: &Path, device: Device, image_size: i64) -> Result<Self, ModelError> {
        let (weights, config) = checkpoint::load(path, device, image_size)?;
        Self::from_weights(&weights, config, device)
    }

    /// Builds the model from a state dict and a config; every key must be used.
    pub fn from_weights(
        w: &Weights,
        config: Sam2Config,
        device: Device,
    ) -> Result<Self, ModelError> {
        let s = config.image_size;
        config
            .family()
            .check_image_size(s)
            .map_err(|e| ModelError::Input(e.to_string()))?;
        let f = config.feat_size();
        let v21 = config.is_v2_1();
        let image_encoder = ImageEncoder::new(&w.pp("image_encoder"), &config)?;
        let prompt_encoder = PromptEncoder::new(&w.pp("sam_prompt_encoder"), s, f)?;
        let dense_pe = prompt_encoder.dense_pe();
        let model = Sam2Model {
            image_encoder,
            mask_decoder: MaskDecoder::new(&w.pp("sam_mask_decoder"))?,
            memory_encoder: MemoryEncoder::new(&w.pp("memory_encoder"))?
                .with_mask_size(config.mask_size()),
            memory_attention: MemoryAttention::new(&w.pp("memory_attention"), f)?,
            obj_ptr_proj: Mlp::new(&w.pp("obj_ptr_proj"), D_MODEL, D_MODEL, D_MODEL, 3, false)?,
            obj_ptr_tpos_proj: if v21 {
                Some(Linear::new(&w.pp("obj_ptr_tpos_proj"), D_MODEL, MEM_DIM)?)
            } else {
                None
            },
            mask_downsample: Conv2d::new(
                &w.pp("mask_downsample"),
                1,
                1,
                4,
                ConvCfg {
                    stride: 4,
                    ..Default::default()
                },
            )?,
            maskmem_tpos_enc: w.get("maskmem_tpos_enc", &[NUM_MASKMEM, 1, 1, MEM_DIM])?,
            no_mem_embed: w.get("no_mem_embed", &[1, 1, D_MODEL])?,
            no_obj_ptr: w.get("no_obj_ptr", &[1, D_MODEL])?,
            no_obj_embed_spatial: if v21 {
                Some(w.get("no_obj_embed_spatial", &[1, MEM_DIM])?)
            } else {
                None
            },
            prompt_encoder,
            dense_pe,
            precision: Precision::Fp32,
            key_mask: Default::default(),
            config,
            device,
        };
        // `no_mem_pos_enc` exists in every checkpoint but is unused (directly_add_no_mem_embed).
        let _unused = w.get("no_mem_pos_enc", &[1, 1, D_MODEL])?;
        w.check_all_used()?;
        Ok(model)
    }

    /// The compute precision (`--dtype`).
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Sets the compute precision: `Bf16` runs the regions that the official code runs in bf16
    /// under `torch.autocast("cuda", torch.bfloat16)` in bf16 (docs/sam2-inference.md §6.1,
    /// §7.11), `Fp32` everything in f32. The weights stay f32 masters; the prompt encoder's dense
    /// PE is recomputed (it is a matmul, bf16 under autocast).
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
        let _g = tch::no_grad_guard();
        let _ac = layers::autocast(precision);
        self.dense_pe = self.prompt_encoder.dense_pe();
    }

    /// [`Self::set_precision`], builder style.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.set_precision(precision);
        self
    }

    /// The autocast region of an entry point.
    fn autocast(&self) -> AutocastGuard {
        layers::autocast(self.precision)
    }

    /// `forward_image` + `_prepare_backbone_features`: `images [B, 3, S, S]` normalised.
    pub fn encode_image(&self, images: &Tensor) -> BackboneOut {
        let _span = tracing::trace_span!("encode_image").entered();
        let _prof = crate::profile::scope(crate::profile::Section::ImageEncoder);
        let _ac = self.autocast();
        let out = self.image_encoder.forward(images);
        BackboneOut {
            feat_s0: self.mask_decoder.conv_s0.forward(&out.fpn[0]),
            feat_s1: self.mask_decoder.conv_s1.forward(&out.fpn[1]),
            vision_feat: out.fpn[2].shallow_clone(),
            vision_pos: out.pos,
        }
    }

    /// `_forward_sam_heads` (docs/sam2-inference.md §3.6). `backbone_features [B, 256, f, f]`;
    /// points `None` means one padding point; `mask_inputs [B, 1, *, *]` is resized (antialiased
    /// bilinear) to 4f when needed.
    pub fn forward_sam_heads(
        &self,
        backbone_features: &Tensor,
        feats: &BackboneOut,
        points: Option<&PointInputs>,
        mask_inputs: Option<&Tensor>,
        multimask_output: bool,
    ) -> HeadsOutput {
        let _prof = crate::profile::scope(crate::profile::Section::MaskDecoder);
        let _ac = self.autocast();
        let b = backbone_features.size()[0];
        let dev = backbone_features.device();
        let (coords, labels) = match points {
            Some(p) => (p.coords.to_kind(Kind::Float), p.labels.shallow_clone()),
            None => (
                Tensor::zeros([b, 1, 2], (Kind::Float, dev)),
                Tensor::full([b, 1], -1, (Kind::Int, dev)),
            ),
        };
        let mi = self.prompt_encoder.mask_input_size();
        let mask_prompt = mask_inputs.map(|m| {
            let s = m.size();
            if s[2] != mi || s[3] != mi {
                m.to_kind(Kind::Float)
                    .internal_upsample_bilinear2d_aa([mi, mi], false, None, None)
            } else {
                m.shallow_clone()
            }
        });
        let (sparse, dense) = self
            .prompt_encoder
            .forward(&coords, &labels, mask_prompt.as_ref());
        let dec = self.mask_decoder.forward(
            backbone_features,
            &self.dense_pe,
            &sparse,
            &dense,
            multimask_output,
            &feats.feat_s0,
            &feats.feat_s1,
        );
        let osl = dec.object_score_logits;
        let is_obj = osl.gt(0.0); // [B, 1]
        let no_obj = Tensor::full_like(&dec.masks, NO_OBJ_SCORE);
        let low_multi = dec
            .masks
            .where_self(&is_obj.view([b, 1, 1, 1]), &no_obj)
            .to_kind(Kind::Float);
        let s = self.config.image_size;
        // All M masks are upsampled before picking, as the official code does: upsampling only
        // the chosen channel takes another vectorised path in PyTorch and differs by ~1 ulp.
        let high_multi = low_multi.upsample_bilinear2d([s, s], false, None, None);
        let mut mask_index = None;
        let (low, high, token, iou) = if multimask_output {
            let best = dec.ious.argmax(-1, true); // [B, 1]
            mask_index = Some(best.shallow_clone());
            let pick = |t: &Tensor| {
                let sz = t.size();
                t.gather(
                    1,
                    &best.view([b, 1, 1, 1]).expand([b, 1, sz[2], sz[3]], false),
                    false,
                )
            };
            let token = if dec.sam_tokens.size()[1] > 1 {
                dec.sam_tokens
                    .gather(
                        1,
                        &best.view([b, 1, 1]).expand([b, 1, D_MODEL], false),
                        false,
                    )
                    .squeeze_dim(1)
            } else {
                dec.sam_tokens.select(1, 0)
            };
            (
                pick(&low_multi),
                pick(&high_multi),
                token,
                dec.ious.gather(1, &best, false),
            )
        } else {
            (
                low_multi.shallow_clone(),
                high_multi,
                dec.sam_tokens.select(1, 0),
                dec.ious.shallow_clone(),
            )
        };
        let obj_ptr = self.obj_ptr_proj.forward(&token);
        let lam = is_obj.to_kind(Kind::Float);
        let obj_ptr = &lam * obj_ptr;
        let obj_ptr = obj_ptr + (1.0 - &lam) * &self.no_obj_ptr;
        // Under autocast the IoUs and object scores are bf16 (and obj_ptr already f32 by
        // promotion): widen them, exactly, so that callers always see f32.
        let f = |t: Tensor| {
            if t.kind() == Kind::Float {
                t
            } else {
                t.to_kind(Kind::Float)
            }
        };
        HeadsOutput {
            low_res_multimasks: low_multi,
            ious_all: f(dec.ious),
            step: StepOutput {
                low_res_masks: low,
                high_res_masks: high,
                ious: f(iou),
                obj_ptr: f(obj_ptr),
                object_score_logits: f(osl),
                mask_index,
            },
        }
    }

    /// `multimask_output` of `_use_multimask`: 0 or 1 prompt points (box corners count).
    pub fn use_multimask(points: Option<&PointInputs>) -> bool {
        let n = points.map(|p| p.labels.size()[1]).unwrap_or(0);
        n <= 1
    }

    /// `L2 + no_mem_embed` (initial conditioning frame): `[B, 256, f, f]`.
    pub fn pix_without_memory(&self, feats: &BackboneOut) -> Tensor {
        &feats.vision_feat + self.no_mem_embed.view([1, D_MODEL, 1, 1])
    }

    /// `add_new_points_or_box` on an initial conditioning frame: `pix = L2 + no_mem_embed`,
    /// optional previous mask logits `[B, 1, r, r]` (already clamped to ±32 by the caller) as
    /// the dense prompt; multimask iff 0 ≤ num_points ≤ 1.
    pub fn prompt_frame(
        &self,
        feats: &BackboneOut,
        points: Option<&PointInputs>,
        mask_logits: Option<&Tensor>,
    ) -> StepOutput {
        let _span = tracing::trace_span!("prompt_frame").entered();
        let pix = self.pix_without_memory(feats);
        self.forward_sam_heads(
            &pix,
            feats,
            points,
            mask_logits,
            Self::use_multimask(points),
        )
        .step
    }

    /// A point/box correction on an already tracked frame (is_init_cond_frame false): memory
    /// attention as in [`Self::track_frame`], then the heads with the prompt.
    pub fn prompt_tracked_frame(
        &self,
        feats: &BackboneOut,
        memories: &[MemoryEntry],
        pointers: &[PointerEntry],
        max_ptr: i64,
        points: Option<&PointInputs>,
        mask_logits: Option<&Tensor>,
    ) -> StepOutput {
        let _span = tracing::trace_span!("prompt_tracked_frame").entered();
        let pix = self.pix_with_memory(feats, memories, pointers, max_ptr);
        self.forward_sam_heads(
            &pix,
            feats,
            points,
            mask_logits,
            Self::use_multimask(points),
        )
        .step
    }

    /// `add_new_mask`: the mask-as-output path (docs/sam2-inference.md §3.6);
    /// `mask01 [B, 1, S, S]` in {0, 1}.
    pub fn mask_as_output(&self, feats: &BackboneOut, mask01: &Tensor) -> StepOutput {
        let _span = tracing::trace_span!("mask_as_output").entered();
        let _ac = self.autocast();
        let m = mask01.to_kind(Kind::Float);
        let b = m.size()[0];
        let high = &m * 20.0 + (-10.0);
        let r = self.config.low_res_size();
        let low = high.internal_upsample_bilinear2d_aa([r, r], false, None, None);
        let ious = Tensor::ones([b, 1], (Kind::Float, m.device()));
        let (obj_ptr, osl) = self.mask_input_pointer(feats, &m);
        StepOutput {
            low_res_masks: low,
            high_res_masks: high,
            ious,
            obj_ptr,
            object_score_logits: osl,
            mask_index: None,
        }
    }

    /// `_use_mask_as_output`'s pointer and object score for a mask input `m [B, 1, M, M]`
    /// (M = [`Sam2Config::mask_size`]): the decoder fed `mask_downsample(m)` gives the pointer,
    /// the score is ±10 by whether any pixel is positive, and an empty mask gets the no-object
    /// pointer. Returns `(obj_ptr [B, 256], object_score_logits [B, 1])`.
    fn mask_input_pointer(&self, feats: &BackboneOut, m: &Tensor) -> (Tensor, Tensor) {
        let inner = self.forward_sam_heads(
            &feats.vision_feat,
            feats,
            None,
            Some(&self.mask_downsample.forward(m)),
            false,
        );
        let lam = m
            .flatten(1, -1)
            .gt(0.0)
            .any_dim(1, true)
            .to_kind(Kind::Float); // [B, 1]
        let osl = &lam * 20.0 + (-10.0);
        let obj_ptr = &lam * inner.step.obj_ptr;
        let obj_ptr = obj_ptr + (1.0 - &lam) * &self.no_obj_ptr;
        (obj_ptr, osl)
    }

    /// SAM 3's `add_new_mask` with the preflight's consolidation (docs/sam3-tracker.md §1):
    /// `mask [1, 1, H, W]` in {0, 1} at the video's size. The model input is the mask resized
    /// (bilinear, antialiased) to [`Sam2Config::mask_size`] and *not* re-thresholded; its pointer
    /// comes from the decoder fed `mask_downsample` of it, its object score is ±10 by whether any
    /// pixel is positive and its IoU 1. The returned low-res logits are the consolidated output's:
    /// the video-size mask as ±1024 logits resized (bilinear, antialiased) to the low-res size.
    pub fn mask_prompt_sam3(&self, feats: &BackboneOut, mask: &Tensor) -> StepOutput {
        let _span = tracing::trace_span!("mask_prompt_sam3").entered();
        let _ac = self.autocast();
        let m = mask.to_kind(Kind::Float);
        let ms = self.config.mask_size();
        let sz = m.size();
        let m_in = if sz[2] != ms || sz[3] != ms {
            m.internal_upsample_bilinear2d_aa([ms, ms], false, None, None)
        } else {
            m.shallow_clone()
        };
        let b = sz[0];
        let (obj_ptr, osl) = self.mask_input_pointer(feats, &m_in);
        let r = self.config.low_res_size();
        let video_logits =
            Tensor::where_scalar(&m.gt(0.5), -NO_OBJ_SCORE, NO_OBJ_SCORE).to_kind(Kind::Float);
        let low = video_logits.internal_upsample_bilinear2d_aa([r, r], false, None, None);
        StepOutput {
            low_res_masks: low,
            high_res_masks: &m_in * 20.0 + (-10.0),
            ious: Tensor::ones([b, 1], (Kind::Float, m.device())),
            obj_ptr,
            object_score_logits: osl,
            mask_index: None,
        }
    }

    /// The memory of docs/sam2-inference.md §4.4 steps 3–5: spatial memories (flattened, pos +
    /// `maskmem_tpos_enc[tpos_index]`) then object-pointer tokens (4 × 64 per pointer, 1-D sine
    /// temporal PE of `pos / (max_ptr − 1)` through `obj_ptr_tpos_proj` for 2.1, zeros for 2.0).
    /// bf16 inputs are upcast to f32. Returns `None` when there is neither a memory nor a
    /// pointer.
    pub fn assemble_memory(
        &self,
        memories: &[MemoryEntry],
        pointers: &[PointerEntry],
        max_ptr: i64,
    ) -> Option<AssembledMemory> {
        let _ac = self.autocast();
        let mut mem = Vec::new();
        let mut pos = Vec::new();
        for m in memories {
            let f = m
                .features
                .to_kind(Kind::Float)
                .flatten(2, -1)
                .permute([0, 2, 1]);
            let p = m
                .pos_enc
                .to_kind(Kind::Float)
                .flatten(2, -1)
                .permute([0, 2, 1]);
            let t = self
                .maskmem_tpos_enc
                .get(m.tpos_index.clamp(0, NUM_MASKMEM - 1))
                .view([1, 1, MEM_DIM]);
            mem.push(f);
            pos.push(p + t);
        }
        let mut num_ptr_tokens = 0;
        if !pointers.is_empty() {
            let ptrs = Tensor::stack(
                &pointers
                    .iter()
                    .map(|p| p.ptr.to_kind(Kind::Float))
                    .collect::<Vec<_>>(),
                1,
            ); // [B, P0, 256]
            let b = ptrs.size()[0];
            let p0 = pointers.len() as i64;
            let dev = ptrs.device();
            let tpos = match &self.obj_ptr_tpos_proj {
                Some(proj) => {
                    let pl: Vec<i64> = pointers.iter().map(|p| p.pos).collect();
                    // Uploaded without a host sync (pinned, asynchronous) on a GPU.
                    let t =
                        super::cuda::upload(&Tensor::from_slice(&pl), dev) / ((max_ptr - 1) as f64);
                    proj.forward(&sine_pe_1d(&t, D_MODEL)) // [P0, 64]
                }
                None => Tensor::zeros([p0, MEM_DIM], (Kind::Float, dev)),
            };
            let split = D_MODEL / MEM_DIM;
            mem.push(ptrs.reshape([b, p0 * split, MEM_DIM]));
            pos.push(
                tpos.repeat_interleave_self_int(split, 0, None)
                    .unsqueeze(0)
                    .expand([b, -1, -1], false),
            );
            num_ptr_tokens = p0 * split;
        }
        if mem.is_empty() {
            return None;
        }
        Some(AssembledMemory {
            memory: Tensor::cat(&mem, 1),
            memory_pos: Tensor::cat(&pos, 1),
            num_obj_ptr_tokens: num_ptr_tokens,
        })
    }

    /// Memory attention of the frame's L2 over an assembled memory: `pix_feat_with_mem [B, 256, f, f]`.
    pub fn attend_memory(
        &self,
        feats: &BackboneOut,
        mem: &AssembledMemory,
        mask: Option<&Tensor>,
    ) -> Tensor {
        let _ac = self.autocast();
        let s = feats.vision_feat.size();
        let curr = feats.vision_feat.flatten(2, -1).permute([0, 2, 1]);
        let curr_pos = feats.vision_pos.flatten(2, -1).permute([0, 2, 1]);
        let out = self.memory_attention.forward(
            &curr,
            &curr_pos,
            &mem.memory,
            &mem.memory_pos,
            mem.num_obj_ptr_tokens,
            mask,
        );
        out.permute([0, 2, 1]).reshape([s[0], s[1], s[2], s[3]])
    }

    /// `_prepare_memory_conditioned_features` for a non-initial frame. Without any memory or
    /// pointer (which the official code never produces) it falls back to `L2 + no_mem_embed`.
    pub fn pix_with_memory(
        &self,
        feats: &BackboneOut,
        memories: &[MemoryEntry],
        pointers: &[PointerEntry],
        max_ptr: i64,
    ) -> Tensor {
        let _prof = crate::profile::scope(crate::profile::Section::MemoryAttention);
        match self.assemble_memory(memories, pointers, max_ptr) {
            Some(mem) => self.attend_memory(feats, &mem, None),
            None => self.pix_without_memory(feats),
        }
    }

    /// A tracked (non-conditioning) frame: memory attention over `memories` + `pointers`, then
    /// the heads with multimask (no prompt). `max_ptr = min(num_frames, 16)`.
    pub fn track_frame(
        &self,
        feats: &BackboneOut,
        memories: &[MemoryEntry],
        pointers: &[PointerEntry],
        max_ptr: i64,
    ) -> StepOutput {
        let _span = tracing::trace_span!("track_frame").entered();
        let pix = self.pix_with_memory(feats, memories, pointers, max_ptr);
        self.forward_sam_heads(&pix, feats, None, None, true).step
    }

    /// Batched memory assembly for B objects whose memory banks differ in size: object `i`
    /// contributes `objects[i]` (entries of batch size 1). The spatial memories are padded with
    /// zero frames to the largest count and the pointer tokens to the largest pointer count,
    /// laid out `[spatial | spatial padding | pointers | pointer padding]`, so that RoPE (tiled
    /// per memory frame) and the pointer exclusion are the same for every object. Returns the
    /// memory and the boolean key mask `[B, 1, 1, Nm]` (true = attend), or `None` for the mask
    /// when no object needs padding. `None` overall if some object has no memory at all.
    pub fn assemble_memory_batched(
        &self,
        objects: &[ObjectMemory<'_>],
        max_ptr: i64,
    ) -> Option<(AssembledMemory, Option<Tensor>)> {
        self.assemble_memory_padded(objects, max_ptr, None)
    }

    /// [`Self::assemble_memory_batched`] padded to at least `capacity` (spatial memory frames,
    /// pointers) when given, with the key mask then always returned (also when nothing is
    /// padded), so that the shapes, and which attention runs, depend only on the batch size and
    /// the capacity. The layout is the same `[spatial | spatial padding | pointers | pointer
    /// padding]` (docs/sam2-inference.md §7.10): the RoPE table is tiled over all
    /// `memory_frames · f²` spatial slots and skips the `4 · pointers` pointer slots, so every
    /// real key is rotated as without padding; padding slots are zeros and masked out. A bank
    /// larger than the capacity (which the selection rule does not produce) widens that call's
    /// shapes instead of being cut.
    pub fn assemble_memory_padded(
        &self,
        objects: &[ObjectMemory<'_>],
        max_ptr: i64,
        capacity: Option<MemoryCapacity>,
    ) -> Option<(AssembledMemory, Option<Tensor>)> {
        let hw = self.config.feat_size() * self.config.feat_size();
        let split = D_MODEL / MEM_DIM;
        let mut parts = Vec::with_capacity(objects.len());
        for o in objects {
            let m = self.assemble_memory(o.memories, o.pointers, max_ptr)?;
            let n_ptr = m.num_obj_ptr_tokens;
            let n_sp = m.memory.size()[1] - n_ptr;
            parts.push((m, n_sp, n_ptr));
        }
        let cap_sp = capacity.map_or(0, |c| c.memory_frames * hw);
        let cap_ptr = capacity.map_or(0, |c| c.pointers * split);
        let max_sp = parts.iter().map(|p| p.1).max().unwrap_or(0).max(cap_sp);
        let max_ptr_tok = parts.iter().map(|p| p.2).max().unwrap_or(0).max(cap_ptr);
        debug_assert!(max_sp % hw == 0 && max_ptr_tok % split == 0);
        let needs_mask =
            capacity.is_some() || parts.iter().any(|p| p.1 != max_sp || p.2 != max_ptr_tok);
        // Zeros, then each object's spatial memories and pointer tokens copied in place (exact
        // copies, f32 as each object's assembly returns them).
        let b = parts.len() as i64;
        let opts = (Kind::Float, self.device);
        let memory = Tensor::zeros([b, max_sp + max_ptr_tok, MEM_DIM], opts);
        let memory_pos = Tensor::zeros([b, max_sp + max_ptr_tok, MEM_DIM], opts);
        for (i, (m, n_sp, n_ptr)) in parts.iter().enumerate() {
            let (dst_m, dst_p) = (memory.get(i as i64), memory_pos.get(i as i64));
            let src = |t: &Tensor, from: i64, n: i64| t.get(0).narrow(0, from, n);
            dst_m.narrow(0, 0, *n_sp).copy_(&src(&m.memory, 0, *n_sp));
            dst_p
                .narrow(0, 0, *n_sp)
                .copy_(&src(&m.memory_pos, 0, *n_sp));
            dst_m
                .narrow(0, max_sp, *n_ptr)
                .copy_(&src(&m.memory, *n_sp, *n_ptr));
            dst_p
                .narrow(0, max_sp, *n_ptr)
                .copy_(&src(&m.memory_pos, *n_sp, *n_ptr));
        }
        let mem = AssembledMemory {
            memory,
            memory_pos,
            num_obj_ptr_tokens: max_ptr_tok,
        };
        let mask = needs_mask.then(|| {
            let counts: Vec<(i64, i64)> = parts.iter().map(|p| (p.1, p.2)).collect();
            self.key_mask(&counts, max_sp, max_ptr_tok)
        });
        Some((mem, mask))
    }

    /// The boolean key mask `[B, 1, 1, sp + ptr]` (true = attend) of objects with `counts`
    /// (spatial tokens, pointer tokens) in the layout of [`Self::assemble_memory_padded`]:
    /// built on the host and uploaded in one (asynchronous) copy, and kept for the next call
    /// with the same counts (in steady state every frame of a batch, with `--static-shapes`
    /// once each bank is full).
    fn key_mask(&self, counts: &[(i64, i64)], sp: i64, ptr: i64) -> Tensor {
        let mut key = vec![sp, ptr];
        key.extend(counts.iter().flat_map(|&(a, b)| [a, b]));
        let mut cache = self.key_mask.borrow_mut();
        if let Some((k, t)) = &*cache
            && *k == key
        {
            return t.shallow_clone();
        }
        let mut host = Vec::with_capacity(counts.len() * (sp + ptr) as usize);
        for &(n_sp, n_ptr) in counts {
            for (n, total) in [(n_sp, sp), (n_ptr, ptr)] {
                host.extend((0..total).map(|j| j < n));
            }
        }
        let t = super::cuda::upload(
            &Tensor::from_slice(&host).view([counts.len() as i64, 1, 1, sp + ptr]),
            self.device,
        );
        *cache = Some((key, t.shallow_clone()));
        t
    }

    /// [`Self::track_frame`] for B objects sharing one frame (`feats` of batch B, e.g.
    /// [`BackboneOut::expand_item`]) whose memory banks may differ in size (padding + attention
    /// mask, see [`Self::assemble_memory_batched`]). Equal to B separate calls up to the
    /// summation order of the masked attention (~1e-7). An object without any memory gets the
    /// `L2 + no_mem_embed` fallback of [`Self::pix_with_memory`], computed separately.
    pub fn track_frame_batched(
        &self,
        feats: &BackboneOut,
        objects: &[ObjectMemory<'_>],
        max_ptr: i64,
    ) -> StepOutput {
        self.track_frame_batched_padded(feats, objects, max_ptr, None)
    }

    /// [`Self::track_frame_batched`] with every object's memory padded to `capacity`
    /// ([`Self::assemble_memory_padded`]): in steady state every frame of a batch of B objects
    /// then runs on the same tensor shapes (`--static-shapes`). That is the prerequisite for
    /// capturing the step once as a CUDA graph and replaying it per frame, which needs a GPU
    /// session to build and measure; on its own it changes only the padding (zeros, masked
    /// out). The shapes are fixed from an object's first tracked frame on (its bank padded to
    /// the capacity even while it fills); a batch holding an object without any memory takes
    /// the per-object fallback, as without a capacity.
    pub fn track_frame_batched_padded(
        &self,
        feats: &BackboneOut,
        objects: &[ObjectMemory<'_>],
        max_ptr: i64,
        capacity: Option<MemoryCapacity>,
    ) -> StepOutput {
        let _span = tracing::trace_span!("track_frame_batched").entered();
        let prof = crate::profile::scope(crate::profile::Section::MemoryAttention);
        let pix = match self.assemble_memory_padded(objects, max_ptr, capacity) {
            Some((mem, mask)) => self.attend_memory(feats, &mem, mask.as_ref()),
            None => {
                let per: Vec<Tensor> = objects
                    .iter()
                    .enumerate()
                    .map(|(i, o)| {
                        let fi = feats.expand_item(i as i64, 1);
                        self.pix_with_memory(&fi, o.memories, o.pointers, max_ptr)
                    })
                    .collect();
                Tensor::cat(&per, 0)
            }
        };
        drop(prof);
        self.forward_sam_heads(&pix, feats, None, None, true).step
    }

    /// `_encode_new_memory` (docs/sam2-inference.md §3.7) on the raw L2 features:
    /// `high_res_masks [B, 1, S, S]` binarised (`is_mask_from_pts`) or sigmoid, ×20 − 10, memory
    /// encoder, `no_obj_embed_spatial` where `object_score_logits <= 0` (2.1), features rounded
    /// through bf16.
    /// Returns `(features [B, 64, f, f], pos_enc [B, 64, f, f])`.
    pub fn encode_memory(
        &self,
        feats: &BackboneOut,
        high_res_masks: &Tensor,
        object_score_logits: &Tensor,
        is_mask_from_pts: bool,
    ) -> (Tensor, Tensor) {
        let _span = tracing::trace_span!("encode_memory").entered();
        let _prof = crate::profile::scope(crate::profile::Section::MemoryEncoder);
        let _ac = self.autocast();
        let (f, pos) = self.encode_memory_unrounded(
            feats,
            high_res_masks,
            object_score_logits,
            is_mask_from_pts,
        );
        (f.to_kind(Kind::BFloat16).to_kind(Kind::Float), pos)
    }

    /// [`Self::encode_memory`] without the bf16 rounding (for parity tests).
    pub fn encode_memory_unrounded(
        &self,
        feats: &BackboneOut,
        high_res_masks: &Tensor,
        object_score_logits: &Tensor,
        is_mask_from_pts: bool,
    ) -> (Tensor, Tensor) {
        let _prof = crate::profile::scope(crate::profile::Section::MemoryEncoder);
        let _ac = self.autocast();
        let h = high_res_masks.to_kind(Kind::Float);
        let m = if is_mask_from_pts {
            h.gt(0.0).to_kind(Kind::Float)
        } else {
            h.sigmoid()
        };
        let m = m * 20.0 + (-10.0);
        let (mut feat, pos) = self.memory_encoder.forward(&feats.vision_feat, &m);
        if let Some(e) = &self.no_obj_embed_spatial {
            let b = feat.size()[0];
            let absent = 1.0
                - object_score_logits
                    .gt(0.0)
                    .to_kind(Kind::Float)
                    .view([b, 1, 1, 1]);
            feat += absent * e.view([1, MEM_DIM, 1, 1]);
        }
        // Under autocast both are bf16 (the official `.to(x.dtype)` on the PE): widen exactly.
        if feat.kind() != Kind::Float {
            (feat.to_kind(Kind::Float), pos.to_kind(Kind::Float))
        } else {
            (feat, pos)
        }
    }
}
