//! The page's charts as SVG text, drawn with plotters' SVG backend: a
//! roofline, stacked shares, lines and bars. Each chart has a title and a
//! subtitle line (where the page puts the runs' ratios); colours come from one
//! palette by index, so a run keeps its colour across charts.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::roofline::Roof;

const SIZE: (u32, u32) = (760, 440);
const FONT: &str = "sans-serif";

/// Colours a series or run is drawn in, by index (wrapping).
const PALETTE: [RGBColor; 16] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 128),
    RGBColor(170, 110, 40),
    RGBColor(0, 128, 128),
    RGBColor(128, 0, 0),
    RGBColor(60, 180, 75),
    RGBColor(240, 50, 230),
];

/// An axis tick: whole numbers plainly, thousands as `k` and millions as `M`,
/// small values with two significant digits.
pub fn tick(v: f64) -> String {
    let a = v.abs();
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if a >= 1e6 {
        trim(format!("{:.1}", v / 1e6)) + "M"
    } else if a >= 1e3 {
        trim(format!("{:.1}", v / 1e3)) + "k"
    } else if a >= 1.0 || a == 0.0 {
        trim(format!("{v:.1}"))
    } else {
        let digits = (-a.log10().floor()) as usize + 1;
        trim(format!("{v:.digits$}"))
    }
}

/// The colour of index `i`, as a CSS colour for the page's legends.
pub fn css_colour(i: usize) -> String {
    let RGBColor(r, g, b) = PALETTE[i % PALETTE.len()];
    format!("#{r:02x}{g:02x}{b:02x}")
}

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Points of one series: its name, colour index, marker (0 circle, 1
/// triangle, 2 square), points and a label per point (may be empty).
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub name: String,
    pub colour: usize,
    pub marker: usize,
    pub points: Vec<(f64, f64)>,
    pub labels: Vec<String>,
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// An SVG of `SIZE` drawn by `draw` under a title and a subtitle.
fn svg(
    title: &str,
    subtitle: &str,
    draw: impl FnOnce(&Area<'_>) -> Result<(), String>,
) -> Result<String, String> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (top, body) = root.split_vertically(46);
        top.draw(&Text::new(
            title.to_string(),
            (12, 6),
            (FONT, 17).into_font(),
        ))
        .map_err(|e| e.to_string())?;
        top.draw(&Text::new(
            subtitle.to_string(),
            (12, 27),
            (FONT, 12).into_font().color(&RGBColor(80, 80, 80)),
        ))
        .map_err(|e| e.to_string())?;
        draw(&body)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(text)
}

/// A logarithmic range around `values` (a decade of room each side).
fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (low, high) = values
        .filter(|v| *v > 0.0 && v.is_finite())
        .fold((f64::INFINITY, 0.0f64), |(l, h), v| (l.min(v), h.max(v)));
    if !low.is_finite() {
        return 0.1..10.0;
    }
    let floor = 10f64.powf(low.log10().floor());
    let ceil = 10f64.powf(high.log10().ceil());
    if ceil <= floor {
        floor / 10.0..ceil * 10.0
    } else {
        floor..ceil
    }
}

