//! The webhook's core on three real requests: parse the AdmissionReview,
//! decide, build the response and patch, serialize. The same calls, in the
//! same order, as `admit` in src/server/mod.rs, minus the I/O.
//!
//! Run: `cargo bench --bench core`. CI runs `-- --test` (each bench once)
//! so this keeps compiling; timings are never asserted.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pvc_guard::admission::{self, Decision, Endpoint, FailureMode};
use pvc_guard::config::Config;
use pvc_guard::policy::{ClusterFacts, Policy};

/// Counts allocations so each request's count can be printed next to its
/// time: allocations are the usual reason a handler is slower than it
/// should be, and unlike time they do not drift with the machine.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        unsafe { INNER.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { INNER.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        unsafe { INNER.realloc(ptr, layout, new_size) }
    }
}

/// The allocator the binary uses (src/main.rs), so times match the server.
static INNER: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Case {
    name: &'static str,
    body: &'static [u8],
    endpoint: Endpoint,
    /// Checked once before timing, so a policy change that turns a case
    /// into a trivial allow cannot make the numbers look better silently.
    expected: Decision,
}

const CASES: &[Case] = &[
    Case {
        name: "nginx-clean/validate",
        body: include_bytes!("../tests/data/admission/nginx-stateless.create.json"),
        endpoint: Endpoint::Validate,
        expected: Decision::Allow,
    },
    Case {
        name: "nginx-clean/mutate",
        body: include_bytes!("../tests/data/admission/nginx-stateless.create.json"),
        endpoint: Endpoint::Mutate,
        expected: Decision::Allow,
    },
    Case {
        name: "postgres-full-mutation/validate",
        body: include_bytes!("../tests/data/admission/pg-no-volume.create.json"),
        endpoint: Endpoint::Validate,
        expected: Decision::Deny,
    },
    Case {
        name: "postgres-full-mutation/mutate",
        body: include_bytes!("../tests/data/admission/pg-no-volume.create.json"),
        endpoint: Endpoint::Mutate,
        expected: Decision::Patch,
    },
    Case {
        name: "large-20c-40v/validate",
        body: include_bytes!("data/large-deployment.create.json"),
        endpoint: Endpoint::Validate,
        expected: Decision::Deny,
    },
    Case {
        name: "large-20c-40v/mutate",
        body: include_bytes!("data/large-deployment.create.json"),
        endpoint: Endpoint::Mutate,
        expected: Decision::Patch,
    },
];

/// One request, start to finish, as the server handles it.
fn handle(policy: &Policy, endpoint: Endpoint, body: &[u8]) -> (Decision, Vec<u8>) {
    let request = admission::parse(body).expect("the fixture parses");
    let facts = ClusterFacts::default();
    let verdict = admission::review(policy, endpoint, &request, &facts, FailureMode::Allow);
    (verdict.decision, verdict.to_json())
}

fn allocations(policy: &Policy, case: &Case) -> (u64, u64) {
    let (a0, b0) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    black_box(handle(policy, case.endpoint, case.body));
    (
        ALLOCS.load(Ordering::Relaxed) - a0,
        BYTES.load(Ordering::Relaxed) - b0,
    )
}

fn bench(c: &mut Criterion) {
    let policy = Policy::new(Config::default());
    for case in CASES {
        let (decision, answer) = handle(&policy, case.endpoint, case.body);
        assert_eq!(
            decision, case.expected,
            "{}: the fixture no longer takes the path this bench measures",
            case.name
        );
        let (allocs, bytes) = allocations(&policy, case);
        eprintln!(
            "{:34} body {:6} B  answer {:6} B  {:5} allocations  {:8} B allocated per request",
            case.name,
            case.body.len(),
            answer.len(),
            allocs,
            bytes
        );
    }

    let mut group = c.benchmark_group("request");
    for case in CASES {
        group.throughput(Throughput::Bytes(case.body.len() as u64));
        group.bench_function(case.name, |b| {
            b.iter(|| handle(&policy, case.endpoint, black_box(case.body)))
        });
    }
    group.finish();

    // The stages apart, for the request that costs most, to see where a
    // regression lands.
    let body = CASES[5].body;
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
}

criterion_group!(benches, bench);
criterion_main!(benches);
