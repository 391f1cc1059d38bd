//! A persistent thread pool for the decode loop: `n - 1` workers plus the
//! calling thread run the same job, `f(thread_index, n_threads)`, and `run`
//! returns when all of them are done.
//!
//! A token of decoding calls [`ThreadPool::run`] a couple of hundred times,
//! with a few microseconds of work each, so a call must not spawn, allocate
//! or sleep in the kernel on the fast path. Jobs are published by bumping an
//! atomic generation counter that idle workers spin on for a bounded time;
//! after that they block on a condition variable so an idle pool costs no
//! CPU.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a waiting thread polls before it blocks in the kernel. Jobs of a
/// decode loop follow each other within microseconds, so a worker that
/// polls this long almost never needs a (slow) futex wake-up, while an idle
/// pool goes quiet quickly.
const POLL_TIME: Duration = Duration::from_micros(200);
/// `spin_loop` hints between two checks of the clock (a hint takes tens of
/// nanoseconds, so about a microsecond).
const SPINS_PER_ROUND: u32 = 64;

/// Polls `ready` for up to [`POLL_TIME`]: spinning first, then also yielding
/// the core between rounds so that on an oversubscribed machine the thread
/// we wait for can run. Returns whether `ready` became true.
fn poll(ready: impl Fn() -> bool) -> bool {
    let mut start = None;
    loop {
        for _ in 0..SPINS_PER_ROUND {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        let t0 = *start.get_or_insert_with(Instant::now);
        if t0.elapsed() > POLL_TIME {
            return ready();
        }
        // Pure spinning for the first few microseconds, where the next job
        // usually arrives; yielding afterwards.
        if t0.elapsed() > POLL_TIME / 40 {
            thread::yield_now();
        }
    }
}

/// The job type: called as `f(thread_index, n_threads)`.
type Job = dyn Fn(usize, usize) + Sync;

/// A persistent pool of `n_threads - 1` worker threads; the thread calling
/// [`ThreadPool::run`] is thread 0.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    n_threads: usize,
    /// Serializes `run` calls made from different threads.
    run_lock: Mutex<()>,
}

/// State shared between the caller and the workers.
struct Shared {
    /// Bumped once per published job (and once on shutdown).
    generation: AtomicUsize,
    /// The current job, valid while a `run` call is in progress.
    job: UnsafeCell<Option<&'static Job>>,
    /// Workers that have not finished the current job.
    remaining: AtomicUsize,
    /// Set on drop: workers exit at the next generation.
    shutdown: AtomicBool,
    /// The first panic payload of the current job.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Guards the sleeping protocol of both condition variables.
    sleep_lock: Mutex<()>,
    /// Workers blocked waiting for a new generation.
    sleepers: AtomicUsize,
    work_cv: Condvar,
    /// Whether the caller is blocked waiting for `remaining == 0`.
    caller_sleeping: AtomicBool,
    done_cv: Condvar,
}

// SAFETY: `job` is written only by the thread inside `run` (holding
// `run_lock`) before the generation bump that publishes it (Release), and read
// by workers only after observing that bump (Acquire) and before they
// decrement `remaining`; `run` does not touch it again until `remaining` is 0.
// Every other field is Sync.
unsafe impl Sync for Shared {}
// SAFETY: the only non-Send field is the `&'static Job` behind the
// UnsafeCell, whose referent is `Sync`, so sending it is sound.
unsafe impl Send for Shared {}

/// A raw pointer the threads of one `for_each_chunk_mut` call may share.
struct SendPtr<T>(*mut T);

// SAFETY: used only to build disjoint sub-slices of a `&mut [T]` with
// `T: Send`, each on one thread.
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// A method so closures capture the `Sync` wrapper, not the raw field.
    fn get(&self) -> *mut T {
        self.0
    }
}

