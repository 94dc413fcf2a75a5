//! Charts written next to JSON results, as SVG through `plotters`.
//!
//! SVG only, on purpose: it opens in every browser, IDE and code host, scales
//! without blur, keeps its text as text (searchable, copyable), and needs no font
//! file: text is laid out by the viewer, so nothing is embedded in the binary and no
//! system font is required. A PNG would need a rasteriser plus an embedded font
//! (plotters' `ab_glyph` backend) for no gain a reader of these charts needs.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One named series of values, drawn in `color` (`#rrggbb`).
pub struct Series<'a, T> {
    pub name: &'a str,
    pub color: &'a str,
    pub values: T,
}

const FONT: (&str, u32) = ("sans-serif", 13);
/// Width of a character at [`FONT`]'s size, for sizing margins (a generous mean).
const CHAR_W: u32 = 8;

fn rgb(color: &str) -> RGBColor {
    let hex = color.trim_start_matches('#');
    let c = |i: usize| {
        hex.get(i..i + 2)
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .unwrap_or(0)
    };
    if hex.len() == 6 {
        RGBColor(c(0), c(2), c(4))
    } else {
        BLACK
    }
}

/// Draws with `draw` on a `w x h` SVG and returns the document. Drawing errors are
/// impossible on an in-memory SVG except through a bug, so they are reported as
/// an SVG comment rather than failing the run that wanted the chart.
fn svg(w: u32, h: u32, draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> DrawResult) -> String {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        let result = root.fill(&WHITE).map_err(|e| e.to_string());
        let result = result.and_then(|()| draw(&root).map_err(|e| e.to_string()));
        let result = result.and_then(|()| root.present().map_err(|e| e.to_string()));
        if let Err(e) = result {
            drop(root);
            return format!("<!-- chart not drawn: {e} -->\n");
        }
    }
    out
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// A chart of f64 coordinates on an SVG.
type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The series' names in a framed box at `at`.
fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, at: SeriesLabelPosition) -> DrawResult {
    chart
        .configure_series_labels()
        .position(at)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(FONT)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn finite_max(values: impl Iterator<Item = f64>) -> f64 {
    values.filter(|v| v.is_finite()).fold(0.0, f64::max)
}

/// Grouped horizontal bars: one group per label (top to bottom), one bar per series
/// with its value printed at its end. Long labels widen the left margin instead of
/// running off the canvas.
pub fn bars_svg(labels: &[String], series: &[Series<Vec<f64>>]) -> String {
    let n = labels.len().max(1);
    let k = series.len().max(1);
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32;
    let left = 20 + CHAR_W * longest;
    let h = 80 + (n * (k * 16 + 14)) as u32;
    let w = left + 520;
    let xmax = finite_max(series.iter().flat_map(|s| s.values.iter().copied())).max(1e-9) * 1.15;
    svg(w, h, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .margin_left(left)
            .x_label_area_size(30)
            .build_cartesian_2d(0f64..xmax, 0f64..n as f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_labels(6)
            .label_style(FONT)
            .draw()?;
        let band = 0.8 / k as f64;
        for (j, s) in series.iter().enumerate() {
            let color = rgb(s.color);
            let bars = s
                .values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, &v)| {
                    // Group i from the top: y runs upwards, so it sits at n - 1 - i.
                    let y0 = (n - 1 - i) as f64 + 0.9 - (j + 1) as f64 * band;
                    Rectangle::new([(0.0, y0), (v, y0 + band * 0.9)], color.filled())
                });
            chart
                .draw_series(bars)?
                .label(s.name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
            let values = s
                .values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(i, &v)| {
                    let y = (n - 1 - i) as f64 + 0.9 - (j as f64 + 0.55) * band;
                    Text::new(
                        format!("{v:.3}"),
                        (v, y),
                        TextStyle::from(("sans-serif", 11).into_font())
                            .pos(Pos::new(HPos::Left, VPos::Center)),
                    )
                });
            chart.draw_series(values)?;
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        let style = TextStyle::from(FONT.into_font()).pos(Pos::new(HPos::Right, VPos::Center));
        for (i, label) in labels.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(0.0, (n - 1 - i) as f64 + 0.5));
            root.draw(&Text::new(label.as_str(), (x - 8, y), style.clone()))?;
        }
        Ok(())
    })
}

/// Curves over `x_label` (optimizer steps, say); a series with one point is drawn
/// as a dot. Non-finite points are left out.
pub fn lines_svg(x_label: &str, series: &[Series<Vec<(f64, f64)>>]) -> String {
    let pts = || {
        series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts() {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let (x1, y0, y1) = (x1.max(x0 + 1.0), y0 - pad, y1 + pad);
    svg(720, 360, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .label_style(FONT)
            .draw()?;
        for s in series {
            let color = rgb(s.color);
            let v: Vec<(f64, f64)> = s
                .values
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            if v.is_empty() {
                continue;
            }
            let drawn = if v.len() == 1 {
                chart.draw_series(v.iter().map(|&p| Circle::new(p, 4, color.filled())))?
            } else {
                chart.draw_series(LineSeries::new(v, color.stroke_width(2)))?
            };
            drawn.label(s.name).legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2))
            });
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    })
}

