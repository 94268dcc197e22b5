//! Records grouped into runs — one device, backend, arithmetic, commit and
//! model each — in the order first seen; the first run is the baseline every
//! other is compared with, point by point.

use crate::record::{device_name, Profile, Record};
use crate::roofline::Roof;

/// One run: its records and what the page reads from them.
#[derive(Clone, Debug)]
pub struct Run {
    /// Short and unique among the runs: arithmetic, device, commit.
    pub label: String,
    pub records: Vec<Record>,
}

/// A workload point of the rerank sweep: documents, tokens per document,
/// query tokens, batch tokens.
pub type Point = (usize, usize, usize, usize);

impl Run {
    /// The record that describes the run (its first).
    pub fn first(&self) -> &Record {
        &self.records[0]
    }

    /// The last ceilings measured in the run.
    pub fn ceilings(&self) -> Option<&tessera_runtime::Ceilings> {
        self.records.iter().rev().find_map(|r| r.ceilings.as_ref())
    }

    pub fn roof(&self) -> Option<Roof> {
        self.ceilings().map(Roof::from_ceilings)
    }

    /// Why the run has no ceilings, as its records say.
    pub fn no_ceilings(&self) -> Option<&str> {
        self.records.iter().find_map(|r| r.no_ceilings.as_deref())
    }

    /// The profiled record of the largest workload (most billed tokens).
    pub fn profiled(&self) -> Option<(&Record, &Profile)> {
        self.records
            .iter()
            .filter_map(|r| r.profile.as_ref().map(|p| (r, p)))
            .max_by_key(|(r, _)| r.billed_tokens)
    }

    /// Tokens/s at each rerank point (the last record of a point counts).
    pub fn points(&self) -> Vec<(Point, f64)> {
        let mut points: Vec<(Point, f64)> = Vec::new();
        for r in self.records.iter().filter(|r| r.workload == "rerank") {
            let point = (r.docs, r.doc_tokens, r.query_tokens, r.batch_tokens);
            match points.iter_mut().find(|(p, _)| *p == point) {
                Some(entry) => entry.1 = r.tokens_per_s,
                None => points.push((point, r.tokens_per_s)),
            }
        }
        points.sort_by_key(|(p, _)| *p);
        points
    }

    /// Tokens/s at `point`.
    pub fn at(&self, point: Point) -> Option<f64> {
        self.points()
            .into_iter()
            .find(|(p, _)| *p == point)
            .map(|(_, t)| t)
    }
}

/// Records grouped by device, backend, arithmetic, commit and model, in the
/// order first seen.
pub fn group(records: Vec<Record>) -> Vec<Run> {
    let key = |r: &Record| {
        (
            device_name(&r.device).to_string(),
            r.backend.clone(),
            r.arithmetic.clone(),
            r.commit.clone(),
            r.model.clone(),
        )
    };
    let mut groups: Vec<(_, Vec<Record>)> = Vec::new();
    for record in records {
        let k = key(&record);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, members)) => members.push(record),
            None => groups.push((k, vec![record])),
        }
    }
    let mut runs: Vec<Run> = groups
        .into_iter()
        .map(|((device, _, arithmetic, commit, _), records)| Run {
            // A commit by its short hash, as git abbreviates it.
            label: format!(
                "{arithmetic} · {} · {}",
                short(&device, 28),
                commit.chars().take(7).collect::<String>()
            ),
            records,
        })
        .collect();
    // Runs that differ only in what the short label leaves out get numbers.
    for i in 0..runs.len() {
        let same = runs.iter().filter(|r| r.label == runs[i].label).count();
        if same > 1 {
            runs[i].label = format!("{} #{}", runs[i].label, i + 1);
        }
    }
    runs
}

/// `text` cut to `chars` characters, with an ellipsis when cut.
fn short(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        text.to_string()
    } else {
        text.chars().take(chars - 1).collect::<String>() + "…"
    }
}

/// `value` over `base`, when both are positive.
pub fn ratio(value: f64, base: f64) -> Option<f64> {
    (value > 0.0 && base > 0.0).then(|| value / base)
}

