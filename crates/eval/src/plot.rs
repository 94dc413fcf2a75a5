//! Small SVG charts written next to JSON results (hand-written SVG: no font files or
//! system libraries needed, so they render the same on any machine).

/// One named series of values, drawn in `color` (any SVG colour).
pub struct Series<'a, T> {
    pub name: &'a str,
    pub color: &'a str,
    pub values: T,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn header(w: f64, h: f64) -> String {
    format!("<svg xmlns='http://www.w3.org/2000/svg' width='{w:.0}' height='{h:.0}' font-family='sans-serif' font-size='11'>\n<rect width='100%' height='100%' fill='white'/>\n")
}

fn legend<T>(series: &[Series<T>], left: f64) -> String {
    let mut s = String::new();
    let mut x = left + 10.0;
    for se in series {
        s += &format!(
            "<rect x='{x:.0}' y='12' width='12' height='12' fill='{}'/><text x='{:.0}' y='22'>{}</text>\n",
            se.color,
            x + 16.0,
            esc(se.name)
        );
        x += 30.0 + 7.0 * se.name.len() as f64;
    }
    s
}

/// Grouped bars: one group per label, one bar per series (`values[i]` for label i).
/// The y axis starts at 0.
pub fn bars_svg(labels: &[String], series: &[Series<Vec<f64>>]) -> String {
    let n = labels.len().max(1) as f64;
    let top = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| v.is_finite())
        .fold(1e-9f64, f64::max);
    let (w, h, left, bottom, pad) = (110.0 * n + 80.0, 420.0, 50.0, 120.0, 40.0);
    let gw = (w - left - 20.0) / n;
    let bw = gw / (series.len() as f64 + 1.0);
    let plot_h = h - bottom - pad;
    let mut s = header(w, h);
    for tick in 0..=4 {
        let v = top * tick as f64 / 4.0;
        let y = h - bottom - v / top * plot_h;
        s += &format!("<line x1='{left}' x2='{:.0}' y1='{y:.1}' y2='{y:.1}' stroke='#ddd'/><text x='{:.0}' y='{:.1}' text-anchor='end'>{v:.2}</text>\n", w - 20.0, left - 4.0, y + 4.0);
    }
    for (i, label) in labels.iter().enumerate() {
        let x0 = left + i as f64 * gw + bw / 2.0;
        for (j, se) in series.iter().enumerate() {
            let v = se.values.get(i).copied().unwrap_or(0.0);
            let bh = if v.is_finite() {
                v.max(0.0) / top * plot_h
            } else {
                0.0
            };
            s += &format!(
                "<rect x='{:.1}' y='{:.1}' width='{bw:.1}' height='{bh:.1}' fill='{}'/>\n",
                x0 + j as f64 * bw,
                h - bottom - bh,
                se.color
            );
        }
        let cx = x0 + series.len() as f64 * bw / 2.0;
        s += &format!(
            "<text transform='translate({cx:.1},{:.1}) rotate(-30)' text-anchor='end'>{}</text>\n",
            h - bottom + 14.0,
            esc(label)
        );
    }
    s += &legend(series, left);
    s + "</svg>\n"
}

/// Lines of (x, y) points on shared axes, with `x_label` under the x axis.
pub fn lines_svg(x_label: &str, series: &[Series<Vec<(f64, f64)>>]) -> String {
    let pts = || series.iter().flat_map(|s| s.values.iter().copied());
    let finite = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts().filter(finite) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    let (w, h, left, bottom, pad) = (720.0, 360.0, 60.0, 40.0, 40.0);
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - 20.0);
    let py = |y: f64| h - bottom - (y - y0) / (y1 - y0) * (h - bottom - pad);
    let mut s = header(w, h);
    for tick in 0..=4 {
        let v = y0 + (y1 - y0) * tick as f64 / 4.0;
        let y = py(v);
        s += &format!("<line x1='{left}' x2='{:.0}' y1='{y:.1}' y2='{y:.1}' stroke='#ddd'/><text x='{:.0}' y='{:.1}' text-anchor='end'>{v:.3}</text>\n", w - 20.0, left - 4.0, y + 4.0);
        let xv = x0 + (x1 - x0) * tick as f64 / 4.0;
        s += &format!(
            "<text x='{:.1}' y='{:.1}' text-anchor='middle'>{xv:.0}</text>\n",
            px(xv),
            h - bottom + 14.0
        );
    }
    for se in series {
        let path: Vec<String> = se
            .values
            .iter()
            .filter(|p| finite(p))
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        if path.len() == 1 {
            s += &format!(
                "<circle cx='{}' r='3' fill='{}'/>\n",
                path[0].replace(',', "' cy='"),
                se.color
            );
        } else if !path.is_empty() {
            s += &format!(
                "<polyline fill='none' stroke='{}' stroke-width='1.5' points='{}'/>\n",
                se.color,
                path.join(" ")
            );
        }
    }
    s += &format!(
        "<text x='{:.0}' y='{:.0}' text-anchor='middle'>{}</text>\n",
        w / 2.0,
        h - 6.0,
        esc(x_label)
    );
    s += &legend(series, left);
    s + "</svg>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_value() {
        let svg = bars_svg(
            &["a".into(), "b<c".into()],
            &[Series {
                name: "R@1",
                color: "red",
                values: vec![0.5, 1.0],
            }],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("b&lt;c"), "labels are escaped");
        // Plot height is 420 - 120 - 40 = 260: the larger bar spans it, the other half.
        assert!(svg.contains("height='260.0'") && svg.contains("height='130.0'"));
    }

    #[test]
    fn lines_survive_empty_and_single_points() {
        let one = lines_svg(
            "step",
            &[Series {
                name: "dev MAP",
                color: "blue",
                values: vec![(3.0, 0.4)],
            }],
        );
        assert!(one.contains("<circle"));
        let none = lines_svg(
            "step",
            &[Series {
                name: "loss",
                color: "blue",
                values: vec![(f64::NAN, 1.0)],
            }],
        );
        assert!(!none.contains("polyline") && !none.contains("circle"));
        let two = lines_svg(
            "step",
            &[Series {
                name: "loss",
                color: "blue",
                values: vec![(1.0, 2.0), (2.0, 1.0)],
            }],
        );
        assert!(two.contains("polyline"));
    }
}
