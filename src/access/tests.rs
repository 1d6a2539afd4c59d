//! Rule matching, named by the request's shape.

use super::*;
use crate::config::{Config, Effect};
use std::path::Path;

fn policy(rules: &str, default: &str) -> Policy {
    let text = format!(
        "version = 1\n[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n\
         [[auth.chain]]\ntype = \"basic\"\n[[auth.chain]]\ntype = \"api_key\"\n[access]\ndefault = \"{default}\"\n{rules}"
    );
    let cfg = Config::parse(&text, Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    Policy::compile(&cfg.access).expect("compile")
}

/// A request as the policy sees it; anonymous from 1.2.3.4 unless changed.
#[derive(Debug)]
struct Req {
    method: Method,
    path: String,
    kind: Option<AuthKind>,
    user: Option<String>,
    groups: Vec<String>,
    scopes: Vec<String>,
    ip: IpAddr,
    headers: HeaderMap,
}

fn req(method: &str, path: &str) -> Req {
    Req {
        method: Method::from_bytes(method.as_bytes()).expect("method"),
        path: path.into(),
        kind: None,
        user: None,
        groups: Vec::new(),
        scopes: Vec::new(),
        ip: "1.2.3.4".parse().expect("ip"),
        headers: HeaderMap::new(),
    }
}

impl Req {
    fn by(mut self, kind: AuthKind, user: &str, groups: &[&str]) -> Self {
        self.kind = Some(kind);
        self.user = Some(user.into());
        self.groups = groups.iter().map(|g| g.to_string()).collect();
        self
    }
    fn basic(self, user: &str, groups: &[&str]) -> Self {
        self.by(AuthKind::Basic, user, groups)
    }
    fn scopes(mut self, scopes: &[&str]) -> Self {
        self.scopes = scopes.iter().map(|s| s.to_string()).collect();
        self
    }
    fn from(mut self, ip: &str) -> Self {
        self.ip = ip.parse().expect("ip");
        self
    }
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.append(name, http::HeaderValue::from_static(value));
        self
    }
    fn subject(&self) -> Subject<'_> {
        Subject {
            method: &self.method,
            path: &self.path,
            kind: self.kind,
            authenticated: self.user.is_some(),
            user: self.user.as_deref(),
            groups: &self.groups,
            scopes: &self.scopes,
            client_ip: self.ip,
            headers: Some(&self.headers),
        }
    }
}

fn decide(p: &Policy, r: Req) -> (Effect, Option<String>) {
    let d = p.decide(&r.subject());
    (d.effect, d.rule.map(str::to_owned))
}

fn allow(rule: &str) -> (Effect, Option<String>) {
    (Effect::Allow, Some(rule.into()))
}

fn deny(rule: &str) -> (Effect, Option<String>) {
    (Effect::Deny, Some(rule.into()))
}

const DEFAULT: (Effect, Option<String>) = (Effect::Deny, None);

/// One rule allowing what matches; everything else falls to the default (deny).
fn only(matchers: &str) -> Policy {
    policy(
        &format!("[[access.rules]]\nname = \"r\"\neffect = \"allow\"\n{matchers}"),
        "deny",
    )
}

#[test]
fn methods_match_any_listed_in_any_case() {
    let p = only("methods = [\"get\", \"HEAD\"]");
    assert_eq!(decide(&p, req("GET", "/x")), allow("r"));
    assert_eq!(decide(&p, req("HEAD", "/x")), allow("r"));
    assert_eq!(decide(&p, req("POST", "/x")), DEFAULT);
}

#[test]
fn paths_match_single_star_one_segment_and_double_star_any() {
    let p = only("paths = [\"/rest/api/*/issue\", \"/secure/admin/**\"]");
    assert_eq!(decide(&p, req("GET", "/rest/api/2/issue")), allow("r"));
    assert_eq!(decide(&p, req("GET", "/rest/api/2/issue/")), allow("r"));
    assert_eq!(decide(&p, req("GET", "/rest/api/2/x/issue")), DEFAULT);
    assert_eq!(decide(&p, req("GET", "/secure/admin")), allow("r"));
    assert_eq!(decide(&p, req("GET", "/secure/admin/a/b")), allow("r"));
    assert_eq!(decide(&p, req("GET", "/secure/administrator")), DEFAULT);
}