/// The geometric mean of `run`'s tokens/s over `base`'s at the points both
/// measured, and how many there were.
pub fn mean_ratio(run: &Run, base: &Run) -> Option<(f64, usize)> {
    let ratios: Vec<f64> = run
        .points()
        .into_iter()
        .filter_map(|(p, t)| ratio(t, base.at(p)?))
        .collect();
    if ratios.is_empty() {
        return None;
    }
    let log_mean = ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64;
    Some((log_mean.exp(), ratios.len()))
}

/// The driver named in a device or backend line (`driver CUDA 13.0`), if any.
pub fn driver(record: &Record) -> Option<String> {
    [&record.device, &record.backend]
        .into_iter()
        .find_map(|line| {
            let start = line.find("driver")?;
            let rest = &line[start..];
            let end = rest.find([',', ')', ';']).unwrap_or(rest.len());
            Some(rest[..end].trim().to_string())
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A record of `arithmetic` at a point with `tokens_per_s`.
    pub(crate) fn record(arithmetic: &str, point: Point, tokens_per_s: f64) -> Record {
        Record {
            tessera: "0.1.0".into(),
            commit: "abcdef123456".into(),
            device: "cpu (2 threads), model mapped 0.01 GB".into(),
            cpu: "AMD EPYC".into(),
            backend: format!("cpu-{arithmetic}"),
            arithmetic: arithmetic.into(),
            flags: "tessera bench --sweep".into(),
            model: "tiny".into(),
            layers: 2,
            hidden: 32,
            ffn: 64,
            heads: 4,
            kv_heads: 2,
            head_dim: 8,
            workload: "rerank".into(),
            docs: point.0,
            doc_tokens: point.1,
            query_tokens: point.2,
            batch_tokens: point.3,
            passes: 1,
            billed_tokens: point.0 * point.1,
            runs: 1,
            median_s: 1.0,
            tokens_per_s,
            docs_per_s: 1.0,
            reference_tokens_per_s: None,
            matmul_gflop_per_s: None,
            ceilings: None,
            no_ceilings: None,
            profile: None,
        }
    }

    #[test]
    fn runs_split_by_arithmetic_and_keep_their_order() {
        let runs = group(vec![
            record("fast", (4, 64, 32, 1024), 100.0),
            record("reference", (4, 64, 32, 1024), 10.0),
            record("fast", (4, 256, 32, 1024), 80.0),
        ]);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].label, "fast · cpu (2 threads) · abcdef1");
        assert_eq!(runs[0].records.len(), 2);
        assert_eq!(runs[1].first().arithmetic, "reference");
    }

    #[test]
    fn ratios_are_geometric_means_over_shared_points() {
        let base = &group(vec![
            record("fast", (4, 64, 32, 1024), 100.0),
            record("fast", (4, 256, 32, 1024), 50.0),
            record("fast", (16, 256, 32, 1024), 40.0),
        ])[0];
        let other = &group(vec![
            record("reference", (4, 64, 32, 1024), 25.0),
            record("reference", (4, 256, 32, 1024), 50.0),
        ])[0];
        // 0.25 and 1.0 at the two shared points: geometric mean 0.5.
        let (mean, shared) = mean_ratio(other, base).unwrap();
        assert_eq!(shared, 2);
        assert!((mean - 0.5).abs() < 1e-12);
        assert_eq!(ratio(3.0, 0.0), None);
    }

    #[test]
    fn a_resumed_point_counts_once_with_its_last_figure() {
        let run = &group(vec![
            record("fast", (4, 64, 32, 1024), 100.0),
            record("fast", (4, 64, 32, 1024), 120.0),
        ])[0];
        assert_eq!(run.points(), vec![((4, 64, 32, 1024), 120.0)]);
    }

    #[test]
    fn the_driver_is_read_from_the_device_line() {
        let mut r = record("w8a16", (1, 1, 1, 1), 1.0);
        r.backend = "cuda (NVIDIA H200, sm_90, Mma, driver CUDA 13.0), w8a16".into();
        assert_eq!(driver(&r).as_deref(), Some("driver CUDA 13.0"));
        assert_eq!(driver(&record("fast", (1, 1, 1, 1), 1.0)), None);
    }
}