thread_local! {
    /// True on pool workers and on a caller while it runs its share of a job:
    /// a nested `run` there executes sequentially instead of deadlocking.
    static IN_JOB: Cell<bool> = const { Cell::new(false) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Jobs run outside every lock, so a poisoned lock holds consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ThreadPool {
    /// Starts a pool of `n_threads` threads in all (the caller included);
    /// `n_threads <= 1` runs every job inline on the caller.
    ///
    /// # Panics
    /// If the OS refuses to spawn a thread.
    pub fn new(n_threads: usize) -> ThreadPool {
        let n_threads = n_threads.max(1);
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            remaining: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            panic: Mutex::new(None),
            sleep_lock: Mutex::new(()),
            sleepers: AtomicUsize::new(0),
            work_cv: Condvar::new(),
            caller_sleeping: AtomicBool::new(false),
            done_cv: Condvar::new(),
        });
        let workers = (1..n_threads)
            .map(|index| {
                let shared = Arc::clone(&shared);
                thread::Builder::new()
                    .name(format!("edgeloop-worker-{index}"))
                    .spawn(move || worker_loop(&shared, index, n_threads))
                    .expect("failed to spawn a thread-pool worker")
            })
            .collect();
        ThreadPool {
            shared,
            workers,
            n_threads,
            run_lock: Mutex::new(()),
        }
    }

    /// Threads that run each job, the caller included.
    pub fn n_threads(&self) -> usize {
        self.n_threads
    }

    /// Calls `f(i, n_threads)` once for every `i` in `0..n_threads`, in
    /// parallel, and returns when all calls have returned.
    ///
    /// If any call panics, the other calls still complete and the first panic
    /// is then resumed on the caller. A `run` made from inside a job (of any
    /// pool) executes the calls one after another on the current thread.
    pub fn run<'a>(&self, f: &'a (dyn Fn(usize, usize) + Sync + 'a)) {
        let n = self.n_threads;
        if n == 1 {
            f(0, 1);
            return;
        }
        if IN_JOB.with(Cell::get) {
            for i in 0..n {
                f(i, n);
            }
            return;
        }
        let guard = lock(&self.run_lock);
        let sh = &*self.shared;

        // SAFETY: we hold `run_lock` and no worker is reading `job` (the
        // previous run waited for `remaining == 0`). The lifetime is erased
        // to store it, but the reference is only used until `remaining`
        // drops to 0 below, and `f` outlives this call.
        unsafe {
            let job =
                std::mem::transmute::<&'a (dyn Fn(usize, usize) + Sync + 'a), &'static Job>(f);
            *sh.job.get() = Some(job);
        }
        sh.remaining.store(n - 1, Ordering::Relaxed);
        // SeqCst pairs with the sleepers protocol in `wait_for_generation`.
        sh.generation.fetch_add(1, Ordering::SeqCst);
        if sh.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = lock(&sh.sleep_lock);
            sh.work_cv.notify_all();
        }

        IN_JOB.with(|c| c.set(true));
        let mine = panic::catch_unwind(AssertUnwindSafe(|| f(0, n)));
        IN_JOB.with(|c| c.set(false));

        // Workers still use `f`: wait for them even if our share panicked.
        self.wait_done();
        // SAFETY: all workers are done with the job; clear the dangling
        // reference so nothing can observe it after `f` is gone.
        unsafe {
            *sh.job.get() = None;
        }
        let theirs = lock(&sh.panic).take();
        drop(guard);
        if let Err(p) = mine {
            panic::resume_unwind(p);
        }
        if let Some(p) = theirs {
            panic::resume_unwind(p);
        }
    }

    /// Calls `f(i, chunk)` for each `chunk_len`-element chunk of `data` (the
    /// last one may be shorter), spreading the chunks over the pool's
    /// threads, and returns when all are done.
    ///
    /// # Panics
    /// If `chunk_len` is 0, or as [`ThreadPool::run`] when `f` panics.
    pub fn for_each_chunk_mut<T: Send>(
        &self,
        data: &mut [T],
        chunk_len: usize,
        f: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        assert!(chunk_len > 0, "chunk_len must be positive");
        let len = data.len();
        let n_chunks = len.div_ceil(chunk_len);
        let base = SendPtr(data.as_mut_ptr());
        let next = AtomicUsize::new(0);
        self.run(&|_, _| loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n_chunks {
                break;
            }
            let start = i * chunk_len;
            let end = (start + chunk_len).min(len);
            // SAFETY: `start..end` lies within `data`; the counter hands each
            // chunk to exactly one thread, so the slices are disjoint; `data`
            // stays mutably borrowed until `run` has joined every thread; and
            // `T: Send` allows handing elements to other threads.
            let chunk =
                unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
            f(i, chunk);
        });
    }

    /// Waits until every worker has finished the current job.
    fn wait_done(&self) {
        let sh = &*self.shared;
        if poll(|| sh.remaining.load(Ordering::Acquire) == 0) {
            return;
        }
        let mut g = lock(&sh.sleep_lock);
        sh.caller_sleeping.store(true, Ordering::SeqCst);
        while sh.remaining.load(Ordering::SeqCst) != 0 {
            g = sh.done_cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        sh.caller_sleeping.store(false, Ordering::Relaxed);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        let sh = &*self.shared;
        sh.shutdown.store(true, Ordering::SeqCst);
        sh.generation.fetch_add(1, Ordering::SeqCst);
        {
            let _g = lock(&sh.sleep_lock);
            sh.work_cv.notify_all();
        }
        for w in self.workers.drain(..) {
            // Jobs run under catch_unwind, so a worker cannot have panicked.
            let _ = w.join();
        }
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("n_threads", &self.n_threads)
            .finish()
    }
}

