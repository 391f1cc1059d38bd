//! Accuracy against compute, as a PNG line chart: one line per strategy,
//! one point per budget, mean tokens per question on a logarithmic axis.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};
use plotters::prelude::*;

/// One strategy's points: (mean tokens per question, accuracy in [0, 1]).
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Where a TrueType font for the labels is looked for, in order, after
/// `EDGELOOP_PLOT_FONT`.
const FONT_PATHS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Registers a system font as plotters' "sans-serif" (once per process).
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let candidates: Vec<PathBuf> = std::env::var_os("EDGELOOP_PLOT_FONT")
                .map(PathBuf::from)
                .into_iter()
                .chain(FONT_PATHS.iter().map(PathBuf::from))
                .collect();
            let path = candidates.iter().find(|p| p.is_file()).ok_or_else(|| {
                format!(
                    "no TrueType font for the plot's labels (looked in EDGELOOP_PLOT_FONT and {}); \
                     install one (Debian: fonts-dejavu-core) or set EDGELOOP_PLOT_FONT",
                    FONT_PATHS.join(", ")
                )
            })?;
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| format!("{}: not a usable TrueType font", path.display()))
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Draws `series` to a PNG at `path`.
pub fn accuracy_vs_tokens(path: &Path, title: &str, series: &[Series]) -> Result<()> {
    if series.iter().all(|s| s.points.is_empty()) {
        bail!("nothing to plot");
    }
    register_font()?;
    let all = series.iter().flat_map(|s| s.points.iter());
    let (lo, hi) = all.fold((f64::INFINITY, 0f64), |(lo, hi), &(t, _)| {
        (lo.min(t.max(1.0)), hi.max(t.max(1.0)))
    });
    let (x_lo, x_hi) = (lo / 1.5, hi * 1.5);
    let root = BitMapBackend::new(path, (960, 640)).into_drawing_area();
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("mean tokens per question (log scale)")
            .y_desc("accuracy")
            .y_label_formatter(&|y| format!("{:.0}%", 100.0 * y))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style(("sans-serif", 15))
            .draw()?;
        for (i, s) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let mut points = s.points.clone();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 15))
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw()
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("drawing {}", path.display()))
}
