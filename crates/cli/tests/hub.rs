//! `--model-id` against a local server that answers the way the Hugging Face
//! Hub's file and API endpoints do (through `HF_ENDPOINT`): a first download
//! into the cache, a cache hit that asks nothing, the repository's one Q8_0
//! GGUF chosen when no file is named, a resumed download, a missing file, a
//! refused token, offline use.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const REPO: &str = "tessera-test/tiny-reranker";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// One file of the fake repository.
struct HubFile {
    name: &'static str,
    bytes: Vec<u8>,
}

/// The fake Hub: its address and every request line it saw (with the Range
/// header, when sent).
struct FakeHub {
    address: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FakeHub {
    fn start(files: Vec<HubFile>, token: Option<&'static str>) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let files = Arc::new(files);
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (files, log) = (Arc::clone(&files), Arc::clone(&log));
                std::thread::spawn(move || serve(stream, &files, token, &log));
            }
        });
        FakeHub { address, seen }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().expect("log").clone()
    }
}

fn etag(name: &str) -> String {
    format!("etag-{}", name.replace('.', "-"))
}

fn serve(stream: TcpStream, files: &[HubFile], token: Option<&str>, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let (mut range, mut auth) = (None, None);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((key, value)) = line.trim_end().split_once(':') {
            match key.to_ascii_lowercase().as_str() {
                "range" => range = Some(value.trim().to_string()),
                "authorization" => auth = Some(value.trim().to_string()),
                _ => {}
            }
        }
    }
    let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
    log.lock().expect("log").push(match &range {
        Some(r) => format!("{path} [{r}]"),
        None => path.clone(),
    });
    let mut out = stream;
    let mut respond = |status: &str, headers: &[(&str, String)], body: &[u8]| {
        let mut head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let _ = out.write_all(head.as_bytes());
        let _ = out.write_all(body);
    };
    if let Some(token) = token {
        if auth.as_deref() != Some(&format!("Bearer {token}")) {
            return respond(
                "401 Unauthorized",
                &[],
                b"{\"error\":\"Invalid credentials\"}",
            );
        }
    }
    if path == format!("/api/models/{REPO}/revision/main") {
        let siblings: Vec<String> = files
            .iter()
            .map(|f| format!("{{\"rfilename\":\"{}\"}}", f.name))
            .collect();
        let body = format!(
            "{{\"sha\":\"{COMMIT}\",\"siblings\":[{}]}}",
            siblings.join(",")
        );
        let json = [("Content-Type", "application/json".to_string())];
        return respond("200 OK", &json, body.as_bytes());
    }
    let prefix = format!("/{REPO}/resolve/main/");
    let Some(file) = path
        .strip_prefix(&prefix)
        .and_then(|name| files.iter().find(|f| f.name == name))
    else {
        return respond(
            "404 Not Found",
            &[("X-Error-Code", "EntryNotFound".into())],
            b"Entry not found",
        );
    };
    let size = file.bytes.len();
    let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(spec) => {
            let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = b.parse().map(|b: usize| b + 1).unwrap_or(size);
            (a.min(size), b.min(size))
        }
        None => (0, size),
    };
    let headers = [
        ("ETag", format!("\"{}\"", etag(file.name))),
        ("X-Repo-Commit", COMMIT.to_string()),
        (
            "Content-Range",
            format!("bytes {start}-{}/{size}", end.max(1) - 1),
        ),
    ];
    let status = if range.is_some() {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    respond(status, &headers, &file.bytes[start..end]);
}

fn fixture() -> Vec<u8> {
    std::fs::read(tessera_tests::fixture("tiny-q8.gguf")).expect("fixture")
}

/// A fresh `HF_HOME` for one test.
fn hf_home(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tessera-hub-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("HF_HOME");
    dir
}

