//! Named, strictly checked access to a SAM 2 state dict.
//!
//! [`Weights`] holds the flat state dict (`name -> tensor`) of a checkpoint on the model's device.
//! Modules take their tensors by name through a prefixed view ([`Weights::pp`]) and give the shape
//! they expect; every access is recorded so that, once the model is built,
//! [`Weights::check_all_used`] rejects checkpoints with keys the model does not know. A missing
//! key or a wrong shape is an error naming the key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tch::{Device, Kind, Tensor};

/// Errors while reading or matching a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("{path}: cannot read checkpoint: {msg}")]
    Read { path: PathBuf, msg: String },
    #[error("{path}: not a SAM 2 or SAM 3 checkpoint: {msg}")]
    NotACheckpoint { path: PathBuf, msg: String },
    #[error("{source_name}: missing key `{key}`")]
    Missing { source_name: String, key: String },
    #[error("{source_name}: key `{key}` has shape {found:?}, expected {expected:?}")]
    Shape {
        source_name: String,
        key: String,
        found: Vec<i64>,
        expected: Vec<i64>,
    },
    #[error("{source_name}: unexpected keys not used by the model: {keys}")]
    Unexpected { source_name: String, keys: String },
}

#[derive(Debug)]
struct Inner {
    /// Where the tensors came from, for error messages (a file path).
    source_name: String,
    tensors: BTreeMap<String, Tensor>,
    used: Mutex<BTreeSet<String>>,
}

/// A prefixed, shared view of a state dict. Cloning is cheap.
#[derive(Debug, Clone)]
pub struct Weights {
    inner: Arc<Inner>,
    prefix: String,
}

impl Weights {
    /// Wraps a state dict. Tensors are moved to `device` and converted to float32
    /// (integer buffers are kept as they are).
    pub fn new(
        source_name: impl Into<String>,
        tensors: BTreeMap<String, Tensor>,
        device: Device,
    ) -> Self {
        let tensors = tensors
            .into_iter()
            .map(|(k, t)| {
                let t = if t.is_floating_point() {
                    t.to_kind(Kind::Float)
                } else {
                    t
                };
                (k, t.to_device(device))
            })
            .collect();
        // Tensor is Send but not Sync; a Weights is only used by the thread building a model.
        #[allow(clippy::arc_with_non_send_sync)]
        let inner = Arc::new(Inner {
            source_name: source_name.into(),
            tensors,
            used: Mutex::new(BTreeSet::new()),
        });
        Weights {
            inner,
            prefix: String::new(),
        }
    }

    /// Reads a safetensors file (the flat state dict, keys as in the official checkpoint).
    pub fn from_safetensors(path: &Path, device: Device) -> Result<Self, WeightsError> {
        let list = Tensor::read_safetensors(path).map_err(|e| WeightsError::Read {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        Ok(Self::new(
            path.display().to_string(),
            list.into_iter().collect(),
            device,
        ))
    }

    /// A view with `name` appended to the prefix (`w.pp("sam_mask_decoder").pp("iou_token")`).
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        };
        Weights {
            inner: self.inner.clone(),
            prefix,
        }
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    /// Whether the key exists (used to detect model variants, e.g. 2.0 vs 2.1). Not recorded as used.
    pub fn contains(&self, name: &str) -> bool {
        self.inner.tensors.contains_key(&self.full(name))
    }

    /// The shape of a key, if present. Not recorded as used.
    pub fn shape_of(&self, name: &str) -> Option<Vec<i64>> {
        self.inner.tensors.get(&self.full(name)).map(|t| t.size())
    }

    /// The tensor under `name`, checked against `shape`, and recorded as used.
    pub fn get(&self, name: &str, shape: &[i64]) -> Result<Tensor, WeightsError> {
        let key = self.full(name);
        let t = self
            .inner
            .tensors
            .get(&key)
            .ok_or_else(|| WeightsError::Missing {
                source_name: self.inner.source_name.clone(),
                key: key.clone(),
            })?;
        if t.size() != shape {
            return Err(WeightsError::Shape {
                source_name: self.inner.source_name.clone(),
                key,
                found: t.size(),
                expected: shape.to_vec(),
            });
        }
        self.inner.used.lock().expect("weights lock").insert(key);
        Ok(t.shallow_clone())
    }

    /// Fails if any key of the state dict was never taken by [`Weights::get`].
    pub fn check_all_used(&self) -> Result<(), WeightsError> {
        let used = self.inner.used.lock().expect("weights lock");
        let unused: Vec<&str> = self
            .inner
            .tensors
            .keys()
            .filter(|k| !used.contains(*k))
            .map(|k| k.as_str())
            .collect();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(WeightsError::Unexpected {
                source_name: self.inner.source_name.clone(),
                keys: unused.join(", "),
            })
        }
    }

    /// Where the tensors came from.
    pub fn source_name(&self) -> &str {
        &self.inner.source_name
    }
}
