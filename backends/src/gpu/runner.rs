//! Running segments on the device: upload, dispatches, readback.
//!
//! A batch is cut into chunks of at most `max_lanes` segments (one
//! invocation each). A chunk is uploaded once and walked by as many
//! dispatches as its longest segment needs, each of the tuner's step budget,
//! with two dispatches in flight so the device never waits for the host.
//! Chunks alternate between two sets of buffers: while chunk c computes, the
//! host reads chunk c-1's pass flags and then packs chunk c+1. Chunks are
//! checked in order, so the first failing chunk holds the lowest failing
//! index and nothing after it needs to run.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use montana_vdf::{Hash32, HashSuite, Segment};

use super::buffers::{map_read, wait_mapped, Buffers, Mapped, Slot};
use super::context::{one_line, GpuContext};
use super::shaders::{
    self, FLAG_CUT, FLAG_MATCH, FLAG_MISMATCH, LANE_BYTES, PARAMS_BYTES, WORKGROUP_SIZE,
};
use super::tuner::StepTuner;

/// Dispatches queued on the device at once.
const MAX_IN_FLIGHT: usize = 2;

/// How long to wait for one submission before calling the device hung.
const POLL_TIMEOUT: Duration = Duration::from_secs(60);

/// A flag readback that has been submitted but not yet read.
struct PendingFlags {
    slot: usize,
    base: usize,
    len: usize,
    submission: wgpu::SubmissionIndex,
    mapped: Mapped,
}

struct InFlight {
    submission: wgpu::SubmissionIndex,
    lanes: usize,
    steps: u32,
    submitted: Instant,
}

/// One call's use of the device.
pub(crate) struct Runner<'a> {
    ctx: &'a GpuContext,
    bufs: &'a mut Buffers,
    tuner: &'a mut StepTuner,
    max_lanes: usize,
    in_flight: VecDeque<InFlight>,
    last_done: Option<Instant>,
}

impl<'a> Runner<'a> {
    pub fn new(
        ctx: &'a GpuContext,
        bufs: &'a mut Buffers,
        tuner: &'a mut StepTuner,
        max_lanes: usize,
    ) -> Self {
        let limit = (ctx.limits.max_storage_buffer_binding_size as usize / LANE_BYTES)
            .min(ctx.limits.max_buffer_size as usize / LANE_BYTES)
            .min(
                ctx.limits.max_compute_workgroups_per_dimension as usize * WORKGROUP_SIZE as usize,
            );
        bufs.ensure_params(&ctx.device);
        Runner {
            ctx,
            bufs,
            tuner,
            max_lanes: max_lanes.clamp(1, limit.max(1)),
            in_flight: VecDeque::new(),
            last_done: None,
        }
    }

    /// The lowest index whose claim is false, or `None` if all hold.
    pub fn verify(
        &mut self,
        suite: HashSuite,
        segments: &[Segment],
    ) -> Result<Option<usize>, String> {
        let mut pending: Option<PendingFlags> = None;
        for (c, chunk) in segments.chunks(self.max_lanes).enumerate() {
            let slot = c % 2;
            let mut walk = self.start(slot, suite, chunk)?;
            // The device now has this chunk queued: read the previous one.
            if let Some(p) = pending.take() {
                if let Some(bad) = self.finish_flags(p)? {
                    return Ok(Some(bad));
                }
            }
            self.walk(&mut walk)?;
            pending = Some(self.request_flags(slot, c * self.max_lanes, chunk.len())?);
        }
        // Time the last dispatches too: a call of one or two dispatches
        // must still teach the tuner.
        self.drain()?;
        match pending {
            Some(p) => self.finish_flags(p),
            None => Ok(None),
        }
    }

