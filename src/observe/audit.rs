//! The audit log: one JSON line per request, written before the response leaves, so a
//! client that has its answer can find its line. Fields are fixed and never carry a
//! secret: no header values, no query string, no credential.

use std::fs::OpenOptions;
use std::io::{self, LineWriter, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;
use serde::Serialize;

use crate::config::AuditTarget;
use crate::pipeline::RequestCtx;

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    request_id: &'a str,
    client_ip: String,
    method: &'a str,
    path: &'a str,
    auth: Option<&'static str>,
    outcome: &'static str,
    reason: Option<&'static str>,
    user: Option<&'a str>,
    rule: Option<&'a str>,
    /// Report-mode rules (or the whole list in report mode) that would have denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    would_deny: Option<&'a str>,
    /// Jira's own request id (`X-AREQUESTID`), to join this line with Jira's logs.
    jira_request_id: Option<&'a str>,
    status: u16,
    duration_ms: f64,
}

pub struct Audit {
    out: Option<Mutex<Box<dyn Write + Send>>>,
    failures: AtomicU64,
    healthy: std::sync::atomic::AtomicBool,
}

impl Audit {
    pub fn open(target: &AuditTarget) -> io::Result<Audit> {
        let out: Option<Box<dyn Write + Send>> = match target {
            AuditTarget::Off => None,
            AuditTarget::Stdout => Some(Box::new(LineWriter::new(io::stdout()))),
            AuditTarget::File(path) => {
                let f = OpenOptions::new().create(true).append(true).open(path)?;
                Some(Box::new(LineWriter::new(f)))
            }
        };
        Ok(Audit {
            out: out.map(Mutex::new),
            failures: AtomicU64::new(0),
            healthy: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Lines that could not be written.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Writes the request's line; false when it could not be written.
    pub fn record(&self, ctx: &RequestCtx, status: StatusCode) -> bool {
        let Some(out) = &self.out else { return true };
        let line = Line {
            time: crate::time::rfc3339(ctx.time),
            request_id: ctx.id.to_str().unwrap_or("-"),
            client_ip: ctx.client_ip.to_string(),
            method: ctx.method.as_str(),
            path: ctx.path.as_ref().map_or(ctx.raw_path.as_str(), |p| p.decoded.as_str()),
            auth: ctx.auth_kind.map(|k| k.as_str()),
            outcome: ctx.outcome,
            reason: ctx.reason,
            user: ctx.jira_user.as_deref(),
            rule: ctx.rule.as_deref(),
            would_deny: Some(ctx.would_deny.as_str()).filter(|w| !w.is_empty()),
            jira_request_id: ctx.jira_request_id.as_ref().and_then(|v| v.to_str().ok()),
            status: status.as_u16(),
            duration_ms: (ctx.started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        };
        let Ok(mut text) = serde_json::to_string(&line) else {
            return false;
        };
        text.push('\n');
        let mut w = out.lock().unwrap_or_else(|p| p.into_inner());
        // A LineWriter flushes at the newline: an error here is the line not written.
        let ok = w.write_all(text.as_bytes()).and_then(|_| w.flush()).is_ok();
        if !ok {
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(request_id = line.request_id, "audit line could not be written");
        }
        self.healthy.store(ok, Ordering::Relaxed);
        ok
    }

    /// The last line was written (or nothing was written yet).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}
