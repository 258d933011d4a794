//! Fake backends and small settings shared by the integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use montana_backends::ScalarBackend;
use montana_calibration::MeasureConfig;
use montana_vdf::{
    AdapterInfo, Availability, Backend, BackendError, BackendKind, ChainParams, EvalControl,
    Hash32, HashSuite, Operation, Segment, VerifyOptions, VerifyOutcome,
};

/// Measurements of a few milliseconds: tests check logic, not speed.
pub fn tiny() -> MeasureConfig {
    MeasureConfig::uniform(Duration::from_millis(5), 1)
}

/// How a fake behaves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers like the oracle (it delegates to it).
    Correct,
    /// Claims every batch valid at once: absurdly fast, for selection tests.
    InstantValid,
    /// Every call fails as a lost device would.
    DeviceLost,
    /// Like the oracle, but calls any segment of at least this many steps
    /// invalid (the GPU on lavapipe before issue 15's fix).
    RejectFrom(u64),
    /// Calls every non-empty batch invalid at segment 0.
    RejectFirst,
}

/// A configurable backend: name, mode, optional adapter type, and a call
/// counter.
pub struct Fake {
    pub name: &'static str,
    pub kind: BackendKind,
    pub mode: Mode,
    pub device_type: Option<&'static str>,
    pub ops: &'static [Operation],
    pub calls: AtomicUsize,
}

impl Fake {
    pub fn new(name: &'static str, mode: Mode) -> Self {
        Fake {
            name,
            kind: BackendKind::Simd,
            mode,
            device_type: None,
            ops: &Operation::ALL,
            calls: AtomicUsize::new(0),
        }
    }

    pub fn gpu(name: &'static str, mode: Mode, device_type: &'static str) -> Self {
        Fake {
            kind: BackendKind::Gpu,
            device_type: Some(device_type),
            ..Fake::new(name, mode)
        }
    }

    pub fn verify_only(mut self) -> Self {
        self.ops = &[Operation::Verify];
        self
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn lost(&self) -> BackendError {
        BackendError::Device {
            backend: self.name.into(),
            message: "device lost".into(),
        }
    }
}

impl Backend for Fake {
    fn name(&self) -> &'static str {
        self.name
    }
    fn kind(&self) -> BackendKind {
        self.kind
    }
    fn availability(&self) -> Availability {
        Availability::Available
    }
    fn lanes(&self) -> usize {
        4
    }
    fn supports(&self, _: HashSuite, op: Operation) -> bool {
        self.ops.contains(&op)
    }
    fn auto_rank(&self, _: HashSuite, _: Operation) -> Option<u32> {
        Some(10)
    }
    fn adapter(&self) -> Option<AdapterInfo> {
        self.device_type.map(|t| AdapterInfo {
            name: format!("{} adapter", self.name),
            api: "Vulkan".into(),
            driver: "test 1.0".into(),
            device_type: t.into(),
        })
    }
    fn evaluate(
        &self,
        suite: HashSuite,
        start: &Hash32,
        params: ChainParams,
        ctl: &EvalControl<'_>,
    ) -> Result<Vec<Hash32>, BackendError> {
        self.check_supported(suite, Operation::Eval)?;
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.mode {
            Mode::DeviceLost => Err(self.lost()),
            _ => ScalarBackend.evaluate(suite, start, params, ctl),
        }
    }
    fn verify(
        &self,
        suite: HashSuite,
        segments: &[Segment],
        opts: &VerifyOptions,
    ) -> Result<VerifyOutcome, BackendError> {
        self.check_supported(suite, Operation::Verify)?;
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.mode {
            Mode::DeviceLost => Err(self.lost()),
            Mode::InstantValid => Ok(VerifyOutcome::Valid),
            Mode::Correct => ScalarBackend.verify(suite, segments, opts),
            Mode::RejectFrom(n) => match segments.iter().position(|s| s.steps >= n) {
                Some(i) => match ScalarBackend.verify(suite, &segments[..i], opts)? {
                    VerifyOutcome::Valid => Ok(VerifyOutcome::Invalid {
                        first_bad_segment: i,
                    }),
                    early => Ok(early),
                },
                None => ScalarBackend.verify(suite, segments, opts),
            },
            Mode::RejectFirst if segments.is_empty() => Ok(VerifyOutcome::Valid),
            Mode::RejectFirst => Ok(VerifyOutcome::Invalid {
                first_bad_segment: 0,
            }),
        }
    }
}

/// Collects what `tracing` logs, as text.
#[derive(Clone, Default)]
pub struct LogCapture(pub Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Runs `f` with everything logged on this thread captured.
    ///
    /// `tracing` caches each callsite's interest for the whole process,
    /// computed by the first thread to reach it; while exactly one
    /// dispatcher is registered it asks that thread's default, so a test
    /// thread with no subscriber hitting a callsite first cached "never"
    /// and a capture running beside it came back empty (a CI run:
    /// `select_calibrates_when_missing_then_reuses_the_file`). An anchor
    /// dispatcher interested in everything, alive for the whole process,
    /// makes every registration ask all dispatchers; the events are then
    /// filtered per thread by its own default. The cache is rebuilt once
    /// the capture is the default, for a callsite cached before the anchor.
    pub fn capture<T>(&self, f: impl FnOnce() -> T) -> T {
        static ANCHOR: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        ANCHOR.get_or_init(|| {
            tracing::Dispatch::new(
                tracing_subscriber::fmt()
                    .with_writer(std::io::sink)
                    .with_max_level(tracing::Level::TRACE)
                    .finish(),
            )
        });
        let sub = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::callsite::rebuild_interest_cache();
            f()
        })
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
