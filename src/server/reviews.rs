//! The bound on evaluations. Parsing and judging a body costs CPU in
//! proportion to its size, so a large one runs on tokio's blocking threads,
//! never on the async workers that serve connections and probes, and only
//! so many at once: a few more may wait their turn, and a request that
//! finds every place taken is refused at once rather than queued without
//! end. A small body (most of them: a Deployment is a few KB) is judged on
//! the worker that read it, under the same bound and never on the last free
//! worker: the hard caps keep what
//! it can cost to milliseconds, and handing it to another thread and back
//! cost more than judging it (BENCHMARKS.md).

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bodies up to this size are judged on the async worker that read them.
/// The object caps bound their cost: the most expensive small body the
/// benchmarks hold (256 data-paths entries reaching 16 containers, 15 KB)
/// takes about 26 ms, far under the probes' timeouts, and one worker is
/// always left free of them (`Reviews::inline`).
pub const INLINE_BODY_BYTES: usize = 64 * 1024;

/// The job panicked: the request is answered 500, the server goes on.
#[derive(Debug)]
pub struct Panicked;

use super::metrics::Held;

pub struct Reviews {
    /// Running plus waiting.
    places: Arc<Semaphore>,
    running: Arc<Semaphore>,
    /// Small bodies judged on an async worker at once: one fewer than the
    /// workers, so one worker is always free for probes, /metrics and
    /// reading other requests; the rest go to blocking threads.
    inline: Arc<Semaphore>,
    running_gauge: Gauge,
    waiting_gauge: Gauge,
    pub concurrency: usize,
    pub queue: usize,
}

/// A place among the running and waiting evaluations.
pub struct Place<'a> {
    reviews: &'a Reviews,
    place: OwnedSemaphorePermit,
}

impl Reviews {
    /// `inline`: how many small bodies may be judged on async workers at
    /// once; give it one fewer than the runtime's workers.
    pub fn new(
        concurrency: usize,
        queue: usize,
        inline: usize,
        running: Gauge,
        waiting: Gauge,
    ) -> Reviews {
        let concurrency = concurrency.max(1);
        Reviews {
            places: Arc::new(Semaphore::new(concurrency + queue)),
            running: Arc::new(Semaphore::new(concurrency)),
            inline: Arc::new(Semaphore::new(inline)),
            running_gauge: running,
            waiting_gauge: waiting,
            concurrency,
            queue,
        }
    }

    /// A place, or None when every one is taken.
    pub fn enter(&self) -> Option<Place<'_>> {
        let place = self.places.clone().try_acquire_owned().ok()?;
        Some(Place {
            reviews: self,
            place,
        })
    }
}

impl Place<'_> {
    /// Waits for a running slot, then runs `job`: here when `inline` (a
    /// small body) and a worker can be spared, else on a blocking thread. The wait ends early if the
    /// request is dropped (its timeout, or the client gone); once running,
    /// the job keeps its slot until it returns, so the bound holds even for
    /// requests nobody waits for any more. A panic in `job` comes back as
    /// [`Panicked`], wherever it ran.
    pub async fn run<T, F>(self, inline: bool, job: F) -> Result<T, Panicked>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let reviews = self.reviews;
        let waiting = Held::new(&reviews.waiting_gauge);
        let slot = reviews
            .running
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        drop(waiting);
        let held = (self.place, slot, Held::new(&reviews.running_gauge));
        let inline = if inline {
            reviews.inline.clone().try_acquire_owned().ok()
        } else {
            None
        };
        if let Some(_worker) = inline {
            let _held = held;
            return std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                .map_err(|_| Panicked);
        }
        tokio::task::spawn_blocking(move || {
            let _held = held;
            job()
        })
        .await
        .map_err(|_| Panicked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn places_are_running_plus_queue_and_come_back() {
        let reviews = Reviews::new(1, 1, 1, Gauge::default(), Gauge::default());
        let a = reviews.enter().expect("a running place");
        let b = reviews.enter().expect("a queue place");
        assert!(reviews.enter().is_none(), "full");
        drop(b);
        assert!(reviews.enter().is_some());
        assert_eq!(a.run(false, || 7).await.unwrap(), 7);
        assert!(reviews.enter().is_some());
        let a = reviews.enter().unwrap();
        assert_eq!(a.run(true, || 8).await.unwrap(), 8);
        assert!(reviews.enter().is_some());
        assert_eq!(reviews.running_gauge.get(), 0);
        assert_eq!(reviews.waiting_gauge.get(), 0);
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_frees_its_place_inline_or_not() {
        let reviews = Reviews::new(1, 0, 1, Gauge::default(), Gauge::default());
        for inline in [false, true] {
            let place = reviews.enter().unwrap();
            let result: Result<(), Panicked> = place.run(inline, || panic!("boom")).await;
            assert!(result.is_err(), "inline {inline}");
            assert!(reviews.enter().is_some(), "inline {inline}");
        }
    }

    /// A small body runs on the worker that read it only while another
    /// worker is left; else it goes to a blocking thread like a large one.
    #[tokio::test(flavor = "current_thread")]
    async fn inline_jobs_never_take_the_last_worker() {
        let here = std::thread::current().id();
        for (inline_workers, runs_here) in [(1, true), (0, false)] {
            let reviews = Reviews::new(1, 0, inline_workers, Gauge::default(), Gauge::default());
            let place = reviews.enter().unwrap();
            let ran_on = place
                .run(true, || std::thread::current().id())
                .await
                .unwrap();
            assert_eq!(ran_on == here, runs_here, "inline workers {inline_workers}");
        }
        let reviews = Reviews::new(1, 0, 1, Gauge::default(), Gauge::default());
        let place = reviews.enter().unwrap();
        let ran_on = place
            .run(false, || std::thread::current().id())
            .await
            .unwrap();
        assert_ne!(ran_on, here, "a large body never runs on a worker");
    }
}
