//! SAM 2 / SAM 2.1 and SAM 3's tracker in tch, one file per module of the official
//! implementations (their forwards are described in docs/sam2-inference.md §3 and
//! docs/sam3-tracker.md). SAM 3 brings its own image encoder ([`vit`], [`vit_neck`]) and reuses
//! every other module with its differences as configuration ([`config`]).
//!
//! The model takes its images as normalised tensors; [`image_input`] turns the video layer's
//! S×S uint8 RGB images into them.
//!
//! Every module is a plain struct built from a [`weights::Weights`] path named exactly as in the
//! official checkpoint, so loading is by name and strict. Forwards take and return tensors on
//! the model's device; shapes are given in each forward's doc comment.

pub mod checkpoint;
pub mod config;
pub mod cuda;
pub mod device;
pub mod fill_holes;
pub mod hiera;
pub mod image_encoder;
pub mod image_input;
pub mod layers;
pub mod mask_decoder;
pub mod memory_attention;
pub mod memory_encoder;
pub mod pickle;
pub mod position_encoding;
pub mod prompt_encoder;
pub mod sam2;
pub mod two_way_transformer;
pub mod vit;
pub mod vit_neck;
pub mod weights;
