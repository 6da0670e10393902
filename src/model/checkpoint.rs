//! Reading official SAM 2 and SAM 3 checkpoints into a [`Weights`] and detecting their
//! configuration.
//!
//! Two formats are read:
//! * a `torch.save` zip archive (`<name>/data.pkl`, a pickle, plus one `<name>/data/<key>` entry
//!   per storage) holding the state dict flat or as `{"model": state_dict}` (Meta publishes SAM 2
//!   wrapped; SAM 3's `sam3.pt` may be either). The pickle is run by a small interpreter of its own
//!   ([`super::pickle`]); nothing is ever executed or imported;
//! * a safetensors file holding the same flat state dict.
//!
//! The format is recognised from the file's first bytes, the family from the keys: SAM 3's file
//! holds the whole video model (`detector.*`, `tracker.*`). Its tracker's tensors are renamed to the
//! names of the SAM 2 modules they feed (docs/sam3-tracker.md §3) and everything else (detector,
//! text encoder, the recomputed RoPE tables) is skipped without being read. The SAM 2 size comes
//! from the trunk's width and depth, the version from `no_obj_embed_spatial` (2.1 only); the
//! image size is the user's choice (else the family's default) and is validated here.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::config::{Family, ImageSizeError, ModelSize, Sam2Config, Sam2Version};
use super::pickle::{self, TensorRef, Value};
use super::weights::{Weights, WeightsError};

/// Errors of [`load`].
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    ImageSize(#[from] ImageSizeError),
}

impl From<CheckpointError> for super::sam2::ModelError {
    fn from(e: CheckpointError) -> Self {
        match e {
            CheckpointError::Weights(w) => super::sam2::ModelError::Weights(w),
            other => super::sam2::ModelError::Checkpoint(other.to_string()),
        }
    }
}

/// Checks an image size before the checkpoint is known (it must suit some family).
pub fn validate_image_size(s: i64) -> Result<(), CheckpointError> {
    Ok(super::config::check_image_size_any(s)?)
}

/// Reads a checkpoint (`.pt` zip or safetensors) onto `device` and detects its configuration;
/// `image_size` (else the family's default) is checked against the family's rule and set in the
/// returned config, with the family's defaults for everything else.
pub fn load(
    path: &Path,
    device: Device,
    image_size: impl Into<Option<i64>>,
) -> Result<(Weights, Sam2Config), CheckpointError> {
    let image_size = image_size.into();
    if let Some(s) = image_size {
        validate_image_size(s)?;
    }
    let weights = read_weights(path, device)?;
    let mut config = detect_config(&weights)?;
    let family = config.family();
    let s = image_size.unwrap_or_else(|| family.default_image_size());
    family.check_image_size(s)?;
    config.image_size = s;
    Ok((weights, config))
}

