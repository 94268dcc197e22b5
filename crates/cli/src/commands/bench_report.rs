//! How `tessera bench` writes its records (`tessera_report::Record`: device,
//! backend, arithmetic, model shape, workload, figures, ceilings, the per-op
//! profile when taken): text lines, JSON, CSV or a Markdown table (`--format`,
//! as llama-bench's `-o`), and the per-op profile's text rendering.

use clap::ValueEnum;
use tessera_report::roofline::Roof;
pub use tessera_report::{Profile, Record};

/// How `tessera bench` writes its results on stdout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable lines as the run goes (the default).
    #[default]
    Text,
    /// One JSON object per measurement (JSON Lines); progress goes to stderr.
    Json,
    /// A header and one row per measurement; progress goes to stderr.
    Csv,
    /// A Markdown table; progress goes to stderr.
    Md,
}

/// The per-op profile's text lines.
pub trait ProfileLines {
    /// The profile as text lines (`profile` in the first column), each op
    /// kind's achieved GFLOP/s and GB/s with their share of `ceilings`.
    fn lines(&self, ceilings: Option<&tessera_runtime::Ceilings>) -> Vec<String>;
}

impl ProfileLines for Profile {
    fn lines(&self, ceilings: Option<&tessera_runtime::Ceilings>) -> Vec<String> {
        let mut lines = vec![format!(
            "profile    one run with the device waited on around every op: {:.3} ms wall, {:.3} ms of it between ops (host)",
            self.wall_ms, self.host_ms
        )];
        lines.push(format!(
            "profile    {:<26} {:>10} {:>7} {:>6} {:>9} {:>9} {:>9} {:>7}",
            "op", "ms", "share", "calls", "GFLOP/s", "GB/s", "FLOP/B", "of roof"
        ));
        let roof = ceilings.map(Roof::from_ceilings);
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        for op in &self.ops {
            let placed = match (roof, op.flops, op.bytes) {
                (Some(roof), Some(f), Some(b)) => roof.place(f, b, op.ms * 1e-3),
                _ => None,
            };
            let intensity = op.flops.zip(op.bytes).map(|(f, b)| f / b);
            lines.push(format!(
                "profile    {:<26} {:>10.3} {:>6.1}% {:>6} {:>9} {:>9} {:>9} {:>7}",
                op.op,
                op.ms,
                100.0 * op.share,
                op.calls,
                cell(op.gflop_per_s()),
                cell(op.gb_per_s()),
                cell(intensity.filter(|i| i.is_finite())),
                placed.map_or("-".to_string(), |p| format!(
                    "{:.1}%",
                    100.0 * p.share_of_roof
                ))
            ));
        }
        if self.layers_ms.len() > 1 {
            let layers = &self.layers_ms[1..];
            let mut sorted = layers.to_vec();
            sorted.sort_by(f64::total_cmp);
            lines.push(format!(
                "profile    per layer ({} layers): min {:.3} ms, median {:.3} ms, max {:.3} ms; before the first layer {:.3} ms",
                layers.len(),
                sorted[0],
                sorted[sorted.len() / 2],
                sorted[sorted.len() - 1],
                self.layers_ms[0]
            ));
            for (i, chunk) in layers.chunks(8).enumerate() {
                let cells: Vec<String> = chunk
                    .iter()
                    .enumerate()
                    .map(|(j, ms)| format!("L{} {ms:.3}", i * 8 + j + 1))
                    .collect();
                lines.push(format!("profile    {}", cells.join("  ")));
            }
        }
        lines
    }
}

const CSV_COLUMNS: [&str; 29] = [
    "tessera",
    "commit",
    "device",
    "cpu",
    "backend",
    "arithmetic",
    "model",
    "layers",
    "hidden",
    "ffn",
    "heads",
    "kv_heads",
    "head_dim",
    "workload",
    "docs",
    "doc_tokens",
    "query_tokens",
    "batch_tokens",
    "passes",
    "billed_tokens",
    "runs",
    "median_s",
    "tokens_per_s",
    "docs_per_s",
    "reference_tokens_per_s",
    "matmul_gflop_per_s",
    "ceiling_copy_gb_per_s",
    "ceiling_matmul_gflop_per_s",
    "profile_ms",
];

