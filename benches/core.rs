//! The webhook's core on real requests and on the inputs at and over the
//! hard caps: parse the AdmissionReview, decide, build the response and
//! patch, serialize. The same calls, in the same order, as `admit` in
//! src/server/mod.rs, minus the I/O.
//!
//! Run: `cargo bench --bench core`. CI runs `-- --test` (each bench once)
//! so this keeps compiling; timings are never asserted.
//!
//! `PVC_GUARD_CORE_CASE=<name> PVC_GUARD_CORE_RUNS=<n>` runs one case n
//! times and nothing else: the driver for instruction counts (callgrind of
//! n runs minus callgrind of 0 runs, BENCHMARKS.md), which do not drift
//! with the machine as times do. `PVC_GUARD_CORE_HANDLER=reference` runs
//! the load benchmark's reference webhook (benches/reference_answer.rs) on
//! the case's body instead, `=parse` pvc-guard's parse alone: the same
//! body's cost without pvc-guard's policy, and without any server.
//! `PVC_GUARD_CORE_LIST_ONLY=1` prints the
//! allocation table and stops, whatever the decisions (for the "before"
//! column, built from an older commit).

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput};
use pvc_guard::admission::{self, Decision, Endpoint, FailureMode};
use pvc_guard::config::Config;
use pvc_guard::policy::{ClusterFacts, Policy};
use serde_json::{Value, json};

/// Counts allocations so each request's count can be printed next to its
/// time: allocations are the usual reason a handler is slower than it
/// should be, and unlike time they do not drift with the machine. The
/// live bytes and their peak give what a request costs in memory beyond
/// its body (the "3 MiB body, at most 3x its size" target).
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);

fn grew(by: u64) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        grew(layout.size() as u64);
        unsafe { INNER.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        unsafe { INNER.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // The old and the new block are both live while realloc copies.
        grew(new_size as u64);
        LIVE.fetch_sub(layout.size() as u64, Ordering::Relaxed);
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

/// The allocator the binary uses (src/main.rs), so times match the server.
static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Case {
    name: &'static str,
    body: Vec<u8>,
    endpoint: Endpoint,
    /// Checked once before timing, so a policy change that turns a case
    /// into a trivial allow cannot make the numbers look better silently.
    expected: Decision,
    /// Checked with `expected`: an over-cap case must stay a
    /// `limit-exceeded` denial, a case at the caps must not become one.
    limit_exceeded: bool,
}

fn review(object: Value, operation: &str, old: Option<Value>) -> Vec<u8> {
    let mut request = json!({
        "uid": "bench", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
        "name": "big", "namespace": "shop", "operation": operation,
        "userInfo": {"username": "admin", "groups": ["system:masters"]},
        "object": object});
    if let Some(old) = old {
        request["oldObject"] = old;
    }
    serde_json::to_vec(
        &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}),
    )
    .expect("serializes")
}

#[path = "shapes.rs"]
#[allow(dead_code)]
mod shapes;

#[path = "reference_answer.rs"]
mod reference_answer;

