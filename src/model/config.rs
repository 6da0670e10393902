//! `Sam2Config`: everything that varies between SAM 2 checkpoints and runs, as one struct
//! instead of the official code's dozens of boolean flags. The flags that are the same for every
//! released model (docs/sam2-inference.md §1.2) are constants in the modules that use them.

/// Model size, detected from the checkpoint (trunk width and depth).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSize {
    Tiny,
    Small,
    BasePlus,
    Large,
}

/// SAM 2.0 or SAM 2.1 (2.1 has `no_obj_embed_spatial` and `obj_ptr_tpos_proj`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Sam2Version {
    #[serde(rename = "2.0")]
    V2_0,
    #[serde(rename = "2.1")]
    V2_1,
}

/// Hiera trunk layout (docs/sam2-inference.md §1.1).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HieraConfig {
    pub embed_dim: i64,
    pub num_heads: i64,
    pub stages: Vec<usize>,
    pub global_att_blocks: Vec<usize>,
    pub window_spec: Vec<i64>,
    /// Spatial size of `pos_embed` (`window_pos_embed_bkg_spatial_size`).
    pub bkg_pos_size: (i64, i64),
}

impl HieraConfig {
    pub fn for_size(size: ModelSize) -> Self {
        match size {
            ModelSize::Tiny => HieraConfig {
                embed_dim: 96,
                num_heads: 1,
                stages: vec![1, 2, 7, 2],
                global_att_blocks: vec![5, 7, 9],
                window_spec: vec![8, 4, 14, 7],
                bkg_pos_size: (7, 7),
            },
            ModelSize::Small => HieraConfig {
                embed_dim: 96,
                num_heads: 1,
                stages: vec![1, 2, 11, 2],
                global_att_blocks: vec![7, 10, 13],
                window_spec: vec![8, 4, 14, 7],
                bkg_pos_size: (7, 7),
            },
            ModelSize::BasePlus => HieraConfig {
                embed_dim: 112,
                num_heads: 2,
                stages: vec![2, 3, 16, 3],
                global_att_blocks: vec![12, 16, 20],
                window_spec: vec![8, 4, 14, 7],
                bkg_pos_size: (14, 14),
            },
            ModelSize::Large => HieraConfig {
                embed_dim: 144,
                num_heads: 2,
                stages: vec![2, 6, 36, 4],
                global_att_blocks: vec![23, 33, 43],
                window_spec: vec![8, 4, 16, 8],
                bkg_pos_size: (7, 7),
            },
        }
    }

    /// Channel widths of the four trunk outputs, coarsest first (`backbone_channel_list`).
    pub fn backbone_channel_list(&self) -> [i64; 4] {
        let c = self.embed_dim;
        [8 * c, 4 * c, 2 * c, c]
    }
}

/// The configuration of one SAM 2 model instance.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sam2Config {
    pub size: ModelSize,
    pub version: Sam2Version,
    pub hiera: HieraConfig,
    /// Square model input size in pixels; a multiple of 64 in 256..=1024 (official default 1024).
    pub image_size: i64,
    /// Holes of at most this many pixels in the low-res mask are filled (0 disables; official 8).
    pub fill_hole_area: i64,
    /// `max_cond_frames_in_attn`: how many conditioning frames memory attention sees (-1 = all).
    pub max_cond_frames_in_attn: i64,
    /// `memory_temporal_stride_for_eval` (1 in the official configs).
    pub memory_temporal_stride: i64,
}

/// A model input size the model cannot take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("image size {0} is not a multiple of 64 in 256..=1024")]
pub struct ImageSizeError(pub i64);

/// Checks a model input size: a multiple of 64 in 256..=1024. The one check of it, used by the
/// model loader and by the command line before anything runs.
pub fn check_image_size(s: i64) -> Result<(), ImageSizeError> {
    if s % 64 == 0 && (256..=1024).contains(&s) {
        Ok(())
    } else {
        Err(ImageSizeError(s))
    }
}

/// Fixed dimensions shared by every released model.
pub const D_MODEL: i64 = 256;
/// Memory feature channels (`memory_encoder.out_dim`).
pub const MEM_DIM: i64 = 64;
/// Number of memory slots: 1 conditioning + 6 previous frames.
pub const NUM_MASKMEM: i64 = 7;
/// `max_obj_ptrs_in_encoder`.
pub const MAX_OBJ_PTRS: i64 = 16;
/// Score written into masks of objects judged absent.
pub const NO_OBJ_SCORE: f64 = -1024.0;

impl Sam2Config {
    /// The official configuration of a size and version at image size 1024.
    pub fn new(size: ModelSize, version: Sam2Version) -> Self {
        Sam2Config {
            size,
            version,
            hiera: HieraConfig::for_size(size),
            image_size: 1024,
            fill_hole_area: 8,
            max_cond_frames_in_attn: -1,
            memory_temporal_stride: 1,
        }
    }

    /// Backbone stride 16: side of the image embedding (64 at 1024).
    pub fn feat_size(&self) -> i64 {
        self.image_size / 16
    }

    /// Side of the low-res mask logits (256 at 1024).
    pub fn low_res_size(&self) -> i64 {
        self.image_size / 4
    }

    pub fn is_v2_1(&self) -> bool {
        self.version == Sam2Version::V2_1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_sizes() {
        for s in [256, 320, 512, 1024] {
            assert_eq!(check_image_size(s), Ok(()));
        }
        for s in [0, -64, 100, 192, 300, 1088, 4096] {
            assert_eq!(check_image_size(s), Err(ImageSizeError(s)));
        }
        assert_eq!(
            ImageSizeError(300).to_string(),
            "image size 300 is not a multiple of 64 in 256..=1024"
        );
    }
}