#[test]
fn auth_matches_how_the_caller_authenticated() {
    let p = only("auth = [\"api_key\"]");
    assert_eq!(
        decide(&p, req("GET", "/x").by(AuthKind::ApiKey, "bot", &[])),
        allow("r")
    );
    assert_eq!(decide(&p, req("GET", "/x").basic("bot", &[])), DEFAULT);
    assert_eq!(decide(&p, req("GET", "/x")), DEFAULT, "anonymous has no auth kind");
}

#[test]
fn users_and_users_not_compare_case_insensitively() {
    let p = only("users = [\"Alice\", \"bob\"]");
    assert_eq!(decide(&p, req("GET", "/x").basic("ALICE", &[])), allow("r"));
    assert_eq!(decide(&p, req("GET", "/x").basic("carol", &[])), DEFAULT);
    assert_eq!(decide(&p, req("GET", "/x")), DEFAULT);
    let p = only("users_not = [\"Mallory\"]\nauthenticated = true");
    assert_eq!(decide(&p, req("GET", "/x").basic("mallory", &[])), DEFAULT);
    assert_eq!(decide(&p, req("GET", "/x").basic("alice", &[])), allow("r"));
}

#[test]
fn groups_need_one_listed_and_groups_not_none_listed() {
    let p = only("groups = [\"jira-administrators\", \"ops\"]");
    assert_eq!(decide(&p, req("GET", "/x").basic("a", &["users", "OPS"])), allow("r"));
    assert_eq!(decide(&p, req("GET", "/x").basic("a", &["users"])), DEFAULT);
    let p = only("groups_not = [\"contractors\"]\nauthenticated = true");
    assert_eq!(decide(&p, req("GET", "/x").basic("a", &["Contractors"])), DEFAULT);
    assert_eq!(decide(&p, req("GET", "/x").basic("a", &["staff"])), allow("r"));
}

#[test]
fn scopes_must_all_be_present() {
    let p = only("scopes = [\"read\", \"deploy\"]");
    let key = |s: &[&str]| req("GET", "/x").by(AuthKind::ApiKey, "bot", &[]).scopes(s);
    assert_eq!(decide(&p, key(&["deploy", "read", "x"])), allow("r"));
    assert_eq!(decide(&p, key(&["read"])), DEFAULT);
}

#[test]
fn source_matches_the_client_address_in_any_listed_network() {
    let p = only("source = [\"10.0.0.0/8\", \"2001:db8::/32\"]");
    assert_eq!(decide(&p, req("GET", "/x").from("10.9.8.7")), allow("r"));
    assert_eq!(decide(&p, req("GET", "/x").from("2001:db8::1")), allow("r"));
    assert_eq!(decide(&p, req("GET", "/x").from("11.0.0.1")), DEFAULT);
}

#[test]
fn anonymous_and_authenticated_flags() {
    let p = only("anonymous = true");
    assert_eq!(decide(&p, req("GET", "/x")), allow("r"));
    assert_eq!(decide(&p, req("GET", "/x").basic("a", &[])), DEFAULT);
    let p = only("authenticated = true");
    assert_eq!(decide(&p, req("GET", "/x")), DEFAULT);
    assert_eq!(decide(&p, req("GET", "/x").basic("a", &[])), allow("r"));
}

#[test]
fn headers_must_carry_exactly_the_value() {
    let p = only("headers = { \"X-Client\" = \"jenkins\" }");
    assert_eq!(decide(&p, req("GET", "/x").header("x-client", "jenkins")), allow("r"));
    assert_eq!(decide(&p, req("GET", "/x").header("x-client", "Jenkins")), DEFAULT);
    assert_eq!(decide(&p, req("GET", "/x")), DEFAULT);
}

#[test]
fn all_matchers_of_a_rule_must_hold_together() {
    let p = only(
        "methods = [\"POST\"]\npaths = [\"/rest/api/2/issue\"]\nauth = [\"basic\"]\ngroups = [\"dev\"]\n\
         source = [\"10.0.0.0/8\"]",
    );
    let good = || req("POST", "/rest/api/2/issue").basic("a", &["dev"]).from("10.0.0.1");
    assert_eq!(decide(&p, good()), allow("r"));
    let mut wrong_method = good();
    wrong_method.method = Method::PUT;
    assert_eq!(decide(&p, wrong_method), DEFAULT);
    assert_eq!(decide(&p, good().from("192.168.0.1")), DEFAULT);
    assert_eq!(
        decide(
            &p,
            req("POST", "/rest/api/2/issue").basic("a", &["qa"]).from("10.0.0.1")
        ),
        DEFAULT
    );
    assert_eq!(
        decide(
            &p,
            req("POST", "/rest/api/2/issue")
                .by(AuthKind::ApiKey, "a", &["dev"])
                .from("10.0.0.1")
        ),
        DEFAULT
    );
}

