//! Replays the committed fuzz corpus and every past crash (`fuzz/regressions/`)
//! through the targets' checks: each input that once found a bug stays a test.

use std::path::{Path, PathBuf};

use tessera_fuzz_cases::TARGETS;

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn the_corpus_and_past_crashes_pass_every_check() {
    for (target, check) in TARGETS {
        let corpus = inputs("corpus", target);
        assert!(
            corpus.len() >= 5,
            "fuzz/corpus/{target} holds {} inputs; seed it with \
             `cargo run -p tessera-fuzz-cases --example make_seeds`",
            corpus.len()
        );
        let regressions = inputs("regressions", target);
        for path in corpus.iter().chain(&regressions) {
            let data = std::fs::read(path).expect("input readable");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "{target}: {} fails its check",
                path.display()
            );
        }
        println!(
            "{target}: {} corpus inputs, {} regressions",
            corpus.len(),
            regressions.len()
        );
    }
}
