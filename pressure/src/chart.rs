//! The chart next to the JSON: throughput and paced p99 per level, one colour per backend,
//! the bus as a solid line and the raw client as a thin one beside it. SVG only, so the chart
//! needs no font or image library.

use std::path::Path;

use plotters::prelude::*;

use crate::row::{Row, Variant};

/// Why the chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("draw the chart {path}: {message}")]
pub struct ChartError {
    path: String,
    message: String,
}

const BACKENDS: [(&str, RGBColor); 3] = [
    ("memory", RGBColor(0x1f, 0x77, 0xb4)),
    ("kafka", RGBColor(0xd6, 0x27, 0x28)),
    ("nats", RGBColor(0x2c, 0xa0, 0x2c)),
];

/// Draws `rows` into an SVG file at `path`. Levels are in the order they first appear.
pub fn draw(rows: &[Row], path: &Path) -> Result<(), ChartError> {
    let fail = |e: &dyn std::fmt::Display| ChartError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut levels: Vec<&str> = Vec::new();
    for r in rows {
        if !levels.contains(&r.level.as_str()) {
            levels.push(&r.level);
        }
    }
    let root = SVGBackend::new(path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let (left, right) = root.split_horizontally(550);
    panel(&left, rows, &levels, "throughput (msg/s, log)", |r| {
        r.throughput
    })
    .map_err(|e| fail(&e))?;
    panel(
        &right,
        rows,
        &levels,
        "p99 latency at the paced rate (ms, log)",
        |r| r.p99_ms,
    )
    .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    rows: &[Row],
    levels: &[&str],
    title: &str,
    figure: impl Fn(&Row) -> f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let values: Vec<f64> = rows.iter().map(&figure).filter(|v| *v > 0.0).collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = match lo.is_finite() {
        true => (lo / 2.0, hi * 2.0),
        false => (0.1, 1.0),
    };
    let n = levels.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.3f64..(n as f64 - 0.7), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            match (i - x).abs() < 0.01 && i >= 0.0 {
                true => levels
                    .get(i as usize)
                    .map_or(String::new(), |l| l.to_string()),
                false => String::new(),
            }
        })
        .y_label_formatter(&|y| format!("{y:.3}"))
        .draw()?;
    for (backend, color) in BACKENDS {
        for variant in [Variant::Bus, Variant::Raw] {
            let points: Vec<(f64, f64)> = levels
                .iter()
                .enumerate()
                .filter_map(|(i, level)| {
                    rows.iter()
                        .find(|r| r.backend == backend && r.level == *level && r.variant == variant)
                        .map(|r| (i as f64, figure(r)))
                })
                .filter(|(_, v)| *v > 0.0)
                .collect();
            if points.is_empty() {
                continue;
            }
            let style = match variant {
                Variant::Bus => color.stroke_width(3),
                Variant::Raw => color.mix(0.5).stroke_width(1),
            };
            chart
                .draw_series(LineSeries::new(points, style))?
                .label(format!("{backend} {}", variant.name()))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerLeft)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::sample;

    #[test]
    fn draws_an_svg() {
        let mut raw = sample(Variant::Raw);
        let mut bus = sample(Variant::Bus);
        bus.throughput = 400.0;
        let rows = vec![
            raw.clone(),
            bus.clone(),
            {
                raw.level = "medium".into();
                raw
            },
            {
                bus.level = "medium".into();
                bus
            },
        ];
        let dir = std::env::temp_dir().join(format!("pressure-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chart.svg");
        draw(&rows, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("memory bus") && svg.contains("medium"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
