//! The calibration file and the selection API: round trips, every reason to
//! re-calibrate, pinning, and software adapters never chosen.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{tiny, Fake, LogCapture, Mode};
use montana_backends::{BackendChoice, PinScope, Registry, ScalarBackend};
use montana_calibration::{
    calibrate, select, CalibrationFile, CalibrationRequest, FileError, NetworkParams, NoProgress,
    Recalibration, Role, SelectOptions,
};
use montana_vdf::HashSuite;

/// Segments of 10,000 steps: long enough that the instant fakes below beat
/// the scalar oracle by orders of magnitude, whatever the machine's load.
fn params() -> NetworkParams {
    NetworkParams::new(HashSuite::Sha256, 200_000, 20, 60.0).unwrap()
}

fn scalar_only() -> Registry {
    Registry::new(vec![Arc::new(ScalarBackend)])
}

fn options(path: &Path) -> SelectOptions {
    SelectOptions {
        threads: 2,
        config: tiny(),
        ..SelectOptions::new(path, params())
    }
}

fn request(registry: &Registry) -> CalibrationRequest<'_> {
    CalibrationRequest {
        registry,
        params: params(),
        threads: 2,
        config: tiny(),
        quick: true,
        program_version: montana_calibration::PROGRAM_VERSION.into(),
    }
}

