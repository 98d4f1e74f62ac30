//! volley's benchmarks. The queue benchmark is `volley bench queue` (see
//! benches/README.md and benches/queue.sh); micro and end-to-end benchmarks join it
//! with the performance work.
