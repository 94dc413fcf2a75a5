//! Small charts written next to JSON results, as SVG and PNG. Both are drawn from
//! the same code through [`Canvas`]; the PNG uses a built-in pixel font and a
//! hand-rolled encoder (zlib from flate2), so no font files or system libraries
//! are needed and charts look the same on any machine.

use crate::font;
use std::io::Write;

/// One named series of values, drawn in `color` (`#rgb`, `#rrggbb`, or a basic name).
pub struct Series<'a, T> {
    pub name: &'a str,
    pub color: &'a str,
    pub values: T,
}

#[derive(Clone, Copy, PartialEq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

/// What the charts draw on, in chart units (y down).
pub trait Canvas {
    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, color: &str);
    fn line(&mut self, a: (f64, f64), b: (f64, f64), color: &str, width: f64);
    fn dot(&mut self, at: (f64, f64), r: f64, color: &str);
    /// Text with its baseline at `y`, rotated by `degrees` (clockwise) about (x, y).
    fn text(&mut self, x: f64, y: f64, s: &str, anchor: Anchor, degrees: f64);
    fn polyline(&mut self, pts: &[(f64, f64)], color: &str, width: f64) {
        for w in pts.windows(2) {
            self.line(w[0], w[1], color, width);
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
}

/// SVG text output.
pub struct Svg(String);

impl Svg {
    pub fn new(w: f64, h: f64) -> Svg {
        Svg(format!("<svg xmlns='http://www.w3.org/2000/svg' width='{w:.0}' height='{h:.0}' font-family='sans-serif' font-size='11'>\n<rect width='100%' height='100%' fill='white'/>\n"))
    }
    pub fn finish(self) -> String {
        self.0 + "</svg>\n"
    }
}

impl Canvas for Svg {
    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, color: &str) {
        self.0 += &format!(
            "<rect x='{x:.1}' y='{y:.1}' width='{w:.1}' height='{h:.1}' fill='{color}'/>\n"
        );
    }
    fn line(&mut self, a: (f64, f64), b: (f64, f64), color: &str, width: f64) {
        self.0 += &format!(
            "<line x1='{:.1}' y1='{:.1}' x2='{:.1}' y2='{:.1}' stroke='{color}' stroke-width='{width}'/>\n",
            a.0, a.1, b.0, b.1
        );
    }
    fn polyline(&mut self, pts: &[(f64, f64)], color: &str, width: f64) {
        let p: Vec<String> = pts
            .iter()
            .map(|p| format!("{:.1},{:.1}", p.0, p.1))
            .collect();
        self.0 += &format!(
            "<polyline fill='none' stroke='{color}' stroke-width='{width}' points='{}'/>\n",
            p.join(" ")
        );
    }
    fn dot(&mut self, at: (f64, f64), r: f64, color: &str) {
        self.0 += &format!(
            "<circle cx='{:.1}' cy='{:.1}' r='{r}' fill='{color}'/>\n",
            at.0, at.1
        );
    }
    fn text(&mut self, x: f64, y: f64, s: &str, anchor: Anchor, degrees: f64) {
        let a = match anchor {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        };
        self.0 += &format!(
            "<text transform='translate({x:.1},{y:.1}) rotate({degrees})' text-anchor='{a}'>{}</text>\n",
            esc(s)
        );
    }
}

/// An RGB raster, drawn at `scale` pixels per chart unit.
pub struct Raster {
    w: usize,
    h: usize,
    scale: f64,
    px: Vec<[u8; 3]>,
}

fn rgb(color: &str) -> [u8; 3] {
    let hex = |s: &str| u8::from_str_radix(s, 16).ok();
    match color {
        "white" => [255, 255, 255],
        "red" => [214, 39, 40],
        "blue" => [31, 119, 180],
        "gray" | "grey" => [136, 136, 136],
        c if c.len() == 7 && c.starts_with('#') => {
            match (hex(&c[1..3]), hex(&c[3..5]), hex(&c[5..7])) {
                (Some(r), Some(g), Some(b)) => [r, g, b],
                _ => [0, 0, 0],
            }
        }
        c if c.len() == 4 && c.starts_with('#') => {
            let d = |i: usize| hex(&c[i..i + 1]).map_or(0, |v| v * 17);
            [d(1), d(2), d(3)]
        }
        _ => [0, 0, 0],
    }
}

