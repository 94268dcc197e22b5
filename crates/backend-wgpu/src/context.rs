//! The device side of the backend: adapter choice, the device and queue, the
//! pipeline cache, and the one pending command encoder that ops record into
//! (submitted in batches, and before anything the host needs to see).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tessera_backend::BackendError;
use wgpu::util::DeviceExt;

use crate::shaders;

/// Ops recorded before the pending encoder is submitted on its own, so the
/// device starts on long passes while the host keeps encoding.
const OPS_PER_SUBMIT: usize = 64;

/// Workgroups per grid dimension guaranteed by WebGPU (and used by every adapter).
pub(crate) const MAX_GRID_DIM: u32 = 65_535;

/// How the backend picks and configures its device.
#[derive(Clone, Debug)]
pub struct WgpuOptions {
    /// Accept a CPU adapter (Mesa lavapipe, WARP, SwiftShader).
    pub allow_cpu_adapter: bool,
    /// Use subgroup reductions when the adapter offers them.
    pub use_subgroups: bool,
    /// Caps the bytes of one weight part below the adapter's binding limit
    /// (tests use it to exercise weights split over several bindings).
    pub max_weight_part_bytes: Option<u64>,
    /// Caps the bytes of one activation buffer below the adapter's binding limit
    /// (tests use it to make the engine split a batch into several passes).
    pub max_activation_bytes: Option<u64>,
    /// Which usable adapter, counted in preference order (discrete GPUs first,
    /// CPU adapters last; see [`adapter_count`]); `None` is the first.
    pub adapter: Option<usize>,
}

impl Default for WgpuOptions {
    fn default() -> WgpuOptions {
        WgpuOptions {
            allow_cpu_adapter: false,
            use_subgroups: true,
            max_weight_part_bytes: None,
            max_activation_bytes: None,
            adapter: None,
        }
    }
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// The adapters that can run the shaders, in preference order, and a
/// description of every adapter seen (for errors).
fn usable_adapters(allow_cpu_adapter: bool) -> (Vec<wgpu::Adapter>, Vec<String>) {
    let instance = wgpu::Instance::new(instance_descriptor());
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let seen = adapters
        .iter()
        .map(|a| {
            let i = a.get_info();
            format!("{} ({:?}, {:?})", i.name, i.backend, i.device_type)
        })
        .collect();
    let mut usable: Vec<wgpu::Adapter> = adapters
        .into_iter()
        .filter(|a| {
            let info = a.get_info();
            (allow_cpu_adapter || info.device_type != wgpu::DeviceType::Cpu)
                && a.get_downlevel_capabilities()
                    .flags
                    .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
        })
        .collect();
    // Stable: adapters of one kind keep the order the instance lists them in.
    usable.sort_by_key(|a| rank(a.get_info().device_type));
    (usable, seen)
}

/// How many adapters can run the shaders (`WgpuOptions::adapter` counts them).
pub fn adapter_count(allow_cpu_adapter: bool) -> usize {
    usable_adapters(allow_cpu_adapter).0.len()
}

/// What the chosen adapter is, for logs and for `auto` backend selection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterDescription {
    pub name: String,
    pub driver: String,
    /// "Vulkan", "Metal", "Dx12", ...
    pub api: String,
    /// "DiscreteGpu", "IntegratedGpu", "VirtualGpu", "Cpu", "Other".
    pub device_type: String,
    /// A software rasteriser on the CPU (lavapipe): never picked automatically.
    pub is_cpu: bool,
    pub subgroups: bool,
    pub max_binding_bytes: u64,
}

impl std::fmt::Display for AdapterDescription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}, {}, {}; subgroups {}, max binding {} MiB)",
            self.name,
            self.api,
            self.device_type,
            self.driver,
            if self.subgroups { "on" } else { "off" },
            self.max_binding_bytes >> 20
        )
    }
}

fn instance_descriptor() -> wgpu::InstanceDescriptor {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = wgpu::Backends::all();
    desc
}

struct Pending {
    encoder: Option<wgpu::CommandEncoder>,
    ops: usize,
}