#[test]
fn file_round_trips_and_tampering_is_caught() {
    let reg = scalar_only();
    let file = calibrate(&request(&reg), &NoProgress).unwrap();
    assert_eq!(
        file.verdict.role,
        Role::ProposerCapable,
        "{:?}",
        file.verdict
    );
    assert_eq!(file.verdict.eval_backend.as_deref(), Some("scalar"));
    let text = file.to_toml();
    assert_eq!(CalibrationFile::from_toml(&text).unwrap(), file);
    assert!(
        text.contains("[host]") && text.contains("[verdict]") && text.contains("[[measurements]]")
    );
    assert!(text.contains("created = \"20"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/calibration.toml");
    file.save(&path).unwrap();
    assert_eq!(CalibrationFile::load(&path).unwrap(), file);

    // A verdict that does not follow from the recorded rates.
    let tampered = text.replace("role = \"proposer-capable\"", "role = \"follower\"");
    assert_ne!(tampered, text);
    assert!(CalibrationFile::from_toml(&tampered)
        .unwrap_err()
        .contains("verdict"));
    // Not TOML, wrong format, impossible parameters.
    assert!(CalibrationFile::from_toml("not = [toml").is_err());
    assert!(
        CalibrationFile::from_toml(&text.replace("format = 1", "format = 7"))
            .unwrap_err()
            .contains("format 7")
    );
    assert!(
        CalibrationFile::from_toml(&text.replace("checkpoints = 20", "checkpoints = 3")).is_err()
    );
    assert!(matches!(
        CalibrationFile::load(&dir.path().join("absent.toml")),
        Err(FileError::Missing(_))
    ));
}

#[test]
fn a_verdict_without_an_eval_backend_round_trips() {
    let reg = Registry::new(vec![Arc::new(
        Fake::new("verifier", Mode::Correct).verify_only(),
    )]);
    let file = calibrate(&request(&reg), &NoProgress).unwrap();
    assert_eq!(file.verdict.eval_backend, None);
    assert_eq!(file.verdict.role, Role::Follower);
    assert_eq!(CalibrationFile::from_toml(&file.to_toml()).unwrap(), file);
}

#[test]
fn select_calibrates_when_missing_then_reuses_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calibration.toml");
    let reg = scalar_only();
    let logs = LogCapture::default();
    let first = logs.capture(|| select(&reg, &options(&path)).unwrap());
    assert_eq!(first.recalibrated, Some(Recalibration::Missing));
    assert!(
        logs.text().contains("no calibration file"),
        "{}",
        logs.text()
    );
    assert_eq!(first.save_error, None);
    assert!(path.exists());
    assert_eq!(first.eval.name(), "scalar");
    assert_eq!(
        first.verify.hashes_per_sec,
        first.calibration.verdict.verify_hashes_per_sec
    );

    let second = select(&reg, &options(&path)).unwrap();
    assert_eq!(second.recalibrated, None);
    assert_eq!(second.calibration, first.calibration);
}

/// Writes a fresh calibration to `path`, changes it with `edit`, and returns
/// why `select` re-calibrated.
fn reason_after(edit: impl FnOnce(&Path, &mut SelectOptions)) -> Recalibration {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calibration.toml");
    let reg = scalar_only();
    select(&reg, &options(&path)).unwrap();
    let mut opts = options(&path);
    edit(&path, &mut opts);
    let s = select(&reg, &opts).unwrap();
    // The re-calibration was saved and now applies.
    assert_eq!(select(&reg, &opts).unwrap().recalibrated, None);
    s.recalibrated.expect("should have re-calibrated")
}

#[test]
fn every_reason_to_recalibrate_is_named() {
    let r = reason_after(|p, _| std::fs::write(p, "garbage = = =").unwrap());
    assert!(matches!(r, Recalibration::Unreadable(_)), "{r}");
    assert!(r
        .to_string()
        .starts_with("the calibration file is unreadable"));

    let r = reason_after(|p, _| {
        let t = std::fs::read_to_string(p).unwrap();
        std::fs::write(p, t.replace("can_follow = true", "can_follow = false")).unwrap();
    });
    assert!(
        matches!(r, Recalibration::Unreadable(ref m) if m.contains("verdict")),
        "{r}"
    );

    let r = reason_after(|_, o| o.program_version = "montana 99.0.0".into());
    assert!(
        matches!(r, Recalibration::HostChanged(ref m) if m.contains("program version")),
        "{r}"
    );

    let r = reason_after(|p, _| {
        let t = std::fs::read_to_string(p).unwrap();
        let cpu = t.lines().find(|l| l.starts_with("cpu_model")).unwrap();
        std::fs::write(p, t.replace(cpu, "cpu_model = \"Some Other CPU\"")).unwrap();
    });
    assert!(
        matches!(r, Recalibration::HostChanged(ref m) if m.starts_with("CPU changed")),
        "{r}"
    );

    let r = reason_after(|_, o| o.params.window_secs = 30.0);
    assert_eq!(
        r,
        Recalibration::ParamsChanged("window_secs 60 -> 30".into())
    );

    let r = reason_after(|_, o| o.params.hash = HashSuite::Blake3);
    assert!(
        matches!(r, Recalibration::ParamsChanged(ref m) if m.contains("blake3")),
        "{r}"
    );

    let r = reason_after(|_, o| o.threads = 1);
    assert_eq!(
        r,
        Recalibration::ThreadsChanged {
            calibrated: 2,
            now: 1
        }
    );
}

#[test]
fn software_adapters_are_measured_but_never_chosen() {
    let soft = Arc::new(Fake::gpu("gpu", Mode::InstantValid, "Cpu").verify_only());
    let reg = Registry::new(vec![soft, Arc::new(ScalarBackend)]);
    let file = calibrate(&request(&reg), &NoProgress).unwrap();
    let m = file.measurement("gpu").unwrap();
    assert!(!m.eligible);
    assert!(m.note.as_deref().unwrap().contains("software"));
    let gpu_rate = m.verify.as_ref().unwrap().hashes_per_sec;
    let scalar_rate = file
        .measurement("scalar")
        .unwrap()
        .verify
        .as_ref()
        .unwrap()
        .hashes_per_sec;
    assert!(gpu_rate > scalar_rate, "the fake should look faster");
    assert_eq!(file.verdict.verify_backend.as_deref(), Some("scalar"));
    assert_eq!(file.host.gpus.len(), 1);
    assert_eq!(file.host.gpus[0].device_type, "Cpu");
}

fn pinned(reg: &Registry, name: &str, scope: PinScope) -> Registry {
    reg.clone()
        .with_choice(BackendChoice::pinned(name, scope))
        .unwrap()
}

#[test]
fn a_real_fast_backend_wins_until_it_is_gone_and_pins_override() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calibration.toml");
    let fast = || Arc::new(Fake::new("fast", Mode::InstantValid).verify_only());
    let reg = Registry::new(vec![fast(), Arc::new(ScalarBackend)]);
    let s = select(&reg, &options(&path)).unwrap();
    assert_eq!(s.verify.name(), "fast");
    assert_eq!(s.eval.name(), "scalar");
    // The calibration's verdict names what resolve runs.
    assert_eq!(
        s.calibration.verdict.verify_backend.as_deref(),
        Some("fast")
    );

    // Pinned by name: scalar for both operations, at its measured rate.
    let s = select(
        &pinned(&reg, "scalar", PinScope::SomeOperation),
        &options(&path),
    )
    .unwrap();
    assert_eq!(s.recalibrated, None);
    assert_eq!(s.verify.name(), "scalar");
    let measured = s.calibration.measurement("scalar").unwrap();
    assert_eq!(
        s.verify.hashes_per_sec,
        Some(measured.verify.as_ref().unwrap().hashes_per_sec)
    );

    // A verify-only pin pins verification; evaluation follows the file.
    let s = select(
        &pinned(&reg, "fast", PinScope::SomeOperation),
        &options(&path),
    )
    .unwrap();
    assert_eq!((s.eval.name(), s.verify.name()), ("scalar", "fast"));

    // Disabled since calibration: the file's fastest is skipped and the
    // next measured one leads, without re-calibrating.
    let without = reg
        .clone()
        .with_choice(BackendChoice::parse(
            montana_backends::choice::ChoiceInputs {
                env_disable: Some("fast"),
                ..Default::default()
            },
        ))
        .unwrap();
    let s = select(&without, &options(&path)).unwrap();
    assert_eq!(s.recalibrated, None);
    assert_eq!(s.verify.name(), "scalar");

    // A pin that is not available here is an error, not a silent choice.
    let disabled_and_pinned = reg
        .clone()
        .with_choice(BackendChoice::parse(
            montana_backends::choice::ChoiceInputs {
                flag: Some("fast"),
                flag_scope: Some(PinScope::SomeOperation),
                env_disable: Some("fast"),
                ..Default::default()
            },
        ))
        .unwrap();
    let e = select(&disabled_and_pinned, &options(&path)).unwrap_err();
    assert!(e.to_string().contains("not available"), "{e}");
}

#[test]
fn selection_hands_out_fallback_wrappers_and_a_monitor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calibration.toml");
    let reg = scalar_only();
    let s = select(&reg, &options(&path)).unwrap();
    assert_eq!(s.verify.backend.chain_names(), ["scalar"]);
    assert_eq!(s.eval.backend.chain_names(), ["scalar"]);
    let mut m = s.monitor();
    assert!(!m.record_verify_share(0.01).is_drift());
}
