//! The device, its queue and the two compiled kernels: made once per process,
//! on first use, and shared by every `GpuBackend`.
//!
//! wgpu reports most failures asynchronously (validation errors, out of
//! memory, a lost device) and by default panics on them. Here they are
//! captured instead: the first uncaptured error and a device loss are kept,
//! every call checks them, and the caller gets a typed error and falls back
//! to a CPU backend. A device that failed once (lost, hung, out of memory,
//! an error from wgpu) is not trusted again for the life of the process: it
//! reports unavailable, so `auto` and the fallback order skip it.

use std::sync::{Arc, Mutex, OnceLock};

use montana_vdf::HashSuite;

use super::adapter;
use super::block::block_on;
use super::shaders;

/// A device ready to verify.
pub(crate) struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub layout: wgpu::BindGroupLayout,
    pipelines: [wgpu::ComputePipeline; 2],
    pub limits: wgpu::Limits,
    /// The first error wgpu reported outside an error scope.
    error: Arc<Mutex<Option<String>>>,
    /// Why the device was lost, once it has been.
    lost: Arc<Mutex<Option<String>>>,
    /// The first failure of a call on this device.
    failed: Mutex<Option<String>>,
}

static CONTEXT: OnceLock<Result<GpuContext, String>> = OnceLock::new();

/// The shared context (made on first call), or why there is none.
pub(crate) fn context() -> Result<&'static GpuContext, String> {
    CONTEXT
        .get_or_init(|| {
            let adapter = adapter::chosen().ok_or("no GPU adapter found")?;
            GpuContext::new(adapter)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Why the device is unusable, if it was made and has failed since. Only
/// looks: availability must not create a device.
pub(crate) fn failure() -> Option<String> {
    match CONTEXT.get()? {
        Ok(c) => c.check().err(),
        Err(e) => Some(e.clone()),
    }
}

impl GpuContext {
    fn new(adapter: &wgpu::Adapter) -> Result<GpuContext, String> {
        let limits = adapter.limits();
        let (device, queue) = block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("montana-verify"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| format!("creating the GPU device: {e}"))?;

        let error = Arc::new(Mutex::new(None::<String>));
        let sink = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| one_line(&e.to_string()));
        }));
        let lost = Arc::new(Mutex::new(None::<String>));
        let sink = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| one_line(&format!("device lost ({reason:?}): {message}")));
        });

        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let storage = |binding| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only: false },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("montana-verify"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
                storage(1),
                storage(2),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("montana-verify"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = |suite: HashSuite| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(suite.name()),
                source: wgpu::ShaderSource::Wgsl(shaders::source(suite).into()),
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(suite.name()),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(shaders::ENTRY_POINT),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let pipelines = [pipeline(HashSuite::Sha256), pipeline(HashSuite::Blake3)];
        if let Some(e) = block_on(scope.pop()) {
            return Err(format!(
                "compiling the GPU kernels: {}",
                one_line(&e.to_string())
            ));
        }
        Ok(GpuContext {
            device,
            queue,
            layout,
            pipelines,
            limits,
            error,
            lost,
            failed: Mutex::new(None),
        })
    }

    pub fn pipeline(&self, suite: HashSuite) -> &wgpu::ComputePipeline {
        match suite {
            HashSuite::Sha256 => &self.pipelines[0],
            HashSuite::Blake3 => &self.pipelines[1],
        }
    }

    /// `Err` once the device is lost, wgpu has reported an error, or a call
    /// has failed.
    pub fn check(&self) -> Result<(), String> {
        if let Some(m) = lock(&self.lost).as_ref() {
            return Err(m.clone());
        }
        if let Some(m) = lock(&self.error).as_ref() {
            return Err(format!("GPU error: {m}"));
        }
        match lock(&self.failed).as_ref() {
            Some(m) => Err(format!("GPU failed earlier: {m}")),
            None => Ok(()),
        }
    }

    /// Records that a call failed: the device is not used again.
    pub fn mark_failed(&self, message: &str) {
        lock(&self.failed).get_or_insert_with(|| message.to_string());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// wgpu's messages span several lines; the CLI prints one.
pub(crate) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
