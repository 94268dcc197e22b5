//! The report page: one HTML file with inline CSS and the charts as inline
//! SVG (no script, no font, no request), a table of the numbers under each
//! chart, every run's environment, and how to read it.

use std::fmt::Write as _;

use crate::charts::{self, css_colour, Series};
use crate::record::device_name;
use crate::roofline::Roof;
use crate::runs::{driver, mean_ratio, ratio, Run};
use crate::ReportError;

/// A section of the page: its HTML from the runs.
type Section = fn(&[Run]) -> Result<String, ReportError>;

/// The page of `runs` (the first is the baseline) read from `sources`.
pub fn render(
    runs: &[Run],
    sources: &[String],
    progress: &mut dyn FnMut(&str),
) -> Result<String, ReportError> {
    let sections: [(&str, Section); 5] = [
        ("runs side by side", runs_section),
        ("rooflines", roofline_section),
        ("time share per op kind", share_section),
        ("tokens/s against batch tokens", |runs| {
            sweep_section(runs, Axis::Batch)
        }),
        ("tokens/s against document length", |runs| {
            sweep_section(runs, Axis::DocTokens)
        }),
    ];
    let mut body = String::new();
    for (i, (name, section)) in sections.iter().enumerate() {
        progress(&format!("[{}/{}] {name}", i + 1, sections.len()));
        body += &section(runs)?;
    }
    let mut page = String::new();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Tessera benchmark report</title><style>{STYLE}</style></head><body>\
         <h1>Tessera benchmark report</h1><p class=\"note\">From {} ({} runs, {} records). \
         The baseline of every ratio is the first run, <b>{}</b>. {READING}</p>{body}</body></html>\n",
        escape(&sources.join(", ")),
        runs.len(),
        runs.iter().map(|r| r.records.len()).sum::<usize>(),
        escape(&runs[0].label),
    );
    Ok(page)
}

const STYLE: &str = "body{font-family:sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 12px}\
h1{font-size:22px}h2{font-size:18px;margin-top:36px;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;font-size:12px;margin:8px 0 20px}\
td,th{border:1px solid #ddd;padding:3px 6px;text-align:right;vertical-align:top}\
th{background:#f3f3f3}td.t,th.t{text-align:left}.note{font-size:13px;color:#444}\
figure{margin:0}svg{max-width:100%;height:auto}.swatch{display:inline-block;width:10px;height:10px;margin-right:4px}";

const READING: &str = "Each chart has the numbers it draws in the table under it. \
The roofline places each op kind of a run's profiled pass at its arithmetic intensity \
(FLOPs per minimum byte: inputs read once, results written once, weights once per call) \
and its achieved GFLOP/s, under the roofs the run measured on its own device: the compute \
roof is the ceiling matmul (the CPU fast path's own Q8_0 kernel, or cuBLAS bf16 on CUDA), \
the memory roof a large copy's traffic (bytes read plus written per second). \
An op far under its roof has room to improve; an op on it does not, at that intensity.";

/// The two sweep axes a chart can be drawn over.
#[derive(Clone, Copy)]
enum Axis {
    Batch,
    DocTokens,
}

fn draw_error(chart: &str) -> impl Fn(String) -> ReportError + '_ {
    move |message| ReportError::Draw {
        chart: chart.to_string(),
        message,
    }
}

/// Ratio lines for a subtitle: each run against `base`, by `value`.
fn ratio_line(runs: &[&Run], value: impl Fn(&Run) -> Option<f64>, what: &str) -> String {
    let Some(base) = runs.first() else {
        return String::new();
    };
    if runs.len() < 2 {
        return format!("one run: {} (no ratio)", base.label);
    }
    let parts: Vec<String> = runs[1..]
        .iter()
        .map(|r| match (value(r), value(base)) {
            (Some(v), Some(b)) => match ratio(v, b) {
                Some(x) => format!("{} {}×", r.label, number(x)),
                None => format!("{} —", r.label),
            },
            _ => format!("{} —", r.label),
        })
        .collect();
    format!("{what}, against {}: {}", base.label, parts.join("; "))
}