fn cases() -> Vec<Case> {
    let file = |name, path: &str, endpoint, expected| Case {
        name,
        body: std::fs::read(path).expect("the fixture exists"),
        endpoint,
        expected,
        limit_exceeded: false,
    };
    let made = |name, object: Value, endpoint, expected, limit_exceeded| Case {
        name,
        body: review(object, "CREATE", None),
        endpoint,
        expected,
        limit_exceeded,
    };
    use Decision::*;
    use Endpoint::*;
    let root = env!("CARGO_MANIFEST_DIR");
    let nginx = format!("{root}/tests/data/admission/nginx-stateless.create.json");
    let pg = format!("{root}/tests/data/admission/pg-no-volume.create.json");
    let large = format!("{root}/benches/data/large-deployment.create.json");
    vec![
        file("nginx-clean/validate", &nginx, Validate, Allow),
        file("nginx-clean/mutate", &nginx, Mutate, Allow),
        file("postgres-full-mutation/validate", &pg, Validate, Deny),
        file("postgres-full-mutation/mutate", &pg, Mutate, Patch),
        file("large-20c-40v/validate", &large, Validate, Deny),
        file("large-20c-40v/mutate", &large, Mutate, Patch),
        // At the caps: judged and fixed.
        made(
            "cap-1024-volumes/validate",
            shapes::volumes(1024),
            Validate,
            Deny,
            false,
        ),
        made(
            "cap-1024-volumes/mutate",
            shapes::volumes(1024),
            Mutate,
            Patch,
            false,
        ),
        made(
            "cap-256-postgres/validate",
            shapes::postgres_containers(256),
            Validate,
            Deny,
            false,
        ),
        made(
            "cap-256-postgres/mutate",
            shapes::postgres_containers(256),
            Mutate,
            Patch,
            false,
        ),
        made(
            "cap-256-paths-16-containers/validate",
            shapes::data_paths_everywhere(16),
            Validate,
            Deny,
            false,
        ),
        made(
            "cap-256-paths-16-containers/mutate",
            shapes::data_paths_everywhere(16),
            Mutate,
            Patch,
            false,
        ),
        made(
            "cap-4096-sqlite/validate",
            shapes::sqlite(4096),
            Validate,
            Deny,
            false,
        ),
        made(
            "cap-4096-sqlite/mutate",
            shapes::sqlite(4096),
            Mutate,
            Patch,
            false,
        ),
        // Inputs that cost a product of their parts before this round.
        made(
            "lost-found-32-postgres-15000-words/validate",
            shapes::lost_found(32, 1024, 15_000, false),
            Validate,
            Warn,
            false,
        ),
        made(
            "record-12000-entries/mutate",
            shapes::long_record(12_000),
            Mutate,
            Patch,
            false,
        ),
        // A body just under 3 MiB at the list-element cap, for what it
        // costs in memory.
        made(
            "cap-32767-variables/mutate",
            shapes::env(32_767, 57),
            Mutate,
            Patch,
            false,
        ),
        // Over the caps: denied with the cap named, never judged.
        made(
            "over-40000-volumes/validate",
            shapes::volumes(40_000),
            Validate,
            Deny,
            true,
        ),
        made(
            "over-4000-postgres/validate",
            shapes::postgres_containers(4_000),
            Validate,
            Deny,
            true,
        ),
        made(
            "over-20000-paths-4000-mounts/validate",
            shapes::data_paths(20_000, 4_000),
            Validate,
            Deny,
            true,
        ),
        made(
            "over-256-paths-256-containers/validate",
            shapes::data_paths_everywhere(256),
            Validate,
            Deny,
            true,
        ),
        made(
            "over-1m-empty-variables/validate",
            shapes::empty_variables(1_000_000),
            Validate,
            Deny,
            true,
        ),
        made(
            "over-60000-sqlite/validate",
            shapes::sqlite(60_000),
            Validate,
            Deny,
            true,
        ),
    ]
}

/// One request, start to finish, as the server handles it.
fn handle(policy: &Policy, endpoint: Endpoint, body: &[u8]) -> (Decision, Vec<u8>) {
    let request = admission::parse(body).expect("the fixture parses");
    let facts = ClusterFacts::default();
    let verdict = admission::review(policy, endpoint, &request, &facts, FailureMode::Allow);
    (verdict.decision, verdict.to_json())
}

/// The cases the reference webhook is run on beside pvc-guard: the three
/// real /mutate requests (the first cases), whatever follows them.
fn reference_cases(cases: &[Case]) -> impl Iterator<Item = &Case> {
    cases
        .iter()
        .filter(|c| c.endpoint == Endpoint::Mutate)
        .take(3)
}

/// Allocations, bytes allocated, and the peak of live bytes above what
/// was live before, for one request.
fn allocations<T>(request: impl FnOnce() -> T) -> (u64, u64, u64) {
    let (a0, b0, live0) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
        LIVE.load(Ordering::Relaxed),
    );
    PEAK.store(live0, Ordering::Relaxed);
    black_box(request());
    (
        ALLOCS.load(Ordering::Relaxed) - a0,
        BYTES.load(Ordering::Relaxed) - b0,
        PEAK.load(Ordering::Relaxed) - live0,
    )
}

