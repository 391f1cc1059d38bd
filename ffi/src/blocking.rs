//! Blocking work as a future, for the async functions of the bindings
//! (Kotlin `suspend`, Swift `async`, Python `asyncio`): the work runs on a
//! thread of its own and the future completes when it is done. No async
//! runtime is needed on either side.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::error::{guard, EdgeloopError};

type Outcome<T> = Result<T, EdgeloopError>;

struct Slot<T> {
    result: Option<Outcome<T>>,
    waker: Option<Waker>,
}

/// A future resolving to what `work` returns, run on a new thread under the
/// panic guard (a panic resolves it to [`EdgeloopError::Internal`]).
pub(crate) fn spawn<T, F>(name: &str, work: F) -> impl Future<Output = Outcome<T>>
where
    T: Send + 'static,
    F: FnOnce() -> Outcome<T> + Send + 'static,
{
    let slot = Arc::new(Mutex::new(Slot {
        result: None,
        waker: None,
    }));
    let theirs = slot.clone();
    let spawned = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let value = guard(work);
            let mut s = theirs.lock().unwrap_or_else(|p| p.into_inner());
            s.result = Some(value);
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        });
    if let Err(e) = spawned {
        slot.lock().unwrap_or_else(|p| p.into_inner()).result =
            Some(Err(EdgeloopError::Internal {
                reason: format!("could not start a worker thread: {e}"),
            }));
    }
    Blocking { slot }
}

struct Blocking<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

impl<T> Future for Blocking<T> {
    type Output = Outcome<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<T>> {
        let mut s = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        match s.result.take() {
            Some(v) => Poll::Ready(v),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