pub(crate) struct Context {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub description: AdapterDescription,
    pub subgroups: bool,
    pub max_binding_bytes: u64,
    /// The most bytes of one weight part (at most `max_binding_bytes`).
    pub weight_part_bytes: u64,
    /// The most bytes of one activation buffer (at most `max_binding_bytes`).
    pub activation_bytes: u64,
    pending: Mutex<Pending>,
    pipelines: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
    /// The first validation or device error no error scope caught.
    uncaptured: Arc<Mutex<Option<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere; the guarded state is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn device_error(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Device(format!("wgpu: {what}: {e}"))
}

impl Context {
    pub fn new(options: &WgpuOptions) -> Result<Context, BackendError> {
        let (mut usable, seen) = usable_adapters(options.allow_cpu_adapter);
        let index = options.adapter.unwrap_or(0);
        if index >= usable.len() {
            return Err(BackendError::Device(format!(
                "no usable wgpu adapter number {index}: {} usable (CPU adapters {}); adapters seen: [{}]",
                usable.len(),
                if options.allow_cpu_adapter {
                    "allowed"
                } else {
                    "excluded"
                },
                seen.join(", ")
            )));
        }
        let adapter = usable.swap_remove(index);
        let info = adapter.get_info();
        let subgroups =
            options.use_subgroups && adapter.features().contains(wgpu::Features::SUBGROUP);
        let mut features = wgpu::Features::empty();
        if subgroups {
            features |= wgpu::Features::SUBGROUP;
        }
        // Everything the adapter can give: big bindings, big buffers.
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("tessera"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| device_error("request_device", e))?;
        let uncaptured = Arc::new(Mutex::new(None));
        let sink = Arc::clone(&uncaptured);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = lock(&sink);
            if slot.is_none() {
                *slot = Some(e.to_string());
            }
        }));
        let adapter_cap = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        // Bindings are whole f32/u32 arrays: keep the caps multiples of 4 bytes.
        let max_binding_bytes = adapter_cap / 4 * 4;
        let weight_part_bytes = options
            .max_weight_part_bytes
            .map_or(max_binding_bytes, |cap| cap.min(max_binding_bytes))
            / 4
            * 4;
        let activation_bytes = options
            .max_activation_bytes
            .map_or(max_binding_bytes, |cap| cap.min(max_binding_bytes))
            / 4
            * 4;
        let description = AdapterDescription {
            name: info.name.clone(),
            driver: format!("{} {}", info.driver, info.driver_info)
                .trim()
                .to_string(),
            api: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            is_cpu: info.device_type == wgpu::DeviceType::Cpu,
            subgroups,
            max_binding_bytes,
        };
        Ok(Context {
            device,
            queue,
            description,
            subgroups,
            max_binding_bytes,
            weight_part_bytes,
            activation_bytes,
            pending: Mutex::new(Pending {
                encoder: None,
                ops: 0,
            }),
            pipelines: Mutex::new(HashMap::new()),
            uncaptured,
        })
    }

    /// Fails with the first error the device reported outside an error scope.
    pub fn check_errors(&self) -> Result<(), BackendError> {
        match lock(&self.uncaptured).take() {
            Some(e) => Err(BackendError::Device(format!("wgpu: {e}"))),
            None => Ok(()),
        }
    }

    /// The pipeline of `entry` in shader `stem` built with `flags`, compiled once.
    pub fn pipeline(
        &self,
        stem: &'static str,
        flags: &[&str],
    ) -> Result<Arc<wgpu::ComputePipeline>, BackendError> {
        let mut all_flags: Vec<&str> = flags.to_vec();
        if self.subgroups {
            all_flags.push("subgroups");
        }
        let key = format!("{stem}:{}", all_flags.join(","));
        if let Some(p) = lock(&self.pipelines).get(&key) {
            return Ok(Arc::clone(p));
        }
        let source = shaders::source(stem, &all_flags)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&key),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&key),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(BackendError::Device(format!(
                "wgpu: shader {key} does not compile: {e}"
            )));
        }
        let pipeline = Arc::new(pipeline);
        lock(&self.pipelines).insert(key, Arc::clone(&pipeline));
        Ok(pipeline)
    }

    /// A storage buffer of `bytes` (rounded up to 4, at least 4).
    pub fn storage(&self, label: &str, bytes: u64) -> Result<wgpu::Buffer, BackendError> {
        let size = bytes.max(4).div_ceil(4) * 4;
        if size > self.max_binding_bytes {
            return Err(BackendError::Device(format!(
                "wgpu: {label} needs {size} bytes in one binding; this adapter binds at most {} \
                 (use smaller batches)",
                self.max_binding_bytes
            )));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(device_error(label, e));
        }
        Ok(buffer)
    }

    /// A read-only storage buffer holding `words` (weights, per-op tables).
    pub fn storage_init(&self, label: &str, words: &[u32]) -> Result<wgpu::Buffer, BackendError> {
        let bytes = words.len() as u64 * 4;
        if bytes > self.max_binding_bytes {
            return Err(BackendError::Device(format!(
                "wgpu: {label} needs {bytes} bytes in one binding; this adapter binds at most {}",
                self.max_binding_bytes
            )));
        }
        let pad = [0u32];
        let contents: &[u32] = if words.is_empty() { &pad } else { words };
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(contents),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(device_error(label, e));
        }
        Ok(buffer)
    }

    /// Records one dispatch of `pipeline`: binding 0 is a uniform holding
    /// `params`, bindings 1.. are `buffers` in order.
    pub fn dispatch(
        &self,
        pipeline: &wgpu::ComputePipeline,
        params: &[u32],
        buffers: &[&wgpu::Buffer],
        grid: (u32, u32),
    ) -> Result<(), BackendError> {
        if grid.0 == 0 || grid.1 == 0 {
            return Ok(());
        }
        // Uniform blocks are read in 16-byte rows.
        let mut words = params.to_vec();
        words.resize(params.len().div_ceil(4).max(1) * 4, 0);
        let uniform = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::cast_slice(&words),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        entries.extend(
            buffers
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: b.as_entire_binding(),
                }),
        );
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        self.record(|encoder| {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(grid.0, grid.1, 1);
        })
    }

    /// Records a buffer-to-buffer copy (byte offsets and size multiples of 4).
    pub fn copy(
        &self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    ) -> Result<(), BackendError> {
        if size == 0 {
            return Ok(());
        }
        self.record(|encoder| encoder.copy_buffer_to_buffer(src, src_offset, dst, dst_offset, size))
    }

    fn record(&self, f: impl FnOnce(&mut wgpu::CommandEncoder)) -> Result<(), BackendError> {
        let mut pending = lock(&self.pending);
        let encoder = pending.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        f(encoder);
        pending.ops += 1;
        if pending.ops >= OPS_PER_SUBMIT {
            self.submit(&mut pending);
        }
        Ok(())
    }

    fn submit(&self, pending: &mut Pending) {
        if let Some(encoder) = pending.encoder.take() {
            self.queue.submit([encoder.finish()]);
        }
        pending.ops = 0;
    }

    /// Submits everything recorded so far.
    pub fn flush(&self) -> Result<(), BackendError> {
        self.submit(&mut lock(&self.pending));
        self.check_errors()
    }

    /// Writes `data` at the start of `buffer`, after the work recorded so far.
    pub fn write(&self, buffer: &wgpu::Buffer, data: &[f32]) -> Result<(), BackendError> {
        // `queue.write_buffer` lands before the next submission's commands: the
        // commands recorded so far must be submitted first to keep op order.
        self.flush()?;
        if !data.is_empty() {
            self.queue
                .write_buffer(buffer, 0, bytemuck::cast_slice(data));
        }
        self.check_errors()
    }

    /// Reads the first `len` f32 values of `buffer` once the work recorded so far is done.
    pub fn read(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<f32>, BackendError> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let size = len as u64 * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.copy(buffer, 0, &staging, 0, size)?;
        self.flush()?;
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|e| device_error("readback", e))?
            .map_err(|e| device_error("readback", e))?;
        let data = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| device_error("readback", e))?;
            view.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        staging.unmap();
        self.check_errors()?;
        Ok(data)
    }

    /// Submits the recorded work and blocks until the device has finished it.
    pub fn wait(&self) -> Result<(), BackendError> {
        self.flush()?;
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| device_error("poll", e))?;
        self.check_errors()
    }
}

/// A grid of at least `workgroups` workgroups within the per-dimension limit:
/// shaders recover the linear index as `wg.y * num_workgroups.x + wg.x`.
pub(crate) fn grid_1d(workgroups: usize) -> Result<(u32, u32), BackendError> {
    let x = workgroups.min(MAX_GRID_DIM as usize);
    if x == 0 {
        return Ok((0, 0));
    }
    let y = workgroups.div_ceil(x);
    if y > MAX_GRID_DIM as usize {
        return Err(BackendError::Device(format!(
            "wgpu: {workgroups} workgroups exceed one dispatch"
        )));
    }
    Ok((x as u32, y as u32))
}