/// Draws `series` as markers (with their labels) on `chart`, each series in
/// the legend.
macro_rules! draw_markers {
    ($chart:expr, $series:expr, $line:expr) => {
        for s in $series {
            let c = colour(s.colour);
            let style = c.filled();
            if $line && s.points.len() > 1 {
                $chart
                    .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                    .map_err(|e| e.to_string())?;
            }
            let labels = s
                .points
                .iter()
                .enumerate()
                .map(|(i, p)| (*p, s.labels.get(i).cloned().unwrap_or_default()));
            let font = (FONT, 11).into_font().color(&c);
            let name = s.name.clone();
            match s.marker % 3 {
                0 => {
                    $chart
                        .draw_series(labels.map(|(p, l)| {
                            EmptyElement::at(p)
                                + Circle::new((0, 0), 4, style)
                                + Text::new(l, (6, -12), font.clone())
                        }))
                        .map_err(|e| e.to_string())?
                        .label(name)
                        .legend(move |(x, y)| Circle::new((x + 6, y), 4, style));
                }
                1 => {
                    $chart
                        .draw_series(labels.map(|(p, l)| {
                            EmptyElement::at(p)
                                + TriangleMarker::new((0, 0), 5, style)
                                + Text::new(l, (6, 2), font.clone())
                        }))
                        .map_err(|e| e.to_string())?
                        .label(name)
                        .legend(move |(x, y)| TriangleMarker::new((x + 6, y), 5, style));
                }
                _ => {
                    $chart
                        .draw_series(labels.map(|(p, l)| {
                            EmptyElement::at(p)
                                + Rectangle::new([(-4, -4), (4, 4)], style)
                                + Text::new(l, (6, 2), font.clone())
                        }))
                        .map_err(|e| e.to_string())?
                        .label(name)
                        .legend(move |(x, y)| {
                            Rectangle::new([(x + 2, y - 4), (x + 10, y + 4)], style)
                        });
                }
            }
        }
    };
}

