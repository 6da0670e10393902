//! Reading official SAM 2 checkpoints into a [`Weights`] and detecting their configuration.
//!
//! Two formats are read:
//! * the `torch.save({"model": state_dict})` zip archive Meta publishes (`<name>/data.pkl`, a
//!   protocol-2 pickle, plus one `<name>/data/<key>` entry per storage). The pickle is run by a
//!   small interpreter of its own that knows only the opcodes `torch.save` emits and the globals
//!   of a state dict (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
//!   `torch.*Storage`); nothing is ever executed or imported;
//! * a safetensors file holding the same flat state dict.
//!
//! The format is recognised from the file's first bytes. The model size comes from the trunk's
//! width and depth, the version from `no_obj_embed_spatial` (2.1 only); the image size is the
//! user's choice and is validated here.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::config::{ModelSize, Sam2Config, Sam2Version};
use super::weights::{Weights, WeightsError};

/// Errors of [`load`].
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("{}", super::config::ImageSizeError(*.0))]
    ImageSize(i64),
}

impl From<CheckpointError> for super::sam2::ModelError {
    fn from(e: CheckpointError) -> Self {
        match e {
            CheckpointError::Weights(w) => super::sam2::ModelError::Weights(w),
            other => super::sam2::ModelError::Checkpoint(other.to_string()),
        }
    }
}

/// [`super::config::check_image_size`] as a [`CheckpointError`].
pub fn validate_image_size(s: i64) -> Result<(), CheckpointError> {
    super::config::check_image_size(s).map_err(|e| CheckpointError::ImageSize(e.0))
}

