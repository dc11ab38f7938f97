//! A log-log line plot as standalone SVG (no dependencies): pause against state size for
//! each transfer method.

use std::fmt::Write;

/// One line of the plot: a label, a colour and (x, y) points (both positive).
pub struct Series {
    /// Legend text.
    pub label: String,
    /// CSS colour.
    pub color: &'static str,
    /// Points, x ascending.
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 720.0;
const H: f64 = 440.0;
const L: f64 = 80.0; // left margin
const R: f64 = 220.0; // right margin (legend)
const T: f64 = 40.0;
const B: f64 = 60.0;

fn decades(lo: f64, hi: f64) -> (f64, f64) {
    (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    )
}

fn fmt_bytes(b: f64) -> String {
    if b >= (1u64 << 20) as f64 {
        format!("{} MiB", (b / (1u64 << 20) as f64).round())
    } else {
        format!("{} KiB", (b / 1024.0).round())
    }
}

fn fmt_time(ns: f64) -> String {
    match ns {
        n if n >= 1e9 => format!("{} s", n / 1e9),
        n if n >= 1e6 => format!("{} ms", n / 1e6),
        n if n >= 1e3 => format!("{} µs", n / 1e3),
        n => format!("{n} ns"),
    }
}

/// Renders the plot. `x` values are bytes (ticks at the points of the first series), `y`
/// values nanoseconds (ticks at powers of ten).
pub fn pause_plot(title: &str, series: &[Series]) -> String {
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|y| *y > 0.0)
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{title}</text>"#,
        L + (W - L - R) / 2.0
    );
    if xs.is_empty() || ys.is_empty() {
        out.push_str("</svg>\n");
        return out;
    }
    let (x0, x1) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min).log10(),
        xs.iter().copied().fold(0.0, f64::max).log10(),
    );
    let (x0, x1) = if x1 > x0 {
        (x0, x1)
    } else {
        (x0 - 1.0, x1 + 1.0)
    };
    let (y0, y1) = decades(
        ys.iter().copied().fold(f64::INFINITY, f64::min),
        ys.iter().copied().fold(0.0, f64::max),
    );
    let px = |x: f64| L + (x.log10() - x0) / (x1 - x0) * (W - L - R);
    let py = |y: f64| H - B - (y.max(1e-9).log10() - y0) / (y1 - y0) * (H - T - B);
    // Axes, grid and ticks.
    let _ = writeln!(out, r##"<g stroke="#ccc">"##);
    let mut d = y0;
    while d <= y1 + 1e-9 {
        let y = py(10f64.powf(d));
        let _ = writeln!(
            out,
            r#"<line x1="{L}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/>"#,
            W - R
        );
        d += 1.0;
    }
    let mut ticks: Vec<f64> = series
        .first()
        .map(|s| s.points.iter().map(|p| p.0).collect())
        .unwrap_or_default();
    ticks.dedup();
    for &x in &ticks {
        let _ = writeln!(
            out,
            r#"<line x1="{0:.1}" y1="{T}" x2="{0:.1}" y2="{1:.1}"/>"#,
            px(x),
            H - B
        );
    }
    let _ = writeln!(out, "</g>");
    let mut d = y0;
    while d <= y1 + 1e-9 {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            L - 6.0,
            py(10f64.powf(d)) + 4.0,
            fmt_time(10f64.powf(d))
        );
        d += 1.0;
    }
    for &x in &ticks {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            px(x),
            H - B + 18.0,
            fmt_bytes(x)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">state size (log)</text>"#,
        L + (W - L - R) / 2.0,
        H - 16.0
    );
    let _ = writeln!(
        out,
        r#"<text x="18" y="{0:.1}" text-anchor="middle" transform="rotate(-90 18 {0:.1})">pause, median (log)</text>"#,
        T + (H - T - B) / 2.0
    );
    let _ = writeln!(
        out,
        r#"<rect x="{L}" y="{T}" width="{:.1}" height="{:.1}" fill="none" stroke="black"/>"#,
        W - L - R,
        H - T - B
    );
    // Lines and legend.
    for (i, s) in series.iter().enumerate() {
        let pts: Vec<String> = s
            .points
            .iter()
            .filter(|p| p.1 > 0.0)
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>"#,
            s.color,
            pts.join(" ")
        );
        for p in &pts {
            let (cx, cy) = p.split_once(',').unwrap();
            let _ = writeln!(
                out,
                r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{}"/>"#,
                s.color
            );
        }
        let ly = T + 10.0 + i as f64 * 20.0;
        let lx = W - R + 15.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"/>"#,
            lx + 20.0,
            s.color
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}">{}</text>"#,
            lx + 26.0,
            ly + 4.0,
            s.label
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_lines_and_legend() {
        let s = vec![
            Series {
                label: "dsu".into(),
                color: "blue",
                points: vec![(4096.0, 1e5), (1048576.0, 1.2e5)],
            },
            Series {
                label: "copy".into(),
                color: "red",
                points: vec![(4096.0, 2e4), (1048576.0, 3e6)],
            },
        ];
        let svg = pause_plot("pause", &s);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">dsu<") && svg.contains(">copy<"));
        assert!(svg.contains("4 KiB") && svg.contains("1 MiB"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn empty_is_valid() {
        let svg = pause_plot("none", &[]);
        assert!(svg.contains("</svg>"));
    }
}
