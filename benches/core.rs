//! Micro-benchmarks of the per-request hot path: path normalisation, Basic parsing, the
//! verification-cache lookup (warm Basic auth), rule matching, and a whole warm Basic
//! authentication through the chain.

use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderValue;

use jira_auth_proxy::auth::api_key;
use jira_auth_proxy::auth::basic::parse;

const API_KEY: &str = "jap_benchbenchbenchbenchbenchbenchbenchbenchben";
use jira_auth_proxy::auth::{AuthRequest, Verdict};
use jira_auth_proxy::config::Config;
use jira_auth_proxy::pipeline::path::normalize;
use jira_auth_proxy::runtime::Runtime;

fn config() -> Config {
    let hash = jira_auth_proxy::auth::password::hash_with(b"alice-pw", 1024, 1).expect("hash");
    let key_hash = api_key::format_digest(&api_key::digest_key(API_KEY));
    let text = format!(
        "version = 1\n[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n[audit]\nto = \"off\"\n\
         [[auth.chain]]\ntype = \"api_key\"\n[[auth.chain]]\ntype = \"basic\"\n\
         [[api_keys]]\nid = \"bench\"\nhash = \"{key_hash}\"\nuser = \"ci-bot\"\n[[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n\
         [[access.rules]]\nname = \"admins\"\npaths = [\"/secure/admin/**\"]\ngroups_not = [\"admins\"]\neffect = \"deny\"\n\
         [[access.rules]]\nname = \"all\"\nauthenticated = true\neffect = \"allow\"\n"
    );
    Config::parse(&text, std::path::Path::new(".")).expect("config")
}

fn benches(c: &mut Criterion) {
    c.bench_function("normalize_plain_path", |b| {
        b.iter(|| normalize("/rest/api/2/issue/ABC-123/comment"))
    });
    c.bench_function("normalize_hostile_path", |b| {
        b.iter(|| normalize("/rest/api/2/..;/%2e%2e/secure;jsessionid=x/admin//users/%41%42"))
    });
    let v = HeaderValue::from_static("Basic YWxpY2U6YWxpY2UtcHc=");
    c.bench_function("basic_parse", |b| b.iter(|| parse(&v)));

    let cfg = config();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let runtime = Runtime::build(&cfg).expect("runtime");
    let chain = &runtime.chain;
    let req = http::Request::get("/rest/api/2/myself")
        .header("authorization", "Basic YWxpY2U6YWxpY2UtcHc=")
        .body(())
        .expect("req");
    let (parts, _) = req.into_parts();
    let areq = AuthRequest {
        parts: &parts,
        client_ip: [127, 0, 0, 1].into(),
        now: SystemTime::now(),
    };
    assert!(matches!(
        rt.block_on(chain.authenticate(&areq)),
        Verdict::Authenticated(_)
    ));
    c.bench_function("basic_warm_cache_chain", |b| {
        b.iter(|| rt.block_on(chain.authenticate(&areq)));
    });
    let req = http::Request::get("/rest/api/2/myself")
        .header("authorization", format!("Bearer {API_KEY}"))
        .body(())
        .expect("req");
    let (parts, _) = req.into_parts();
    let kreq = AuthRequest {
        parts: &parts,
        client_ip: [127, 0, 0, 1].into(),
        now: SystemTime::now(),
    };
    assert!(matches!(
        rt.block_on(chain.authenticate(&kreq)),
        Verdict::Authenticated(_)
    ));
    c.bench_function("api_key_bearer_chain", |b| {
        b.iter(|| rt.block_on(chain.authenticate(&kreq)));
    });
}

criterion_group!(core, benches);
criterion_main!(core);