/// Reads a checkpoint (`.pt` zip or safetensors) onto `device` and detects its configuration;
/// `image_size` is set in the returned config (a multiple of 64 in 256..=1024).
pub fn load(
    path: &Path,
    device: Device,
    image_size: i64,
) -> Result<(Weights, Sam2Config), CheckpointError> {
    validate_image_size(image_size)?;
    let weights = read_weights(path, device)?;
    let mut config = detect_config(&weights)?;
    config.image_size = image_size;
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

/// Reads the flat state dict of a checkpoint, recognising the format from its first bytes.
pub fn read_weights(path: &Path, device: Device) -> Result<Weights, WeightsError> {
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
        let tensors = read_torch_zip(path)?;
        Ok(Weights::new(path.display().to_string(), tensors, device))
    } else if n >= 9 && head[8] == b'{' {
        Weights::from_safetensors(path, device)
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

/// The size and version of the SAM 2 model a state dict belongs to (image size 1024).
pub fn detect_config(w: &Weights) -> Result<Sam2Config, WeightsError> {
    let src = || std::path::PathBuf::from(w.source_name());
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

// ---------------------------------------------------------------------------------------------
// torch.save zip archives

/// A tensor as the pickle describes it: a view into a storage.
#[derive(Debug, Clone)]
struct TensorRef {
    storage: String,
    kind: Kind,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

/// The values the pickle interpreter handles.
#[derive(Debug, Clone)]
enum Value {
    /// `None`, booleans, floats and bytes: never needed, kept opaque.
    Scalar,
    Int(i64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    /// `('storage', <kind>, key, location, numel)`, after BINPERSID.
    Storage(String, Kind),
    Tensor(TensorRef),
    /// Anything else (an object built by an unknown global); kept opaque.
    Object,
}

fn storage_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

fn int_list(v: &Value) -> Option<Vec<i64>> {
    match v {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|x| match x {
                Value::Int(i) => Some(*i),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// A protocol-2 pickle interpreter restricted to what `torch.save` writes for a state dict.
struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl<'a> Unpickler<'a> {
    fn new(data: &'a [u8]) -> Self {
        Unpickler {
            data,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.pos + n > self.data.len() {
            return Err("truncated pickle".into());
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or("truncated pickle line")?;
        self.pos += end + 1;
        String::from_utf8(rest[..end].to_vec()).map_err(|_| "non-UTF-8 pickle line".to_string())
    }

    fn pop(&mut self) -> Result<Value, String> {
        self.stack
            .pop()
            .ok_or_else(|| "pickle stack underflow".to_string())
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let m = self.marks.pop().ok_or("pickle MARK missing")?;
        if m > self.stack.len() {
            return Err("pickle MARK beyond stack".into());
        }
        Ok(self.stack.split_off(m))
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        self.stack
            .last_mut()
            .ok_or_else(|| "pickle stack underflow".to_string())
    }

    fn str_value(&mut self, n: usize) -> Result<Value, String> {
        let b = self.take(n)?;
        Ok(Value::Str(
            String::from_utf8(b.to_vec()).map_err(|_| "non-UTF-8 pickle string")?,
        ))
    }

    fn run(mut self) -> Result<Value, String> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return Err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.take(8)?; // FRAME
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'N' => self.stack.push(Value::Scalar),
                0x88 => self.stack.push(Value::Scalar),
                0x89 => self.stack.push(Value::Scalar),
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v.into()));
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v.into()));
                }
                0x8a => {
                    // LONG1
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err("pickle integer too large".into());
                    }
                    let mut v: i64 = 0;
                    for (i, &x) in b.iter().enumerate() {
                        v |= i64::from(x) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v));
                }
                b'G' => {
                    self.take(8)?;
                    self.stack.push(Value::Scalar);
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.str_value(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.str_value(n)?;
                    self.stack.push(v);
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let v = self.str_value(n)?;
                    self.stack.push(v);
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    let v = self.str_value(n)?;
                    self.stack.push(v);
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    self.take(n)?;
                    self.stack.push(Value::Scalar);
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    self.take(n)?;
                    self.stack.push(Value::Scalar);
                }
                b'q' => {
                    let i = self.u8()?;
                    let v = self.top()?.clone();
                    self.memo.insert(i.into(), v);
                }
                b'r' => {
                    let i = self.u32()?;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'h' => {
                    let i = self.u8()?;
                    let v = self.memo.get(&i.into()).ok_or("pickle memo miss")?.clone();
                    self.stack.push(v);
                }
                b'j' => {
                    let i = self.u32()?;
                    let v = self.memo.get(&i).ok_or("pickle memo miss")?.clone();
                    self.stack.push(v);
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85 => {
                    let a = self.pop()?;
                    self.stack.push(Value::Tuple(vec![a]));
                }
                0x86 => {
                    let b = self.pop()?;
                    let a = self.pop()?;
                    self.stack.push(Value::Tuple(vec![a, b]));
                }
                0x87 => {
                    let c = self.pop()?;
                    let b = self.pop()?;
                    let a = self.pop()?;
                    self.stack.push(Value::Tuple(vec![a, b, c]));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let dict = pairs(items)?;
                    self.stack.push(Value::Dict(dict));
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        Value::Object => {}
                        _ => return Err("pickle APPEND to a non-list".into()),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        Value::Object => {}
                        _ => return Err("pickle APPENDS to a non-list".into()),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Value::Dict(d) => d.push((k, v)),
                        Value::Object => {}
                        _ => return Err("pickle SETITEM on a non-dict".into()),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let new = pairs(items)?;
                    match self.top()? {
                        Value::Dict(d) => d.extend(new),
                        Value::Object => {}
                        _ => return Err("pickle SETITEMS on a non-dict".into()),
                    }
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(module, name));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => return Err("pickle STACK_GLOBAL without strings".into()),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(persistent_load(pid)?);
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    self.stack.push(reduce(func, args)?);
                }
                0x81 => {
                    // NEWOBJ
                    self.pop()?;
                    self.pop()?;
                    self.stack.push(Value::Object);
                }
                b'b' => {
                    // BUILD: the state of an object (e.g. a state dict's `_metadata`); ignored.
                    self.pop()?;
                }
                _ => return Err(format!("unsupported pickle opcode 0x{op:02x}")),
            }
        }
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("odd number of dict items in pickle".into());
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn persistent_load(pid: Value) -> Result<Value, String> {
    let Value::Tuple(items) = pid else {
        return Err("persistent id is not a tuple".into());
    };
    match items.as_slice() {
        [Value::Str(tag), Value::Global(_, ty), Value::Str(key), ..] if tag == "storage" => {
            let kind = storage_kind(ty).ok_or_else(|| format!("unsupported storage type {ty}"))?;
            Ok(Value::Storage(key.clone(), kind))
        }
        _ => Err("persistent id is not a ('storage', type, key, ...) tuple".into()),
    }
}

fn reduce(func: Value, args: Value) -> Result<Value, String> {
    let Value::Global(module, name) = func else {
        return Ok(Value::Object);
    };
    let args = match args {
        Value::Tuple(a) => a,
        _ => return Ok(Value::Object),
    };
    match (module.as_str(), name.as_str()) {
        ("collections", "OrderedDict") => Ok(Value::Dict(Vec::new())),
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            match args.as_slice() {
                [
                    Value::Storage(key, kind),
                    Value::Int(offset),
                    size,
                    stride,
                    ..,
                ] => {
                    let size = int_list(size).ok_or("tensor size is not a tuple of ints")?;
                    let stride = int_list(stride).ok_or("tensor stride is not a tuple of ints")?;
                    if size.len() != stride.len() {
                        return Err("tensor size and stride differ in length".into());
                    }
                    Ok(Value::Tensor(TensorRef {
                        storage: key.clone(),
                        kind: *kind,
                        offset: *offset,
                        size,
                        stride,
                    }))
                }
                _ => Err("unexpected _rebuild_tensor_v2 arguments".into()),
            }
        }
        ("torch._utils", "_rebuild_parameter") => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err("unexpected _rebuild_parameter arguments".into()),
        },
        _ => Ok(Value::Object),
    }
}

/// Reads the `"model"` state dict of a `torch.save` zip archive.
fn read_torch_zip(path: &Path) -> Result<BTreeMap<String, Tensor>, WeightsError> {
    let file = std::fs::File::open(path).map_err(|e| read_err(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| not_ckpt(path, format!("not a zip archive: {e}")))?;
    let pkl_name = zip
        .file_names()
        .find(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .map(str::to_string)
        .ok_or_else(|| not_ckpt(path, "zip archive without data.pkl (not a torch.save file)"))?;
    let prefix = &pkl_name[..pkl_name.len() - "data.pkl".len()];
    let read_entry = |zip: &mut zip::ZipArchive<_>, name: &str| -> Result<Vec<u8>, WeightsError> {
        let mut e = zip
            .by_name(name)
            .map_err(|e| not_ckpt(path, format!("missing archive entry {name}: {e}")))?;
        let mut buf = Vec::with_capacity(e.size() as usize);
        e.read_to_end(&mut buf)
            .map_err(|e| read_err(path, format!("{name}: {e}")))?;
        Ok(buf)
    };
    if let Ok(bo) = read_entry(&mut zip, &format!("{prefix}byteorder"))
        && bo.trim_ascii() != b"little"
    {
        return Err(not_ckpt(path, "big-endian checkpoints are not supported"));
    }
    let pkl = read_entry(&mut zip, &pkl_name)?;
    let root = Unpickler::new(&pkl)
        .run()
        .map_err(|e| not_ckpt(path, format!("data.pkl: {e}")))?;
    let Value::Dict(items) = root else {
        return Err(not_ckpt(path, "the pickled object is not a dict"));
    };
    let model = items
        .into_iter()
        .find_map(|(k, v)| matches!(&k, Value::Str(s) if s == "model").then_some(v))
        .ok_or_else(|| {
            not_ckpt(
                path,
                "no `model` key (expected torch.save({\"model\": state_dict}))",
            )
        })?;
    let Value::Dict(entries) = model else {
        return Err(not_ckpt(path, "`model` is not a state dict"));
    };
    let mut storages: HashMap<String, Tensor> = HashMap::new();
    let mut out = BTreeMap::new();
    for (k, v) in entries {
        let (Value::Str(name), Value::Tensor(t)) = (k, v) else {
            return Err(not_ckpt(
                path,
                "`model` holds something other than named tensors",
            ));
        };
        if !storages.contains_key(&t.storage) {
            let bytes = read_entry(&mut zip, &format!("{prefix}data/{}", t.storage))?;
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
        out.insert(name, tensor);
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
        assert!(validate_image_size(1088).is_err());
        assert!(validate_image_size(500).is_err());
    }

    #[test]
    fn pickle_basics() {
        // {"model": OrderedDict()} with a memo round trip, protocol 2.
        let p =
            b"\x80\x02}q\x00X\x05\x00\x00\x00modelq\x01ccollections\nOrderedDict\nq\x02)Rq\x03s.";
        let v = Unpickler::new(p).run().unwrap();
        let Value::Dict(d) = v else {
            panic!("not a dict")
        };
        assert_eq!(d.len(), 1);
        assert!(matches!(&d[0].0, Value::Str(s) if s == "model"));
        assert!(matches!(&d[0].1, Value::Dict(x) if x.is_empty()));
        assert!(Unpickler::new(b"\x80\x02}").run().is_err());
        assert!(Unpickler::new(b"\x80\x02\xff").run().is_err());
    }

    #[test]
    fn not_a_checkpoint() {
        let dir = std::env::temp_dir().join(format!("densam-ckpt-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("notes.txt");
        std::fs::write(&p, "hello, this is not a checkpoint").unwrap();
        let e = read_weights(&p, Device::Cpu).unwrap_err().to_string();
        assert!(
            e.contains("notes.txt") && e.contains("not a SAM 2 checkpoint"),
            "{e}"
        );
        let e = read_weights(&dir.join("missing.pt"), Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pt"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
