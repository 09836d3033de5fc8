//! The bench's charts, written by hand as SVG (no plotting dependency): `latency.svg`, one
//! dot per task (completion latency over submission time), and `timeline.svg`, throughput
//! and latency over the run in time buckets, two panels on one time axis.
//!
//! Every element is closed and every coordinate lies inside its plot area (the tests check
//! both), so the files open in any browser.

use std::fmt::Write as _;

use crate::stats::percentile;

/// One task in the scatter plot: submitted `x` seconds after the first, done after `y` ms.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    /// Completed (drawn blue) or ended otherwise (drawn red).
    pub ok: bool,
}

const SVG_WIDTH: f64 = 900.0;
const SVG_HEIGHT: f64 = 520.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 30.0;
const MARGIN_TOP: f64 = 50.0;
const MARGIN_BOTTOM: f64 = 60.0;
const TICKS: usize = 5;

/// A scatter plot of completion latency (ms, y) over submission time (s, x), with axes, tick
/// labels, axis titles and a title; one `<circle>` per point.
pub fn latency_svg(title: &str, points: &[Point]) -> String {
    let max_x = nice_max(points.iter().map(|p| p.x).fold(0.0, f64::max));
    let max_y = nice_max(points.iter().map(|p| p.y).fold(0.0, f64::max));
    let (plot_w, plot_h) = (SVG_WIDTH - MARGIN_LEFT - MARGIN_RIGHT, SVG_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM);
    let sx = |x: f64| MARGIN_LEFT + x / max_x * plot_w;
    let sy = |y: f64| MARGIN_TOP + plot_h - y / max_y * plot_h;
    let (x0, y0, x1, y1) = (MARGIN_LEFT, MARGIN_TOP + plot_h, MARGIN_LEFT + plot_w, MARGIN_TOP);

    let mut svg = open_svg(SVG_WIDTH, SVG_HEIGHT, title);
    // Grid lines and tick labels.
    for i in 0..=TICKS {
        let f = i as f64 / TICKS as f64;
        let (x, y) = (x0 + f * plot_w, y0 - f * plot_h);
        let _ = writeln!(svg, r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" stroke="#e0e0e0"/>"##);
        let _ = writeln!(svg, r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" stroke="#e0e0e0"/>"##);
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            y0 + 18.0,
            tick_label(f * max_x)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            x0 - 8.0,
            y + 4.0,
            tick_label(f * max_y)
        );
    }
    // Axes.
    let _ = writeln!(svg, r#"<line x1="{x0:.1}" y1="{y0:.1}" x2="{x1:.1}" y2="{y0:.1}" stroke="black"/>"#);
    let _ = writeln!(svg, r#"<line x1="{x0:.1}" y1="{y0:.1}" x2="{x0:.1}" y2="{y1:.1}" stroke="black"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">submission time (s after the first task was created)</text>"#,
        x0 + plot_w / 2.0,
        SVG_HEIGHT - 15.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">completion latency (ms)</text>"#,
        y1 + plot_h / 2.0,
        y1 + plot_h / 2.0
    );
    // Points.
    let _ = writeln!(svg, r#"<g fill-opacity="0.6">"#);
    for p in points {
        let colour = if p.ok { "#1f77b4" } else { "#d62728" };
        let _ = writeln!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}"/>"#, sx(p.x), sy(p.y));
    }
    let _ = writeln!(svg, "</g>");
    let _ = writeln!(svg, "</svg>");
    svg
}

/// The smallest 1, 2 or 5 × 10ⁿ at or above `max` (1 when nothing is above zero).
fn nice_max(max: f64) -> f64 {
    if !(max > 0.0 && max.is_finite()) {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|v| *v >= max).unwrap_or(10.0 * magnitude)
}

fn tick_label(value: f64) -> String {
    if value == value.trunc() { format!("{value:.0}") } else { format!("{value:.2}") }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// One completed task on the timeline: it ended `at` seconds after the first task was
/// created, `latency_ms` after it was itself created.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    pub at: f64,
    pub latency_ms: f64,
}

/// Buckets the run is cut into at most: fine enough to see a stall, coarse enough that each
/// bucket holds several tasks.
const TARGET_BUCKETS: f64 = 60.0;

/// One time bucket of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// Start of the bucket, in seconds.
    pub start: f64,
    /// Tasks completed in the bucket, per second.
    pub tasks_per_s: f64,
    /// Latency percentiles of the tasks completed in the bucket; 0 when none did.
    pub p50_ms: f64,
    pub p95_ms: f64,
}

/// The width of a bucket: a round 1, 2 or 5 × 10ⁿ seconds giving about [`TARGET_BUCKETS`].
pub fn bucket_width(window_s: f64) -> f64 {
    nice_max(window_s / TARGET_BUCKETS).max(0.01)
}

/// Cuts `completions` into buckets of `width` seconds, from 0 to the last completion.
pub fn buckets(completions: &[Completion], width: f64) -> Vec<Bucket> {
    let last = completions.iter().map(|c| c.at).fold(0.0, f64::max);
    let count = ((last / width).floor() as usize) + 1;
    let mut latencies: Vec<Vec<f64>> = vec![Vec::new(); count];
    for c in completions {
        let index = ((c.at.max(0.0) / width).floor() as usize).min(count - 1);
        latencies[index].push(c.latency_ms);
    }
    latencies
        .into_iter()
        .enumerate()
        .map(|(i, mut l)| {
            l.sort_by(f64::total_cmp);
            Bucket {
                start: i as f64 * width,
                tasks_per_s: l.len() as f64 / width,
                p50_ms: percentile(&l, 50.0),
                p95_ms: percentile(&l, 95.0),
            }
        })
        .collect()
}

const TIMELINE_HEIGHT: f64 = 700.0;
/// Vertical gap between the two panels, for the lower panel's title.
const PANEL_GAP: f64 = 60.0;

/// Throughput (top) and latency p50 / p95 (bottom) per bucket over the run.
pub fn timeline_svg(title: &str, completions: &[Completion]) -> String {
    let window = completions.iter().map(|c| c.at).fold(0.0, f64::max);
    let width = bucket_width(window);
    let buckets = buckets(completions, width);
    // Each bucket is drawn at its middle.
    let mid = |b: &Bucket| b.start + width / 2.0;
    let max_x = nice_max(buckets.last().map(|b| b.start + width).unwrap_or(1.0));
    let panel_h = (TIMELINE_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM - PANEL_GAP) / 2.0;

    let mut svg = open_svg(SVG_WIDTH, TIMELINE_HEIGHT, title);
    let throughput: Vec<(f64, f64)> = buckets.iter().map(|b| (mid(b), b.tasks_per_s)).collect();
    let top = Panel { top: MARGIN_TOP, height: panel_h, max_x, max_y: nice_max(max_of(&throughput)) };
    top.axes(&mut svg, &format!("tasks completed per second ({} s buckets)", tick_label(width)), "tasks/s");
    top.line(&mut svg, &throughput, "#1f77b4");

    let filled: Vec<&Bucket> = buckets.iter().filter(|b| b.tasks_per_s > 0.0).collect();
    let p50: Vec<(f64, f64)> = filled.iter().map(|b| (mid(b), b.p50_ms)).collect();
    let p95: Vec<(f64, f64)> = filled.iter().map(|b| (mid(b), b.p95_ms)).collect();
    let bottom = Panel { top: MARGIN_TOP + panel_h + PANEL_GAP, height: panel_h, max_x, max_y: nice_max(max_of(&p95)) };
    bottom.axes(&mut svg, "latency of the tasks completed in the bucket (p50 blue, p95 orange)", "ms");
    bottom.line(&mut svg, &p50, "#1f77b4");
    bottom.line(&mut svg, &p95, "#ff7f0e");
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time (s after the first task was created)</text>"#,
        MARGIN_LEFT + (SVG_WIDTH - MARGIN_LEFT - MARGIN_RIGHT) / 2.0,
        TIMELINE_HEIGHT - 15.0
    );
    let _ = writeln!(svg, "</svg>");
    svg
}