    /// Each segment's value after its `steps` steps (its `end` is ignored):
    /// how a benchmark makes true claims without walking them on the CPU.
    pub fn walk_values(
        &mut self,
        suite: HashSuite,
        segments: &[Segment],
    ) -> Result<Vec<Hash32>, String> {
        let mut out = Vec::with_capacity(segments.len());
        for chunk in segments.chunks(self.max_lanes) {
            let mut walk = self.start(0, suite, chunk)?;
            self.walk(&mut walk)?;
            self.drain()?;
            let bytes = (chunk.len() * LANE_BYTES) as u64;
            let readback = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("montana-values"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let slot = self.slot(0);
            let mut enc = self.encoder();
            enc.copy_buffer_to_buffer(&slot.lanes, 0, &readback, 0, bytes);
            let submission = self.ctx.queue.submit([enc.finish()]);
            let mapped = map_read(readback.slice(..));
            self.wait(submission)?;
            wait_mapped(&self.ctx.device, &mapped, POLL_TIMEOUT)?;
            let view = readback
                .get_mapped_range(..)
                .map_err(|e| format!("reading back values: {e}"))?;
            out.extend(
                view.chunks_exact(LANE_BYTES)
                    .map(|r| shaders::lane_value(suite, r)),
            );
        }
        Ok(out)
    }

    /// Uploads a chunk into `slot` and submits its first dispatch.
    fn start(&mut self, slot: usize, suite: HashSuite, chunk: &[Segment]) -> Result<Walk, String> {
        self.ensure_slot(slot, chunk.len());
        let mut records = Vec::with_capacity(chunk.len() * LANE_BYTES);
        for seg in chunk {
            shaders::push_lane(&mut records, suite, seg);
        }
        self.ctx
            .queue
            .write_buffer(&self.slot(slot).lanes, 0, &records);
        let mut walk = Walk {
            slot,
            suite,
            lanes: chunk.len(),
            total: chunk.iter().map(|s| s.steps).max().unwrap_or(0),
            done: 0,
            started: false,
        };
        self.dispatch(&mut walk)?;
        Ok(walk)
    }

    /// Submits dispatches until every segment of the chunk has run.
    fn walk(&mut self, walk: &mut Walk) -> Result<(), String> {
        while walk.done < walk.total {
            self.dispatch(walk)?;
        }
        Ok(())
    }

    /// Submits one dispatch of the tuner's budget (the first also clears the
    /// flags; a chunk of zero-step claims still needs it to compare).
    fn dispatch(&mut self, walk: &mut Walk) -> Result<(), String> {
        let left = walk.total - walk.done;
        let steps = (self.tuner.budget(walk.lanes) as u64).min(left).max(1) as u32;
        let mut params = [0u8; PARAMS_BYTES];
        params[..4].copy_from_slice(&(walk.lanes as u32).to_le_bytes());
        params[4..8].copy_from_slice(&steps.to_le_bytes());
        self.ctx.queue.write_buffer(self.params(), 0, &params);

        let slot = self.slot(walk.slot);
        let mut enc = self.encoder();
        if !walk.started {
            enc.clear_buffer(&slot.flags, 0, Some((walk.lanes * 4) as u64));
            walk.started = true;
        }
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("montana-verify"),
                timestamp_writes: None,
            });
            pass.set_pipeline(self.ctx.pipeline(walk.suite));
            pass.set_bind_group(0, &slot.bind_group, &[]);
            pass.dispatch_workgroups((walk.lanes as u32).div_ceil(WORKGROUP_SIZE), 1, 1);
        }
        let submission = self.ctx.queue.submit([enc.finish()]);
        self.in_flight.push_back(InFlight {
            submission,
            lanes: walk.lanes,
            steps,
            submitted: Instant::now(),
        });
        walk.done += u64::from(steps);
        while self.in_flight.len() > MAX_IN_FLIGHT {
            self.complete_oldest()?;
        }
        Ok(())
    }

    /// Waits for every dispatch in flight, timing each.
    fn drain(&mut self) -> Result<(), String> {
        while !self.in_flight.is_empty() {
            self.complete_oldest()?;
        }
        Ok(())
    }

    /// Waits for the oldest dispatch and feeds its time to the tuner.
    fn complete_oldest(&mut self) -> Result<(), String> {
        let Some(d) = self.in_flight.pop_front() else {
            return Ok(());
        };
        self.wait(d.submission)?;
        let now = Instant::now();
        // It started when it was submitted or when the one before finished.
        let began = self.last_done.map_or(d.submitted, |t| t.max(d.submitted));
        self.tuner.record(d.lanes, d.steps, now - began);
        if trace() {
            eprintln!(
                "gpu dispatch: {} lanes x {} steps in {:.2} ms",
                d.lanes,
                d.steps,
                (now - began).as_secs_f64() * 1e3
            );
        }
        self.last_done = Some(now);
        Ok(())
    }

    /// Copies a chunk's flags to its readback buffer and asks for a mapping.
    fn request_flags(
        &mut self,
        slot: usize,
        base: usize,
        len: usize,
    ) -> Result<PendingFlags, String> {
        let s = self.slot(slot);
        let mut enc = self.encoder();
        enc.copy_buffer_to_buffer(&s.flags, 0, &s.readback, 0, (len * 4) as u64);
        let submission = self.ctx.queue.submit([enc.finish()]);
        let mapped = map_read(s.readback.slice(..(len * 4) as u64));
        Ok(PendingFlags {
            slot,
            base,
            len,
            submission,
            mapped,
        })
    }

    /// Reads a chunk's flags: the batch index of its first false claim.
    fn finish_flags(&mut self, p: PendingFlags) -> Result<Option<usize>, String> {
        self.wait(p.submission)?;
        wait_mapped(&self.ctx.device, &p.mapped, POLL_TIMEOUT)?;
        let readback = &self.slot(p.slot).readback;
        let result = {
            let view = readback
                .get_mapped_range(..(p.len * 4) as u64)
                .map_err(|e| format!("reading back flags: {e}"))?;
            first_false(&view)
        };
        readback.unmap();
        match result {
            Ok(None) => Ok(None),
            Ok(Some(i)) => Ok(Some(p.base + i)),
            Err((i, FLAG_CUT)) => Err(format!(
                "the GPU driver ended the step loop of segment {} early",
                p.base + i
            )),
            Err((i, _)) => Err(format!("GPU left segment {} unfinished", p.base + i)),
        }
    }

    fn wait(&mut self, submission: wgpu::SubmissionIndex) -> Result<(), String> {
        self.ctx
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: Some(POLL_TIMEOUT),
            })
            .map_err(|e| format!("waiting for the GPU: {}", one_line(&e.to_string())))?;
        self.ctx.check()
    }

    fn encoder(&self) -> wgpu::CommandEncoder {
        self.ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("montana-verify"),
            })
    }

    fn params(&self) -> &wgpu::Buffer {
        self.bufs.params()
    }

    fn slot(&self, i: usize) -> &Slot {
        self.bufs.slot(i)
    }

    fn ensure_slot(&mut self, i: usize, lanes: usize) {
        self.bufs.ensure_slot(self.ctx, i, lanes, self.max_lanes);
    }
}

