//! GPU verification throughput and the CPU/GPU crossover, from the command
//! line, with no benchmark harness: the numbers `scripts/gpu-check.sh`
//! records on a GPU server (until `montana bench` carries the same rows).
//!
//! ```text
//! gpu_throughput adapters
//! gpu_throughput verify SUITE SEGMENTS STEPS [RUNS]
//! gpu_throughput crossover SUITE STEPS [MAX_SEGMENTS] [THREADS]
//! ```
//! Each result is one JSON line on stdout. `crossover` doubles the batch
//! from one segment until the GPU beats the best CPU verify backend `auto`
//! would pick on this host (MONTANA_BACKEND / MONTANA_DISABLE_BACKENDS apply).

use std::process::ExitCode;

use montana_backends::gpu::{adapters, bench, GpuBackend};
use montana_backends::Registry;
use montana_vdf::{AdapterInfo, Backend, HashSuite, Operation, VerifyOptions};

fn main() -> ExitCode {
    montana_backends::gpu::adapter::disable_device_select_layer();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu_throughput: {e}");
            ExitCode::from(if e.starts_with("usage") { 2 } else { 1 })
        }
    }
}

const USAGE: &str = "usage: gpu_throughput adapters | verify SUITE SEGMENTS STEPS [RUNS] | crossover SUITE STEPS [MAX_SEGMENTS] [THREADS]";

fn run(args: &[String]) -> Result<(), String> {
    let arg = |i: usize| args.get(i).map(String::as_str);
    let num = |i: usize, default: Option<u64>| -> Result<u64, String> {
        match arg(i) {
            Some(s) => s
                .parse()
                .map_err(|_| format!("usage: '{s}' is not a number")),
            None => default.ok_or_else(|| USAGE.to_string()),
        }
    };
    let suite = || -> Result<HashSuite, String> {
        arg(1)
            .ok_or(USAGE)?
            .parse()
            .map_err(|e| format!("usage: {e}"))
    };
    let gpu = GpuBackend::default();
    match arg(0) {
        Some("adapters") => {
            for a in adapters() {
                println!("{}", adapter_json(&a));
            }
            Ok(())
        }
        Some("verify") => {
            let (suite, segments, steps) = (suite()?, num(2, None)?, num(3, None)?);
            let runs = num(4, Some(3))?;
            let t = bench::verify_throughput(&gpu, suite, segments as usize, steps, runs as usize)
                .map_err(|e| e.to_string())?;
            println!(
                "{{\"op\":\"verify\",\"suite\":\"{}\",\"segments\":{},\"steps\":{},\"runs\":{},\"seconds\":{:.6},\"hashes_per_second\":{:.0},\"adapter\":{}}}",
                t.suite,
                t.segments,
                t.steps,
                t.runs,
                t.seconds,
                t.hashes_per_second,
                t.adapter.as_ref().map_or("null".into(), adapter_json)
            );
            Ok(())
        }
        Some("crossover") => {
            let (suite, steps) = (suite()?, num(2, None)?);
            let max_segments = num(3, Some(1 << 16))? as usize;
            let opts = match arg(4) {
                Some(_) => VerifyOptions::threads(num(4, None)? as usize),
                None => VerifyOptions::default(),
            };
            // The best CPU backend by the static ranking (an example program:
            // no MONTANA_* choice applies).
            let registry = Registry::new(montana_backends::registry::compiled());
            let cpu = registry
                .ranked(suite, Operation::Verify)
                .into_iter()
                .find(|b| b.name() != gpu.name())
                .ok_or("no CPU verify backend available")?;
            let mut segments = 1usize;
            loop {
                let rows =
                    bench::crossover(&gpu, cpu.as_ref(), suite, &[(segments, steps)], &opts, 3)
                        .map_err(|e| e.to_string())?;
                let r = &rows[0];
                println!(
                    "{{\"op\":\"crossover\",\"suite\":\"{suite}\",\"segments\":{},\"steps\":{},\"gpu_seconds\":{:.6},\"cpu_backend\":\"{}\",\"cpu_threads\":{},\"cpu_seconds\":{:.6},\"gpu_wins\":{}}}",
                    r.segments,
                    r.steps,
                    r.gpu_seconds,
                    cpu.name(),
                    opts.threads,
                    r.cpu_seconds,
                    r.gpu_wins()
                );
                if r.gpu_wins() || segments >= max_segments {
                    return Ok(());
                }
                segments *= 2;
            }
        }
        _ => Err(USAGE.into()),
    }
}

fn adapter_json(a: &AdapterInfo) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    format!(
        "{{\"name\":{},\"api\":{},\"driver\":{},\"device_type\":{}}}",
        q(&a.name),
        q(&a.api),
        q(&a.driver),
        q(&a.device_type)
    )
}