/// Blocks until `generation` differs from `seen` and returns the new value.
fn wait_for_generation(sh: &Shared, seen: usize) -> usize {
    if poll(|| sh.generation.load(Ordering::Acquire) != seen) {
        return sh.generation.load(Ordering::Acquire);
    }
    let mut guard = lock(&sh.sleep_lock);
    sh.sleepers.fetch_add(1, Ordering::SeqCst);
    // Re-check after registering: a publisher that bumped the generation
    // before seeing our registration is caught here; one that bumps it after
    // sees `sleepers > 0` and notifies under the lock we hold.
    let g = loop {
        let g = sh.generation.load(Ordering::SeqCst);
        if g != seen {
            break g;
        }
        guard = sh.work_cv.wait(guard).unwrap_or_else(|e| e.into_inner());
    };
    sh.sleepers.fetch_sub(1, Ordering::SeqCst);
    g
}

fn worker_loop(sh: &Shared, index: usize, n_threads: usize) {
    IN_JOB.with(|c| c.set(true));
    let mut seen = 0;
    loop {
        seen = wait_for_generation(sh, seen);
        if sh.shutdown.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: the Acquire load of the new generation makes the job
        // written before the Release bump visible; `run` keeps it alive
        // until we decrement `remaining`.
        let job = unsafe { *sh.job.get() };
        if let Some(job) = job {
            if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| job(index, n_threads))) {
                let mut slot = lock(&sh.panic);
                if slot.is_none() {
                    *slot = Some(p);
                }
            }
        }
        if sh.remaining.fetch_sub(1, Ordering::AcqRel) == 1
            && sh.caller_sleeping.load(Ordering::SeqCst)
        {
            let _g = lock(&sh.sleep_lock);
            sh.done_cv.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn pool_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ThreadPool>();
    }

    #[test]
    fn every_thread_runs_once_per_call() {
        for n in [1, 2, 3, 4] {
            let pool = ThreadPool::new(n);
            assert_eq!(pool.n_threads(), n);
            let counts: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
            for _ in 0..5_000 {
                pool.run(&|i, nt| {
                    assert_eq!(nt, n);
                    counts[i].fetch_add(1, Ordering::Relaxed);
                });
            }
            for c in &counts {
                assert_eq!(c.load(Ordering::Relaxed), 5_000);
            }
        }
    }

    #[test]
    fn results_are_visible_after_run() {
        let pool = ThreadPool::new(3);
        let data: Vec<AtomicU64> = (0..999).map(|_| AtomicU64::new(0)).collect();
        for iter in 1..=2_000u64 {
            pool.run(&|i, n| {
                let chunk = data.len().div_ceil(n);
                for d in data.iter().skip(i * chunk).take(chunk) {
                    d.store(iter, Ordering::Relaxed);
                }
            });
            // `run` returning must publish the workers' writes.
            assert!(data.iter().all(|d| d.load(Ordering::Relaxed) == iter));
        }
    }

    #[test]
    fn wakes_up_after_idle_sleep() {
        let pool = ThreadPool::new(2);
        let hits = AtomicU64::new(0);
        for _ in 0..5 {
            // Long enough for the workers to go past spinning and block.
            thread::sleep(std::time::Duration::from_millis(30));
            pool.run(&|_, _| {
                hits.fetch_add(1, Ordering::Relaxed);
            });
        }
        assert_eq!(hits.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn slow_worker_makes_caller_wait() {
        let pool = ThreadPool::new(2);
        let done = AtomicU64::new(0);
        pool.run(&|i, _| {
            if i == 1 {
                thread::sleep(std::time::Duration::from_millis(50));
            }
            done.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(done.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn worker_panic_is_resumed_on_caller_and_pool_survives() {
        let pool = ThreadPool::new(3);
        for _ in 0..50 {
            let r = panic::catch_unwind(AssertUnwindSafe(|| {
                pool.run(&|i, _| {
                    if i == 2 {
                        panic!("boom in worker");
                    }
                })
            }));
            let msg = r.unwrap_err();
            assert_eq!(msg.downcast_ref::<&str>(), Some(&"boom in worker"));
        }
        let r = panic::catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|i, _| {
                if i == 0 {
                    panic!("boom in caller");
                }
            })
        }));
        assert!(r.is_err());
        // Still fully functional afterwards.
        let hits = AtomicU64::new(0);
        pool.run(&|_, _| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn for_each_chunk_mut_covers_every_element_once() {
        let pool = ThreadPool::new(3);
        for len in [0usize, 1, 7, 100, 1000] {
            let mut data = vec![0u32; len];
            pool.for_each_chunk_mut(&mut data, 7, &|i, chunk: &mut [u32]| {
                for (k, v) in chunk.iter_mut().enumerate() {
                    *v += (i * 7 + k) as u32 + 1;
                }
            });
            assert!(data.iter().enumerate().all(|(k, &v)| v == k as u32 + 1));
        }
    }

    #[test]
    fn nested_run_executes_inline() {
        let pool = ThreadPool::new(2);
        let hits = AtomicU64::new(0);
        pool.run(&|_, _| {
            pool.run(&|_, _| {
                hits.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(hits.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn concurrent_callers_are_serialized() {
        let pool = Arc::new(ThreadPool::new(2));
        let total = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let pool = Arc::clone(&pool);
                let total = Arc::clone(&total);
                thread::spawn(move || {
                    for _ in 0..2_000 {
                        pool.run(&|_, _| {
                            total.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(total.load(Ordering::Relaxed), 3 * 2_000 * 2);
    }

    /// Cost of one `run` with an empty job, back to back and after a short
    /// gap (as between two matmuls of a decode step); run with
    /// `cargo test --release -- --ignored --nocapture bench_pool`.
    #[test]
    #[ignore]
    fn bench_pool_run() {
        use std::time::{Duration, Instant};
        for n in [2, 4] {
            let pool = ThreadPool::new(n);
            let hits = AtomicU64::new(0);
            let job = |_: usize, _: usize| {
                hits.fetch_add(1, Ordering::Relaxed);
            };
            for gap_us in [0u64, 20, 1000] {
                let mut times = Vec::new();
                for _ in 0..2000 {
                    if gap_us > 0 {
                        let t = Instant::now();
                        while t.elapsed() < Duration::from_micros(gap_us) {
                            std::hint::spin_loop();
                        }
                    }
                    let t = Instant::now();
                    pool.run(&job);
                    times.push(t.elapsed().as_nanos() as f64 / 1e3);
                }
                times.sort_by(|a, b| a.partial_cmp(b).unwrap());
                println!(
                    "threads={n} gap={gap_us:>4} us: run min {:.2} us, median {:.2} us, p90 {:.2} us",
                    times[0],
                    times[times.len() / 2],
                    times[times.len() * 9 / 10]
                );
            }
        }
    }

    #[test]
    fn drop_joins_workers() {
        for _ in 0..50 {
            let pool = ThreadPool::new(4);
            let hits = Arc::new(AtomicU64::new(0));
            let h = Arc::clone(&hits);
            pool.run(&move |_, _| {
                h.fetch_add(1, Ordering::Relaxed);
            });
            drop(pool);
            // Every worker's clone of `shared` is gone once they are joined.
            assert_eq!(hits.load(Ordering::Relaxed), 4);
        }
        // Dropping an idle, sleeping pool also returns.
        let pool = ThreadPool::new(3);
        thread::sleep(std::time::Duration::from_millis(30));
        drop(pool);
    }
}