fn max_of(points: &[(f64, f64)]) -> f64 {
    points.iter().map(|p| p.1).fold(0.0, f64::max)
}

/// One plot area of the timeline, sharing the x axis with the other.
struct Panel {
    top: f64,
    height: f64,
    max_x: f64,
    max_y: f64,
}

impl Panel {
    fn x(&self, x: f64) -> f64 {
        MARGIN_LEFT + (x / self.max_x).clamp(0.0, 1.0) * (SVG_WIDTH - MARGIN_LEFT - MARGIN_RIGHT)
    }

    fn y(&self, y: f64) -> f64 {
        self.top + self.height - (y / self.max_y).clamp(0.0, 1.0) * self.height
    }

    /// Grid, tick labels, axes, the panel's title above it and the y axis's unit.
    fn axes(&self, svg: &mut String, title: &str, unit: &str) {
        let (x0, x1) = (MARGIN_LEFT, SVG_WIDTH - MARGIN_RIGHT);
        let (y0, y1) = (self.top + self.height, self.top);
        for i in 0..=TICKS {
            let f = i as f64 / TICKS as f64;
            let (x, y) = (self.x(f * self.max_x), self.y(f * self.max_y));
            let _ = writeln!(svg, r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" stroke="#e0e0e0"/>"##);
            let _ = writeln!(svg, r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" stroke="#e0e0e0"/>"##);
            let label = tick_label(f * self.max_x);
            let _ = writeln!(svg, r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#, y0 + 16.0);
            let label = tick_label(f * self.max_y);
            let _ = writeln!(svg, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#, x0 - 8.0, y + 4.0);
        }
        let _ = writeln!(svg, r#"<line x1="{x0:.1}" y1="{y0:.1}" x2="{x1:.1}" y2="{y0:.1}" stroke="black"/>"#);
        let _ = writeln!(svg, r#"<line x1="{x0:.1}" y1="{y0:.1}" x2="{x0:.1}" y2="{y1:.1}" stroke="black"/>"#);
        let _ = writeln!(svg, r#"<text x="{x0:.1}" y="{:.1}" font-size="13">{}</text>"#, y1 - 10.0, escape(title));
        let middle = y1 + self.height / 2.0;
        let _ = writeln!(
            svg,
            r#"<text x="20" y="{middle:.1}" text-anchor="middle" transform="rotate(-90 20 {middle:.1})">{}</text>"#,
            escape(unit)
        );
    }

    /// A polyline through `points` (x in seconds, y in the panel's unit).
    fn line(&self, svg: &mut String, points: &[(f64, f64)], colour: &str) {
        if points.is_empty() {
            return;
        }
        let path: Vec<String> = points.iter().map(|&(x, y)| format!("{:.1},{:.1}", self.x(x), self.y(y))).collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
    }
}

/// The opening of an SVG document: the root element, a white background and the title.
fn open_svg(width: f64, height: f64, title: &str) -> String {
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="28" text-anchor="middle" font-size="15">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_svg_has_axes_labels_and_one_circle_per_point() {
        let points: Vec<Point> =
            (0..37).map(|i| Point { x: f64::from(i) * 0.1, y: f64::from(i * 7 % 50), ok: i % 5 != 0 }).collect();
        let svg = latency_svg("latency <& 'title'>", &points);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle ").count(), 37);
        assert_eq!(svg.matches("fill=\"#d62728\"").count(), 8);
        assert!(svg.contains("completion latency (ms)"));
        assert!(svg.contains("submission time"));
        assert!(svg.contains("latency &lt;&amp; 'title'&gt;"));
        // Every element is closed: self-closing, or opened and closed in equal numbers.
        for tag in ["svg", "g", "text"] {
            assert_eq!(svg.matches(&format!("<{tag} ")).count(), svg.matches(&format!("</{tag}>")).count(), "{tag}");
        }
        for tag in ["line", "circle", "rect"] {
            let opened = svg.matches(&format!("<{tag} ")).count();
            let closed = svg.lines().filter(|l| l.starts_with(&format!("<{tag} ")) && l.ends_with("/>")).count();
            assert_eq!(opened, closed, "{tag}");
        }
        // Every point lies inside the plot area.
        for line in svg.lines().filter(|l| l.starts_with("<circle")) {
            let attr = |name: &str| -> f64 {
                let start = line.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                line[start..].split('"').next().unwrap().parse().unwrap()
            };
            assert!((MARGIN_LEFT..=SVG_WIDTH - MARGIN_RIGHT).contains(&attr("cx")), "{line}");
            assert!((MARGIN_TOP..=SVG_HEIGHT - MARGIN_BOTTOM).contains(&attr("cy")), "{line}");
        }
        // No points still makes a valid, empty plot.
        assert_eq!(latency_svg("empty", &[]).matches("<circle").count(), 0);
    }

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(0.7), 1.0);
        assert_eq!(nice_max(3.2), 5.0);
        assert_eq!(nice_max(180.0), 200.0);
        assert_eq!(nice_max(1000.0), 1000.0);
    }

    /// Every element is closed: self-closing on its line, or opened and closed in equal numbers.
    fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        for tag in ["svg", "g", "text"] {
            assert_eq!(svg.matches(&format!("<{tag} ")).count(), svg.matches(&format!("</{tag}>")).count(), "{tag}");
        }
        for tag in ["line", "circle", "rect", "polyline"] {
            let opened = svg.matches(&format!("<{tag} ")).count();
            let closed = svg.lines().filter(|l| l.starts_with(&format!("<{tag} ")) && l.ends_with("/>")).count();
            assert_eq!(opened, closed, "{tag}");
        }
    }

    #[test]
    fn buckets_count_completions_per_second_with_their_latencies() {
        let completions: Vec<Completion> =
            (0..30).map(|i| Completion { at: f64::from(i) * 0.1, latency_ms: f64::from(i) }).collect();
        assert_eq!(bucket_width(2.9), 0.05);
        assert_eq!(bucket_width(120.0), 2.0);
        let b = buckets(&completions, 1.0);
        assert_eq!(b.len(), 3);
        assert_eq!(b[0], Bucket { start: 0.0, tasks_per_s: 10.0, p50_ms: 4.0, p95_ms: 9.0 });
        assert_eq!(b[2].tasks_per_s, 10.0);
        // A quiet second in the middle is a bucket at zero, not a gap.
        let gap = [Completion { at: 0.5, latency_ms: 1.0 }, Completion { at: 2.5, latency_ms: 1.0 }];
        let b = buckets(&gap, 1.0);
        assert_eq!(b.iter().map(|b| b.tasks_per_s).collect::<Vec<_>>(), vec![1.0, 0.0, 1.0]);
    }

    #[test]
    fn the_timeline_has_two_panels_inside_the_picture() {
        let completions: Vec<Completion> = (0..200)
            .map(|i| Completion { at: f64::from(i) * 0.05, latency_ms: 100.0 + f64::from(i % 17) * 3.0 })
            .collect();
        let svg = timeline_svg("closed loop <64>", &completions);
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<polyline ").count(), 3, "throughput, p50, p95");
        assert!(svg.contains("closed loop &lt;64&gt;"));
        assert!(svg.contains("tasks/s") && svg.contains("p95"));
        for line in svg.lines().filter(|l| l.starts_with("<polyline")) {
            let points = line.split("points=\"").nth(1).unwrap().trim_end_matches("\"/>");
            for point in points.split(' ') {
                let (x, y) = point.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((MARGIN_LEFT..=SVG_WIDTH - MARGIN_RIGHT).contains(&x), "{point}");
                assert!((MARGIN_TOP..=TIMELINE_HEIGHT - MARGIN_BOTTOM).contains(&y), "{point}");
            }
        }
        // No completion still makes a valid picture.
        assert_well_formed(&timeline_svg("empty", &[]));
    }
}
