//! The wgpu backend behind edgeloop-core's [`Backend`] boundary, and the
//! choice between it and the CPU ([`select`]).

use edgeloop_core::model::{BatchToken, Model};
use edgeloop_core::{Backend, BackendChoice, Engine, SequenceState};

use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::model::{GpuKvCache, GpuModel};

/// Runs an engine's sessions on the GPU: the model's weights uploaded once,
/// each session's key/value caches on the device.
#[derive(Debug)]
pub struct WgpuBackend {
    model: GpuModel,
    device: String,
}

impl WgpuBackend {
    /// Uploads `model` to `ctx`'s device.
    pub fn new(ctx: &GpuContext, model: &Model) -> Result<Self> {
        Ok(Self {
            model: GpuModel::new(ctx, model)?,
            device: describe(ctx),
        })
    }
}

/// "NAME (BACKEND, DEVICE TYPE)" of `ctx`'s adapter.
pub fn describe(ctx: &GpuContext) -> String {
    let info = ctx.adapter_info();
    format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type)
}

fn core_error(e: GpuError) -> edgeloop_core::Error {
    edgeloop_core::Error::Backend {
        backend: "wgpu",
        message: e.to_string(),
    }
}

impl Backend for WgpuBackend {
    fn name(&self) -> &'static str {
        "wgpu"
    }

    fn device(&self) -> String {
        self.device.clone()
    }

    fn new_state(&self) -> Box<dyn SequenceState + '_> {
        Box::new(WgpuState {
            model: &self.model,
            caches: Vec::new(),
        })
    }
}

/// One session's caches on the device, one per slot.
struct WgpuState<'b> {
    model: &'b GpuModel,
    caches: Vec<GpuKvCache>,
}

impl WgpuState<'_> {
    fn slot(&mut self, slot: usize) -> &mut GpuKvCache {
        while self.caches.len() <= slot {
            self.caches.push(GpuKvCache::empty());
        }
        &mut self.caches[slot]
    }
}

impl SequenceState for WgpuState<'_> {
    fn forward(
        &mut self,
        batch: &[BatchToken],
        logit_rows: &[usize],
        logits: &mut Vec<f32>,
    ) -> edgeloop_core::Result<()> {
        *logits = self
            .model
            .forward_batch(&mut self.caches, batch, logit_rows)
            .map_err(core_error)?;
        Ok(())
    }

    fn len(&self, slot: usize) -> usize {
        self.caches.get(slot).map_or(0, GpuKvCache::len)
    }

    fn reserve(&mut self, slot: usize, capacity: usize) -> edgeloop_core::Result<()> {
        let model = self.model;
        let cache = self.slot(slot);
        if capacity > cache.capacity() {
            // Grow by half again at least, so that a conversation's turns do
            // not copy the cache each time.
            let grown = capacity.max(cache.capacity() + cache.capacity() / 2);
            model.grow_cache(cache, grown).map_err(core_error)?;
        }
        Ok(())
    }

    fn truncate(&mut self, slot: usize, len: usize) {
        if let Some(c) = self.caches.get_mut(slot) {
            c.truncate(len);
        }
    }

    fn fork(
        &mut self,
        from: usize,
        to: usize,
        len: usize,
        capacity: usize,
    ) -> edgeloop_core::Result<()> {
        let empty = GpuKvCache::empty();
        let src = self.caches.get(from).unwrap_or(&empty);
        let copy = self
            .model
            .fork_cache(src, len, capacity.max(len))
            .map_err(core_error)?;
        *self.slot(to) = copy;
        Ok(())
    }

    fn release(&mut self, slot: usize) {
        if let Some(c) = self.caches.get_mut(slot) {
            *c = GpuKvCache::empty();
        }
    }

    fn bytes(&self) -> usize {
        self.caches.iter().map(GpuKvCache::bytes).sum()
    }
}