const RULES: &str = r#"
[[access.rules]]
name = "public"
paths = ["/rest/api/2/serverInfo"]
anonymous = true
effect = "allow"
[[access.rules]]
name = "admin for admins"
paths = ["/secure/admin/**"]
groups_not = ["jira-administrators"]
effect = "deny"
[[access.rules]]
name = "bots read only"
users = ["CI-Bot"]
methods = ["post", "DELETE"]
effect = "deny"
[[access.rules]]
name = "office only"
source = ["10.0.0.0/8"]
users = ["contractor"]
effect = "allow"
[[access.rules]]
name = "no contractor elsewhere"
users = ["contractor"]
effect = "deny"
[[access.rules]]
name = "authenticated"
authenticated = true
effect = "allow"
"#;

#[test]
fn first_matching_rule_wins_in_file_order() {
    let p = policy(RULES, "deny");
    assert_eq!(decide(&p, req("GET", "/rest/api/2/serverInfo")), allow("public"));
    assert_eq!(decide(&p, req("GET", "/rest/api/2/myself")), DEFAULT);
    assert_eq!(
        decide(&p, req("GET", "/secure/admin/x").basic("bob", &[])),
        deny("admin for admins")
    );
    assert_eq!(
        decide(
            &p,
            req("GET", "/secure/admin/x").basic("root", &["JIRA-Administrators"])
        ),
        allow("authenticated")
    );
    assert_eq!(
        decide(&p, req("POST", "/rest/api/2/issue").basic("ci-bot", &[])),
        deny("bots read only")
    );
    assert_eq!(
        decide(&p, req("GET", "/rest/api/2/issue").basic("ci-bot", &[])),
        allow("authenticated")
    );
    assert_eq!(
        decide(&p, req("GET", "/x").basic("contractor", &[]).from("10.1.2.3")),
        allow("office only")
    );
    assert_eq!(
        decide(&p, req("GET", "/x").basic("contractor", &[]).from("8.8.8.8")),
        deny("no contractor elsewhere")
    );
}

#[test]
fn no_rules_means_the_default() {
    assert_eq!(decide(&policy("", "allow"), req("GET", "/x")), (Effect::Allow, None));
    assert_eq!(decide(&policy("", "deny"), req("GET", "/x").basic("a", &[])), DEFAULT);
}

#[test]
fn report_mode_for_the_whole_list_decides_but_does_not_enforce() {
    let text = format!("{RULES}\n");
    let mut p = policy(&text, "deny");
    p.mode = AccessMode::Report;
    let d = p.decide(&req("DELETE", "/secure/admin/x").basic("bob", &[]).subject());
    assert_eq!((d.effect, d.rule), (Effect::Deny, Some("admin for admins")));
    assert!(!d.enforced && !d.denies());
}

#[test]
fn a_report_mode_rule_is_noted_and_the_next_rules_decide() {
    let p = policy(
        r#"
[[access.rules]]
name = "no basic auth (trial)"
auth = ["basic"]
effect = "deny"
mode = "report"
[[access.rules]]
name = "authenticated"
authenticated = true
effect = "allow"
"#,
        "deny",
    );
    let d = p.decide(&req("GET", "/x").basic("alice", &[]).subject());
    assert_eq!((d.effect, d.rule), (Effect::Allow, Some("authenticated")));
    assert_eq!(d.would_deny, ["no basic auth (trial)"]);
    let d = p.decide(&req("GET", "/x").by(AuthKind::ApiKey, "bot", &[]).subject());
    assert!(d.would_deny.is_empty());
}

#[test]
fn a_rate_comes_with_the_allow_rule_that_decided() {
    let p = policy(
        "[[access.rules]]\nname = \"bots\"\nusers = [\"bot\"]\neffect = \"allow\"\nrate = \"20/s burst 100\"\n\
         [[access.rules]]\nname = \"rest\"\nauthenticated = true\neffect = \"allow\"\n",
        "deny",
    );
    let d = p.decide(&req("GET", "/x").basic("bot", &[]).subject());
    assert_eq!(
        d.rate,
        Some((
            0,
            RateSpec {
                count: 20,
                per_secs: 1,
                burst: 100
            }
        ))
    );
    assert_eq!(p.decide(&req("GET", "/x").basic("alice", &[]).subject()).rate, None);
}

