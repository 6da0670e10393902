//! `Sam2Config`: everything that varies between the checkpoints densam reads (SAM 2.0, SAM 2.1
//! and SAM 3's tracker) and between runs, as one struct instead of the official code's dozens of
//! boolean flags. The flags that are the same for every released model (docs/sam2-inference.md
//! §1.2) are constants in the modules that use them; what SAM 3 changes in the modules it shares
//! with SAM 2 (docs/sam3-tracker.md §1) is data here: the backbone and its stride, the mask sizes
//! that follow from it, and the per-model defaults.

/// Model size, detected from the checkpoint (trunk width and depth).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSize {
    Tiny,
    Small,
    BasePlus,
    Large,
}

impl ModelSize {
    /// The official name (`tiny`, `small`, `base_plus`, `large`).
    pub fn as_str(self) -> &'static str {
        match self {
            ModelSize::Tiny => "tiny",
            ModelSize::Small => "small",
            ModelSize::BasePlus => "base_plus",
            ModelSize::Large => "large",
        }
    }
}

/// SAM 2.0, SAM 2.1 or SAM 3's tracker (2.1 and 3 have `no_obj_embed_spatial` and
/// `obj_ptr_tpos_proj`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Sam2Version {
    #[serde(rename = "2.0")]
    V2_0,
    #[serde(rename = "2.1")]
    V2_1,
    #[serde(rename = "3")]
    V3,
}

/// The model family: which image encoder, which defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// SAM 2 / SAM 2.1: Hiera + FPN, stride 16.
    Sam2,
    /// SAM 3's tracker: ViT + SimpleFPN, stride 14.
    Sam3,
}

impl Family {
    /// How the family is named in messages.
    pub fn name(self) -> &'static str {
        match self {
            Family::Sam2 => "SAM 2 / 2.1",
            Family::Sam3 => "SAM 3",
        }
    }

    /// The official input size.
    pub fn default_image_size(self) -> i64 {
        match self {
            Family::Sam2 => 1024,
            Family::Sam3 => 1008,
        }
    }

    /// The official hole filling (`fill_hole_area`; SAM 3's tracker builds with 0).
    pub fn default_fill_hole_area(self) -> i64 {
        match self {
            Family::Sam2 => 8,
            Family::Sam3 => 0,
        }
    }

    /// The official `max_cond_frames_in_attn` (-1 = all).
    pub fn default_max_cond_frames(self) -> i64 {
        match self {
            Family::Sam2 => -1,
            Family::Sam3 => 4,
        }
    }

    /// Checks a model input size against the family's rule (the one check of it).
    pub fn check_image_size(self, s: i64) -> Result<(), ImageSizeError> {
        let ok = match self {
            Family::Sam2 => s % 64 == 0 && (256..=1024).contains(&s),
            Family::Sam3 => s % 14 == 0 && (336..=1008).contains(&s),
        };
        if ok {
            Ok(())
        } else {
            Err(ImageSizeError {
                size: s,
                family: Some(self),
            })
        }
    }

    /// The rule of [`Family::check_image_size`] in words.
    pub fn image_size_rule(self) -> &'static str {
        match self {
            Family::Sam2 => "a multiple of 64 in 256..=1024",
            Family::Sam3 => "a multiple of 14 in 336..=1008",
        }
    }
}

/// SAM 3's ViT trunk (docs/sam3-tracker.md §2.1); one released size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VitConfig {
    pub embed_dim: i64,
    pub depth: usize,
    pub num_heads: i64,
    /// MLP width (`int(1024 · 4.625)`).
    pub mlp_hidden: i64,
    pub patch_size: i64,
    /// Side of the attention windows (and of the windows' rotation table).
    pub window_size: i64,
    pub global_att_blocks: Vec<usize>,
    /// Side of the pretraining patch grid of `pos_embed` (336 / 14).
    pub pretrain_grid: i64,
}

impl VitConfig {
    /// The trunk of the released `sam3.pt`.
    pub fn sam3() -> Self {
        VitConfig {
            embed_dim: 1024,
            depth: 32,
            num_heads: 16,
            mlp_hidden: 4736,
            patch_size: 14,
            window_size: 24,
            global_att_blocks: vec![7, 15, 23, 31],
            pretrain_grid: 24,
        }
    }
}

/// The image encoder's trunk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BackboneConfig {
    Hiera(HieraConfig),
    Vit(VitConfig),
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

/// The configuration of one model instance.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sam2Config {
    /// The SAM 2 size; `None` for SAM 3 (one size).
    pub size: Option<ModelSize>,
    pub version: Sam2Version,
    pub backbone: BackboneConfig,
    /// Square model input size in pixels ([`Family::check_image_size`]).
    pub image_size: i64,
    /// Holes of at most this many pixels in the low-res mask are filled (0 disables; official 8).
    pub fill_hole_area: i64,
    /// `max_cond_frames_in_attn`: how many conditioning frames memory attention sees (-1 = all).
    pub max_cond_frames_in_attn: i64,
    /// `memory_temporal_stride_for_eval` (1 in the official configs).
    pub memory_temporal_stride: i64,
}

/// A model input size the model cannot take: against one family's rule, or (`family` `None`,
/// before the checkpoint is known) against every family's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageSizeError {
    pub size: i64,
    pub family: Option<Family>,
}