/// Which backend an engine ended up on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// `"cpu"` or `"wgpu"`.
    pub backend: &'static str,
    /// What it runs on (threads, or the adapter).
    pub device: String,
    /// Why `auto` stayed on the CPU, when it did.
    pub fallback: Option<String>,
}

/// Puts `engine` on the backend `choice` names.
///
/// - `Cpu`: the engine as loaded.
/// - `Wgpu`: the first adapter of the backends in `WGPU_BACKEND` (all when
///   unset), software adapters included; an error when there is none or
///   the model has a weight type without a GPU kernel.
/// - `Auto`: the GPU when a hardware adapter is there and takes the model,
///   else the CPU, with the reason in [`Selection::fallback`] (a software
///   rasterizer such as llvmpipe is slower than the CPU path, so `auto`
///   never picks one; see [`GpuContext::hardware`]).
pub fn select(engine: &mut Engine, choice: BackendChoice) -> Result<Selection> {
    let ctx = search(choice).map(|open| open());
    finish(engine, choice, ctx)
}

/// How `choice` looks for its GPU: any adapter for `Wgpu`, a hardware one
/// for `Auto`, none for `Cpu`.
fn search(choice: BackendChoice) -> Option<fn() -> Result<GpuContext>> {
    match choice {
        BackendChoice::Cpu => None,
        BackendChoice::Wgpu => Some(GpuContext::new),
        BackendChoice::Auto => Some(GpuContext::hardware),
    }
}

/// [`select`] in two halves, so that the search for a GPU (tens of
/// milliseconds: loading the driver, creating the device) runs on a thread
/// while the model loads, since it needs nothing from the model:
/// [`Probe::start`] before [`Engine::load`], [`Probe::select`] after.
pub struct Probe {
    choice: BackendChoice,
    search: Option<std::thread::JoinHandle<Result<GpuContext>>>,
}

impl Probe {
    /// Starts looking for the GPU that `choice` asks for (nothing for `Cpu`).
    pub fn start(choice: BackendChoice) -> Probe {
        Probe {
            choice,
            search: search(choice).map(std::thread::spawn),
        }
    }

    /// Puts `engine` on the backend, as [`select`] does with the GPU found.
    pub fn select(self, engine: &mut Engine) -> Result<Selection> {
        let waited = std::time::Instant::now();
        let ctx = self.search.map(|h| {
            h.join().unwrap_or_else(|_| {
                Err(GpuError::NoAdapter {
                    why: "the search for a GPU panicked".into(),
                })
            })
        });
        log::debug!(
            "waited {:.1} ms for the GPU search",
            waited.elapsed().as_secs_f64() * 1e3
        );
        finish(engine, self.choice, ctx)
    }
}

/// The rest of [`select`] once the adapter search for `choice` has given
/// `ctx` (`None` for `Cpu`).
fn finish(
    engine: &mut Engine,
    choice: BackendChoice,
    ctx: Option<Result<GpuContext>>,
) -> Result<Selection> {
    let selected = |engine: &Engine, fallback| Selection {
        backend: engine.backend().name(),
        device: engine.backend().device(),
        fallback,
    };
    let ctx = match (choice, ctx) {
        (BackendChoice::Cpu, _) | (_, None) => return Ok(selected(engine, None)),
        (BackendChoice::Wgpu, Some(ctx)) => ctx?,
        (BackendChoice::Auto, Some(Ok(ctx))) => ctx,
        (BackendChoice::Auto, Some(Err(e))) => return Ok(selected(engine, Some(e.to_string()))),
    };
    match WgpuBackend::new(&ctx, engine.model()) {
        Ok(backend) => {
            engine.set_backend(Box::new(backend));
            Ok(selected(engine, None))
        }
        Err(e) if choice == BackendChoice::Wgpu => Err(e),
        Err(e) => Ok(selected(engine, Some(format!("{}: {e}", describe(&ctx))))),
    }
}