/// What `decide` must equal: every rule in order, no index.
fn decide_linear(p: &Policy, s: &Subject<'_>) -> (Effect, Option<String>) {
    let user = s.user.map(str::to_lowercase);
    let groups = lower(s.groups);
    for r in &p.rules {
        if matches!(r.matches(s, user.as_deref(), &groups), Match::Yes) && !r.report {
            return (r.effect, Some(r.name.to_string()));
        }
    }
    (p.default, None)
}

mod index {
    use super::*;
    use proptest::prelude::*;

    fn pattern() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof!["a", "b", "c", Just("*".to_string()), Just("**".to_string())],
            0..4,
        )
        .prop_map(|segs| format!("/{}", segs.join("/")))
    }

    fn path() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof!["a", "b", "c", "d"], 0..5).prop_map(|segs| format!("/{}", segs.join("/")))
    }

    proptest! {
        #[test]
        fn the_path_index_decides_exactly_as_a_scan_of_every_rule(
            rules in proptest::collection::vec((proptest::collection::vec(pattern(), 0..3), any::<bool>(), any::<bool>()), 0..12),
            paths in proptest::collection::vec(path(), 1..8),
        ) {
            let mut text = String::new();
            for (i, (patterns, allow, get_only)) in rules.iter().enumerate() {
                let ps: Vec<String> = patterns.iter().map(|p| format!("{p:?}")).collect();
                text += &format!(
                    "[[access.rules]]\nname = \"r{i}\"\neffect = \"{}\"\npaths = [{}]\n{}",
                    if *allow { "allow" } else { "deny" },
                    ps.join(", "),
                    if *get_only { "methods = [\"GET\"]\n" } else { "" }
                );
            }
            let p = policy(&text, "deny");
            for path in &paths {
                for method in ["GET", "POST"] {
                    let r = req(method, path);
                    prop_assert_eq!(decide(&p, req(method, path)), decide_linear(&p, &r.subject()));
                }
            }
        }
    }
}

#[test]
fn explain_says_why_each_earlier_rule_did_not_match() {
    let p = policy(RULES, "deny");
    let r = req("POST", "/rest/api/2/issue")
        .basic("ci-bot", &["bots"])
        .from("8.8.8.8");
    let (steps, d) = p.explain(&r.subject());
    assert_eq!(d.rule, Some("bots read only"));
    let names: Vec<&str> = steps.iter().map(|s| s.rule.as_str()).collect();
    assert_eq!(names, ["public", "admin for admins", "bots read only"]);
    assert!(
        steps[0]
            .failed
            .iter()
            .any(|f| f.contains("matches none of /rest/api/2/serverInfo"))
    );
    assert!(
        steps[0]
            .failed
            .iter()
            .any(|f| f.contains("the caller is authenticated"))
    );
    assert!(steps[1].failed.iter().any(|f| f.contains("/secure/admin/**")));
    assert!(steps[2].failed.is_empty());
}

#[test]
fn check_finds_shadowed_rules_and_anonymous_writes() {
    let p = policy(
        r#"
[[access.rules]]
name = "everyone in"
authenticated = true
effect = "allow"
[[access.rules]]
name = "admins only on admin pages"
paths = ["/secure/admin/**"]
authenticated = true
groups_not = ["jira-administrators"]
effect = "deny"
[[access.rules]]
name = "public"
paths = ["/rest/api/2/serverInfo"]
anonymous = true
effect = "allow"
"#,
        "deny",
    );
    assert_eq!(
        p.shadowed(),
        [("admins only on admin pages".to_string(), "everyone in".to_string())]
    );
    assert_eq!(
        p.anonymous_writes(),
        Some("rule \"public\"".into()),
        "no methods: POST too"
    );
    let p = policy(
        "[[access.rules]]\nname = \"public\"\nanonymous = true\nmethods = [\"GET\"]\neffect = \"allow\"\n",
        "deny",
    );
    assert!(p.shadowed().is_empty());
    assert_eq!(p.anonymous_writes(), None);
    assert!(policy("", "allow").anonymous_writes().is_some());
}

/// `decide` (the request path) and `explain` (the admin's `explain` command) walk the
/// matchers separately: for any rules and any request they must agree on every rule.
mod explain_agrees {
    use super::*;
    use proptest::prelude::*;