fn runs_section(runs: &[Run]) -> Result<String, ReportError> {
    let base = &runs[0];
    let ratios: Vec<Option<(f64, usize)>> = runs.iter().map(|r| mean_ratio(r, base)).collect();
    let bars: Vec<(String, f64, usize)> = runs
        .iter()
        .zip(&ratios)
        .enumerate()
        .map(|(i, (r, m))| (r.label.clone(), m.map_or(0.0, |m| m.0), i))
        .collect();
    let all: Vec<&Run> = runs.iter().collect();
    let subtitle = ratio_line(&all, |r| mean_ratio(r, base).map(|m| m.0), "tokens/s");
    let svg = charts::bars(
        "Runs side by side: end-to-end tokens/s against the first run",
        &subtitle,
        "tokens/s ÷ first run's (geometric mean)",
        &bars,
        true,
    )
    .map_err(draw_error("runs side by side"))?;
    let mut rows = String::new();
    for (i, (run, m)) in runs.iter().zip(&ratios).enumerate() {
        let r = run.first();
        let ceilings = match (run.ceilings(), run.no_ceilings()) {
            (Some(c), _) => format!(
                "{} GFLOP/s ({} at {}); copy {} GB/s ({})",
                number(c.matmul_gflop_per_s),
                c.matmul_kernel,
                c.matmul_shape,
                number(c.copy_gb_per_s),
                c.copy_kind
            ),
            (None, Some(why)) => format!("none: {why}"),
            (None, None) => "not measured".to_string(),
        };
        let _ = write!(
            rows,
            "<tr><td class=\"t\">{}</td><td class=\"t\">{}</td><td class=\"t\">{}</td><td class=\"t\">{}</td>\
             <td class=\"t\">{}</td><td class=\"t\">{}</td><td class=\"t\">{} {}</td><td class=\"t\">{} ({} layers, hidden {}, ffn {}, heads {}/{}×{})</td>\
             <td class=\"t\">{}</td><td class=\"t\">{}</td><td>{}</td><td>{}</td></tr>",
            swatch(i, &run.label),
            escape(device_name(&r.device)),
            escape(&driver(r).unwrap_or_else(|| "—".into())),
            escape(&r.backend),
            escape(&r.arithmetic),
            escape(&r.cpu),
            escape(&r.commit),
            escape(&r.tessera),
            escape(&r.model),
            r.layers,
            r.hidden,
            r.ffn,
            r.heads,
            r.kv_heads,
            r.head_dim,
            escape(if r.flags.is_empty() { "—" } else { &r.flags }),
            escape(&ceilings),
            run.records.len(),
            m.map_or("—".into(), |(x, n)| format!("{}× ({n} points)", number(x))),
        );
    }
    Ok(format!(
        "<h2>Runs side by side</h2><figure>{svg}</figure>\
         <table><tr><th class=\"t\">run</th><th class=\"t\">device</th><th class=\"t\">driver</th>\
         <th class=\"t\">backend</th><th class=\"t\">arithmetic</th><th class=\"t\">cpu</th>\
         <th class=\"t\">commit</th><th class=\"t\">model</th><th class=\"t\">flags</th>\
         <th class=\"t\">ceilings (measured in the run)</th><th>records</th>\
         <th>tokens/s ÷ first run's</th></tr>{rows}</table>"
    ))
}

/// Sums of a run's profiled op FLOPs and milliseconds, for a rate.
fn op_gflop_per_s(run: &Run) -> Option<f64> {
    let (_, p) = run.profiled()?;
    let (flops, ms) = p
        .ops
        .iter()
        .filter_map(|o| o.flops.map(|f| (f, o.ms)))
        .fold((0.0, 0.0), |(f, m), (a, b)| (f + a, m + b));
    (ms > 0.0).then(|| flops / (ms * 1e-3) / 1e9)
}

