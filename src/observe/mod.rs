//! Observability: the audit log (one JSON line per request) and Prometheus metrics.

pub mod audit;
pub mod metrics;