/// Environment variable: `1` prints every dispatch's size and time on
/// stderr (to check the ~100 ms bound on a new device).
pub const ENV_TRACE: &str = "MONTANA_GPU_TRACE";

fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var(ENV_TRACE).is_ok_and(|v| v.trim() == "1"))
}

/// A chunk being walked.
struct Walk {
    slot: usize,
    suite: HashSuite,
    lanes: usize,
    /// Steps of its longest segment.
    total: u64,
    /// Steps every dispatch so far has allowed.
    done: u64,
    started: bool,
}

/// The index of the first mismatch flag; `Err((i, flag))` if a segment
/// before any mismatch has no verdict at all (a loop the driver cut short,
/// a kernel or host bug: never a verdict).
fn first_false(flags: &[u8]) -> Result<Option<usize>, (usize, u32)> {
    for (i, b) in flags.chunks_exact(4).enumerate() {
        match u32::from_le_bytes(b.try_into().expect("4 bytes")) {
            FLAG_MATCH => {}
            FLAG_MISMATCH => return Ok(Some(i)),
            other => return Err((i, other)),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_mismatch_wins_and_missing_verdicts_are_errors() {
        let enc = |v: &[u32]| v.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>();
        assert_eq!(first_false(&enc(&[1, 1, 1])), Ok(None));
        assert_eq!(first_false(&enc(&[1, 2, 2])), Ok(Some(1)));
        assert_eq!(first_false(&enc(&[1, 0, 2])), Err((1, 0)));
        assert_eq!(first_false(&enc(&[1, 3, 2])), Err((1, FLAG_CUT)));
        assert_eq!(first_false(&enc(&[2, 0])), Ok(Some(0)));
    }
}