impl std::fmt::Display for ImageSizeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.family {
            Some(fam) => write!(
                f,
                "image size {} is not {} (the rule for a {} checkpoint)",
                self.size,
                fam.image_size_rule(),
                fam.name()
            ),
            None => write!(
                f,
                "image size {} is neither {} (SAM 2 / 2.1) nor {} (SAM 3)",
                self.size,
                Family::Sam2.image_size_rule(),
                Family::Sam3.image_size_rule()
            ),
        }
    }
}

impl std::error::Error for ImageSizeError {}

/// Checks an input size before the checkpoint is read: it must suit one of the families (the
/// family's own rule is checked once the checkpoint is known).
pub fn check_image_size_any(s: i64) -> Result<(), ImageSizeError> {
    if Family::Sam2.check_image_size(s).is_ok() || Family::Sam3.check_image_size(s).is_ok() {
        Ok(())
    } else {
        Err(ImageSizeError {
            size: s,
            family: None,
        })
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
    /// The official configuration of a SAM 2 size and version at image size 1024.
    pub fn new(size: ModelSize, version: Sam2Version) -> Self {
        Sam2Config {
            size: Some(size),
            version,
            backbone: BackboneConfig::Hiera(HieraConfig::for_size(size)),
            image_size: 1024,
            fill_hole_area: 8,
            max_cond_frames_in_attn: -1,
            memory_temporal_stride: 1,
        }
    }

    /// The official configuration of SAM 3's tracker (image size 1008).
    pub fn sam3() -> Self {
        Sam2Config {
            size: None,
            version: Sam2Version::V3,
            backbone: BackboneConfig::Vit(VitConfig::sam3()),
            image_size: 1008,
            fill_hole_area: 0,
            max_cond_frames_in_attn: 4,
            memory_temporal_stride: 1,
        }
    }

    pub fn family(&self) -> Family {
        match self.backbone {
            BackboneConfig::Hiera(_) => Family::Sam2,
            BackboneConfig::Vit(_) => Family::Sam3,
        }
    }

    /// The backbone stride (16 for Hiera, the patch size 14 for the ViT).
    pub fn stride(&self) -> i64 {
        match &self.backbone {
            BackboneConfig::Hiera(_) => 16,
            BackboneConfig::Vit(v) => v.patch_size,
        }
    }

    /// Side of the image embedding (64 at 1024 for SAM 2, 72 at 1008 for SAM 3).
    pub fn feat_size(&self) -> i64 {
        self.image_size / self.stride()
    }

    /// Side of the low-res mask logits, 4× the embedding (256 at 1024, 288 at 1008).
    pub fn low_res_size(&self) -> i64 {
        4 * self.feat_size()
    }

    /// Side of the masks the memory encoder and `mask_downsample` take, 16× the embedding: the
    /// input size for SAM 2 (1024), 1152 for SAM 3 at 1008 (masks are resized to it).
    pub fn mask_size(&self) -> i64 {
        16 * self.feat_size()
    }

    /// The model in words for logs: `SAM 2.1 tiny`, `SAM 3`.
    pub fn describe(&self) -> String {
        let v = match self.version {
            Sam2Version::V2_0 => "SAM 2.0",
            Sam2Version::V2_1 => "SAM 2.1",
            Sam2Version::V3 => "SAM 3",
        };
        match self.size {
            Some(s) => format!("{v} {}", s.as_str()),
            None => v.to_string(),
        }
    }

    /// Whether the heads are 2.1's (signed pointer positions, `obj_ptr_tpos_proj`,
    /// `no_obj_embed_spatial`): SAM 2.1 and SAM 3.
    pub fn is_v2_1(&self) -> bool {
        self.version != Sam2Version::V2_0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_sizes() {
        let sam2 = Family::Sam2;
        for s in [256, 320, 512, 1024] {
            assert_eq!(sam2.check_image_size(s), Ok(()));
        }
        for s in [0, -64, 100, 192, 300, 1088, 4096, 1008] {
            assert!(sam2.check_image_size(s).is_err(), "{s}");
        }
        assert_eq!(
            sam2.check_image_size(300).unwrap_err().to_string(),
            "image size 300 is not a multiple of 64 in 256..=1024 (the rule for a SAM 2 / 2.1 checkpoint)"
        );
        for s in [336, 504, 1008] {
            assert_eq!(Family::Sam3.check_image_size(s), Ok(()));
        }
        for s in [1024, 322, 1022, 0] {
            assert!(Family::Sam3.check_image_size(s).is_err(), "{s}");
        }
        assert!(check_image_size_any(1008).is_ok() && check_image_size_any(1024).is_ok());
        assert!(
            check_image_size_any(500)
                .unwrap_err()
                .to_string()
                .contains("SAM 3")
        );
    }

    #[test]
    fn sizes_follow_the_stride() {
        let c = Sam2Config::new(ModelSize::Tiny, Sam2Version::V2_1);
        assert_eq!(
            (c.feat_size(), c.low_res_size(), c.mask_size()),
            (64, 256, 1024)
        );
        let mut c = Sam2Config::sam3();
        assert_eq!(
            (c.feat_size(), c.low_res_size(), c.mask_size()),
            (72, 288, 1152)
        );
        c.image_size = 336;
        assert_eq!(
            (c.feat_size(), c.low_res_size(), c.mask_size()),
            (24, 96, 384)
        );
        assert!(c.is_v2_1());
    }
}
