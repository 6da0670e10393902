//! densam: dense SAM 2 / SAM 2.1 video annotations for videos of any length.
//!
//! The crate is organised by stage of the data flow (see docs/ARCHITECTURE.md): `video` yields
//! frames, `model` holds the SAM 2 modules, `tracker` turns frames and prompts into per-object
//! results in bounded memory, `output` writes them; `mask` holds the binary masks and their COCO
//! RLE form that prompts, tracker, output and eval exchange. `model` knows nothing of videos or
//! files; `tracker` knows nothing of file formats.

pub mod alloc;
pub mod cluster;
pub mod eval;
pub mod exit;
pub mod files;
pub mod hash;
pub mod id;
pub mod job;
pub mod mask;
pub mod model;
pub mod output;
pub mod profile;
pub mod prompts;
pub mod review;
pub mod tracker;
pub mod video;