fn roofline_section(runs: &[Run]) -> Result<String, ReportError> {
    let mut out = String::from("<h2>Rooflines</h2>");
    let mut devices: Vec<&str> = Vec::new();
    for r in runs {
        let d = device_name(&r.first().device);
        if !devices.contains(&d) {
            devices.push(d);
        }
    }
    for device in devices {
        let on: Vec<(usize, &Run)> = runs
            .iter()
            .enumerate()
            .filter(|(_, r)| device_name(&r.first().device) == device)
            .collect();
        let roofs: Vec<(String, usize, Roof)> = on
            .iter()
            .filter_map(|(i, r)| r.roof().map(|roof| (r.label.clone(), *i, roof)))
            .collect();
        let mut series = Vec::new();
        let mut rows = String::new();
        let base = on[0].1;
        for (k, (i, run)) in on.iter().enumerate() {
            let Some((record, profile)) = run.profiled() else {
                continue;
            };
            let roof = run.roof();
            let mut s = Series {
                name: format!(
                    "{} ({} docs × {} tokens)",
                    run.label, record.docs, record.doc_tokens
                ),
                colour: *i,
                marker: k,
                ..Series::default()
            };
            for op in &profile.ops {
                let seconds = op.ms * 1e-3;
                let placed = match (op.flops, op.bytes) {
                    (Some(f), Some(b)) => roof
                        .unwrap_or(Roof {
                            gflop_per_s: f64::INFINITY,
                            gb_per_s: f64::INFINITY,
                        })
                        .place(f, b, seconds),
                    _ => None,
                };
                if let Some(p) = placed {
                    s.points.push((p.intensity, p.gflop_per_s));
                    s.labels.push(op.op.clone());
                }
                let base_rate = base
                    .profiled()
                    .and_then(|(_, bp)| bp.ops.iter().find(|o| o.op == op.op))
                    .and_then(|o| o.gflop_per_s());
                let vs_base = match (op.gflop_per_s(), base_rate) {
                    (Some(v), Some(b)) if !std::ptr::eq(*run, base) => {
                        ratio(v, b).map_or("—".into(), |x| format!("{}×", number(x)))
                    }
                    _ => "—".into(),
                };
                let pct = |v: f64| format!("{:.1}%", 100.0 * v);
                let (roof_cells, bound) = match placed.filter(|_| roof.is_some()) {
                    Some(p) => (
                        format!(
                            "<td>{}</td><td>{}</td><td>{}</td>",
                            pct(p.share_of_compute),
                            pct(p.share_of_memory),
                            pct(p.share_of_roof)
                        ),
                        p.bound.name(),
                    ),
                    None => ("<td>—</td><td>—</td><td>—</td>".into(), "—"),
                };
                let _ = write!(
                    rows,
                    "<tr><td class=\"t\">{}</td><td class=\"t\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td>{}</td><td>{}</td><td>{}</td>{roof_cells}<td class=\"t\">{bound}</td><td>{vs_base}</td></tr>",
                    escape(&op.op),
                    swatch(*i, &run.label),
                    number(op.ms),
                    op.calls,
                    op.flops.map_or("—".into(), |f| number(f / 1e9)),
                    op.bytes.map_or("—".into(), |b| number(b / 1e6)),
                    placed.map_or("—".into(), |p| number(p.intensity)),
                    op.gflop_per_s().map_or("—".into(), number),
                    op.gb_per_s().map_or("—".into(), number),
                );
            }
            series.push(s);
        }
        if series.is_empty() {
            let _ = write!(
                out,
                "<p class=\"note\">{}: no profiled records (make them with <code>tessera bench --profile</code> \
                 or <code>--sweep --profile</code>).</p>",
                escape(device)
            );
            continue;
        }
        let runs_here: Vec<&Run> = on.iter().map(|(_, r)| *r).collect();
        let mut subtitle = ratio_line(&runs_here, op_gflop_per_s, "op GFLOP/s");
        if roofs.is_empty() {
            let why = on
                .iter()
                .find_map(|(_, r)| r.no_ceilings())
                .unwrap_or("not measured");
            subtitle = format!("no roofs ({why}); {subtitle}");
        }
        let svg = charts::roofline(&format!("Roofline: {device}"), &subtitle, &roofs, &series)
            .map_err(draw_error("roofline"))?;
        let roof_text: Vec<String> = roofs
            .iter()
            .map(|(name, _, r)| {
                format!(
                    "{}: compute {} GFLOP/s, memory {} GB/s, ridge {} FLOP/byte",
                    escape(name),
                    number(r.gflop_per_s),
                    number(r.gb_per_s),
                    number(r.ridge())
                )
            })
            .collect();
        let _ = write!(
            out,
            "<h3>{}</h3><figure>{svg}</figure><p class=\"note\">Roofs: {}.</p>\
             <table><tr><th class=\"t\">op</th><th class=\"t\">run</th><th>ms</th><th>calls</th><th>GFLOP</th>\
             <th>MB (minimum)</th><th>FLOP/byte</th><th>GFLOP/s</th><th>GB/s</th><th>% of compute roof</th>\
             <th>% of memory roof</th><th>% of roof here</th><th class=\"t\">bound</th><th>GFLOP/s ÷ first run's</th></tr>{rows}</table>",
            escape(device),
            if roof_text.is_empty() { "none measured".into() } else { roof_text.join("; ") },
        );
    }
    Ok(out)
}

