//! Micro-benchmarks of the per-request hot path: path normalisation, Basic parsing, the
//! verification-cache lookup (warm Basic auth), rule matching, and a whole warm Basic
//! authentication through the chain.

use std::sync::Arc;
use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderValue;

use jira_auth_proxy::auth::basic::{BasicAuth, parse};
use jira_auth_proxy::auth::{AuthRequest, Chain, Verdict};
use jira_auth_proxy::config::Config;
use jira_auth_proxy::pipeline::path::normalize;
use jira_auth_proxy::store::MemoryStore;

fn config() -> Config {
    let hash = jira_auth_proxy::auth::password::hash_with(b"alice-pw", 1024, 1).expect("hash");
    let text = format!(
        "version = 1\n[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n\
         [[auth.chain]]\ntype = \"basic\"\n[[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n\
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
    let jira_auth_proxy::config::AuthMember::Basic(bc) = &cfg.chain[0];
    let store = Arc::new(MemoryStore::new(1000));
    let basic = BasicAuth::new(bc, &cfg.users, store, "Jira").expect("basic");
    let chain = Chain::new(vec![Box::new(basic)]);
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
}

criterion_group!(core, benches);
criterion_main!(core);