/// A record's cells and renderings in the bench's formats.
pub trait RecordFormat {
    /// One cell per CSV column.
    fn cells(&self) -> Vec<String>;
    /// The record in `format`; `None` for text, which the run prints as it goes.
    fn render(&self, format: Format) -> anyhow::Result<Option<String>>;
}

impl RecordFormat for Record {
    fn cells(&self) -> Vec<String> {
        let profile = self.profile.as_ref().map_or(String::new(), |p| {
            p.ops
                .iter()
                .map(|o| format!("{}={:.3}", o.op, o.ms))
                .collect::<Vec<_>>()
                .join("; ")
        });
        vec![
            self.tessera.clone(),
            self.commit.clone(),
            self.device.clone(),
            self.cpu.clone(),
            self.backend.clone(),
            self.arithmetic.clone(),
            self.model.clone(),
            self.layers.to_string(),
            self.hidden.to_string(),
            self.ffn.to_string(),
            self.heads.to_string(),
            self.kv_heads.to_string(),
            self.head_dim.to_string(),
            self.workload.clone(),
            self.docs.to_string(),
            self.doc_tokens.to_string(),
            self.query_tokens.to_string(),
            self.batch_tokens.to_string(),
            self.passes.to_string(),
            self.billed_tokens.to_string(),
            self.runs.to_string(),
            format!("{:.6}", self.median_s),
            format!("{:.1}", self.tokens_per_s),
            format!("{:.3}", self.docs_per_s),
            self.reference_tokens_per_s
                .map_or(String::new(), |r| format!("{r:.1}")),
            self.matmul_gflop_per_s
                .map_or(String::new(), |r| format!("{r:.1}")),
            self.ceilings
                .as_ref()
                .map_or(String::new(), |c| format!("{:.2}", c.copy_gb_per_s)),
            self.ceilings
                .as_ref()
                .map_or(String::new(), |c| format!("{:.1}", c.matmul_gflop_per_s)),
            profile,
        ]
    }

    fn render(&self, format: Format) -> anyhow::Result<Option<String>> {
        render_all(std::slice::from_ref(self), format)
    }
}