impl Raster {
    pub fn new(w: f64, h: f64, scale: f64) -> Raster {
        let (pw, ph) = ((w * scale).ceil() as usize, (h * scale).ceil() as usize);
        Raster {
            w: pw,
            h: ph,
            scale,
            px: vec![[255; 3]; pw * ph],
        }
    }

    fn fill(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, c: [u8; 3]) {
        let clamp = |v: f64, hi: usize| (v.round().max(0.0) as usize).min(hi);
        let (xa, xb) = (clamp(x0, self.w), clamp(x1, self.w));
        let (ya, yb) = (clamp(y0, self.h), clamp(y1, self.h));
        for y in ya..yb {
            self.px[y * self.w + xa..y * self.w + xb].fill(c);
        }
    }

    /// PNG bytes: 8-bit RGB, no interlace, filter 0 on every row.
    pub fn png(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity(self.h * (1 + 3 * self.w));
        for row in self.px.chunks(self.w) {
            raw.push(0);
            raw.extend(row.iter().flatten());
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&raw).expect("writing to memory cannot fail");
        let idat = z.finish().expect("writing to memory cannot fail");
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend((self.w as u32).to_be_bytes());
        ihdr.extend((self.h as u32).to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        for (kind, data) in [(b"IHDR", &ihdr), (b"IDAT", &idat), (b"IEND", &Vec::new())] {
            out.extend((data.len() as u32).to_be_bytes());
            let start = out.len();
            out.extend(kind);
            out.extend(data);
            let crc = crc32(&out[start..]);
            out.extend(crc.to_be_bytes());
        }
        out
    }
}

/// CRC-32 (IEEE, reflected), as PNG chunks need.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

impl Canvas for Raster {
    fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, color: &str) {
        let k = self.scale;
        self.fill(x * k, y * k, (x + w) * k, (y + h) * k, rgb(color));
    }
    fn line(&mut self, a: (f64, f64), b: (f64, f64), color: &str, width: f64) {
        let k = self.scale;
        let (c, r) = (rgb(color), (width * k / 2.0).max(0.5));
        let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()) * k)
            .ceil()
            .max(1.0) as usize;
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            let (x, y) = ((a.0 + (b.0 - a.0) * t) * k, (a.1 + (b.1 - a.1) * t) * k);
            self.fill(x - r, y - r, x + r, y + r, c);
        }
    }
    fn dot(&mut self, at: (f64, f64), r: f64, color: &str) {
        let k = self.scale;
        self.fill(
            (at.0 - r) * k,
            (at.1 - r) * k,
            (at.0 + r) * k,
            (at.1 + r) * k,
            rgb(color),
        );
    }
    fn text(&mut self, x: f64, y: f64, s: &str, anchor: Anchor, degrees: f64) {
        // Font pixels: 1.5 chart units each, so a capital is ~10.5 units tall,
        // about the SVG's 11-unit font.
        let k = self.scale;
        let p = 1.5 * k;
        let n = s.chars().count();
        let width = (n * font::ADVANCE).saturating_sub(1) as f64 * p;
        let dx = match anchor {
            Anchor::Start => 0.0,
            Anchor::Middle => -width / 2.0,
            Anchor::End => -width,
        };
        let (sin, cos) = degrees.to_radians().sin_cos();
        let (ox, oy) = (x * k, y * k);
        for (i, ch) in s.chars().enumerate() {
            for (row, bits) in font::glyph(ch).iter().enumerate() {
                for col in 0..5 {
                    if bits & (1 << (4 - col)) == 0 {
                        continue;
                    }
                    let lx = dx + (i * font::ADVANCE + col) as f64 * p;
                    let ly = (row as f64 - font::HEIGHT as f64) * p;
                    let (rx, ry) = (ox + lx * cos - ly * sin, oy + lx * sin + ly * cos);
                    self.fill(rx, ry, rx + p, ry + p, [0, 0, 0]);
                }
            }
        }
    }
}

