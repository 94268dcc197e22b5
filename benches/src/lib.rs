//! Benchmarks of tessera; see `benches/README.md`. The library part is empty:
//! the `ops` binary and the criterion benchmarks under `benches/` are the package.