fn tessera(args: &[&str], hub: &FakeHub, home: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
    command
        .args(args)
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_HOME", home)
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("TESSERA_MODEL")
        .env_remove("TESSERA_MODEL_ID");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn blob(home: &Path, name: &str) -> PathBuf {
    home.join("hub/models--tessera-test--tiny-reranker/blobs")
        .join(etag(name))
}

#[test]
fn a_first_download_fills_the_cache_and_the_second_run_asks_nothing() {
    let hub = FakeHub::start(
        vec![HubFile {
            name: "tiny-q8.gguf",
            bytes: fixture(),
        }],
        None,
    );
    let home = hf_home("first");
    let id = format!("{REPO}:tiny-q8.gguf");
    let out = tessera(&["inspect", "--model-id", &id], &hub, &home, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("score head"), "{stdout}");
    let snapshot = home.join(format!(
        "hub/models--tessera-test--tiny-reranker/snapshots/{COMMIT}/tiny-q8.gguf"
    ));
    assert!(
        stdout.contains(&snapshot.display().to_string()),
        "inspect names the cached file: {stdout}"
    );
    assert_eq!(
        std::fs::read(blob(&home, "tiny-q8.gguf")).expect("blob"),
        fixture()
    );
    let downloads = hub.requests().len();
    assert!(downloads >= 2, "metadata and body: {:?}", hub.requests());

    // The same id again: served from the cache, not one request.
    let again = tessera(&["inspect", "--model-id", &id], &hub, &home, &[]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(hub.requests().len(), downloads, "{:?}", hub.requests());
    // And offline, the same.
    let offline = tessera(
        &["inspect", "--model-id", &id],
        &hub,
        &home,
        &[("HF_HUB_OFFLINE", "1")],
    );
    assert!(offline.status.success(), "{}", text(&offline.stderr));
    assert_eq!(hub.requests().len(), downloads);
}

#[test]
fn without_a_file_the_one_q8_0_gguf_is_chosen_and_scores() {
    let hub = FakeHub::start(
        vec![
            HubFile {
                name: "README.md",
                bytes: b"# tiny".to_vec(),
            },
            HubFile {
                name: "tiny-F16.gguf",
                bytes: b"not used".to_vec(),
            },
            HubFile {
                name: "tiny-Q8_0.gguf",
                bytes: fixture(),
            },
        ],
        None,
    );
    let home = hf_home("choose");
    let out = tessera(
        &[
            "rerank",
            "--model-id",
            REPO,
            "--backend",
            "cpu",
            "--query",
            "q",
            "a document",
        ],
        &hub,
        &home,
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let requests = hub.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/tiny-Q8_0.gguf [bytes=0-]")),
        "{requests:?}"
    );
    assert!(
        !requests.iter().any(|r| r.contains("tiny-F16")),
        "{requests:?}"
    );
    assert!(text(&out.stdout).contains("a document"));
}

#[test]
fn an_interrupted_download_resumes_where_it_stopped() {
    let bytes = fixture();
    let hub = FakeHub::start(
        vec![HubFile {
            name: "tiny-q8.gguf",
            bytes: bytes.clone(),
        }],
        None,
    );
    let home = hf_home("resume");
    let part = blob(&home, "tiny-q8.gguf").with_extension("part");
    std::fs::create_dir_all(part.parent().expect("blobs")).expect("blobs dir");
    let half = bytes.len() / 2;
    std::fs::write(&part, &bytes[..half]).expect("partial download");
    let id = format!("{REPO}:tiny-q8.gguf");
    let out = tessera(&["inspect", "--model-id", &id], &hub, &home, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let requests = hub.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.ends_with(&format!("[bytes={half}-]"))),
        "the body was asked for from byte {half}: {requests:?}"
    );
    assert_eq!(
        std::fs::read(blob(&home, "tiny-q8.gguf")).expect("blob"),
        bytes
    );
}

#[test]
fn a_missing_file_a_refused_token_and_an_empty_offline_cache_say_what_is_wrong() {
    let hub = FakeHub::start(
        vec![HubFile {
            name: "tiny-q8.gguf",
            bytes: fixture(),
        }],
        Some("right-token"),
    );
    let home = hf_home("errors");
    let token = [("HF_TOKEN", "right-token")];

    let missing = format!("{REPO}:nope.gguf");
    let out = tessera(&["inspect", "--model-id", &missing], &hub, &home, &token);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("has no nope.gguf") && stderr.contains("404"),
        "{stderr}"
    );

    let id = format!("{REPO}:tiny-q8.gguf");
    let out = tessera(
        &["inspect", "--model-id", &id],
        &hub,
        &home,
        &[("HF_TOKEN", "wrong")],
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("refused access") && stderr.contains("HF_TOKEN") && stderr.contains("401"),
        "{stderr}"
    );

    let out = tessera(
        &["inspect", "--model-id", &id],
        &hub,
        &home,
        &[("HF_HUB_OFFLINE", "1")],
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("HF_HUB_OFFLINE"), "{stderr}");

    // With the right token it downloads; serve checks it before listening.
    let out = tessera(&["inspect", "--model-id", &id], &hub, &home, &token);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let bad = tessera(&["serve", "--model-id", "no-slash"], &hub, &home, &token);
    let stderr = text(&bad.stderr);
    assert!(!bad.status.success());
    assert!(stderr.contains("OWNER/NAME"), "{stderr}");
    let mut listening = String::new();
    let _ = bad.stdout.as_slice().read_to_string(&mut listening);
    assert!(!listening.contains("listening"), "{listening}");
}

/// A Hub that cannot be reached is named with the hint, and the transport's
/// cause is said once, not once per layer of the error.
#[test]
fn an_unreachable_hub_is_named_once_with_what_to_do() {
    // A port nothing listens on: bound, then closed.
    let closed = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address");
    let home = hf_home("unreachable");
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["inspect", "--model-id", &format!("{REPO}:tiny-q8.gguf")])
        .env("HF_ENDPOINT", format!("http://{closed}"))
        .env("HF_HOME", &home)
        .env_remove("HF_TOKEN")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("TESSERA_MODEL")
        .env_remove("TESSERA_MODEL_ID")
        .output()
        .expect("the binary runs");
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot reach the Hugging Face Hub") && stderr.contains("HF_HUB_OFFLINE=1"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let refused = stderr.matches("onnection refused").count();
    assert!(
        refused <= 1,
        "the cause is repeated {refused} times: {stderr}"
    );
}