fn legend<T>(c: &mut dyn Canvas, series: &[Series<T>], left: f64) {
    let mut x = left + 10.0;
    for se in series {
        c.rect(x, 12.0, 12.0, 12.0, se.color);
        c.text(x + 16.0, 22.0, se.name, Anchor::Start, 0.0);
        x += 34.0 + 9.5 * se.name.chars().count() as f64;
    }
}

/// Grouped bars: one group per label, one bar per series (`values[i]` for label
/// i), y axis from 0. Returns the chart size and draws onto `c`.
fn bars(c: &mut dyn Canvas, labels: &[String], series: &[Series<Vec<f64>>]) {
    let n = labels.len().max(1) as f64;
    let top = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| v.is_finite())
        .fold(1e-9f64, f64::max);
    let (w, h, left, bottom, pad) = bars_size(labels);
    let gw = (w - left - 20.0) / n;
    let bw = gw / (series.len() as f64 + 1.0);
    let plot_h = h - bottom - pad;
    for tick in 0..=4 {
        let v = top * tick as f64 / 4.0;
        let y = h - bottom - v / top * plot_h;
        c.line((left, y), (w - 20.0, y), "#dddddd", 1.0);
        c.text(left - 4.0, y + 4.0, &format!("{v:.2}"), Anchor::End, 0.0);
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
            c.rect(x0 + j as f64 * bw, h - bottom - bh, bw, bh, se.color);
        }
        let cx = x0 + series.len() as f64 * bw / 2.0;
        c.text(cx, h - bottom + 14.0, label, Anchor::End, -30.0);
    }
    legend(c, series, left);
}

/// Chart size and margins: `(w, h, left, bottom, pad)`. The x labels hang at -30
/// degrees below the axis, so the bottom margin grows with the longest one (9 chart
/// units a character, half of that downwards) and the plot keeps its height.
fn bars_size(labels: &[String]) -> (f64, f64, f64, f64, f64) {
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let bottom = (14.0 + 4.5 * longest as f64 + 12.0).max(120.0);
    (
        110.0 * labels.len().max(1) as f64 + 80.0,
        300.0 + bottom,
        50.0,
        bottom,
        40.0,
    )
}

pub fn bars_svg(labels: &[String], series: &[Series<Vec<f64>>]) -> String {
    let (w, h, ..) = bars_size(labels);
    let mut c = Svg::new(w, h);
    bars(&mut c, labels, series);
    c.finish()
}

pub fn bars_png(labels: &[String], series: &[Series<Vec<f64>>]) -> Vec<u8> {
    let (w, h, ..) = bars_size(labels);
    let mut c = Raster::new(w, h, 2.0);
    bars(&mut c, labels, series);
    c.png()
}

const LINES_SIZE: (f64, f64) = (720.0, 360.0);

/// Lines of (x, y) points on shared axes, with `x_label` under the x axis.
fn lines(c: &mut dyn Canvas, x_label: &str, series: &[Series<Vec<(f64, f64)>>]) {
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in series.iter().flat_map(|s| s.values.iter()).filter(finite) {
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
    let ((w, h), left, bottom, pad) = (LINES_SIZE, 60.0, 40.0, 40.0);
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - 20.0);
    let py = |y: f64| h - bottom - (y - y0) / (y1 - y0) * (h - bottom - pad);
    for tick in 0..=4 {
        let v = y0 + (y1 - y0) * tick as f64 / 4.0;
        c.line((left, py(v)), (w - 20.0, py(v)), "#dddddd", 1.0);
        c.text(
            left - 4.0,
            py(v) + 4.0,
            &format!("{v:.3}"),
            Anchor::End,
            0.0,
        );
        let xv = x0 + (x1 - x0) * tick as f64 / 4.0;
        c.text(
            px(xv),
            h - bottom + 14.0,
            &format!("{xv:.0}"),
            Anchor::Middle,
            0.0,
        );
    }
    for se in series {
        let pts: Vec<(f64, f64)> = se
            .values
            .iter()
            .filter(finite)
            .map(|&(x, y)| (px(x), py(y)))
            .collect();
        match pts.len() {
            0 => {}
            1 => c.dot(pts[0], 3.0, se.color),
            _ => c.polyline(&pts, se.color, 1.5),
        }
    }
    c.text(w / 2.0, h - 6.0, x_label, Anchor::Middle, 0.0);
    legend(c, series, left);
}

