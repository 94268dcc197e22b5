//! The `tessera` binary end to end: rerank's JSON is the /v1/rerank body, the
//! embedded model is the tiny-q8 fixture, inspect names the score head, bad
//! arguments fail with a message.

use std::process::Command;

mod common;

use common::{listening_address, request};
use serde_json::Value;
use tessera_tests::{fixture, load_reference};

fn tessera(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .output()
        .expect("the binary runs")
}

const QUERY: &str = "how do I reset my password";
const DOCS: [&str; 3] = [
    "To reset your password, click forgot password on the login screen.",
    "Our office hours are Monday to Friday, 9 to 18.",
    "Password requirements: 12+ characters, one number, one symbol.",
];

#[test]
fn rerank_json_is_the_v1_response_body_with_reference_scores() {
    // The reference precision is the one whose arithmetic matches W8A32.
    let mut args = vec![
        "rerank",
        "--json",
        "--backend",
        "cpu",
        "--precision",
        "reference",
        "--query",
        QUERY,
    ];
    args.extend(DOCS);
    let out = tessera(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("meaningless"),
        "the embedded model must be announced: {stderr}"
    );
    let body: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");

    assert!(body["id"].as_str().is_some_and(|id| id.len() == 36));
    assert_eq!(body["meta"]["api_version"]["version"], "1");
    assert_eq!(body["meta"]["billed_units"]["search_units"], 1);
    let total = body["usage"]["total_tokens"]
        .as_u64()
        .expect("usage.total_tokens");
    assert_eq!(body["meta"]["billed_units"]["total_tokens"], total);
    assert_eq!(body["meta"]["tokens"]["input_tokens"], total);
    assert_eq!(body["meta"]["tokens"]["output_tokens"], 0);
    assert!(body["model"].is_string());

    let reference = load_reference("tiny-q8");
    let case = reference
        .cases
        .iter()
        .find(|c| c.query == QUERY && c.documents.starts_with(&DOCS.map(String::from)))
        .expect("the fixtures hold the spec example");
    assert_eq!(
        total as usize,
        case.pairs[..3].iter().map(|p| p.ids.len()).sum::<usize>()
    );
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    let mut previous = f64::INFINITY;
    for r in results {
        let index = r["index"].as_u64().expect("index") as usize;
        let score = r["relevance_score"].as_f64().expect("score");
        assert!(score <= previous, "results are sorted by score");
        previous = score;
        assert!(
            (score - case.pairs[index].w8a32).abs() <= 2e-3,
            "doc {index}: {score}"
        );
        assert!(r.get("document").is_none(), "no document key unless asked");
    }
}

#[test]
fn rerank_top_n_and_return_documents() {
    let mut args = vec![
        "rerank",
        "--json",
        "--top-n",
        "2",
        "--return-documents",
        "--query",
        QUERY,
    ];
    args.extend(DOCS);
    let out = tessera(&args);
    assert!(out.status.success());
    let body: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let results = body["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    for r in results {
        let index = r["index"].as_u64().expect("index") as usize;
        assert_eq!(r["document"]["text"], DOCS[index]);
    }
}