/// A roofline: each roof (name, colour, roof) as its two lines, each series's
/// points (intensity, GFLOP/s) placed under them, on log-log axes.
pub fn roofline(
    title: &str,
    subtitle: &str,
    roofs: &[(String, usize, Roof)],
    series: &[Series],
) -> Result<String, String> {
    let xs = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(roofs.iter().map(|r| r.2.ridge()));
    let x_range = log_range(xs);
    let ys = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(roofs.iter().map(|r| r.2.gflop_per_s * 1.5))
        .chain(roofs.iter().map(|r| r.2.attainable(x_range.start)));
    let y_range = log_range(ys);
    svg(title, subtitle, |area| {
        let mut chart = ChartBuilder::on(area)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(x_range.clone().log_scale(), y_range.clone().log_scale())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("arithmetic intensity, FLOP per minimum byte")
            .y_desc("GFLOP/s")
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .label_style((FONT, 12))
            .draw()
            .map_err(|e| e.to_string())?;
        for (name, c, roof) in roofs {
            let (low, high) = (x_range.start, x_range.end);
            let points = [
                (low, roof.attainable(low)),
                (roof.ridge(), roof.gflop_per_s),
                (high, roof.gflop_per_s),
            ];
            let colour = colour(*c);
            chart
                .draw_series(LineSeries::new(points, colour.mix(0.6).stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(format!("roof: {name}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 14, y)], colour.stroke_width(2))
                });
        }
        draw_markers!(chart, series, false);
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font((FONT, 11))
            .draw()
            .map_err(|e| e.to_string())
    })
}

/// Lines with markers: `series` over x (log₂ when `log_x`) and y (tokens/s).
pub fn lines(
    title: &str,
    subtitle: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[Series],
) -> Result<String, String> {
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let x_range = log_range(xs.iter().copied());
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    // Headroom above the highest point for the legend in the upper left.
    let y_range = 0.0..(y_max * 1.6).max(1e-9);
    svg(title, subtitle, |area| {
        let mut chart = ChartBuilder::on(area)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x_range.clone().log_scale(), y_range.clone())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .label_style((FONT, 12))
            .draw()
            .map_err(|e| e.to_string())?;
        draw_markers!(chart, series, true);
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font((FONT, 11))
            .draw()
            .map_err(|e| e.to_string())
    })
}

/// Stacked bars, one per `bars` entry (name, segments of (kind, percent)),
/// each kind in its colour and in the legend under `kinds`' names.
pub fn stacked(
    title: &str,
    subtitle: &str,
    y_desc: &str,
    bars: &[(String, Vec<(usize, f64)>)],
    kinds: &[String],
) -> Result<String, String> {
    let n = bars.len().max(1);
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    svg(title, subtitle, |area| {
        let (plot, legend) = area.split_horizontally(SIZE.0 - 210);
        let mut chart = ChartBuilder::on(&plot)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..100.0)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc(y_desc)
            .y_label_formatter(&|v| tick(*v))
            .label_style((FONT, 11))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .draw()
            .map_err(|e| e.to_string())?;
        for (bar, (_, segments)) in bars.iter().enumerate() {
            let mut low = 0.0;
            for &(kind, percent) in segments {
                let high = low + percent;
                let mut rect = Rectangle::new(
                    [
                        (SegmentValue::Exact(bar), low),
                        (SegmentValue::Exact(bar + 1), high),
                    ],
                    colour(kind).filled(),
                );
                rect.set_margin(0, 0, 18, 18);
                chart.draw_series([rect]).map_err(|e| e.to_string())?;
                low = high;
            }
        }
        for (i, kind) in kinds.iter().enumerate() {
            let y = 16 + 18 * i as i32;
            legend
                .draw(&Rectangle::new(
                    [(4, y - 6), (16, y + 6)],
                    colour(i).filled(),
                ))
                .map_err(|e| e.to_string())?;
            legend
                .draw(&Text::new(
                    kind.clone(),
                    (22, y - 6),
                    (FONT, 11).into_font(),
                ))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// One bar per entry (name, value, colour) from zero, with a dashed line at 1
/// when `unit_line` (ratios).
pub fn bars(
    title: &str,
    subtitle: &str,
    y_desc: &str,
    bars: &[(String, f64, usize)],
    unit_line: bool,
) -> Result<String, String> {
    let n = bars.len().max(1);
    let top = bars.iter().map(|b| b.1).fold(1.0f64, f64::max) * 1.15;
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    svg(title, subtitle, |area| {
        let mut chart = ChartBuilder::on(area)
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..top)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc(y_desc)
            .y_label_formatter(&|v| tick(*v))
            .label_style((FONT, 11))
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, (_, value, c)) in bars.iter().enumerate() {
            let mut rect = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), *value),
                ],
                colour(*c).filled(),
            );
            rect.set_margin(0, 0, 30, 30);
            chart.draw_series([rect]).map_err(|e| e.to_string())?;
        }
        if unit_line {
            chart
                .draw_series(DashedLineSeries::new(
                    [(SegmentValue::Exact(0), 1.0), (SegmentValue::Exact(n), 1.0)],
                    6,
                    4,
                    BLACK.mix(0.6).stroke_width(1),
                ))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_short() {
        assert_eq!(tick(350_000.0), "350k");
        assert_eq!(tick(1_500_000.0), "1.5M");
        assert_eq!(tick(100.0), "100");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(0.01), "0.01");
        assert_eq!(tick(0.0), "0");
    }

    #[test]
    fn log_ranges_cover_whole_decades() {
        assert_eq!(log_range([2.0, 300.0].into_iter()), 1.0..1000.0);
        assert_eq!(log_range([10.0].into_iter()), 1.0..100.0);
        assert_eq!(log_range(std::iter::empty()), 0.1..10.0);
    }

    #[test]
    fn a_roofline_is_svg_with_its_points_and_roofs() {
        let roof = Roof {
            gflop_per_s: 100.0,
            gb_per_s: 10.0,
        };
        let series = [Series {
            name: "fast".into(),
            colour: 0,
            marker: 0,
            points: vec![(2.0, 15.0), (50.0, 70.0)],
            labels: vec!["rope".into(), "matmul".into()],
        }];
        let svg = roofline("t", "s", &[("cpu".into(), 0, roof)], &series).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(
            svg.contains(">\nmatmul\n<") || svg.contains(">matmul<"),
            "{svg}"
        );
        assert!(svg.contains("roof: cpu"));
        // Two markers, as circles.
        assert_eq!(
            svg.matches("<circle").count(),
            2 + 1,
            "two points and the legend's"
        );
    }
}