pub fn lines_svg(x_label: &str, series: &[Series<Vec<(f64, f64)>>]) -> String {
    let mut c = Svg::new(LINES_SIZE.0, LINES_SIZE.1);
    lines(&mut c, x_label, series);
    c.finish()
}

pub fn lines_png(x_label: &str, series: &[Series<Vec<(f64, f64)>>]) -> Vec<u8> {
    let mut c = Raster::new(LINES_SIZE.0, LINES_SIZE.1, 2.0);
    lines(&mut c, x_label, series);
    c.png()
}

/// Histogram of each series' values over `bins` equal bins on [lo, hi] (values
/// outside are clamped into the end bins), as fractions of the series, bars side by
/// side; `x_label` under the axis.
fn histogram(
    c: &mut dyn Canvas,
    lo: f64,
    hi: f64,
    bins: usize,
    x_label: &str,
    series: &[Series<Vec<f64>>],
) {
    let bins = bins.max(1);
    let fracs: Vec<Vec<f64>> = series
        .iter()
        .map(|s| {
            let mut counts = vec![0usize; bins];
            for &v in s.values.iter().filter(|v| v.is_finite()) {
                let b = ((v.clamp(lo, hi) - lo) / (hi - lo) * bins as f64) as usize;
                counts[b.min(bins - 1)] += 1;
            }
            let total = counts.iter().sum::<usize>().max(1) as f64;
            counts.iter().map(|&n| n as f64 / total).collect()
        })
        .collect();
    let top = fracs.iter().flatten().fold(0.01f64, |m, &v| m.max(v));
    let ((w, h), left, bottom, pad) = (LINES_SIZE, 60.0, 40.0, 40.0);
    let plot_h = h - bottom - pad;
    let bw = (w - left - 20.0) / bins as f64;
    for tick in 0..=4 {
        let v = top * tick as f64 / 4.0;
        let y = h - bottom - v / top * plot_h;
        c.line((left, y), (w - 20.0, y), "#dddddd", 1.0);
        c.text(left - 4.0, y + 4.0, &format!("{v:.2}"), Anchor::End, 0.0);
    }
    let sw = bw / series.len().max(1) as f64;
    for (j, (f, se)) in fracs.iter().zip(series).enumerate() {
        for (i, &v) in f.iter().enumerate() {
            let bh = v / top * plot_h;
            c.rect(
                left + i as f64 * bw + j as f64 * sw,
                h - bottom - bh,
                sw,
                bh,
                se.color,
            );
        }
    }
    for t in 0..=6 {
        let v = lo + (hi - lo) * t as f64 / 6.0;
        let x = left + (v - lo) / (hi - lo) * (w - left - 20.0);
        c.text(
            x,
            h - bottom + 14.0,
            &format!("{v:.0}"),
            Anchor::Middle,
            0.0,
        );
    }
    c.text(w / 2.0, h - 6.0, x_label, Anchor::Middle, 0.0);
    legend(c, series, left);
}

pub fn histogram_svg(
    lo: f64,
    hi: f64,
    bins: usize,
    x_label: &str,
    series: &[Series<Vec<f64>>],
) -> String {
    let mut c = Svg::new(LINES_SIZE.0, LINES_SIZE.1);
    histogram(&mut c, lo, hi, bins, x_label, series);
    c.finish()
}

