//! Embeds an rpath to libtorch's lib directory so `target/release/densam` runs without
//! LD_LIBRARY_PATH. torch-sys (links = "tch") exports that directory as DEP_TCH_LIBTORCH_LIB.
fn main() {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
}
