//! 1 GiB up and 1 GiB down through the proxy with flat memory: bodies are generated
//! chunk by chunk, hashed on the far side, and never held whole by anyone. Its own test
//! binary so the process's peak RSS belongs to this test alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use http::Request;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;

const GIB: u64 = 1 << 30;

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_and_download_stream_with_flat_memory() {
    let jira = FakeJira::start(JiraTrust::Header).await;
    // Jira answers an upload after reading all of it: give a slow (debug, busy) machine time.
    let text = basic_config("").replace("response_timeout = \"2s\"", "response_timeout = \"120s\"");
    let proxy = Proxy::start(&text, jira.addr).await;
    let auth = basic("alice", "alice-pw");
    let before = peak_rss_kib();

    // Upload: the fake Jira hashes what it receives.
    let client: Client<_, PatternBody> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::put(proxy.url("/rest/api/2/issue/X-1/attachments"))
        .header("authorization", &auth)
        .header("content-length", GIB)
        .body(PatternBody::new(GIB))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = jira.last();
    assert_eq!(seen.body_len, GIB);
    assert_eq!(seen.body_sha256, PatternBody::sha256(GIB));

    // Download: hash what comes back, frame by frame.
    let req = Request::get(proxy.url(&format!("/test/download?bytes={GIB}")))
        .header("authorization", &auth)
        .body(PatternBody::new(0))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.unwrap().data_ref() {
            len += d.len() as u64;
            ctx.update(d);
        }
    }
    assert_eq!(len, GIB);
    assert_eq!(hex(ctx.finish().as_ref()), PatternBody::sha256(GIB));

    let grown_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    eprintln!("peak RSS grew by {grown_mib} MiB while streaming 2 GiB");
    assert!(grown_mib < 128, "memory grew by {grown_mib} MiB: a body was buffered");
}
