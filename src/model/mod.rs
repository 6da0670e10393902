//! SAM 2 / SAM 2.1 in tch, one file per module of the official implementation (their forwards
//! are described in docs/sam2-inference.md §3).
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
pub mod position_encoding;
pub mod prompt_encoder;
pub mod sam2;
pub mod two_way_transformer;
pub mod weights;