/// Records in `format`, one header for all (a sweep's table): JSON Lines, CSV
/// or a Markdown table; `None` for text (printed as it went).
pub fn render_all(records: &[Record], format: Format) -> anyhow::Result<Option<String>> {
    Ok(match format {
        Format::Text => None,
        Format::Json => Some(
            records
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<Vec<_>, _>>()?
                .join("\n"),
        ),
        Format::Csv => {
            let mut lines = vec![CSV_COLUMNS.join(",")];
            for record in records {
                let row: Vec<String> = record.cells().iter().map(|c| csv_cell(c)).collect();
                lines.push(row.join(","));
            }
            Some(lines.join("\n"))
        }
        Format::Md => {
            let rule = vec!["---"; CSV_COLUMNS.len()].join(" | ");
            let mut lines = vec![
                format!("| {} |", CSV_COLUMNS.join(" | ")),
                format!("| {rule} |"),
            ];
            for record in records {
                let row: Vec<String> = record
                    .cells()
                    .iter()
                    .map(|c| c.replace('|', "\\|"))
                    .collect();
                lines.push(format!("| {} |", row.join(" | ")));
            }
            Some(lines.join("\n"))
        }
    })
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_cell(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_report::op_cost::OpCost;
    use tessera_runtime::profile::OpTime;

    fn record() -> Record {
        Record {
            tessera: "0.1.0".into(),
            commit: "abc1234".into(),
            device: "cuda:0 NVIDIA H200, model resident 4.60 GB".into(),
            cpu: "AMD EPYC".into(),
            backend: "cuda (NVIDIA H200, sm_90, Mma), w8a16".into(),
            arithmetic: "w8a16".into(),
            flags: "tessera bench --backend cuda --profile".into(),
            model: "m.gguf".into(),
            layers: 36,
            hidden: 2560,
            ffn: 9728,
            heads: 32,
            kv_heads: 8,
            head_dim: 128,
            workload: "rerank".into(),
            docs: 100,
            doc_tokens: 256,
            query_tokens: 32,
            batch_tokens: 32768,
            passes: 1,
            billed_tokens: 36_200,
            runs: 5,
            median_s: 0.5,
            tokens_per_s: 72_400.0,
            docs_per_s: 200.0,
            reference_tokens_per_s: None,
            matmul_gflop_per_s: Some(123.4),
            ceilings: Some(tessera_runtime::Ceilings {
                copy_gb_per_s: 9.5,
                matmul_gflop_per_s: 456.7,
                matmul_shape: "512x2560x2560".into(),
                matmul_kernel: "cuBLAS bf16 GEMM".into(),
                copy_kind: "device-to-device copy of 1024 MiB".into(),
            }),
            no_ceilings: None,
            profile: Some(Profile::from_ops(
                &[
                    OpTime {
                        op: "embedding",
                        layer: 0,
                        seconds: 0.001,
                    },
                    OpTime {
                        op: "attention",
                        layer: 1,
                        seconds: 0.003,
                    },
                ],
                0.005,
                &[(
                    "attention",
                    OpCost {
                        flops: 3e9,
                        bytes: 5e8,
                        bytes_per_call: 0.0,
                    },
                )],
            )),
        }
    }

    #[test]
    fn csv_has_one_cell_per_column_and_quotes_commas() {
        let text = record().render(Format::Csv).unwrap().unwrap();
        let (header, row) = text.split_once('\n').unwrap();
        assert_eq!(header.split(',').count(), CSV_COLUMNS.len());
        // The device and backend names hold commas: quoted, so they stay one cell.
        assert!(row.contains("\"cuda:0 NVIDIA H200, model resident 4.60 GB\""));
        assert!(row.contains("attention=3.000; embedding=1.000"));
    }

    #[test]
    fn json_and_markdown_carry_the_figures_and_the_profile() {
        let json = record().render(Format::Json).unwrap().unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["arithmetic"], "w8a16");
        assert_eq!(value["profile"]["ops"][0]["op"], "attention");
        assert!((value["profile"]["host_ms"].as_f64().unwrap() - 1.0).abs() < 1e-9);
        let md = record().render(Format::Md).unwrap().unwrap();
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].matches('|').count(), CSV_COLUMNS.len() + 1);
        assert_eq!(lines[2].matches(" | ").count(), CSV_COLUMNS.len() - 1);
        assert_eq!(record().render(Format::Text).unwrap(), None);
    }

    #[test]
    fn profile_shares_sum_to_one_and_lines_name_every_layer() {
        let p = record().profile.unwrap();
        let total: f64 = p.ops.iter().map(|o| o.share).sum();
        assert!((total - 1.0).abs() < 1e-12);
        let lines = p.lines(record().ceilings.as_ref());
        assert!(lines.iter().any(|l| l.contains("L1 3.000")));
        assert!(lines[0].contains("1.000 ms of it between ops"));
        // 3 GFLOP and 0.5 GB in 3 ms: 1,000 GFLOP/s, 166.67 GB/s, 6 FLOP per
        // byte; the roof there is min(456.7, 2 × 9.5 × 6 = 114) GFLOP/s, which
        // the op is over (877.2%): measured ceilings need not bound a profile.
        let attention = lines.iter().find(|l| l.contains("attention")).unwrap();
        assert!(attention.contains("1000.00"), "{attention}");
        assert!(attention.contains("166.67"), "{attention}");
        assert!(attention.contains("6.00"), "{attention}");
        assert!(attention.contains("877.2%"), "{attention}");
        // The embedding has no cost model: no rates.
        let embedding = lines.iter().find(|l| l.contains("embedding")).unwrap();
        assert!(embedding.trim_end().ends_with("-"), "{embedding}");
    }
}
