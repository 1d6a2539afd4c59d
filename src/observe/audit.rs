//! The audit log: one JSON line per request, written before the response leaves, so a
//! client that has its answer can find its line. Fields are fixed and never carry a
//! secret: no header values, no query string, no credential.

use std::fs::{File, OpenOptions};
use std::io::{self, LineWriter, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use http::StatusCode;

use crate::config::AuditTarget;
use crate::pipeline::RequestCtx;

/// Appends a JSON string (quoted and escaped).
fn string(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn optional(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// One audit line, fields in a fixed order (`would_deny` only when some rule would have
/// denied), written straight into a buffer: this runs for every request.
fn line(ctx: &RequestCtx, status: StatusCode) -> Vec<u8> {
    let mut out = Vec::with_capacity(384);
    out.extend_from_slice(b"{\"time\":\"");
    crate::time::write_rfc3339(&mut out, ctx.time);
    out.extend_from_slice(b"\",\"request_id\":");
    string(&mut out, ctx.id.to_str().unwrap_or("-"));
    out.extend_from_slice(b",\"client_ip\":\"");
    crate::pipeline::admit::write_ip(&mut out, ctx.client_ip);
    out.extend_from_slice(b"\",\"method\":");
    string(&mut out, ctx.method.as_str());
    out.extend_from_slice(b",\"path\":");
    string(
        &mut out,
        ctx.path.as_ref().map_or(ctx.raw_path.as_str(), |p| p.decoded.as_str()),
    );
    out.extend_from_slice(b",\"auth\":");
    optional(&mut out, ctx.auth_kind.map(|k| k.as_str()));
    out.extend_from_slice(b",\"outcome\":");
    string(&mut out, ctx.outcome);
    out.extend_from_slice(b",\"reason\":");
    optional(&mut out, ctx.reason);
    out.extend_from_slice(b",\"user\":");
    optional(&mut out, ctx.jira_user.as_deref());
    out.extend_from_slice(b",\"rule\":");
    optional(&mut out, ctx.rule.as_deref());
    if !ctx.would_deny.is_empty() {
        out.extend_from_slice(b",\"would_deny\":");
        string(&mut out, &ctx.would_deny);
    }
    out.extend_from_slice(b",\"jira_request_id\":");
    optional(&mut out, ctx.jira_request_id.as_ref().and_then(|v| v.to_str().ok()));
    out.extend_from_slice(b",\"status\":");
    let _ = serde_json::to_writer(&mut out, &status.as_u16());
    out.extend_from_slice(b",\"duration_ms\":");
    let ms = (ctx.started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    let _ = serde_json::to_writer(&mut out, &ms);
    out.extend_from_slice(b"}\n");
    out
}

/// Where lines go. A file is opened for appending and written without a lock: each line
/// is one `write(2)` at the end of the file (O_APPEND), so listener threads never wait
/// for each other's disk writes.
enum Sink {
    File(File),
    Stdout(Mutex<LineWriter<io::Stdout>>),
}

pub struct Audit {
    out: Option<Sink>,
    failures: AtomicU64,
    healthy: std::sync::atomic::AtomicBool,
}

impl Audit {
    pub fn open(target: &AuditTarget) -> io::Result<Audit> {
        let out = match target {
            AuditTarget::Off => None,
            AuditTarget::Stdout => Some(Sink::Stdout(Mutex::new(LineWriter::new(io::stdout())))),
            AuditTarget::File(path) => Some(Sink::File(OpenOptions::new().create(true).append(true).open(path)?)),
        };
        Ok(Audit {
            out,
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
        let text = line(ctx, status);
        let ok = match out {
            Sink::File(f) => (&*f).write_all(&text).is_ok(),
            Sink::Stdout(w) => {
                let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
                // A LineWriter flushes at the newline: an error here is the line not written.
                w.write_all(&text).and_then(|_| w.flush()).is_ok()
            }
        };
        if !ok {
            self.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                request_id = ctx.id.to_str().unwrap_or("-"),
                "audit line could not be written"
            );
        }
        self.healthy.store(ok, Ordering::Relaxed);
        ok
    }

    /// The last line was written (or nothing was written yet).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}
