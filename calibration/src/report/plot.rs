//! The SVG plots, drawn with `plotters` (SVG backend only: text is written as
//! SVG text, so no system fonts are needed at build or run time).

use montana_backends::bench::BenchReport;
use montana_vdf::HashSuite;
use plotters::prelude::*;

use super::sweep::BatchPoint;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 540;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// `12.3M` style tick labels.
fn si(x: f64) -> String {
    match x.abs() {
        a if a >= 1e9 => format!("{:.1}G", x / 1e9),
        a if a >= 1e6 => format!("{:.1}M", x / 1e6),
        a if a >= 1e3 => format!("{:.1}k", x / 1e3),
        _ => format!("{x:.0}"),
    }
}

/// The y axis of the bar chart: exactly one segment per row. (`0..n`
/// segmented has n + 1 segments: the last one was an empty top row.)
fn row_axis(rows: usize) -> plotters::coord::types::RangedCoordusize {
    (0..rows.max(1) - 1).into()
}

/// Bars of hashes per second for one suite: every bench row.
pub fn rates(report: &BenchReport, suite: HashSuite) -> Result<String, String> {
    let rows: Vec<(String, f64)> = report
        .results
        .iter()
        .filter(|r| r.hash == suite)
        .map(|r| {
            (
                format!("{} {} x{}", r.backend, r.op.name(), r.threads),
                r.hashes_per_sec,
            )
        })
        .collect();
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1.0) * 1.1;
    let height = (120 + 28 * rows.len() as u32).max(300);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{} hashes/s per backend ({})",
                    suite.name(),
                    report.host.cpu
                ),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(170)
            .build_cartesian_2d(0.0..max, row_axis(rows.len()).into_segmented())
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(rows.len().max(1))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => rows.get(*i).map(|r| r.0.clone()).unwrap_or_default(),
                _ => String::new(),
            })
            .x_desc("hashes per second")
            .x_label_formatter(&|x| si(*x))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(
                Histogram::horizontal(&chart)
                    .style(BLUE.mix(0.7).filled())
                    .margin(4)
                    .data(rows.iter().enumerate().map(|(i, r)| (i, r.1))),
            )
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Lines of verification throughput against batch size (log scale), one
/// per backend.
pub fn verify_vs_batch(
    points: &[BatchPoint],
    suite: HashSuite,
    cpu: &str,
) -> Result<String, String> {
    let pts: Vec<&BatchPoint> = points.iter().filter(|p| p.hash == suite).collect();
    let mut names: Vec<&str> = Vec::new();
    for p in &pts {
        if !names.contains(&p.backend.as_str()) {
            names.push(&p.backend);
        }
    }
    let max_batch = pts.iter().map(|p| p.segments).max().unwrap_or(1).max(2) as f64;
    let max = pts
        .iter()
        .map(|p| p.hashes_per_sec)
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let (threads, len) = pts.first().map_or((1, 0), |p| (p.threads, p.segment_len));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{} verify throughput vs batch size ({threads} thread(s), {len}-step segments, {cpu})",
                    suite.name()
                ),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d((1.0..max_batch).log_scale(), 0.0..max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("segments per batch")
            .y_desc("hashes per second")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| si(*y))
            .draw()
            .map_err(err)?;
        for (i, name) in names.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let line: Vec<(f64, f64)> = pts
                .iter()
                .filter(|p| p.backend == *name)
                .map(|p| (p.segments as f64, p.hashes_per_sec))
                .collect();
            chart
                .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(line.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod row_axis_tests {
    use plotters::coord::ranged1d::{DiscreteRanged, IntoSegmentedCoord};

    #[test]
    fn one_segment_per_bar_and_no_empty_row() {
        // A segmented axis counts its bands plus the closing `Last` value.
        for n in [1usize, 2, 7] {
            assert_eq!(
                super::row_axis(n).into_segmented().size(),
                n + 1,
                "{n} rows"
            );
            // What the chart used before: one band too many (the empty row).
            let old: plotters::coord::types::RangedCoordusize = (0..n).into();
            assert_eq!(old.into_segmented().size(), n + 2);
        }
    }
}
