//! `tessera report`: one self-contained HTML page (inline SVG charts, no
//! script, no request) from the JSON Lines records of `tessera bench` —
//! rooflines, time shares, the sweep's tokens/s, several runs side by side
//! with their ratios, each run's environment (`tessera_report`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

#[derive(Args)]
pub struct ReportArgs {
    /// JSON Lines files of `tessera bench --format json` or `--sweep --out`
    /// (each line one record; blank lines are skipped).
    #[arg(required = true, value_name = "RESULTS.jsonl")]
    results: Vec<PathBuf>,
    /// Where the page is written.
    #[arg(long, value_name = "FILE", default_value = "report.html")]
    out: PathBuf,
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let mut records = Vec::new();
    let mut sources = Vec::new();
    for path in &args.results {
        let read = tessera_report::read_records(path)?;
        eprintln!("read {} records from {}", read.len(), path.display());
        records.extend(read);
        sources.push(path.display().to_string());
    }
    let page = tessera_report::render(records, &sources, &mut |step| eprintln!("report {step}"))?;
    std::fs::write(&args.out, &page).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "wrote {} ({} KB)",
        args.out.display(),
        page.len().div_ceil(1024)
    );
    Ok(())
}
