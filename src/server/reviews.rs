//! The bound on evaluations. Parsing and judging a body costs CPU in
//! proportion to its size, so it runs on tokio's blocking threads, never on
//! the async workers that serve connections and probes, and only so many
//! at once: a few more may wait their turn, and a request that finds every
//! place taken is refused at once rather than queued without end.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinError;

use super::metrics::Held;

pub struct Reviews {
    /// Running plus waiting.
    places: Arc<Semaphore>,
    running: Arc<Semaphore>,
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
    pub fn new(concurrency: usize, queue: usize, running: Gauge, waiting: Gauge) -> Reviews {
        let concurrency = concurrency.max(1);
        Reviews {
            places: Arc::new(Semaphore::new(concurrency + queue)),
            running: Arc::new(Semaphore::new(concurrency)),
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
    /// Waits for a running slot, then runs `job` on a blocking thread. The
    /// wait ends early if the request is dropped (its timeout, or the client
    /// gone); once running, the job keeps its slot until it returns, so the
    /// bound holds even for requests nobody waits for any more. A panic in
    /// `job` comes back as the JoinError.
    pub async fn run<T, F>(self, job: F) -> Result<T, JoinError>
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
        tokio::task::spawn_blocking(move || {
            let _held = held;
            job()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn places_are_running_plus_queue_and_come_back() {
        let reviews = Reviews::new(1, 1, Gauge::default(), Gauge::default());
        let a = reviews.enter().expect("a running place");
        let b = reviews.enter().expect("a queue place");
        assert!(reviews.enter().is_none(), "full");
        drop(b);
        assert!(reviews.enter().is_some());
        assert_eq!(a.run(|| 7).await.unwrap(), 7);
        assert!(reviews.enter().is_some());
        assert_eq!(reviews.running_gauge.get(), 0);
        assert_eq!(reviews.waiting_gauge.get(), 0);
    }

    #[tokio::test]
    async fn a_panicking_job_is_a_join_error_and_frees_its_place() {
        let reviews = Reviews::new(1, 0, Gauge::default(), Gauge::default());
        let place = reviews.enter().unwrap();
        let err = place.run(|| panic!("boom")).await.unwrap_err();
        assert!(err.is_panic());
        assert!(reviews.enter().is_some());
    }
}
