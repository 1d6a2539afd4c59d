//! Observability: the audit log (one JSON line per request). Metrics arrive with the
//! admin endpoints.

pub mod audit;
