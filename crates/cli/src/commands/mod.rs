//! One module per subcommand.

pub mod bench;
pub mod bench_report;
pub mod embed;
pub mod generate;
pub mod health;
pub mod inspect;
pub mod report;
pub mod rerank;
pub mod serve;
pub mod tune;