/// The answer's length, and what is wrong with the case's decision, if
/// anything.
fn check(policy: &Policy, case: &Case) -> (usize, Option<String>) {
    let (decision, answer) = handle(policy, case.endpoint, &case.body);
    let limited = String::from_utf8_lossy(&answer).contains("[limit-exceeded]");
    let wrong = (decision != case.expected || limited != case.limit_exceeded).then(|| {
        format!(
            "{}: {decision:?} (limit-exceeded {limited}), not {:?} (limit-exceeded {}): the input no longer takes the path this bench measures",
            case.name, case.expected, case.limit_exceeded
        )
    });
    (answer.len(), wrong)
}

fn main() {
    let policy = Policy::new(Config::default());
    let cases = cases();
    if let Ok(name) = std::env::var("PVC_GUARD_CORE_CASE") {
        let runs: usize = std::env::var("PVC_GUARD_CORE_RUNS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(1);
        let case = cases
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no case {name}"));
        // What else may run on the same body, for its instructions beside
        // pvc-guard's: the reference webhook's whole answer, or pvc-guard's
        // parse alone.
        let handler = std::env::var("PVC_GUARD_CORE_HANDLER").unwrap_or_default();
        for _ in 0..runs {
            match handler.as_str() {
                "reference" => {
                    black_box(reference_answer::answer(black_box(&case.body)).ok());
                }
                "parse" => {
                    black_box(admission::parse(black_box(&case.body)).ok());
                }
                _ => {
                    black_box(handle(&policy, case.endpoint, black_box(&case.body)));
                }
            }
        }
        return;
    }
    let mut wrong = Vec::new();
    for case in &cases {
        let (answer, w) = check(&policy, case);
        wrong.extend(w);
        let (allocs, bytes, peak) = allocations(|| handle(&policy, case.endpoint, &case.body));
        eprintln!(
            "{:40} body {:8} B  answer {:8} B  {:8} allocations  {:10} B allocated  peak {:9} B live ({:.2}x body)",
            case.name,
            case.body.len(),
            answer,
            allocs,
            bytes,
            peak,
            peak as f64 / case.body.len() as f64
        );
    }
    for case in reference_cases(&cases) {
        let (allocs, bytes, peak) = allocations(|| reference_answer::answer(&case.body));
        eprintln!(
            "{:40} {allocs:8} allocations  {bytes:10} B allocated  peak {peak:9} B live",
            format!("reference webhook, {}", case.name)
        );
    }
    // Listing only: the same table for an older commit, whose decisions
    // may differ (BENCHMARKS.md's "before" column).
    if std::env::var_os("PVC_GUARD_CORE_LIST_ONLY").is_some() {
        for w in &wrong {
            eprintln!("{w}");
        }
        return;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("request");
    // The generated cases at the caps take milliseconds each: fewer and
    // shorter samples keep the whole run to a few minutes.
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for case in &cases {
        group.throughput(Throughput::Bytes(case.body.len() as u64));
        group.bench_function(case.name, |b| {
            b.iter(|| handle(&policy, case.endpoint, black_box(&case.body)))
        });
    }
    group.finish();

    // The reference webhook (benches/load.sh's second baseline) on the same
    // real bodies: pvc-guard's time over its time is the load target's
    // ratio without the stack.
    let mut reference = c.benchmark_group("reference");
    for case in reference_cases(&cases) {
        reference.throughput(Throughput::Bytes(case.body.len() as u64));
        reference.bench_function(case.name, |b| {
            b.iter(|| reference_answer::answer(black_box(&case.body)).expect("answers"))
        });
    }
    reference.finish();

    // The stages apart, for the fixture that costs most, to see where a
    // regression lands.
    let body = &cases[5].body;
    let mut stages = c.benchmark_group("stages/large-20c-40v-mutate");
    stages.bench_function("parse", |b| {
        b.iter(|| admission::parse(black_box(body)).expect("parses"))
    });
    let request = admission::parse(body).expect("parses");
    let facts = ClusterFacts::default();
    stages.bench_function("review", |b| {
        b.iter(|| {
            admission::review(
                &policy,
                Endpoint::Mutate,
                black_box(&request),
                &facts,
                FailureMode::Allow,
            )
        })
    });
    let verdict = admission::review(
        &policy,
        Endpoint::Mutate,
        &request,
        &facts,
        FailureMode::Allow,
    );
    stages.bench_function("to_json", |b| b.iter(|| black_box(&verdict).to_json()));
    stages.finish();
    c.final_summary();
}
