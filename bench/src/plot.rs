//! A run's timeline as an SVG picture (`--plot`): above, the calls the schedule made due
//! (dashed), answered, and failed each second; below, each second's p99 on a log
//! scale; the phases as shaded bands named at the top, so a person can see what each spike
//! did to the tail.

use std::fmt::Write;

use crate::report::Summary;

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
/// Top panel (throughput) and bottom panel (p99), in pixels from the top.
const RATE_TOP: f64 = 40.0;
const RATE_BOTTOM: f64 = 300.0;
const P99_TOP: f64 = 340.0;
const P99_BOTTOM: f64 = 560.0;
const HEIGHT: f64 = 600.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A round number at or above `value`: 1, 2 or 5 times a power of ten.
fn nice_ceiling(value: f64) -> f64 {
    let power = 10f64.powf(value.max(1e-9).log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|step| step * power).find(|&nice| nice >= value).unwrap_or(10.0 * power)
}

/// The SVG of `summary`'s timeline.
pub fn plot(summary: &Summary) -> String {
    let seconds = summary.timeline.len().max(1) as f64;
    let x = |second: f64| LEFT + (WIDTH - LEFT - RIGHT) * second / seconds;
    let rate_max = nice_ceiling(
        summary
            .timeline
            .iter()
            .map(|second| second.target_per_s.max(second.completed as f64).max(second.due as f64))
            .fold(1.0, f64::max),
    );
    let rate_y = |rate: f64| RATE_BOTTOM - (RATE_BOTTOM - RATE_TOP) * rate / rate_max;
    // p99 on a log scale, from 0.1 ms to a power of ten at or above the worst second.
    let worst = summary.timeline.iter().map(|second| second.p99_ms).fold(1.0, f64::max);
    let decades = worst.log10().ceil().max(0.0) + 1.0;
    let p99_y = |ms: f64| P99_BOTTOM - (P99_BOTTOM - P99_TOP) * ((ms.max(0.1)).log10() + 1.0) / decades;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="16" font-size="13">{}: calls answered per second (target dashed, errors red) and p99 per second</text>"#,
        escape(&summary.workload)
    );
    // Phases: shaded bands, each named once at its start.
    let mut start = 0usize;
    let mut band = 0;
    while start < summary.timeline.len() {
        let phase = &summary.timeline[start].phase;
        let end = (start..summary.timeline.len())
            .find(|&at| summary.timeline[at].phase != *phase)
            .unwrap_or(summary.timeline.len());
        let fill = if band % 2 == 0 { "#f2f2f2" } else { "#e4ecf7" };
        let (left, right) = (x(start as f64), x(end as f64));
        let _ = writeln!(
            svg,
            r##"<rect x="{left:.1}" y="{RATE_TOP}" width="{:.1}" height="{:.1}" fill="{fill}"/>"##,
            right - left,
            P99_BOTTOM - RATE_TOP
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" fill="#555">{}</text>"##,
            left + 3.0,
            RATE_TOP + 12.0,
            escape(phase)
        );
        start = end;
        band += 1;
    }
    // Axes and their labels.
    for (top, bottom) in [(RATE_TOP, RATE_BOTTOM), (P99_TOP, P99_BOTTOM)] {
        let _ = writeln!(svg, r##"<line x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{bottom}" stroke="#000"/>"##);
        let _ =
            writeln!(svg, r##"<line x1="{LEFT}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="#000"/>"##, WIDTH - RIGHT);
    }
    for step in 0..=4 {
        let rate = rate_max * f64::from(step) / 4.0;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{rate:.0}/s</text>"#,
            LEFT - 4.0,
            rate_y(rate) + 4.0
        );
    }
    for decade in 0..=decades as i32 {
        let ms = 10f64.powi(decade - 1);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ccc"/><text x="{:.1}" y="{:.1}" text-anchor="end">{ms} ms</text>"##,
            WIDTH - RIGHT,
            LEFT - 4.0,
            p99_y(ms) + 4.0,
            y = p99_y(ms)
        );
    }
    let ticks = (seconds / 10.0).ceil().max(1.0) as usize;
    for second in (0..=summary.timeline.len()).step_by(ticks) {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{second} s</text>"#,
            x(second as f64),
            P99_BOTTOM + 16.0
        );
    }
    // The series, each second's point at its middle.
    let series = |value: &dyn Fn(usize) -> f64, y: &dyn Fn(f64) -> f64| -> String {
        (0..summary.timeline.len())
            .map(|at| format!("{:.1},{:.1}", x(at as f64 + 0.5), y(value(at))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let timeline = &summary.timeline;
    let lines = [
        (series(&|at| timeline[at].due as f64, &rate_y), "#777", r#" stroke-dasharray="6 4""#),
        (series(&|at| timeline[at].completed as f64, &rate_y), "#1f5fbf", ""),
        (series(&|at| timeline[at].errors as f64, &rate_y), "#d62728", ""),
        (series(&|at| timeline[at].p99_ms, &p99_y), "#e07b00", ""),
    ];
    for (points, color, dash) in lines {
        let _ = writeln!(svg, r#"<polyline fill="none" stroke="{color}" stroke-width="1.5"{dash} points="{points}"/>"#);
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{OpSummary, SecondSummary};

    #[test]
    fn the_plot_draws_every_second_and_names_every_phase() {
        let op =
            OpSummary { count: 1, ops_per_s: 1.0, p50_ms: 1.0, p90_ms: 1.0, p99_ms: 1.0, p999_ms: 1.0, max_ms: 1.0 };
        let timeline: Vec<SecondSummary> = (0..30)
            .map(|second| SecondSummary {
                second,
                phase: if (10..20).contains(&second) { "flash <sale> & co".into() } else { "steady".into() },
                target_per_s: if (10..20).contains(&second) { 10_000.0 } else { 1_000.0 },
                due: 1000,
                completed: 990,
                errors: 10,
                p99_ms: 0.5 * (second + 1) as f64,
            })
            .collect();
        let summary = Summary {
            workload: "test".into(),
            seconds: 30.0,
            due: 30_000,
            ops: [("get".to_string(), op.clone())].into(),
            all: op,
            errors: Default::default(),
            first_errors: Default::default(),
            timeline,
        };
        let svg = plot(&summary);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 4, "target, answered, errors, p99");
        for polyline in svg.lines().filter(|line| line.starts_with("<polyline")) {
            let points = polyline.split("points=\"").nth(1).unwrap().trim_end_matches("\"/>");
            assert_eq!(points.split(' ').count(), 30, "a point a second");
        }
        assert_eq!(svg.matches(">steady<").count(), 2, "the steady phase is named at each of its two bands");
        assert!(svg.contains("flash &lt;sale&gt; &amp; co") && !svg.contains("<sale>"), "names are escaped");
        assert!(svg.contains(">100 ms<"), "the p99 axis reaches the worst second (15 ms) on a log scale");
        assert_eq!(nice_ceiling(10_000.0), 10_000.0);
        assert_eq!(nice_ceiling(10_001.0), 20_000.0);
        assert_eq!(nice_ceiling(0.3), 0.5);
    }
}
