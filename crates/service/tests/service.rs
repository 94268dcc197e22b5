//! The service on its own, with no transport: loading from a file, what it
//! answers while loading and for a kind it does not host, installing, and a
//! rerank through its queue equal to the engine's direct path.

use std::sync::Arc;

use tessera_backend::Backend;
use tessera_backend_cpu::CpuBackend;
use tessera_engine::{RerankOptions, Reranker};
use tessera_gguf::GgufFile;
use tessera_runtime::{BackendChoice, BackendOptions, Precision};
use tessera_service::{
    Health, Hosted, LoadPlan, LogProgress, Model, ModelFile, ModelInfo, ModelKind, Placement,
    RerankJob, SchedulerConfig, Service, ServiceError, ServiceOptions,
};

const QUERY: &str = "how do I reset my password";
const DOCS: [&str; 3] = [
    "To reset your password, click forgot password on the login screen.",
    "Our office hours are Monday to Friday, 9 to 18.",
    "Password requirements: 12+ characters, one number, one symbol.",
];

fn file() -> Arc<GgufFile> {
    let bytes = tessera_fixtures::bytes("tiny-q8.gguf");
    Arc::new(GgufFile::from_static(bytes).expect("fixture parses"))
}

fn info() -> ModelInfo {
    ModelInfo {
        name: "tiny-q8".into(),
        backend: "cpu".into(),
        device: "cpu".into(),
        placeholder: true,
    }
}

fn job(documents: &[&str]) -> RerankJob {
    RerankJob {
        query: QUERY.into(),
        documents: documents.iter().map(|d| d.to_string()).collect(),
        options: RerankOptions::default(),
    }
}

fn plan(reranker: Option<ModelFile>, embedder: Option<ModelFile>) -> LoadPlan {
    LoadPlan {
        reranker,
        embedder,
        backend: BackendChoice::Cpu,
        // The reference arithmetic, as the direct path below.
        backend_options: BackendOptions {
            precision: Precision::Reference,
            ..BackendOptions::default()
        },
        placement: Placement::Replicas(1),
        prefix_cache_bytes: 1 << 20,
        warm_up_tokens: Some(0),
        progress: Arc::new(LogProgress),
    }
}

fn model_file() -> ModelFile {
    ModelFile {
        file: file(),
        name: "tiny-q8".into(),
        placeholder: true,
        tokenizer: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_file_reranks_through_the_queue_as_the_engine_does_directly() {
    let options = ServiceOptions {
        load: Some(plan(Some(model_file()), None)),
        // Small passes: the eleven documents take several.
        scheduler: SchedulerConfig {
            max_batch_tokens: 256,
            ..SchedulerConfig::default()
        },
        ..ServiceOptions::default()
    };
    let (service, loading) = Service::start(options);
    loading.wait().await.expect("the fixture loads");
    assert_eq!(service.health(), Health::Ready);
    assert_eq!(
        service.hosts(),
        Hosted {
            reranker: true,
            embedder: false
        }
    );

    let documents: Vec<String> = (0..11)
        .map(|i| format!("{} (copy {i})", DOCS[i % DOCS.len()]))
        .collect();
    let refs: Vec<&str> = documents.iter().map(String::as_str).collect();
    let ranked = service.rerank(job(&refs)).await.expect("ranked");
    assert!(ranked.timings.batches >= 2, "{:?}", ranked.timings);

    // The engine's own loop over the same file, options and pass budget.
    let direct = Reranker::load(CpuBackend::new(), &file(), None).expect("loads");
    assert_eq!(direct.engine().backend().name(), service_backend(&service));
    let options = RerankOptions {
        max_batch_tokens: 256,
        ..RerankOptions::default()
    };
    let want = direct.rerank(QUERY, &refs, &options).expect("direct");
    assert_eq!(ranked.output.documents.len(), want.documents.len());
    for (got, want) in ranked.output.documents.iter().zip(&want.documents) {
        assert_eq!(got.index, want.index);
        assert_eq!(got.relevance, want.relevance, "document {}", got.index);
    }
    assert_eq!(ranked.output.total_tokens, want.total_tokens);

    service.begin_shutdown();
    assert_eq!(service.health(), Health::ShuttingDown);
    service.stop();
}

#[tokio::test]
async fn a_kind_not_hosted_is_named_and_one_still_loading_is_not_ready() {
    let (service, loading) = Service::start(ServiceOptions::default());
    loading.wait().await.expect("nothing to load");
    assert_eq!(service.health(), Health::Loading);
    assert!(matches!(
        service.rerank(job(&DOCS)).await,
        Err(ServiceError::NotReady)
    ));
    match service.embed_texts_for_test().await {
        Err(ServiceError::NotHosted { wanted, hosted }) => {
            assert_eq!(wanted, ModelKind::Embedding);
            assert_eq!(hosted, [(ModelKind::Reranker, None)]);
        }
        other => panic!("expected NotHosted, got {:?}", other.map(|_| ())),
    }
    // Tokenising needs the reranker's tokenizer: not ready either.
    assert!(matches!(
        service.tokenize(vec!["hello".into()]).await,
        Err(ServiceError::NotReady)
    ));
}

#[tokio::test]
async fn each_kind_is_installed_once_and_only_when_hosted() {
    let (service, _) = Service::start(ServiceOptions::default());
    let reranker = || Reranker::load(CpuBackend::new(), &file(), None).expect("loads");
    service
        .install(Model::reranker(reranker()), info())
        .expect("installs");
    assert_eq!(service.health(), Health::Ready);
    let again = service.install(Model::reranker(reranker()), info());
    assert!(
        matches!(&again, Err(ServiceError::Internal(m)) if m.contains("already installed")),
        "{again:?}"
    );
    let tokens = service
        .tokenize(vec!["reset my password".into()])
        .await
        .expect("tokenised");
    let text: String = tokens[0].iter().map(|t| t.text.as_str()).collect();
    assert_eq!(text, "reset my password");
    assert!(tokens[0].iter().all(|t| !t.special));
    service.stop();
}

#[test]
fn a_file_of_the_wrong_kind_fails_loading_with_the_reason() {
    let embedder = ModelFile {
        file: Arc::new(
            GgufFile::from_static(tessera_fixtures::bytes("tiny-embed-q8.gguf"))
                .expect("fixture parses"),
        ),
        name: "tiny-embed-q8".into(),
        placeholder: false,
        tokenizer: None,
    };
    // Offered as the reranker.
    let options = ServiceOptions {
        load: Some(plan(Some(embedder), None)),
        ..ServiceOptions::default()
    };
    let (service, loading) = Service::start(options);
    match loading.blocking_wait() {
        Err(ServiceError::Load(message)) => {
            assert!(message.contains("tiny-embed-q8"), "{message}");
            assert!(message.contains("reranker"), "{message}");
        }
        other => panic!("expected a load error, got {other:?}"),
    }
    assert_eq!(service.health(), Health::Loading);
}

fn service_backend(service: &Service) -> String {
    service
        .model(ModelKind::Reranker)
        .expect("loaded")
        .info
        .backend
        .clone()
}

/// An embedding call with one text, for the calls' error paths.
trait EmbedForTest {
    async fn embed_texts_for_test(&self) -> Result<tessera_service::Embedded, ServiceError>;
}

impl EmbedForTest for Service {
    async fn embed_texts_for_test(&self) -> Result<tessera_service::Embedded, ServiceError> {
        self.embed(tessera_service::EmbedJob {
            inputs: tessera_service::EmbedInputs::Texts(vec!["x".into()]),
            options: tessera_service::EmbedOptions::default(),
            normalize: true,
        })
        .await
    }
}
