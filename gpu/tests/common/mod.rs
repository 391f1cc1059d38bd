//! What the GPU tests share: what to do when no adapter is found.

/// Fails with how to install a Vulkan driver, unless
/// `EDGELOOP_SKIP_GPU_TESTS=1` asks to skip (then `None`).
pub fn no_adapter<T>(e: &str) -> Option<T> {
    if std::env::var("EDGELOOP_SKIP_GPU_TESTS").as_deref() == Ok("1") {
        eprintln!("GPU test skipped (EDGELOOP_SKIP_GPU_TESTS=1): {e}");
        return None;
    }
    panic!(
        "no GPU adapter ({e}). Install a Vulkan driver, e.g. Debian's lavapipe: \
         `apt-get install mesa-vulkan-drivers libvulkan1`, and run with \
         WGPU_BACKEND=vulkan; or set EDGELOOP_SKIP_GPU_TESTS=1 to skip the GPU tests"
    );
}
