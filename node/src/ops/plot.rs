//! The report's SVG plots (`plotters`, SVG backend: text is written as SVG
//! text, no fonts needed): one line per node, one colour per node, axes
//! labelled, a legend.

use plotters::prelude::*;

use super::soak::SoakRecord;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 480;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Node names in order of first appearance (label, else address).
fn node_names(records: &[SoakRecord]) -> Vec<(String, String)> {
    let mut names: Vec<(String, String)> = Vec::new();
    for r in records {
        for n in &r.nodes {
            match names.iter_mut().find(|(a, _)| *a == n.addr) {
                Some((_, l)) if l.is_empty() => l.clone_from(&n.label),
                Some(_) => {}
                None => names.push((n.addr.clone(), n.label.clone())),
            }
        }
    }
    names
        .into_iter()
        .map(|(a, l)| {
            let shown = if l.is_empty() { a.clone() } else { l };
            (a, shown)
        })
        .collect()
}

/// One series per node: (minutes since the first record, value) for every
/// poll the node answered.
type Series = Vec<(String, Vec<(f64, f64)>)>;

fn per_node(records: &[SoakRecord], value: impl Fn(&super::soak::NodeRecord) -> f64) -> Series {
    let t0 = records.first().map_or(0.0, |r| r.time);
    node_names(records)
        .into_iter()
        .map(|(addr, name)| {
            let pts = records
                .iter()
                .filter_map(|r| {
                    let n = r.nodes.iter().find(|n| n.addr == addr)?;
                    n.reachable.then(|| ((r.time - t0) / 60.0, value(n)))
                })
                .collect();
            (name, pts)
        })
        .collect()
}

fn lines(title: &str, y_desc: &str, series: &Series) -> Result<String, String> {
    let max_x = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.0))
        .fold(0.0, f64::max)
        .max(1.0 / 60.0);
    let max_y = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_x, 0.0..max_y)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("minutes since the first poll")
            .y_desc(y_desc)
            .x_label_formatter(&|x| match max_x {
                m if m < 2.0 => format!("{x:.2}"),
                m if m < 100.0 => format!("{x:.1}"),
                _ => format!("{x:.0}"),
            })
            .y_label_formatter(&|y| format!("{y:.1}"))
            .draw()
            .map_err(err)?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 2, color.filled())))
                .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Lag (windows) per node over time.
pub fn lag(records: &[SoakRecord]) -> Result<String, String> {
    lines(
        "Lag behind the best known tip, per node",
        "lag (windows)",
        &per_node(records, |n| n.lag as f64),
    )
}

/// Heartbeat errors over the last 5 minutes, per node, over time.
pub fn heartbeat_errors(records: &[SoakRecord]) -> Result<String, String> {
    lines(
        "Heartbeat errors in the last 5 minutes, per node",
        "unanswered pings / 5 min",
        &per_node(records, |n| n.heartbeat_errors_5m as f64),
    )
}

/// Seconds per window between consecutive polls, per node (from the window
/// each node reported; polls where its window did not move are skipped).
pub fn window_time(records: &[SoakRecord]) -> Result<String, String> {
    let t0 = records.first().map_or(0.0, |r| r.time);
    let series: Series = node_names(records)
        .into_iter()
        .map(|(addr, name)| {
            let mut pts = Vec::new();
            let mut prev: Option<(f64, u64)> = None;
            for r in records {
                let Some(n) = r.nodes.iter().find(|n| n.addr == addr && n.reachable) else {
                    continue;
                };
                if let Some((t, w)) = prev {
                    if n.window > w {
                        pts.push(((r.time - t0) / 60.0, (r.time - t) / (n.window - w) as f64));
                    }
                }
                if prev.is_none_or(|(_, w)| n.window != w) {
                    prev = Some((r.time, n.window));
                }
            }
            (name, pts)
        })
        .collect();
    lines(
        "Seconds per window, per node",
        "seconds per window",
        &series,
    )
}