    fn some_of(items: &'static [&'static str]) -> impl Strategy<Value = Vec<&'static str>> {
        proptest::sample::subsequence(items, 0..=items.len())
    }

    fn list(v: &[&str]) -> String {
        let quoted: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
        format!("[{}]", quoted.join(", "))
    }

    /// At most one of `anonymous` and `authenticated` (both together is a config error).
    fn caller() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just(""),
            Just("anonymous = true\n"),
            Just("anonymous = false\n"),
            Just("authenticated = true\n"),
            Just("authenticated = false\n"),
        ]
    }

    prop_compose! {
        fn rule()(
            methods in some_of(&["GET", "POST"]),
            paths in some_of(&["/a", "/a/*", "/b/**", "/**"]),
            auth in some_of(&["basic", "api_key"]),
            users in some_of(&["Alice", "bob"]),
            users_not in some_of(&["alice", "Bob"]),
            groups in some_of(&["Devs", "ops"]),
            groups_not in some_of(&["devs", "Ops"]),
            source in some_of(&["1.2.3.0/24", "10.0.0.0/8"]),
            scopes in some_of(&["read", "write"]),
            caller in caller(),
            header in any::<bool>(),
            allow in any::<bool>(),
            report in any::<bool>(),
        ) -> String {
            let mut t = format!(
                "effect = \"{}\"\nmethods = {}\npaths = {}\nauth = {}\nusers = {}\nusers_not = {}\n\
                 groups = {}\ngroups_not = {}\nsource = {}\nscopes = {}\n",
                if allow { "allow" } else { "deny" },
                list(&methods), list(&paths), list(&auth), list(&users), list(&users_not),
                list(&groups), list(&groups_not), list(&source), list(&scopes),
            );
            t += caller;
            if header {
                t += "headers = { \"X-Env\" = \"prod\" }\n";
            }
            if report {
                t += "mode = \"report\"\n";
            }
            t
        }
    }

    prop_compose! {
        fn request()(
            method in prop_oneof![Just("GET"), Just("POST")],
            path in prop_oneof![Just("/a"), Just("/a/x"), Just("/b/x/y"), Just("/c")],
            who in prop_oneof![
                Just(None),
                Just(Some((AuthKind::Basic, "alice"))),
                Just(Some((AuthKind::Basic, "BOB"))),
                Just(Some((AuthKind::ApiKey, "carol"))),
            ],
            groups in some_of(&["devs", "OPS"]),
            scopes in some_of(&["read", "write"]),
            ip in prop_oneof![Just("1.2.3.4"), Just("10.1.1.1"), Just("8.8.8.8")],
            env in prop_oneof![Just(None), Just(Some("prod")), Just(Some("dev"))],
        ) -> Req {
            let mut r = req(method, path).from(ip).scopes(&scopes);
            if let Some((kind, user)) = who {
                r = r.by(kind, user, &groups);
            }
            if let Some(env) = env {
                r = r.header("x-env", env);
            }
            r
        }
    }

    proptest! {
        #[test]
        fn each_rule_matches_exactly_when_explain_finds_nothing_against_it(
            rules in proptest::collection::vec(rule(), 1..6),
            requests in proptest::collection::vec(request(), 1..6),
        ) {
            let mut text = String::new();
            for (i, r) in rules.iter().enumerate() {
                text += &format!("[[access.rules]]\nname = \"r{i}\"\n{r}");
            }
            let p = policy(&text, "deny");
            for r in &requests {
                let s = r.subject();
                let user = s.user.map(str::to_lowercase);
                let groups = lower(s.groups);
                for rule in &p.rules {
                    let failed = rule.why_not(&s, user.as_deref(), &groups);
                    prop_assert_eq!(
                        matches!(rule.matches(&s, user.as_deref(), &groups), Match::Yes),
                        failed.is_empty(),
                        "rule {} against {:?} {} {:?}: {:?}", rule.name, s.method, s.path, s.user, failed
                    );
                }
                let (steps, d) = p.explain(&s);
                let deciding = steps.last().filter(|st| st.failed.is_empty() && !st.report_only);
                prop_assert_eq!(d.rule, deciding.map(|st| st.rule.as_str()));
                // The index a request keeps names the same rule.
                prop_assert_eq!(d.rule_index.and_then(|i| p.rule_name(i)), d.rule);
            }
        }
    }
}