#[test]
fn documents_file_gives_the_same_scores_as_arguments() {
    let dir = std::env::temp_dir().join(format!("tessera-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("docs.jsonl");
    let lines: Vec<String> = DOCS
        .iter()
        .map(|d| serde_json::to_string(d).expect("json"))
        .collect();
    std::fs::write(&path, lines.join("\n")).expect("write");
    let from_file = tessera(&[
        "rerank",
        "--json",
        "--query",
        QUERY,
        "--documents-file",
        path.to_str().expect("utf-8"),
    ]);
    let mut args = vec!["rerank", "--json", "--query", QUERY];
    args.extend(DOCS);
    let from_args = tessera(&args);
    let a: Value = serde_json::from_slice(&from_file.stdout).expect("JSON");
    let b: Value = serde_json::from_slice(&from_args.stdout).expect("JSON");
    assert_eq!(a["results"], b["results"]);

    std::fs::write(&path, "not json\n").expect("write");
    let bad = tessera(&[
        "rerank",
        "--query",
        QUERY,
        "--documents-file",
        path.to_str().expect("utf-8"),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("line 1"));
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let out = tessera(&["rerank", "--query", "", "doc"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--query"));
    let out = tessera(&["rerank", "--query", "q"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no documents"));
    let out = tessera(&[
        "rerank",
        "--model",
        "/nonexistent.gguf",
        "--query",
        "q",
        "d",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.gguf"));
}

#[test]
fn every_backend_choice_scores_or_says_why_not() {
    // Without the device (or the cargo feature) an explicit backend is a clean
    // error naming it, never a panic; `auto` always ends on a working backend.
    for (choice, name) in [
        ("cuda", "CUDA"),
        ("wgpu", "wgpu"),
        ("auto", ""),
        ("cpu", ""),
    ] {
        let out = tessera(&[
            "rerank",
            "--backend",
            choice,
            "--query",
            QUERY,
            DOCS[0],
            DOCS[1],
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(
            out.status.code(),
            Some(101),
            "--backend {choice} panicked: {stderr}"
        );
        if out.status.success() {
            let lines = String::from_utf8_lossy(&out.stdout).lines().count();
            assert_eq!(
                lines, 3,
                "--backend {choice}: a header, one line per document"
            );
        } else {
            assert!(
                !name.is_empty() && stderr.contains(name),
                "--backend {choice} failed without naming {name}: {stderr}"
            );
        }
    }
}

#[test]
fn inspect_names_the_score_head_and_shapes() {
    let untied = fixture("tiny-q8-untied.gguf");
    let out = tessera(&["inspect", untied.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("output.weight"), "{text}");
    assert!(text.contains("head_dim 16"), "{text}");
    assert!(text.contains("Q8_0"), "{text}");
    let out = tessera(&["inspect"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cls.output.weight"), "{text}");
}

/// `bench --format json --profile`: stdout is one JSON record (the progress goes
/// to stderr) naming the backend, the model's shape and the figures, with a
/// per-op profile whose shares add up and whose layers match the model.
#[test]
fn bench_writes_a_json_record_with_a_profile() {
    let out = tessera(&[
        "bench",
        "--backend",
        "cpu",
        "--docs",
        "2",
        "--doc-tokens",
        "8",
        "--runs",
        "1",
        "--baseline-docs",
        "0",
        "--profile",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout holds the record only: {stdout}");
    let record: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
    assert_eq!(record["workload"], "rerank");
    assert_eq!(record["docs"], 2);
    assert!(record["backend"].as_str().unwrap().starts_with("cpu"));
    assert!(record["tokens_per_s"].as_f64().unwrap() > 0.0);
    let layers = record["layers"].as_u64().unwrap() as usize;
    let profile = &record["profile"];
    assert_eq!(profile["layers_ms"].as_array().unwrap().len(), layers + 1);
    let shares: f64 = profile["ops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["share"].as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-9, "{shares}");
    // The human-readable profile went to stderr.
    assert!(String::from_utf8_lossy(&out.stderr).contains("profile    attention"));
    // The CPU's own ceilings, measured in the same run, beside the run's
    // matmul rate, which cannot exceed the fast path's best.
    let ceiling = record["ceilings"]["matmul_gflop_per_s"].as_f64().unwrap();
    let achieved = record["matmul_gflop_per_s"].as_f64().unwrap();
    assert!(record["ceilings"]["copy_gb_per_s"].as_f64().unwrap() > 0.0);
    assert!(
        achieved > 0.0 && achieved < 2.0 * ceiling,
        "{achieved} vs {ceiling}"
    );
    assert_eq!(record["ceilings"]["matmul_shape"], "512x2560x2560");
    // Each modelled op kind carries what it computed and moved at least.
    let ops = profile["ops"].as_array().unwrap();
    let attention = ops.iter().find(|op| op["op"] == "attention").unwrap();
    assert!(attention["flops"].as_f64().unwrap() > 0.0);
    assert!(attention["bytes"].as_f64().unwrap() > 0.0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("GFLOP/s") && stderr.contains("of roof"),
        "{stderr}"
    );
}

/// `tessera report`: a profiled sweep in both CPU arithmetics becomes one page
/// with both runs on it, and a file that is missing, malformed or empty is
/// refused by name (and line), with status 1 and no panic.
#[test]
fn report_makes_one_page_from_two_runs_and_names_bad_input() {
    let dir = std::env::temp_dir().join(format!("tessera-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let results = dir.join("results.jsonl");
    for precision in ["fast", "reference"] {
        let out = tessera(&[
            "bench",
            "--backend",
            "cpu",
            "--precision",
            precision,
            "--sweep",
            "--profile",
            "--sweep-docs",
            "2",
            "--sweep-doc-tokens",
            "8,16",
            "--sweep-batch-tokens",
            "64",
            "--runs",
            "1",
            "--out",
            results.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let page = dir.join("report.html");
    let out = tessera(&[
        "report",
        results.to_str().unwrap(),
        "--out",
        page.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("read 4 records") && stderr.contains("[5/5]"),
        "{stderr}"
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<svg") && !html.contains("<script"));
    assert!(html.contains("Roofline: cpu"));
    assert!(html.contains("fast · cpu") && html.contains("reference · cpu"));

    let bad = dir.join("bad.jsonl");
    std::fs::write(&bad, "{\"tessera\": \"0.1.0\"}\n").unwrap();
    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let missing = dir.join("missing.jsonl");
    for (file, says) in [
        (&bad, "bad.jsonl:1: not a bench record"),
        (&empty, "empty.jsonl: no bench records"),
        (&missing, "missing.jsonl: "),
    ] {
        let out = tessera(&[
            "report",
            file.to_str().unwrap(),
            "--out",
            page.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(says) && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

/// `tessera serve` under `ulimit -n 40`, flooded with more connections than it
/// has descriptors: accepts fail, the server logs it as an error instead of
/// dying, and it answers again once the connections are gone.
#[test]
fn serve_survives_running_out_of_descriptors() {
    use std::io::Read;
    use std::net::TcpStream;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 40 && exec \"$0\" serve --host 127.0.0.1 --port 0 --log-format json")
        .arg(env!("CARGO_BIN_EXE_tessera"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let address = listening_address(&mut child);
    let health =
        |address: &str| request(address, "GET", "/health", None, Duration::from_secs(2)).0 == 200;
    let ready = Instant::now();
    while !health(&address) {
        assert!(ready.elapsed() < Duration::from_secs(60), "never ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Far more connections than 40 descriptors allow; the kernel queues the rest.
    let flood: Vec<TcpStream> = (0..80)
        .filter_map(|_| TcpStream::connect(&address).ok())
        .collect();
    assert!(flood.len() >= 60, "only {} connections", flood.len());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().expect("status").is_none(),
        "the server died"
    );
    drop(flood);
    let again = Instant::now();
    loop {
        if health(&address) {
            break;
        }
        assert!(
            again.elapsed() < Duration::from_secs(20),
            "not answering after the flood"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.kill();
    let mut log = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut log)
        .expect("log");
    let _ = child.wait();
    assert!(
        log.lines()
            .any(|l| l.contains("\"ERROR\"") && l.contains("cannot accept connections")),
        "no error logged for the exhausted descriptors:\n{log}"
    );
}

/// What `serve` checks before it opens its port fails with status 2 and one
/// line, and never prints "listening": a missing file (its OS error said once),
/// a file that is not GGUF (its first bytes in hex with 0x, and as text), a
/// backend this build lacks (named as a backend, with the build command), a
/// busy port (naming --port).
#[test]
fn serve_startup_failures_exit_2_with_one_clear_line() {
    let check = |args: &[&str], needles: &[&str], absent: &[&str]| {
        let out = tessera(args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stdout.contains("listening"), "{args:?} printed {stdout}");
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "{args:?}: {needle:?} not in {stderr}"
            );
        }
        for word in absent {
            assert!(!stderr.contains(word), "{args:?}: {word:?} in {stderr}");
        }
        stderr.to_string()
    };
    let missing = check(
        &["serve", "--model", "/nonexistent/model.gguf"],
        &["/nonexistent/model.gguf", "No such file or directory"],
        &[],
    );
    assert_eq!(
        missing.matches("No such file or directory").count(),
        1,
        "{missing}"
    );
    let readme = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    check(
        &["serve", "--model", readme],
        &[
            "not a GGUF file",
            "0x23 0x20 0x54 0x65",
            "\"# Te\"",
            "0x47 0x47 0x55 0x46",
        ],
        &["[23, 20"],
    );
    if cfg!(not(feature = "cuda")) {
        check(
            &["serve", "--backend", "cuda"],
            &[
                "backend cuda",
                "cargo build --release -p tessera-cli --features cuda",
            ],
            &["cannot load model"],
        );
    }
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("address").port().to_string();
    check(
        &["serve", "--host", "127.0.0.1", "--port", &port],
        &["cannot listen", "--port"],
        &[],
    );
}

/// Logs written to a pipe carry no colour codes (journald, Docker and
/// Kubernetes collect them that way), and the embedded-model warning is given
/// once.
#[test]
fn serve_logs_to_a_pipe_are_plain_text_with_one_warning() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;

    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["serve", "--host", "127.0.0.1", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut log = String::new();
    let started = std::time::Instant::now();
    while !log.contains(" ready") {
        let mut line = String::new();
        if stderr.read_line(&mut line).expect("log line") == 0 {
            break;
        }
        log.push_str(&line);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{log}"
        );
    }
    let _ = child.kill();
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    let _ = child.wait();
    log.push_str(&rest);
    assert!(log.contains(" ready"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a piped log:\n{log}"
    );
    assert_eq!(
        log.matches("embedded tiny random model").count(),
        1,
        "{log}"
    );
}

/// Ctrl-C (SIGINT) while the model is still loading (a long warm-up pass here)
/// stops `serve` at once instead of waiting for the load, and nothing is logged
/// as loaded after "stopped".
#[test]
fn a_signal_during_loading_stops_serve_at_once() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--warm-up-tokens",
            "3000000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("serve starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut log = String::new();
    while !log.contains("warm-up pass") {
        let mut line = String::new();
        if stderr.read_line(&mut line).expect("log") == 0 {
            panic!("serve ended before its warm-up:\n{log}");
        }
        log.push_str(&line);
    }
    let signalled = Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("status") {
            break exit;
        }
        if signalled.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("still loading 15 s after SIGINT:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut rest = String::new();
    let _ = stderr.read_to_string(&mut rest);
    log.push_str(&rest);
    assert!(exit.success(), "{exit:?}\n{log}");
    let stopped = log.find("stopped").expect("a stopped line");
    assert!(!log[stopped..].contains("model loaded"), "{log}");
}

/// Output cut short by its reader (`tessera rerank … | head -1`) ends the
/// process quietly with 141 (128 + SIGPIPE), not with a panic. The output is
/// larger than a pipe's buffer, so the writer meets the closed pipe.
#[test]
fn a_closed_stdout_ends_quietly() {
    use std::io::Read;
    use std::process::Stdio;

    let dir = std::env::temp_dir().join(format!("tessera-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let docs = dir.join("docs.jsonl");
    let lines: Vec<String> = (0..3000)
        .map(|i| format!("\"document number {i} about passwords and logins\""))
        .collect();
    std::fs::write(&docs, lines.join("\n")).expect("documents file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "rerank",
            "--backend",
            "cpu",
            "--query",
            "reset my password",
            "--documents-file",
        ])
        .arg(&docs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rerank starts");
    // Read one byte, then close the pipe long before the rest is written.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).expect("some output");
    drop(stdout);
    let out = child.wait_with_output().expect("rerank ends");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}

/// `generate` writes plain progress lines, no carriage returns, when its stderr
/// is a file or pipe.
#[test]
fn generate_progress_into_a_pipe_has_no_carriage_returns() {
    let out_path = std::env::temp_dir().join(format!("tessera-gen-{}.gguf", std::process::id()));
    let out = tessera(&[
        "generate",
        "--shape",
        "tiny",
        "--out",
        out_path.to_str().expect("utf-8 path"),
    ]);
    let _ = std::fs::remove_file(&out_path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains('\r'), "{stderr:?}");
    assert!(stderr.contains("generating layer 1/"), "{stderr}");
    assert!(stderr.contains("wrote "), "{stderr}");
}

/// On a terminal (a pseudo-terminal from util-linux's `script`), the log lines
/// written while the loading spinner turns are printed on lines of their own:
/// the spinner's line is cleared first (`\r` + erase), never continued.
#[test]
fn on_a_terminal_log_lines_never_share_a_line_with_a_progress_bar() {
    if Command::new("script").arg("--version").output().is_err() {
        println!("skipped: no `script` (util-linux) to give the server a terminal");
        return;
    }
    let inner = format!(
        "\"{}\" serve --port 0 --backend auto & pid=$!; sleep 3; kill $pid; wait $pid",
        env!("CARGO_BIN_EXE_tessera")
    );
    let out = Command::new("script")
        .args(["-qfec", &format!("sh -c '{inner}'"), "/dev/null"])
        .env_remove("NO_COLOR")
        .output()
        .expect("script runs");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        screen.contains("building the engine") && screen.contains("backend auto: no CUDA"),
        "the spinner and a log line written during it: {screen:?}"
    );
    let mut logged = 0;
    for line in screen.split('\n') {
        let Some(at) = line.find("INFO") else {
            continue;
        };
        // What is on the line since the cursor last went back to column 0.
        let since_return = line[..at].rsplit('\r').next().unwrap_or("");
        assert!(
            !since_return.contains("building the engine") && !since_return.contains("reading "),
            "a log line continues a progress bar's line: {line:?}"
        );
        logged += 1;
    }
    assert!(logged >= 3, "too few log lines seen: {screen:?}");
}

/// `--replicas` runs that many CPU engines behind one queue (`/info` says so,
/// `tessera health` sees it serving), under `--backend cpu` or the default
/// `auto` where it picks the CPU (here: no GPU backend in the test build); on a
/// GPU backend it is refused before the port opens, naming the backend and
/// `--devices`, as is `--devices` where CUDA cannot run.
#[test]
fn serve_runs_cpu_replicas_and_refuses_them_elsewhere() {
    use std::time::Duration;

    for backend in ["cuda", "wgpu"] {
        let refused = tessera(&[
            "serve",
            "--replicas",
            "2",
            "--backend",
            backend,
            "--port",
            "0",
        ]);
        assert_eq!(refused.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains(&format!("--backend {backend} runs on GPUs"))
                && stderr.contains("--devices")
                && stderr.contains("--backend cpu"),
            "{stderr}"
        );
        assert!(!String::from_utf8_lossy(&refused.stdout).contains("listening"));
    }
    // --devices is CUDA's: here (no GPU) it says why it cannot run, before listening.
    let gpus = tessera(&["serve", "--devices", "all", "--port", "0"]);
    assert_eq!(gpus.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&gpus.stderr);
    assert!(stderr.contains("backend cuda"), "{stderr}");
    let cpu = tessera(&[
        "serve",
        "--devices",
        "0,1",
        "--backend",
        "cpu",
        "--port",
        "0",
    ]);
    let stderr = String::from_utf8_lossy(&cpu.stderr);
    assert!(
        stderr.contains("--devices is for the CUDA or wgpu backend"),
        "{stderr}"
    );

    // The default backend (auto) picks the CPU here, so replicas run.
    let served = common::serve(&["--replicas", "2"]);
    let address = served.address.clone();
    let patience = Duration::from_secs(5);
    let (_, info) = request(&address, "GET", "/info", None, patience);
    let body = serde_json::json!({"query": "q", "documents": ["a", "b", "c"]});
    let (status, _) = request(&address, "POST", "/v1/rerank", Some(&body), patience);
    // The container health check: 0 while it serves, 1 once nothing answers.
    let port = address.rsplit(':').next().expect("port");
    let healthy = tessera(&["health", "--host", "127.0.0.1", "--port", port]);
    drop(served);
    let gone = tessera(&["health", "--host", "127.0.0.1", "--port", port]);
    assert!(
        healthy.status.success(),
        "{}",
        String::from_utf8_lossy(&healthy.stderr)
    );
    assert!(String::from_utf8_lossy(&healthy.stdout).starts_with("200"));
    assert_eq!(gone.status.code(), Some(1));
    assert_eq!(status, 200);
    let info = info.to_string();
    assert!(
        info.contains("2 replicas of cpu (") && info.contains("model mapped"),
        "/info names the replicas and the mapped model: {info}"
    );
}

/// The model's kind comes from the file (`qwen3.pooling_type`): `inspect` names
/// it; `rerank` refuses an embedding model with that reason, not scoring it
/// through a borrowed head; `serve` hosts it (alone, or beside a reranker with
/// `--embedding-model`) and refuses kinds in the wrong place before it listens.
#[test]
fn an_embedding_model_is_named_as_such_served_for_embeddings_and_not_reranked() {
    use std::time::Duration;
    let path = std::env::temp_dir().join(format!("tessera-embedding-{}.gguf", std::process::id()));
    let path_text = path.display().to_string();
    let generated = tessera(&[
        "generate",
        "--shape",
        "tiny",
        "--kind",
        "embedding",
        "--out",
        &path_text,
    ]);
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );

    let inspect = tessera(&["inspect", &path_text]);
    let stdout = String::from_utf8_lossy(&inspect.stdout);
    assert!(
        stdout.contains("kind          embedding (pooling: last)"),
        "{stdout}"
    );
    assert!(stdout.contains("pooled"), "{stdout}");
    assert!(!stdout.contains("score head"), "{stdout}");

    let rerank = tessera(&[
        "rerank",
        "--model",
        &path_text,
        "--backend",
        "cpu",
        "--query",
        "q",
        "a doc",
    ]);
    assert!(!rerank.status.success());
    let stderr = String::from_utf8_lossy(&rerank.stderr);
    assert!(
        stderr.contains("embedding model (pooling: last)"),
        "{stderr}"
    );

    let reranker = fixture("tiny-q8.gguf").display().to_string();
    let refusals = [
        (
            vec![
                "--model",
                path_text.as_str(),
                "--embedding-model",
                path_text.as_str(),
            ],
            "is itself an embedding model",
        ),
        (
            vec!["--embedding-model", reranker.as_str()],
            "it is a reranker, not an embedding model",
        ),
    ];
    for (args, reason) in refusals {
        let mut all = vec!["serve", "--port", "0"];
        all.extend(args);
        let serve = tessera(&all);
        assert_eq!(serve.status.code(), Some(2), "{all:?}");
        let stderr = String::from_utf8_lossy(&serve.stderr);
        assert!(stderr.contains(reason), "{all:?}: {stderr}");
        assert!(!String::from_utf8_lossy(&serve.stdout).contains("listening"));
    }

    // The default reranker and the embedding model in one server.
    let served = common::serve(&[
        "--embedding-model",
        &path_text,
        "--embedding-served-model-name",
        "Qwen/Qwen3-Embedding-8B",
        "--backend",
        "cpu",
    ]);
    let (address, patience) = (&served.address, Duration::from_secs(5));
    let body = serde_json::json!({"input": ["a", "b"], "model": "Qwen/Qwen3-Embedding-8B"});
    let embedded = request(address, "POST", "/v1/embeddings", Some(&body), patience);
    let body = serde_json::json!({"query": "q", "documents": ["a", "b"]});
    let reranked = request(address, "POST", "/v1/rerank", Some(&body), patience);
    drop(served);

    // An embedding `--model` served alone takes `--served-model-name`.
    let alone = common::serve(&[
        "--model",
        &path_text,
        "--served-model-name",
        "Qwen/Qwen3-Embedding-8B",
        "--backend",
        "cpu",
    ]);
    let (_, models) = request(&alone.address, "GET", "/v1/models", None, patience);
    let body = serde_json::json!({"input": "a", "model": "other"});
    let unknown = request(
        &alone.address,
        "POST",
        "/v1/embeddings",
        Some(&body),
        patience,
    );
    let body = serde_json::json!({"query": "q", "documents": ["a"]});
    let rerank = request(&alone.address, "POST", "/v1/rerank", Some(&body), patience);
    drop(alone);
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        models["data"][0]["id"], "Qwen/Qwen3-Embedding-8B",
        "{models}"
    );
    assert_eq!(models["data"][0]["kind"], "embedding", "{models}");
    assert_eq!(unknown.0, 404, "{}", unknown.1);
    assert_eq!(rerank.0, 404, "{}", rerank.1);
    assert_eq!(embedded.0, 200, "{}", embedded.1);
    assert_eq!(embedded.1["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(embedded.1["model"], "Qwen/Qwen3-Embedding-8B");
    assert_eq!(reranked.0, 200, "{}", reranked.1);
}

/// Every numeric flag out of its range is refused while the arguments are
/// parsed — status 2, the flag named, nothing listening — never after the
/// server has opened its port.
#[test]
fn numeric_flags_out_of_range_are_refused_before_anything_starts() {
    let cases: [&[&str]; 10] = [
        &["serve", "--threads", "0"],
        &["serve", "--threads", "-1"],
        &["serve", "--threads", "1000000"],
        &["serve", "--max-batch-tokens", "0"],
        &["serve", "--max-queue-tokens", "0"],
        &["serve", "--max-documents", "0"],
        &["serve", "--max-connections", "99999999999"],
        &["serve", "--warm-up-tokens", "-5"],
        &["bench", "--docs", "0"],
        &["rerank", "--top-n", "0", "--query", "q", "d"],
    ];
    for args in cases {
        let mut with_port = args.to_vec();
        if args[0] == "serve" {
            with_port.extend(["--port", "0"]);
        }
        let out = tessera(&with_port);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(args[1]),
            "{args:?}: the flag is not named: {stderr}"
        );
        assert!(
            stderr.contains("whole number from"),
            "{args:?}: the range is not given: {stderr}"
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("listening"),
            "{args:?} listened"
        );
    }
}

/// `tessera embed` needs an embedding model: its help does not promise the
/// embedded (reranker) model as a default, and without one it says what to pass.
#[test]
fn embed_requires_an_embedding_model_and_says_so() {
    let help = tessera(&["embed", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success());
    assert!(
        !text.contains("embedded tiny") && !text.contains("default: the embedded"),
        "{text}"
    );
    assert!(text.contains("Required"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["embed", "hello"])
        .env_remove("TESSERA_MODEL")
        .env_remove("TESSERA_MODEL_ID")
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--model"), "{stderr}");
}

/// What a person reads: `rerank`'s table has a header and starts with the rank,
/// `inspect` of an embedding model prints no yes/no ids, `health --help`
/// describes every flag, and counts agree with their nouns.
#[test]
fn plain_output_reads_as_what_it_is() {
    let out = tessera(&["rerank", "--query", QUERY, DOCS[1], DOCS[0], DOCS[2]]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(
        lines
            .next()
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["rank", "index", "score", "document"])
    );
    let ranks: Vec<&str> = lines.filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(ranks, ["1", "2", "3"], "{stdout}");

    let embedder = fixture("tiny-embed-q8.gguf").display().to_string();
    let out = tessera(&["inspect", &embedder]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(!stdout.contains("yes/no"), "{stdout}");
    let out = tessera(&["inspect"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("yes/no ids"));

    let help = tessera(&["health", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("The server's port"),
        "--port has no description: {text}"
    );

    let out = tessera(&[
        "bench",
        "--docs",
        "1",
        "--doc-tokens",
        "8",
        "--runs",
        "1",
        "--threads",
        "1",
        "--baseline-docs",
        "0",
    ]);
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(all.contains("in 1 forward pass;"), "{all}");
    assert!(
        all.contains("cpu (1 thread),") && !all.contains("1 threads"),
        "{all}"
    );
}

/// `tessera tune` documents itself, refuses a bad row count by name, and in a
/// build without CUDA says which build it needs (exit 1, nothing written).
/// `--tuning FILE` must name a readable table on any backend.
#[test]
fn tune_exists_and_tuning_tables_are_checked() {
    let help = tessera(&["tune", "--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--rows",
        "--repeats",
        "--out",
        "--device",
        "Qwen3-Reranker-4B",
    ] {
        assert!(text.contains(flag), "tune --help lacks {flag}: {text}");
    }
    let bad = tessera(&["tune", "--rows", "512,0"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--rows"));

    let dir = std::env::temp_dir().join(format!("tessera-cli-tune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("table.json");
    let tune = tessera(&["tune", "--out", out.to_str().unwrap()]);
    if cfg!(feature = "cuda") {
        println!(
            "built with cuda: tune ran with exit {:?}",
            tune.status.code()
        );
    } else {
        assert_eq!(tune.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&tune.stderr);
        assert!(stderr.contains("--features cuda"), "{stderr}");
        assert!(!out.exists());
    }

    let missing = dir.join("absent.json");
    let run = tessera(&[
        "rerank",
        "--backend",
        "cpu",
        "--tuning",
        missing.to_str().unwrap(),
        "--query",
        "q",
        "d",
    ]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("tuning table") && stderr.contains("absent.json"),
        "{stderr}"
    );
    // `builtin` and `default` are words, not files.
    let run = tessera(&[
        "rerank",
        "--backend",
        "cpu",
        "--tuning",
        "builtin",
        "--query",
        "q",
        "d",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::remove_dir_all(dir).ok();
}

/// `bench --sweep`: one JSON record per grid point appended to `--out` as it
/// is measured; a second run skips the points the file holds and measures only
/// the new ones (an interrupted sweep resumes). Bad axes are refused by name.
#[test]
fn bench_sweep_writes_one_record_per_point_and_resumes() {
    let dir = std::env::temp_dir().join(format!("tessera-sweep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("sweep.jsonl");
    let sweep = |docs: &str| {
        tessera(&[
            "bench",
            "--backend",
            "cpu",
            "--sweep",
            "--sweep-docs",
            docs,
            "--sweep-doc-tokens",
            "8,16",
            "--sweep-batch-tokens",
            "64",
            "--runs",
            "1",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let first = sweep("2");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let lines = |path: &std::path::Path| -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON record per line"))
            .collect()
    };
    let records = lines(&out);
    assert_eq!(records.len(), 2);
    for (record, tokens) in records.iter().zip([8, 16]) {
        assert_eq!(record["workload"], "rerank");
        assert_eq!(record["docs"], 2);
        assert_eq!(record["doc_tokens"], tokens);
        assert_eq!(record["batch_tokens"], 64);
        assert!(record["tokens_per_s"].as_f64().is_some_and(|t| t > 0.0));
    }
    // Again with one more docs value: the two points on file are skipped.
    let second = sweep("2,3");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert_eq!(stderr.matches("skipped").count(), 2, "{stderr}");
    let records = lines(&out);
    assert_eq!(records.len(), 4);
    assert_eq!(records[2]["docs"], 3);
    for bad in ["0", "8..4", "1..99999999999"] {
        let refused = tessera(&["bench", "--sweep", "--sweep-docs", bad]);
        assert_eq!(refused.status.code(), Some(2), "{bad}");
        assert!(String::from_utf8_lossy(&refused.stderr).contains("--sweep-docs"));
    }
    let without = tessera(&["bench", "--sweep-docs", "4"]);
    assert_eq!(without.status.code(), Some(2));
    std::fs::remove_dir_all(dir).ok();
}
