//! Choosing where the model runs: `--device cpu|cuda|auto`.
//!
//! The linker drops `libtorch_cuda` from the binary when no symbol of it is referenced, and
//! without it libtorch sees no GPU. So before asking libtorch about CUDA, this module loads
//! `libtorch_cuda.so` explicitly (found through the binary's rpath or `LD_LIBRARY_PATH`); if it
//! is absent (a CPU-only libtorch) or no GPU is visible, `cuda` fails with a clear error and
//! `auto` falls back to the CPU.

use std::ffi::CString;
use std::str::FromStr;

use tch::Device;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CPU always.
    Cpu,
    /// The first CUDA GPU; an error if none is usable.
    Cuda,
    /// CUDA if usable, else the CPU.
    #[default]
    Auto,
}

impl FromStr for DeviceChoice {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda),
            "auto" => Ok(DeviceChoice::Auto),
            other => Err(DeviceError::Unknown(other.to_string())),
        }
    }
}

/// Why a device cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device `{0}` (expected cpu, cuda or auto)")]
    Unknown(String),
    #[error("--device cuda: no usable CUDA GPU ({0})")]
    NoCuda(String),
}

/// Loads libtorch's CUDA library (once); returns why CUDA is unusable, if so.
///
/// The library must be loaded before libtorch is first asked about CUDA: libtorch looks its CUDA
/// hooks up once and caches the answer.
fn cuda_unusable_reason() -> Option<String> {
    static LOAD: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let load_error = LOAD.get_or_init(|| {
        let mut errors = Vec::new();
        for name in ["libtorch_cuda.so", "libtorch_cuda_cpp.so"] {
            let c = CString::new(name).expect("static name");
            // SAFETY: dlopen with a valid NUL-terminated name; the handle is deliberately kept
            // open for the life of the process (libtorch registers its CUDA hooks on load).
            let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if !handle.is_null() {
                return None;
            }
            // SAFETY: dlerror returns NULL or a valid C string owned by libc.
            let err = unsafe { libc::dlerror() };
            if !err.is_null() {
                let msg = unsafe { std::ffi::CStr::from_ptr(err) };
                errors.push(msg.to_string_lossy().into_owned());
            }
        }
        Some(errors.join("; "))
    });
    if tch::Cuda::is_available() {
        None
    } else if let Some(err) = load_error {
        Some(format!(
            "libtorch's CUDA library could not be loaded: {err}"
        ))
    } else if tch::Cuda::device_count() == 0 {
        Some("libtorch has CUDA support but no GPU is visible".to_string())
    } else {
        Some("CUDA is present but not available".to_string())
    }
}

/// Resolves the user's choice to a libtorch device.
pub fn select_device(choice: DeviceChoice) -> Result<Device, DeviceError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => match cuda_unusable_reason() {
            None => Ok(Device::Cuda(0)),
            Some(why) => Err(DeviceError::NoCuda(why)),
        },
        DeviceChoice::Auto => Ok(match cuda_unusable_reason() {
            None => Device::Cuda(0),
            Some(_) => Device::Cpu,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_choices() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda);
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert!("tpu".parse::<DeviceChoice>().is_err());
    }

    #[test]
    fn cpu_always_works_and_auto_resolves() {
        assert_eq!(select_device(DeviceChoice::Cpu).unwrap(), Device::Cpu);
        let auto = select_device(DeviceChoice::Auto).unwrap();
        if tch::Cuda::is_available() {
            assert_eq!(auto, Device::Cuda(0));
        } else {
            assert_eq!(auto, Device::Cpu);
            let err = select_device(DeviceChoice::Cuda).unwrap_err().to_string();
            assert!(err.contains("--device cuda"), "{err}");
        }
    }
}