/// The fraction of each series' values in each of `bins` equal bins over
/// `[lo, hi]` (values outside are clamped into the end bins; non-finite ones left
/// out).
pub fn bin_fractions(lo: f64, hi: f64, bins: usize, values: &[f64]) -> Vec<f64> {
    let bins = bins.max(1);
    let mut counts = vec![0usize; bins];
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let width = (hi - lo) / bins as f64;
    for v in &finite {
        let b = ((v - lo) / width).floor();
        counts[(b.max(0.0) as usize).min(bins - 1)] += 1;
    }
    let n = finite.len().max(1) as f64;
    counts.into_iter().map(|c| c as f64 / n).collect()
}

/// Overlaid histograms (fractions of each series per bin), half transparent.
pub fn histogram_svg(
    lo: f64,
    hi: f64,
    bins: usize,
    x_label: &str,
    series: &[Series<Vec<f64>>],
) -> String {
    let bins = bins.max(1);
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo, lo + 1.0) };
    let fractions: Vec<Vec<f64>> = series
        .iter()
        .map(|s| bin_fractions(lo, hi, bins, &s.values))
        .collect();
    let top = finite_max(fractions.iter().flatten().copied()).max(1e-9) * 1.1;
    let width = (hi - lo) / bins as f64;
    svg(720, 360, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(lo..hi, 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc("fraction")
            .label_style(FONT)
            .draw()?;
        for (s, f) in series.iter().zip(&fractions) {
            let color = rgb(s.color);
            chart
                .draw_series(
                    f.iter()
                        .enumerate()
                        .filter(|(_, &v)| v > 0.0)
                        .map(|(b, &v)| {
                            let x = lo + b as f64 * width;
                            Rectangle::new([(x, 0.0), (x + width, v)], color.mix(0.5).filled())
                        }),
                )?
                .label(s.name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.mix(0.5).filled())
                });
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(values: Vec<f64>) -> Vec<Series<'static, Vec<f64>>> {
        vec![Series {
            name: "R@1",
            color: "#ff0000",
            values,
        }]
    }

    #[test]
    fn bars_draw_every_label_escaped_and_every_value() {
        let svg = bars_svg(&["a".into(), "b<c".into()], &one(vec![0.5, 1.0]));
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        assert!(svg.contains("b&lt;c"), "labels are escaped");
        assert!(
            svg.contains("\n0.500\n") && svg.contains("\n1.000\n"),
            "{svg}"
        );
        assert!(svg.contains("R@1"), "legend");
    }

    /// A long label (the bench's "minilm + yes-no re-rank@10" was once cut off)
    /// widens the canvas by its length instead of running off it.
    #[test]
    fn long_labels_widen_the_canvas() {
        let width = |label: &str| {
            let svg = bars_svg(&[label.to_string()], &one(vec![1.0]));
            let w = svg.split("width=\"").nth(1).unwrap();
            w[..w.find('"').unwrap()].parse::<u32>().unwrap()
        };
        assert_eq!(
            width("a long label of 30 characters!") - width("a"),
            29 * CHAR_W
        );
    }

    #[test]
    fn lines_survive_empty_and_single_points() {
        let s = |values| {
            lines_svg(
                "step",
                &[Series {
                    name: "loss",
                    color: "#0000ff",
                    values,
                }],
            )
        };
        // The series' own marks are the elements in its colour (axes are black).
        let marks = |svg: String| svg.lines().filter(|l| l.contains("#0000FF")).count();
        assert!(s(vec![(3.0, 0.4)]).contains("<circle"));
        let none = s(vec![(f64::NAN, 1.0)]);
        assert!(none.starts_with("<svg") && marks(none) == 0);
        let two = s(vec![(1.0, 2.0), (2.0, 1.0)]);
        assert!(two
            .lines()
            .any(|l| l.contains("<polyline") && l.contains("#0000FF")));
    }

    /// 3 of 4 values in the first of two bins, one clamped into the last; NaN left out.
    #[test]
    fn histogram_bins_are_fractions() {
        assert_eq!(
            bin_fractions(0.0, 2.0, 2, &[0.1, 0.2, 0.3, 9.0, f64::NAN]),
            vec![0.75, 0.25]
        );
        assert_eq!(bin_fractions(0.0, 2.0, 2, &[-5.0]), vec![1.0, 0.0]);
        let svg = histogram_svg(0.0, 2.0, 2, "u", &one(vec![0.1, 0.2, 0.3, 9.0]));
        assert!(svg.contains("<rect"), "{svg}");
    }
}