pub fn histogram_png(
    lo: f64,
    hi: f64,
    bins: usize,
    x_label: &str,
    series: &[Series<Vec<f64>>],
) -> Vec<u8> {
    let mut c = Raster::new(LINES_SIZE.0, LINES_SIZE.1, 2.0);
    histogram(&mut c, lo, hi, bins, x_label, series);
    c.png()
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
    fn bars_scale_to_the_largest_value() {
        let svg = bars_svg(&["a".into(), "b<c".into()], &one(vec![0.5, 1.0]));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("b&lt;c"), "labels are escaped");
        // Plot height is 420 - 120 - 40 = 260: the larger bar spans it, the other half.
        assert!(svg.contains("height='260.0'") && svg.contains("height='130.0'"));
    }

    #[test]
    fn lines_survive_empty_and_single_points() {
        let s = |values| {
            lines_svg(
                "step",
                &[Series {
                    name: "loss",
                    color: "blue",
                    values,
                }],
            )
        };
        assert!(s(vec![(3.0, 0.4)]).contains("<circle"));
        let none = s(vec![(f64::NAN, 1.0)]);
        assert!(!none.contains("polyline") && !none.contains("circle"));
        assert!(s(vec![(1.0, 2.0), (2.0, 1.0)]).contains("polyline"));
    }

    /// Fractions per bin: 3 of 4 values in the first of two bins, one clamped into the last.
    #[test]
    fn histogram_bars_are_fractions() {
        let svg = histogram_svg(0.0, 2.0, 2, "u", &one(vec![0.1, 0.2, 0.3, 9.0]));
        // Plot height 360 - 40 - 40 = 280 is the top fraction 0.75; 0.25 is a third.
        assert!(
            svg.contains("height='280.0'") && svg.contains("height='93.3'"),
            "{svg}"
        );
    }

    /// CRC-32 of "123456789" is 0xCBF43926 (the standard check value).
    #[test]
    fn crc_matches_the_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    /// The chart's PNG decoded back (zlib round trip): `(width, height, rows)`, each
    /// row a filter byte and RGB pixels.
    fn decode(png: &[u8]) -> (usize, usize, Vec<u8>) {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let (w, h) = (
            u32::from_be_bytes(png[16..20].try_into().unwrap()) as usize,
            u32::from_be_bytes(png[20..24].try_into().unwrap()) as usize,
        );
        let len = u32::from_be_bytes(png[33..37].try_into().unwrap()) as usize;
        assert_eq!(&png[37..41], b"IDAT");
        let mut raw = Vec::new();
        use std::io::Read;
        flate2::read::ZlibDecoder::new(&png[41..41 + len])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw.len(), h * (1 + 3 * w));
        (w, h, raw)
    }

    /// The PNG decodes back to the pixels drawn: a white canvas with one red bar
    /// where the chart puts it.
    #[test]
    fn png_holds_the_drawn_pixels() {
        let (w, h, raw) = decode(&bars_png(&["a".into()], &one(vec![1.0])));
        let (cw, ch, ..) = bars_size(&["a".into()]);
        assert_eq!((w, h), ((cw * 2.0) as usize, (ch * 2.0) as usize));
        let at = |x: usize, y: usize| &raw[y * (1 + 3 * w) + 1 + 3 * x..][..3];
        assert_eq!(at(1, h - 1), [255, 255, 255]);
        // One group 190 - 50 - 20 = 120 units wide; one series: bars 60 wide starting
        // at left + 30 = 80, spanning y 40..300. Sample the middle, at 2 px per unit.
        assert_eq!(at(2 * 110, 2 * 180), [255, 0, 0]);
        assert_eq!(at(2 * 70, 2 * 180), [255, 255, 255]);
    }

    /// A long x label (the bench's "minilm + yes-no re-rank@10" was cut off) hangs
    /// inside the canvas: its lowest ink stays clear of the bottom edge, and the
    /// ink of every label is all there (as much as the same label drawn alone).
    #[test]
    fn long_labels_are_not_clipped() {
        let ink = |labels: &[String], values: Vec<f64>| {
            let (w, h, raw) = decode(&bars_png(labels, &one(values)));
            let black: Vec<usize> = (0..h)
                .flat_map(|y| (0..w).map(move |x| (x, y)))
                .filter(|&(x, y)| raw[y * (1 + 3 * w) + 1 + 3 * x..][..3] == [0, 0, 0])
                .map(|(_, y)| y)
                .collect();
            (h, black)
        };
        let long = "minilm + yes-no re-rank@10 and then some".to_string();
        let (h, black) = ink(&["b".into(), long.clone()], vec![0.5, 1.0]);
        let lowest = black.iter().copied().max().unwrap();
        assert!(lowest + 8 < h, "label ink reaches row {lowest} of {h}");
        let (_, short_only) = ink(&["b".into(), String::new()], vec![0.5, 1.0]);
        let (_, long_alone) = ink(&[String::new(), long], vec![0.5, 1.0]);
        let (_, neither) = ink(&[String::new(), String::new()], vec![0.5, 1.0]);
        assert_eq!(
            black.len() + neither.len(),
            short_only.len() + long_alone.len()
        );
    }
}
