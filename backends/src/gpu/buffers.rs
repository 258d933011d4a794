//! Device buffers kept between calls, and reading them back.
//!
//! Each backend keeps a uniform for the dispatch parameters and two slots
//! (sets of lane, flag and readback buffers with their bind group), so one
//! chunk can compute while the previous one is read back. Slots grow to the
//! largest chunk seen and are then reused; allocating per call would cost
//! more than a small batch's compute.

use std::sync::{Arc, Mutex};

use super::context::GpuContext;
use super::shaders::{LANE_BYTES, PARAMS_BYTES};

/// Buffers kept between calls (per backend), grown as batches need.
#[derive(Default)]
pub(crate) struct Buffers {
    params: Option<wgpu::Buffer>,
    slots: [Option<Slot>; 2],
}

/// One chunk's buffers.
pub(crate) struct Slot {
    pub capacity: usize,
    /// The lane records (value, claimed end, steps left).
    pub lanes: wgpu::Buffer,
    /// The pass flags the kernel writes.
    pub flags: wgpu::Buffer,
    /// Where the flags are copied to be mapped and read.
    pub readback: wgpu::Buffer,
    pub bind_group: wgpu::BindGroup,
}

impl Buffers {
    /// Makes the parameter uniform if there is none yet.
    pub fn ensure_params(&mut self, device: &wgpu::Device) {
        self.params.get_or_insert_with(|| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("montana-params"),
                size: PARAMS_BYTES as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
    }

    pub fn params(&self) -> &wgpu::Buffer {
        self.params.as_ref().expect("made by ensure_params")
    }

    pub fn slot(&self, i: usize) -> &Slot {
        self.slots[i].as_ref().expect("made by ensure_slot")
    }

    /// Makes slot `i` hold at least `lanes` segments (slots only grow).
    pub fn ensure_slot(&mut self, ctx: &GpuContext, i: usize, lanes: usize, max_lanes: usize) {
        if self.slots[i].as_ref().is_some_and(|s| s.capacity >= lanes) {
            return;
        }
        self.ensure_params(&ctx.device);
        // Round up so a run of slightly growing batches does not reallocate
        // every time.
        let capacity = lanes.next_power_of_two().min(max_lanes).max(lanes);
        let buffer = |label, size, usage| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            })
        };
        use wgpu::BufferUsages as U;
        let lanes = buffer(
            "montana-lanes",
            (capacity * LANE_BYTES) as u64,
            U::STORAGE | U::COPY_DST | U::COPY_SRC,
        );
        let flags = buffer(
            "montana-flags",
            (capacity * 4) as u64,
            U::STORAGE | U::COPY_SRC | U::COPY_DST,
        );
        let readback = buffer(
            "montana-readback",
            (capacity * 4) as u64,
            U::MAP_READ | U::COPY_DST,
        );
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("montana-verify"),
            layout: &ctx.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: self.params().as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: lanes.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: flags.as_entire_binding(),
                },
            ],
        });
        self.slots[i] = Some(Slot {
            capacity,
            lanes,
            flags,
            readback,
            bind_group,
        });
    }
}

/// Where a mapping's result lands.
pub(crate) type Mapped = Arc<Mutex<Option<Result<(), wgpu::BufferAsyncError>>>>;

/// Asks for `slice` to be mapped for reading; the result lands in the
/// returned slot during a later `Device::poll`.
pub(crate) fn map_read(slice: wgpu::BufferSlice<'_>) -> Mapped {
    let mapped: Mapped = Arc::new(Mutex::new(None));
    let sink = mapped.clone();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        *sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(r)
    });
    mapped
}

/// `Ok` once a mapping asked for by [`map_read`] has succeeded.
pub(crate) fn take_mapped(mapped: &Mapped) -> Result<(), String> {
    match mapped.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(format!("mapping a GPU buffer: {e}")),
        None => Err("a GPU buffer was not mapped after its work finished".into()),
    }
}