fn share_section(runs: &[Run]) -> Result<String, ReportError> {
    let profiled: Vec<(usize, &Run)> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.profiled().is_some())
        .collect();
    if profiled.is_empty() {
        return Ok(
            "<h2>Time share per op kind</h2><p class=\"note\">No profiled records.</p>".into(),
        );
    }
    let mut kinds: Vec<String> = Vec::new();
    for (_, r) in &profiled {
        if let Some((_, p)) = r.profiled() {
            for op in &p.ops {
                if !kinds.contains(&op.op) {
                    kinds.push(op.op.clone());
                }
            }
        }
    }
    kinds.push("host (between ops)".into());
    let mut bars = Vec::new();
    let mut rows = String::new();
    let base = profiled[0].1.profiled();
    for (i, run) in &profiled {
        let Some((record, p)) = run.profiled() else {
            continue;
        };
        let wall = p.wall_ms.max(f64::MIN_POSITIVE);
        let mut segments = Vec::new();
        for (k, kind) in kinds.iter().enumerate() {
            let ms = if k + 1 == kinds.len() {
                Some(p.host_ms)
            } else {
                p.ops.iter().find(|o| &o.op == kind).map(|o| o.ms)
            };
            let Some(ms) = ms else { continue };
            segments.push((k, 100.0 * ms / wall));
            let base_ms = base.and_then(|(_, bp)| {
                if k + 1 == kinds.len() {
                    Some(bp.host_ms)
                } else {
                    bp.ops.iter().find(|o| &o.op == kind).map(|o| o.ms)
                }
            });
            let vs = match base_ms {
                Some(b) if *i != profiled[0].0 => {
                    ratio(ms, b).map_or("—".into(), |x| format!("{}×", number(x)))
                }
                _ => "—".into(),
            };
            let _ = write!(
                rows,
                "<tr><td class=\"t\">{}</td><td class=\"t\">{}</td><td>{}</td><td>{:.1}%</td><td>{vs}</td></tr>",
                swatch(k, kind),
                swatch(*i, &run.label),
                number(ms),
                100.0 * ms / wall,
            );
        }
        bars.push((
            format!(
                "{} ({}×{})",
                run.arithmetic_name(),
                record.docs,
                record.doc_tokens
            ),
            segments,
        ));
    }
    let runs_here: Vec<&Run> = profiled.iter().map(|(_, r)| *r).collect();
    let subtitle = ratio_line(
        &runs_here,
        |r| {
            r.profiled()
                .map(|(rec, p)| rec.billed_tokens as f64 / (p.wall_ms * 1e-3))
        },
        "profiled pass tokens/s",
    );
    let svg = charts::stacked(
        "Time share per op kind (one profiled run each)",
        &subtitle,
        "% of the profiled wall time",
        &bars,
        &kinds,
    )
    .map_err(draw_error("time share"))?;
    Ok(format!(
        "<h2>Time share per op kind</h2><figure>{svg}</figure>\
         <table><tr><th class=\"t\">op</th><th class=\"t\">run</th><th>ms</th><th>share of wall</th>\
         <th>ms ÷ first run's</th></tr>{rows}</table>"
    ))
}

