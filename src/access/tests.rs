//! Rule matching, named by the request's shape.

use super::*;
use crate::config::{Config, Effect};
use std::path::Path;

fn policy(rules: &str, default: &str) -> Policy {
    let text = format!(
        "version = 1\n[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nurl = \"http://127.0.0.1:1\"\n\
         [[auth.chain]]\ntype = \"basic\"\n[access]\ndefault = \"{default}\"\n{rules}"
    );
    let cfg = Config::parse(&text, Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    Policy::compile(&cfg.access).expect("compile")
}

fn decide(p: &Policy, method: &str, path: &str, who: Option<(&str, &[&str])>, ip: &str) -> (Effect, Option<String>) {
    let principal = who.map(|(u, g)| Principal::for_tests(AuthKind::Basic, u, g));
    let m = Method::from_bytes(method.as_bytes()).expect("method");
    let d = p.decide(&Subject {
        method: &m,
        path,
        kind: principal.as_ref().map(|p| p.kind()),
        principal: principal.as_ref(),
        jira_user: who.map(|(u, _)| u),
        client_ip: ip.parse().expect("ip"),
    });
    (d.effect, d.rule)
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
fn anonymous_on_public_path_allowed_elsewhere_default() {
    let p = policy(RULES, "deny");
    assert_eq!(
        decide(&p, "GET", "/rest/api/2/serverInfo", None, "1.2.3.4"),
        (Effect::Allow, Some("public".into()))
    );
    assert_eq!(
        decide(&p, "GET", "/rest/api/2/myself", None, "1.2.3.4"),
        (Effect::Deny, None)
    );
}

#[test]
fn admin_path_non_admin_denied_admin_allowed() {
    let p = policy(RULES, "deny");
    assert_eq!(
        decide(&p, "GET", "/secure/admin/x", Some(("bob", &[])), "1.2.3.4")
            .1
            .as_deref(),
        Some("admin for admins")
    );
    let admin = decide(
        &p,
        "GET",
        "/secure/admin/x",
        Some(("root", &["JIRA-Administrators"])),
        "1.2.3.4",
    );
    assert_eq!(admin, (Effect::Allow, Some("authenticated".into())));
}

#[test]
fn user_match_is_case_insensitive_and_method_scoped() {
    let p = policy(RULES, "deny");
    assert_eq!(
        decide(&p, "POST", "/rest/api/2/issue", Some(("ci-bot", &[])), "1.2.3.4").0,
        Effect::Deny
    );
    assert_eq!(
        decide(&p, "GET", "/rest/api/2/issue", Some(("ci-bot", &[])), "1.2.3.4").0,
        Effect::Allow
    );
}

#[test]
fn source_cidr_decides_for_same_user() {
    let p = policy(RULES, "deny");
    assert_eq!(
        decide(&p, "GET", "/x", Some(("contractor", &[])), "10.1.2.3")
            .1
            .as_deref(),
        Some("office only")
    );
    assert_eq!(
        decide(&p, "GET", "/x", Some(("contractor", &[])), "8.8.8.8").0,
        Effect::Deny
    );
}

#[test]
fn no_rules_means_the_default() {
    assert_eq!(
        decide(&policy("", "allow"), "GET", "/x", None, "1.1.1.1"),
        (Effect::Allow, None)
    );
    assert_eq!(
        decide(&policy("", "deny"), "GET", "/x", Some(("a", &[])), "1.1.1.1"),
        (Effect::Deny, None)
    );
}

#[test]
fn report_mode_decides_but_does_not_enforce() {
    let cfg = crate::config::AccessConfig {
        default: Effect::Deny,
        mode: crate::config::AccessMode::Report,
        rules: Vec::new(),
    };
    let p = Policy::compile(&cfg).expect("compile");
    let d = p.decide(&Subject {
        method: &Method::DELETE,
        path: "/x",
        kind: None,
        principal: None,
        jira_user: None,
        client_ip: "1.1.1.1".parse().expect("ip"),
    });
    assert_eq!(d.effect, Effect::Deny);
    assert!(!d.enforced);
    assert!(!d.denies());
}
