//! A persistent thread pool for the decode loop: `n - 1` workers plus the
//! calling thread run the same job, `f(thread_index, n_threads)` for every
//! index, and `run` returns when all of them are done.
//!
//! A token of decoding calls [`ThreadPool::run`] a couple of hundred times,
//! with a few microseconds of work each, so a call must not spawn, allocate
//! or sleep in the kernel on the fast path. Jobs are published by bumping an
//! atomic generation counter that idle workers poll for a bounded time;
//! after that they block on a condition variable so an idle pool costs no
//! CPU.
//!
//! Each index of a job is claimed exactly once, by its worker or, if that
//! worker has not started it by the time the caller finished its own share,
//! by the caller. A worker that the OS has not scheduled (a busy machine, a
//! phone's little cores) therefore never holds up a call it has not joined.

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
    /// `claimed[i]`: index `i` of the current job has been taken (by worker
    /// `i` or by the caller). Reset to false before each publication.
    claimed: Box<[AtomicBool]>,
    /// Workers between noticing a generation and being done with it.
    running: AtomicUsize,
    /// Set on drop: workers exit at the next generation.
    shutdown: AtomicBool,
    /// The first panic payload of the current job.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
    /// Guards the sleeping protocol of both condition variables.
    sleep_lock: Mutex<()>,
    /// Workers blocked waiting for a new generation.
    sleepers: AtomicUsize,
    work_cv: Condvar,
    /// Whether the caller is blocked waiting for `running == 0`.
    caller_sleeping: AtomicBool,
    done_cv: Condvar,
}

// SAFETY: `job` is written only by the thread inside `run` (holding
// `run_lock`): before the Release stores that reset `claimed`, and after it
// has observed `running == 0` with Acquire. A worker reads it only after a
// successful claim (an AcqRel swap that reads one of those reset stores),
// and while counted in `running`. So every read happens-after the write it
// reads and happens-before the next write. Every other field is Sync.
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

/// Runs `f(i, n)`, keeping the first panic in `slot`.
fn call_catching(
    f: &(dyn Fn(usize, usize) + Sync),
    i: usize,
    n: usize,
    slot: &Mutex<Option<Box<dyn Any + Send>>>,
) {
    if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| f(i, n))) {
        let mut slot = lock(slot);
        if slot.is_none() {
            *slot = Some(p);
        }
    }
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
            claimed: (0..n_threads).map(|_| AtomicBool::new(true)).collect(),
            running: AtomicUsize::new(0),
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
    /// Index 0 runs on the calling thread and index `i` normally on worker
    /// `i`, but the caller takes over the index of a worker that has not
    /// started by the time it is done with its own, so calls must not wait
    /// for one another (no barriers). Splitting work dynamically (an atomic
    /// counter of chunks) makes the best use of this.
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

        // SAFETY: we hold `run_lock`, and the previous run saw `running ==
        // 0`, so no worker reads `job` now (see `Shared`). The lifetime is
        // erased to store the reference, but it is only used by claims of
        // this run, all of which finish before `wait_done` returns, and `f`
        // outlives this call.
        unsafe {
            let job =
                std::mem::transmute::<&'a (dyn Fn(usize, usize) + Sync + 'a), &'static Job>(f);
            *sh.job.get() = Some(job);
        }
        for c in &sh.claimed[1..] {
            c.store(false, Ordering::Release);
        }
        // SeqCst pairs with the sleepers protocol in `wait_for_generation`.
        sh.generation.fetch_add(1, Ordering::SeqCst);
        if sh.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = lock(&sh.sleep_lock);
            sh.work_cv.notify_all();
        }

        IN_JOB.with(|c| c.set(true));
        call_catching(f, 0, n, &sh.panic);
        // Take over the shares of workers that have not started yet.
        for (i, c) in sh.claimed.iter().enumerate().skip(1) {
            if !c.swap(true, Ordering::AcqRel) {
                call_catching(f, i, n, &sh.panic);
            }
        }
        IN_JOB.with(|c| c.set(false));

        // Workers that claimed an index still use `f`: wait for them.
        self.wait_done();
        // SAFETY: no worker is inside the job any more; clear the reference
        // so nothing can observe it after `f` is gone.
        unsafe {
            *sh.job.get() = None;
        }
        let panicked = lock(&sh.panic).take();
        drop(guard);
        if let Some(p) = panicked {
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

    /// Waits until no worker is inside the current job.
    fn wait_done(&self) {
        let sh = &*self.shared;
        if poll(|| sh.running.load(Ordering::Acquire) == 0) {
            return;
        }
        let mut g = lock(&sh.sleep_lock);
        sh.caller_sleeping.store(true, Ordering::SeqCst);
        while sh.running.load(Ordering::SeqCst) != 0 {
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
        // Count ourselves in before claiming, so a caller that sees our claim
        // also sees us running and waits for us.
        sh.running.fetch_add(1, Ordering::SeqCst);
        if !sh.claimed[index].swap(true, Ordering::AcqRel) {
            // SAFETY: the claim read a reset made after the job was stored,
            // and the caller waits for `running == 0` before it clears or
            // replaces the job (see `Shared`).
            if let Some(job) = unsafe { *sh.job.get() } {
                call_catching(job, index, n_threads, &sh.panic);
            }
        }
        if sh.running.fetch_sub(1, Ordering::AcqRel) == 1
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
    use std::time::{Duration, Instant};

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
    fn workers_run_concurrently_with_the_caller() {
        // Index 0 (the caller) waits for index 1 to start: that only ends if
        // a worker really runs index 1 while the caller is busy.
        let pool = ThreadPool::new(2);
        for _ in 0..20 {
            let started = AtomicBool::new(false);
            let caller = thread::current().id();
            pool.run(&|i, _| {
                if i == 0 {
                    let t = Instant::now();
                    while !started.load(Ordering::Acquire) {
                        assert!(t.elapsed() < Duration::from_secs(10), "worker never ran");
                        thread::yield_now();
                    }
                } else {
                    assert_ne!(thread::current().id(), caller);
                    started.store(true, Ordering::Release);
                }
            });
        }
    }

    #[test]
    fn late_workers_never_run_an_index_twice() {
        // Uneven work, more threads than cores: the caller often takes over
        // the indices of workers that are late.
        let pool = ThreadPool::new(4);
        let counts: Vec<AtomicU64> = (0..4).map(|_| AtomicU64::new(0)).collect();
        for iter in 0..3_000u64 {
            pool.run(&|i, _| {
                counts[i].fetch_add(1, Ordering::Relaxed);
                if (iter + i as u64).is_multiple_of(7) {
                    for _ in 0..(iter % 50) * 20 {
                        std::hint::spin_loop();
                    }
                }
            });
            for c in &counts {
                assert_eq!(c.load(Ordering::Relaxed), iter + 1);
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
