//! Embeds an rpath to libtorch's lib directory so `target/release/densam` runs without
//! LD_LIBRARY_PATH. torch-sys (links = "tch") exports that directory as DEP_TCH_LIBTORCH_LIB.
//! Also compiles csrc/torch_shim.cpp (TF32 switches, CUDA allocator statistics; gpu engineer)
//! against libtorch's headers (it links only c10 and torch_cpu; the CUDA allocator is reached at
//! run time through c10's registry once device.rs has loaded libtorch_cuda).
fn main() {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        build_shim(std::path::Path::new(&dir));
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=csrc/torch_shim.cpp");
}

/// `lib_dir` is libtorch's `lib`; the headers are in its sibling `include`.
fn build_shim(lib_dir: &std::path::Path) {
    let root = lib_dir.parent().unwrap_or(lib_dir);
    let inc = root.join("include");
    let mut b = cc::Build::new();
    b.cpp(true)
        .file("csrc/torch_shim.cpp")
        .include(&inc)
        .include(inc.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(false);
    let has_cuda = lib_dir.join("libc10_cuda.so").exists();
    if has_cuda {
        b.define("DENSAM_HAVE_CUDA", None);
    }
    b.compile("densam_torch_shim");
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-link-lib=dylib=c10");
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
}
