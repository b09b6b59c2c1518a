// A request allocates about a thousand times (serde_json trees, the fixed
// copy of the object, the patch): glibc malloc took a third of the
// handler's instructions (callgrind over benches/core.rs), mimalloc far
// less. BENCHMARKS.md has the numbers.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    no_huge_pages();
    pvc_guard::cli::run(pvc_guard::cli::parse())
}

/// With transparent huge pages set to `always` (common on nodes), each
/// arena and thread heap mimalloc touches is faulted in as a 2 MiB page:
/// 20 MiB resident at idle instead of 9. The process is small; it does not
/// need huge pages, and a memory limit counts them. Mappings faulted before
/// this call keep theirs; they are a few.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