fn sweep_section(runs: &[Run], axis: Axis) -> Result<String, ReportError> {
    let (title, x_desc, other) = match axis {
        Axis::Batch => (
            "Tokens/s against batch tokens",
            "tokens per forward pass",
            "tokens per document",
        ),
        Axis::DocTokens => (
            "Tokens/s against document length",
            "tokens per document",
            "batch tokens",
        ),
    };
    let mut series = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let points = run.points();
        let Some(docs) = points.iter().map(|(p, _)| p.0).max() else {
            continue;
        };
        let mut others: Vec<usize> = points
            .iter()
            .filter(|(p, _)| p.0 == docs)
            .map(|(p, _)| match axis {
                Axis::Batch => p.1,
                Axis::DocTokens => p.3,
            })
            .collect();
        others.dedup();
        others.sort_unstable();
        others.dedup();
        for (j, o) in others.iter().enumerate() {
            let mut pts: Vec<(f64, f64)> = points
                .iter()
                .filter(|(p, _)| {
                    p.0 == docs
                        && (match axis {
                            Axis::Batch => p.1,
                            Axis::DocTokens => p.3,
                        }) == *o
                })
                .map(|(p, t)| {
                    (
                        match axis {
                            Axis::Batch => p.3,
                            Axis::DocTokens => p.1,
                        } as f64,
                        *t,
                    )
                })
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            series.push(Series {
                name: format!("{}, {docs} docs, {o} {other}", run.label),
                colour: i + runs.len() * j,
                marker: i,
                points: pts,
                labels: Vec::new(),
            });
        }
    }
    let heading = format!("<h2>{title}</h2>");
    if series.is_empty() {
        return Ok(heading
            + "<p class=\"note\">No rerank records (make them with <code>tessera bench --sweep --out FILE</code>).</p>");
    }
    let base = &runs[0];
    let all: Vec<&Run> = runs.iter().collect();
    let subtitle = ratio_line(
        &all,
        |r| mean_ratio(r, base).map(|m| m.0),
        "tokens/s (geometric mean over shared points)",
    );
    let svg = charts::lines(title, &subtitle, (x_desc, "billed tokens/s"), &series)
        .map_err(draw_error(title))?;
    // The table: every point any run measured, each run's tokens/s and ratio.
    let mut points: Vec<crate::runs::Point> = runs
        .iter()
        .flat_map(|r| r.points())
        .map(|(p, _)| p)
        .collect();
    points.sort_unstable();
    points.dedup();
    let mut head = String::from(
        "<tr><th>docs</th><th>tokens per doc</th><th>query tokens</th><th>batch tokens</th>",
    );
    for (i, r) in runs.iter().enumerate() {
        let _ = write!(head, "<th>{} tokens/s</th>", swatch(i, &r.label));
        if i > 0 {
            let _ = write!(head, "<th>÷ first run's</th>");
        }
    }
    head += "</tr>";
    let mut rows = String::new();
    for p in points {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            p.0, p.1, p.2, p.3
        );
        for (i, r) in runs.iter().enumerate() {
            let t = r.at(p);
            let _ = write!(rows, "<td>{}</td>", t.map_or("—".into(), number));
            if i > 0 {
                let x = t.zip(base.at(p)).and_then(|(t, b)| ratio(t, b));
                let _ = write!(
                    rows,
                    "<td>{}</td>",
                    x.map_or("—".into(), |x| format!("{}×", number(x)))
                );
            }
        }
        rows += "</tr>";
    }
    Ok(format!(
        "{heading}<figure>{svg}</figure><table>{head}{rows}</table>"
    ))
}

impl Run {
    /// The arithmetic and device kind, for a bar's short label.
    fn arithmetic_name(&self) -> String {
        let r = self.first();
        let device = r.backend.split([' ', '-']).next().unwrap_or("");
        format!("{device} {}", r.arithmetic)
    }
}

/// A coloured square and the escaped name.
fn swatch(colour: usize, name: &str) -> String {
    format!(
        "<span class=\"swatch\" style=\"background:{}\"></span>{}",
        css_colour(colour),
        escape(name)
    )
}

/// A figure with 3–4 significant digits, thousands unseparated.
pub(crate) fn number(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.001 {
        format!("{v:.3}")
    } else if a == 0.0 {
        "0".into()
    } else {
        format!("{v:.2e}")
    }
}

/// `text` safe inside HTML text and attribute values.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::{group, tests::record};

    #[test]
    fn html_is_escaped_and_numbers_are_short() {
        assert_eq!(
            escape("<a href=\"x\">&</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(number(12345.6), "12346");
        assert_eq!(number(4.56789), "4.57");
        assert_eq!(number(0.25), "0.250");
    }

    #[test]
    fn two_runs_show_both_and_their_ratio_on_every_chart() {
        let mut records = Vec::new();
        for (arith, scale) in [("fast", 1.0), ("reference", 0.125)] {
            for t in [64, 256] {
                for b in [1024, 4096] {
                    records.push(record(arith, (4, t, 32, b), 800.0 * scale));
                }
            }
        }
        let runs = group(records);
        let mut steps = Vec::new();
        let page = render(&runs, &["a.jsonl".into()], &mut |s| {
            steps.push(s.to_string())
        })
        .unwrap();
        assert_eq!(steps.len(), 5);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(!page.contains("<script"));
        assert!(
            !page.contains("http://")
                || page.matches("http://").count()
                    == page.matches("http://www.w3.org/2000/svg").count()
        );
        // Every sweep point's ratio is 1/8, and so is the geometric mean each
        // chart's subtitle gives.
        assert!(page.matches("0.125×").count() >= 4 + 3, "{page}");
        // The rerank charts and the runs chart, each an SVG; no profile, so no roofline.
        assert_eq!(page.matches("<svg").count(), 3);
        assert!(page.contains("no profiled records"));
    }
}