fn read_err(path: &Path, msg: impl std::fmt::Display) -> WeightsError {
    WeightsError::Read {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

fn not_ckpt(path: &Path, msg: impl std::fmt::Display) -> WeightsError {
    WeightsError::NotACheckpoint {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// The key a SAM 3 (`sam3.pt`) tensor gets in densam's state dict, `None` for one the tracker
/// does not read: the ViT trunk and the tracker's neck become `image_encoder.trunk` /
/// `image_encoder.neck`, the memory attention and memory encoder take SAM 2's module names, the
/// two-way transformer's MLPs (`mlp.lin1`/`lin2`, SAM 1's names) SAM 2's `mlp.layers.0`/`1`, the
/// other `tracker.*` tensors keep theirs; the detector, its neck, the text encoder and the
/// trunk's rotation tables (recomputed for the image size) are skipped.
pub fn sam3_key(key: &str) -> Option<String> {
    const VISION: &str = "detector.backbone.vision_backbone.";
    if let Some(rest) = key.strip_prefix(VISION) {
        if rest.ends_with(".attn.freqs_cis") {
            return None;
        }
        if let Some(t) = rest.strip_prefix("trunk.") {
            return Some(format!("image_encoder.trunk.{t}"));
        }
        return rest
            .strip_prefix("sam2_convs.")
            .map(|n| format!("image_encoder.neck.{n}"));
    }
    let rest = key.strip_prefix("tracker.")?;
    Some(if let Some(r) = rest.strip_prefix("transformer.encoder.") {
        format!("memory_attention.{r}")
    } else if let Some(r) = rest.strip_prefix("maskmem_backbone.") {
        format!("memory_encoder.{r}")
    } else if rest.starts_with("sam_mask_decoder.transformer.layers.") {
        rest.replacen(".mlp.lin1.", ".mlp.layers.0.", 1)
            .replacen(".mlp.lin2.", ".mlp.layers.1.", 1)
    } else {
        rest.to_string()
    })
}

/// Whether a state dict's keys are SAM 3's (the whole video model: `tracker.*` heads beside the
/// `detector.*` vision backbone).
pub fn is_sam3(keys: &[&str]) -> bool {
    keys.iter().any(|k| k.starts_with("tracker."))
        && keys
            .iter()
            .any(|k| k.starts_with("detector.backbone.vision_backbone.trunk."))
}

/// The format of a checkpoint file, from its first bytes.
enum Format {
    TorchZip,
    Safetensors,
}

fn sniff(path: &Path) -> Result<Format, WeightsError> {
    let mut head = [0u8; 16];
    let n = {
        let mut f = std::fs::File::open(path).map_err(|e| read_err(path, e))?;
        let mut n = 0;
        while n < head.len() {
            match f.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(read_err(path, e)),
            }
        }
        n
    };
    if n >= 4 && &head[..4] == b"PK\x03\x04" {
        Ok(Format::TorchZip)
    } else if n >= 9 && head[8] == b'{' {
        Ok(Format::Safetensors)
    } else if n >= 2 && head[0] == 0x80 {
        Err(not_ckpt(
            path,
            "a legacy (pre-zip) torch.save file; re-save it with torch.save from PyTorch >= 1.6",
        ))
    } else {
        Err(not_ckpt(
            path,
            "neither a torch.save zip archive nor a safetensors file",
        ))
    }
}

/// Reads the state dict of a checkpoint, recognising the format from its first bytes and the
/// family from its keys; a SAM 3 file is reduced to the tracker's tensors under densam's names
/// ([`sam3_key`]) without reading the others.
pub fn read_weights(path: &Path, device: Device) -> Result<Weights, WeightsError> {
    let tensors = match sniff(path)? {
        Format::TorchZip => read_torch_zip(path, select)?,
        Format::Safetensors => read_safetensors(path, select)?,
    };
    Ok(Weights::new(path.display().to_string(), tensors, device))
}

/// The renaming [`read_weights`] applies, chosen from all the keys.
fn select(keys: &[&str]) -> fn(&str) -> Option<String> {
    if is_sam3(keys) {
        sam3_key
    } else {
        |k| Some(k.to_string())
    }
}

/// Reads the named tensors of a checkpoint as stored (no renaming, nothing converted), e.g. the
/// RoPE tables of a SAM 3 file for a check; missing names are left out.
pub fn read_raw(path: &Path, names: &[&str]) -> Result<BTreeMap<String, Tensor>, WeightsError> {
    let wanted: std::collections::BTreeSet<String> = names.iter().map(|s| s.to_string()).collect();
    let pick = |k: &str| wanted.contains(k).then(|| k.to_string());
    match sniff(path)? {
        Format::TorchZip => read_torch_zip(path, |_| pick),
        Format::Safetensors => read_safetensors(path, |_| pick),
    }
}

/// The configuration a state dict (in densam's names) belongs to, with the family's defaults
/// (image size 1024 for SAM 2, 1008 for SAM 3).
pub fn detect_config(w: &Weights) -> Result<Sam2Config, WeightsError> {
    let src = || std::path::PathBuf::from(w.source_name());
    if w.contains("image_encoder.trunk.ln_pre.weight") {
        // SAM 3: one released trunk; its shapes are checked as the modules take them.
        return Ok(Sam2Config::sam3());
    }
    let key = "image_encoder.trunk.pos_embed";
    let pe = w
        .shape_of(key)
        .ok_or_else(|| not_ckpt(&src(), format!("no key `{key}`")))?;
    if pe.len() != 4 {
        return Err(not_ckpt(
            &src(),
            format!("`{key}` has shape {pe:?}, expected 4 dimensions"),
        ));
    }
    let embed_dim = pe[1];
    let mut blocks = 0;
    while w.contains(&format!("image_encoder.trunk.blocks.{blocks}.norm1.weight")) {
        blocks += 1;
    }
    let size = match (embed_dim, blocks) {
        (96, 12) => ModelSize::Tiny,
        (96, 16) => ModelSize::Small,
        (112, 24) => ModelSize::BasePlus,
        (144, 48) => ModelSize::Large,
        _ => {
            return Err(not_ckpt(
                &src(),
                format!("a Hiera trunk of width {embed_dim} with {blocks} blocks is no SAM 2 size"),
            ));
        }
    };
    let version = if w.contains("no_obj_embed_spatial") {
        Sam2Version::V2_1
    } else {
        Sam2Version::V2_0
    };
    Ok(Sam2Config::new(size, version))
}

/// The family a checkpoint file holds, from its keys only (no tensor is read).
pub fn family_of(path: &Path) -> Result<Family, WeightsError> {
    let keys = match sniff(path)? {
        Format::TorchZip => torch_zip_keys(path)?,
        Format::Safetensors => safetensors_header(path)?.0.into_keys().collect(),
    };
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    Ok(if is_sam3(&refs) {
        Family::Sam3
    } else {
        Family::Sam2
    })
}

/// A `(name, tensor view)` list and the archive's entry prefix, from a `torch.save` zip.
struct ZipDict {
    zip: zip::ZipArchive<std::io::BufReader<std::fs::File>>,
    prefix: String,
    entries: Vec<(String, TensorRef)>,
}

fn read_entry(
    path: &Path,
    zip: &mut zip::ZipArchive<std::io::BufReader<std::fs::File>>,
    name: &str,
) -> Result<Vec<u8>, WeightsError> {
    let mut e = zip
        .by_name(name)
        .map_err(|e| not_ckpt(path, format!("missing archive entry {name}: {e}")))?;
    let mut buf = Vec::with_capacity(e.size() as usize);
    e.read_to_end(&mut buf)
        .map_err(|e| read_err(path, format!("{name}: {e}")))?;
    Ok(buf)
}

/// Opens a `torch.save` zip and runs its pickle: the state dict, flat or under `"model"`.
fn open_torch_zip(path: &Path) -> Result<ZipDict, WeightsError> {
    let file = std::fs::File::open(path).map_err(|e| read_err(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| not_ckpt(path, format!("not a zip archive: {e}")))?;
    let pkl_name = zip
        .file_names()
        .find(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .map(str::to_string)
        .ok_or_else(|| not_ckpt(path, "zip archive without data.pkl (not a torch.save file)"))?;
    let prefix = pkl_name[..pkl_name.len() - "data.pkl".len()].to_string();
    if let Ok(bo) = read_entry(path, &mut zip, &format!("{prefix}byteorder"))
        && bo.trim_ascii() != b"little"
    {
        return Err(not_ckpt(path, "big-endian checkpoints are not supported"));
    }
    let pkl = read_entry(path, &mut zip, &pkl_name)?;
    let root = pickle::Unpickler::new(&pkl)
        .run()
        .map_err(|e| not_ckpt(path, format!("data.pkl: {e}")))?;
    let Value::Dict(items) = root else {
        return Err(not_ckpt(path, "the pickled object is not a dict"));
    };
    // `{"model": state_dict}` (as Meta publishes SAM 2) or the state dict itself.
    let wrapped = items.iter().position(|(k, v)| {
        matches!(k, Value::Str(s) if s == "model") && matches!(v, Value::Dict(_))
    });
    let dict = match wrapped {
        Some(i) => match items.into_iter().nth(i) {
            Some((_, Value::Dict(d))) => d,
            _ => unreachable!("checked above"),
        },
        None if !items.is_empty() && items.iter().all(|(_, v)| matches!(v, Value::Tensor(_))) => {
            items
        }
        None => {
            return Err(not_ckpt(
                path,
                "neither a state dict nor {\"model\": state_dict} (torch.save of the model's weights)",
            ));
        }
    };
    let mut entries = Vec::with_capacity(dict.len());
    for (k, v) in dict {
        let (Value::Str(name), Value::Tensor(t)) = (k, v) else {
            return Err(not_ckpt(
                path,
                "the state dict holds something other than named tensors",
            ));
        };
        entries.push((name, t));
    }
    Ok(ZipDict {
        zip,
        prefix,
        entries,
    })
}

/// The keys of a `torch.save` zip's state dict (only the pickle is read).
fn torch_zip_keys(path: &Path) -> Result<Vec<String>, WeightsError> {
    Ok(open_torch_zip(path)?
        .entries
        .into_iter()
        .map(|(k, _)| k)
        .collect())
}

/// Reads the tensors of a `torch.save` zip that `choose(all keys)` keeps, under the names it
/// gives them; the storages of the others are never read.
fn read_torch_zip<F: Fn(&str) -> Option<String>>(
    path: &Path,
    choose: impl FnOnce(&[&str]) -> F,
) -> Result<BTreeMap<String, Tensor>, WeightsError> {
    let ZipDict {
        mut zip,
        prefix,
        entries,
    } = open_torch_zip(path)?;
    let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
    let rename = choose(&keys);
    let mut storages: std::collections::HashMap<String, Tensor> = Default::default();
    let mut out = BTreeMap::new();
    for (name, t) in &entries {
        let Some(new_name) = rename(name) else {
            continue;
        };
        if !storages.contains_key(&t.storage) {
            let bytes = read_entry(path, &mut zip, &format!("{prefix}data/{}", t.storage))?;
            let elt = t.kind.elt_size_in_bytes();
            let numel = (bytes.len() / elt) as i64;
            let s = Tensor::f_from_data_size(&bytes[..numel as usize * elt], &[numel], t.kind)
                .map_err(|e| read_err(path, format!("storage {}: {e}", t.storage)))?;
            storages.insert(t.storage.clone(), s);
        }
        let storage = &storages[&t.storage];
        let numel = storage.size()[0];
        let last = t.offset
            + t.size
                .iter()
                .zip(&t.stride)
                .map(|(&n, &s)| (n - 1).max(0) * s)
                .sum::<i64>();
        let empty = t.size.contains(&0);
        if t.offset < 0 || t.stride.iter().any(|&s| s < 0) || (!empty && last >= numel) {
            return Err(not_ckpt(
                path,
                format!("tensor `{name}` lies outside its storage"),
            ));
        }
        let tensor = storage
            .f_as_strided(t.size.as_slice(), t.stride.as_slice(), t.offset)
            .and_then(|x| x.f_contiguous())
            .map_err(|e| read_err(path, format!("tensor `{name}`: {e}")))?;
        out.insert(new_name, tensor);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// safetensors

/// One tensor of a safetensors header: kind, shape and byte range in the data section.
struct SafeEntry {
    kind: Kind,
    shape: Vec<i64>,
    begin: u64,
    end: u64,
}

/// The header of a safetensors file and the offset of its data section.
fn safetensors_header(path: &Path) -> Result<(BTreeMap<String, SafeEntry>, u64), WeightsError> {
    let mut f = std::fs::File::open(path).map_err(|e| read_err(path, e))?;
    let file_len = f.metadata().map_err(|e| read_err(path, e))?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|e| read_err(path, e))?;
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 || 8 + n > file_len {
        return Err(not_ckpt(path, format!("safetensors header of {n} bytes")));
    }
    let mut h = vec![0u8; n as usize];
    f.read_exact(&mut h).map_err(|e| read_err(path, e))?;
    let json: serde_json::Value = serde_json::from_slice(&h)
        .map_err(|e| not_ckpt(path, format!("safetensors header: {e}")))?;
    let obj = json
        .as_object()
        .ok_or_else(|| not_ckpt(path, "safetensors header is not an object"))?;
    let data_start = 8 + n;
    let mut out = BTreeMap::new();
    for (name, v) in obj {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| not_ckpt(path, format!("safetensors entry `{name}`: {what}"));
        let dtype = v["dtype"].as_str().ok_or_else(|| bad("no dtype"))?;
        let kind = match dtype {
            "F32" => Kind::Float,
            "F64" => Kind::Double,
            "F16" => Kind::Half,
            "BF16" => Kind::BFloat16,
            "I64" => Kind::Int64,
            "I32" => Kind::Int,
            "I16" => Kind::Int16,
            "I8" => Kind::Int8,
            "U8" => Kind::Uint8,
            "BOOL" => Kind::Bool,
            other => return Err(bad(&format!("unsupported dtype {other}"))),
        };
        let shape: Vec<i64> = v["shape"]
            .as_array()
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|d| d.as_i64().filter(|&d| d >= 0))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("shape is not a list of sizes"))?;
        let off = v["data_offsets"]
            .as_array()
            .filter(|a| a.len() == 2)
            .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)))
            .ok_or_else(|| bad("no data_offsets"))?;
        let numel: i64 = shape.iter().product();
        let bytes = numel as u64 * kind.elt_size_in_bytes() as u64;
        if off.1 < off.0 || off.1 - off.0 != bytes || data_start + off.1 > file_len {
            return Err(bad("data_offsets do not fit its shape or the file"));
        }
        out.insert(
            name.clone(),
            SafeEntry {
                kind,
                shape,
                begin: off.0,
                end: off.1,
            },
        );
    }
    Ok((out, data_start))
}

/// Reads the tensors of a safetensors file that `choose(all keys)` keeps, under the names it
/// gives them; the others are never read.
fn read_safetensors<F: Fn(&str) -> Option<String>>(
    path: &Path,
    choose: impl FnOnce(&[&str]) -> F,
) -> Result<BTreeMap<String, Tensor>, WeightsError> {
    let (header, data_start) = safetensors_header(path)?;
    let keys: Vec<&str> = header.keys().map(String::as_str).collect();
    let rename = choose(&keys);
    let mut f = std::fs::File::open(path).map_err(|e| read_err(path, e))?;
    let mut out = BTreeMap::new();
    for (name, e) in &header {
        let Some(new_name) = rename(name) else {
            continue;
        };
        let mut buf = vec![0u8; (e.end - e.begin) as usize];
        f.seek(SeekFrom::Start(data_start + e.begin))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|err| read_err(path, format!("tensor `{name}`: {err}")))?;
        let t = Tensor::f_from_data_size(&buf, &e.shape, e.kind)
            .map_err(|err| read_err(path, format!("tensor `{name}`: {err}")))?;
        out.insert(new_name, t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_size_validation() {
        assert!(validate_image_size(256).is_ok());
        assert!(validate_image_size(1024).is_ok());
        assert!(validate_image_size(640).is_ok());
        assert!(validate_image_size(192).is_err());
        assert!(validate_image_size(336).is_ok());
        assert!(validate_image_size(1008).is_ok());
        assert!(validate_image_size(1088).is_err());
        assert!(validate_image_size(500).is_err());
    }

    #[test]
    fn sam3_names() {
        let k = |s: &str| sam3_key(s);
        assert_eq!(
            k("detector.backbone.vision_backbone.trunk.blocks.3.attn.qkv.weight").as_deref(),
            Some("image_encoder.trunk.blocks.3.attn.qkv.weight")
        );
        assert_eq!(
            k("detector.backbone.vision_backbone.trunk.blocks.7.attn.freqs_cis"),
            None
        );
        assert_eq!(
            k("detector.backbone.vision_backbone.sam2_convs.1.dconv_2x2.bias").as_deref(),
            Some("image_encoder.neck.1.dconv_2x2.bias")
        );
        assert_eq!(
            k("detector.backbone.vision_backbone.convs.1.dconv_2x2.bias"),
            None
        );
        assert_eq!(k("detector.backbone.language_backbone.resizer.bias"), None);
        assert_eq!(
            k("tracker.transformer.encoder.layers.0.linear1.weight").as_deref(),
            Some("memory_attention.layers.0.linear1.weight")
        );
        assert_eq!(
            k("tracker.maskmem_backbone.out_proj.bias").as_deref(),
            Some("memory_encoder.out_proj.bias")
        );
        assert_eq!(k("tracker.no_obj_ptr").as_deref(), Some("no_obj_ptr"));
        assert_eq!(
            k("tracker.sam_mask_decoder.transformer.layers.1.mlp.lin2.bias").as_deref(),
            Some("sam_mask_decoder.transformer.layers.1.mlp.layers.1.bias")
        );
        assert!(is_sam3(&[
            "tracker.no_obj_ptr",
            "detector.backbone.vision_backbone.trunk.pos_embed"
        ]));
        assert!(!is_sam3(&["image_encoder.trunk.pos_embed", "no_obj_ptr"]));
    }

    #[test]
    fn not_a_checkpoint() {
        let dir = std::env::temp_dir().join(format!("densam-ckpt-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("notes.txt");
        std::fs::write(&p, "hello, this is not a checkpoint").unwrap();
        let e = read_weights(&p, Device::Cpu).unwrap_err().to_string();
        assert!(
            e.contains("notes.txt") && e.contains("not a SAM 2 or SAM 3 checkpoint"),
            "{e}"
        );
        let e = read_weights(&dir.join("missing.pt"), Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pt"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
