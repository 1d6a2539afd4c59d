//! Access rules, compiled at load: first matching rule wins, `access.default` when none
//! matches. Pure and synchronous. `mode = "report"` (for the whole list, or per rule)
//! logs would-be denials and lets the request through.
//!
//! Matching cost stays flat as rules grow: rules are indexed by the literal prefix of
//! their path patterns (a trie of path segments), so a request only evaluates the rules
//! whose patterns could match its path, in their original order.

pub mod glob;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method};
use ipnet::IpNet;

use crate::auth::AuthKind;
use crate::config::{AccessConfig, AccessMode, Effect, RateSpec, RuleConfig};
use glob::Glob;

/// What the policy sees of a request (or of a request an admin describes to `explain`).
pub struct Subject<'a> {
    pub method: &'a Method,
    /// The normalised path.
    pub path: &'a str,
    /// How the caller authenticated; set without a user for tokens handed to Jira.
    pub kind: Option<AuthKind>,
    /// A principal exists (the caller is not anonymous).
    pub authenticated: bool,
    pub user: Option<&'a str>,
    pub groups: &'a [String],
    pub scopes: &'a [String],
    pub client_ip: IpAddr,
    pub headers: Option<&'a HeaderMap>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision<'p> {
    /// What the rules say.
    pub effect: Effect,
    /// The rule that decided, `None` for the default: its name, borrowed from the policy,
    /// and its place in it ([`Policy::rule_name`]). No reference count is taken per
    /// request: every listener thread's requests would write the same one.
    pub rule: Option<&'p str>,
    pub rule_index: Option<usize>,
    /// False in report mode: a `Deny` is logged, not enforced.
    pub enforced: bool,
    /// On a denial: the scopes of an earlier allow rule that held in every other respect,
    /// so a bearer caller can be told `insufficient_scope`.
    pub missing_scopes: Option<Vec<String>>,
    /// Report-mode rules that matched on the way and would have denied.
    pub would_deny: Vec<String>,
    /// The deciding rule's rate limit and its index (the bucket is per rule and caller).
    pub rate: Option<(usize, RateSpec)>,
}

impl Decision<'_> {
    pub fn denies(&self) -> bool {
        self.effect == Effect::Deny && self.enforced
    }
}

struct Rule {
    name: Arc<str>,
    effect: Effect,
    report: bool,
    rate: Option<RateSpec>,
    methods: Vec<Method>,
    paths: Vec<Glob>,
    auth: Vec<AuthKind>,
    users: Vec<String>,
    users_not: Vec<String>,
    groups: Vec<String>,
    groups_not: Vec<String>,
    source: Vec<IpNet>,
    scopes: Vec<String>,
    anonymous: Option<bool>,
    authenticated: Option<bool>,
    headers: Vec<(HeaderName, String)>,
}

/// Rules by the literal leading segments of their path patterns.
#[derive(Default)]
struct PathIndex {
    /// Rules registered at this prefix (ascending indexes).
    here: Vec<usize>,
    children: HashMap<String, PathIndex>,
}

impl PathIndex {
    fn insert(&mut self, prefix: &[&str], rule: usize) {
        match prefix.split_first() {
            None => {
                if self.here.last() != Some(&rule) {
                    self.here.push(rule);
                }
            }
            Some((seg, rest)) => self.children.entry((*seg).to_owned()).or_default().insert(rest, rule),
        }
    }

    /// The rules registered at each prefix of `path`'s segments, shortest first.
    fn visit<'a>(&'a self, path: &str, found: &mut impl FnMut(&'a [usize])) {
        found(&self.here);
        let mut node = self;
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            match node.children.get(seg) {
                Some(next) => {
                    found(&next.here);
                    node = next;
                }
                None => break,
            }
        }
    }
}

/// Rule indexes, ascending: one prefix's own list, or several merged.
enum Candidates<'a> {
    One(&'a [usize]),
    Many(Vec<usize>),
}

impl Candidates<'_> {
    fn as_slice(&self) -> &[usize] {
        match self {
            Candidates::One(s) => s,
            Candidates::Many(v) => v,
        }
    }
}

pub struct Policy {
    default: Effect,
    mode: AccessMode,
    rules: Vec<Rule>,
    index: PathIndex,
    uses_groups: bool,
}

fn lower(v: &[String]) -> Vec<String> {
    v.iter().map(|s| s.to_lowercase()).collect()
}

/// Scopes a credential may carry. A credential with scopes but without `write` (or
/// `admin`) may only read: GET, HEAD and OPTIONS. No scopes at all means the user's full
/// rights, as with Jira's own personal access tokens.
pub fn scope_allows(scopes: &[String], method: &Method) -> bool {
    scopes.is_empty()
        || matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        || scopes.iter().any(|s| s == "write" || s == "admin")
}

/// One rule's verdict for `explain`.
pub struct Step {
    pub rule: String,
    /// Why it did not match (empty when it matched).
    pub failed: Vec<String>,
    /// It matched but only reports (or, for `Effect::Allow`, it did not decide).
    pub report_only: bool,
}

impl Policy {
    pub fn compile(cfg: &AccessConfig) -> Result<Policy, String> {
        let rules: Vec<Rule> = cfg.rules.iter().map(compile_rule).collect::<Result<_, _>>()?;
        let mut index = PathIndex::default();
        for (i, r) in cfg.rules.iter().enumerate() {
            if r.paths.is_empty() {
                index.insert(&[], i);
            }
            for p in &r.paths {
                index.insert(&glob::literal_prefix(p), i);
            }
        }
        Ok(Policy {
            uses_groups: rules.iter().any(|r| !r.groups.is_empty() || !r.groups_not.is_empty()),
            default: cfg.default,
            mode: cfg.mode,
            rules,
            index,
        })
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The name of the rule at `index` (a [`Decision`]'s `rule_index`).
    pub fn rule_name(&self, index: usize) -> Option<&str> {
        self.rules.get(index).map(|r| &*r.name)
    }

    /// Some rule looks at groups (so looking them up is worth it).
    pub fn uses_groups(&self) -> bool {
        self.uses_groups
    }

    /// The rules that may match `path`, ascending. Most paths find rules at one prefix
    /// only (every rule at the root, say): that prefix's list is used as it is.
    fn candidates(&self, path: &str) -> Candidates<'_> {
        let mut found = [&[][..]; 2];
        let mut lists = 0;
        let mut c = Vec::new();
        self.index.visit(path, &mut |here| {
            if here.is_empty() {
                return;
            }
            if lists < found.len() {
                found[lists] = here;
            } else {
                c.extend_from_slice(here);
            }
            lists += 1;
        });
        if lists <= 1 {
            return Candidates::One(found[0]);
        }
        c.extend_from_slice(found[0]);
        c.extend_from_slice(found[1]);
        c.sort_unstable();
        c.dedup();
        Candidates::Many(c)
    }

    pub fn decide(&self, s: &Subject<'_>) -> Decision<'_> {
        let enforced = self.mode == AccessMode::Enforce;
        let user = s.user.map(crate::auth::lowercase);
        let groups = if self.uses_groups { lower(s.groups) } else { Vec::new() };
        let mut missing_scopes = None;
        let mut would_deny = Vec::new();
        for &i in self.candidates(s.path).as_slice() {
            let r = &self.rules[i];
            match r.matches(s, user.as_deref(), &groups) {
                Match::Yes if r.report && r.effect == Effect::Deny => would_deny.push(r.name.to_string()),
                Match::Yes if r.report => {}
                Match::Yes => {
                    let missing_scopes = if r.effect == Effect::Deny { missing_scopes } else { None };
                    return Decision {
                        effect: r.effect,
                        rule: Some(&r.name),
                        rule_index: Some(i),
                        enforced,
                        missing_scopes,
                        would_deny,
                        rate: r.rate.filter(|_| r.effect == Effect::Allow).map(|spec| (i, spec)),
                    };
                }
                Match::AllButScopes if r.effect == Effect::Allow && !r.report && missing_scopes.is_none() => {
                    missing_scopes = Some(r.scopes.clone());
                }
                _ => {}
            }
        }
        Decision {
            missing_scopes,
            effect: self.default,
            rule: None,
            rule_index: None,
            enforced,
            would_deny,
            rate: None,
        }
    }

    /// Every rule up to the deciding one, with why each did not match; then the decision.
    pub fn explain(&self, s: &Subject<'_>) -> (Vec<Step>, Decision<'_>) {
        let decision = self.decide(s);
        let user = s.user.map(str::to_lowercase);
        let groups = lower(s.groups);
        let mut steps = Vec::new();
        for r in &self.rules {
            let failed = r.why_not(s, user.as_deref(), &groups);
            let matched = failed.is_empty();
            steps.push(Step {
                rule: r.name.to_string(),
                failed,
                report_only: matched && r.report,
            });
            if matched && !r.report {
                break;
            }
        }
        (steps, decision)
    }

    /// Rules that can never match because an earlier rule matches everything they do.
    pub fn shadowed(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (j, b) in self.rules.iter().enumerate() {
            if let Some(a) = self.rules[..j].iter().find(|a| !a.report && a.covers(b)) {
                out.push((b.name.to_string(), a.name.to_string()));
            }
        }
        out
    }

    /// Some enforced allow rule (or the default) lets an anonymous caller change data.
    pub fn anonymous_writes(&self) -> Option<String> {
        let write = |methods: &[Method]| {
            methods.is_empty()
                || methods
                    .iter()
                    .any(|m| !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS))
        };
        for r in &self.rules {
            let anonymous_ok = r.anonymous == Some(true)
                || (r.anonymous.is_none()
                    && r.authenticated.is_none()
                    && r.auth.is_empty()
                    && r.users.is_empty()
                    && r.groups.is_empty()
                    && r.scopes.is_empty());
            if !r.report && r.effect == Effect::Allow && anonymous_ok && write(&r.methods) {
                return Some(format!("rule {:?}", r.name));
            }
        }
        (self.default == Effect::Allow).then(|| "access.default = \"allow\"".to_string())
    }
}

fn compile_rule(r: &RuleConfig) -> Result<Rule, String> {
    let paths = r.paths.iter().map(|p| Glob::compile(p)).collect::<Result<_, _>>()?;
    Ok(Rule {
        name: Arc::from(r.name.as_str()),
        effect: r.effect,
        report: r.report,
        rate: r.rate,
        methods: r.methods.clone(),
        paths,
        auth: r.auth.clone(),
        users: lower(&r.users),
        users_not: lower(&r.users_not),
        groups: lower(&r.groups),
        groups_not: lower(&r.groups_not),
        source: r.source.clone(),
        scopes: r.scopes.clone(),
        anonymous: r.anonymous,
        authenticated: r.authenticated,
        headers: r.headers.clone(),
    })
}

/// `groups` are lowercase, as the rule's lists are.
fn in_groups(list: &[String], groups: &[String]) -> bool {
    list.iter().any(|g| groups.contains(g))
}

fn header_is(headers: Option<&HeaderMap>, name: &HeaderName, value: &str) -> bool {
    headers.is_some_and(|h| h.get_all(name).iter().any(|v| v.as_bytes() == value.as_bytes()))
}

impl Rule {
    fn matches(&self, s: &Subject<'_>, user: Option<&str>, groups: &[String]) -> Match {
        let is_user = |list: &[String]| user.is_some_and(|u| list.iter().any(|x| x == u));
        let others = (self.methods.is_empty() || self.methods.contains(s.method))
            && (self.paths.is_empty() || self.paths.iter().any(|g| g.matches(s.path)))
            && (self.auth.is_empty() || s.kind.is_some_and(|k| self.auth.contains(&k)))
            && (self.users.is_empty() || is_user(&self.users))
            && (self.users_not.is_empty() || !is_user(&self.users_not))
            && (self.groups.is_empty() || in_groups(&self.groups, groups))
            && (self.groups_not.is_empty() || !in_groups(&self.groups_not, groups))
            && (self.source.is_empty() || self.source.iter().any(|n| n.contains(&s.client_ip)))
            && self.anonymous.is_none_or(|a| a != s.authenticated)
            && self.authenticated.is_none_or(|a| a == s.authenticated)
            && self.headers.iter().all(|(n, v)| header_is(s.headers, n, v));
        let scopes = self.scopes.is_empty() || self.scopes.iter().all(|sc| s.scopes.contains(sc));
        match (others, scopes) {
            (true, true) => Match::Yes,
            (true, false) => Match::AllButScopes,
            _ => Match::No,
        }
    }

    /// The matchers that fail for `s`, in words (for `explain`).
    fn why_not(&self, s: &Subject<'_>, user: Option<&str>, groups: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        let list = |v: &[String]| v.join(", ");
        let is_user = |list: &[String]| user.is_some_and(|u| list.iter().any(|x| x == u));
        if !self.methods.is_empty() && !self.methods.contains(s.method) {
            let m: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
            out.push(format!("method {} is not one of {}", s.method, m.join(", ")));
        }
        if !self.paths.is_empty() && !self.paths.iter().any(|g| g.matches(s.path)) {
            let p: Vec<String> = self.paths.iter().map(|g| g.to_string()).collect();
            out.push(format!("path {} matches none of {}", s.path, p.join(", ")));
        }
        if !self.auth.is_empty() && !s.kind.is_some_and(|k| self.auth.contains(&k)) {
            let a: Vec<&str> = self.auth.iter().map(|k| k.as_str()).collect();
            out.push(format!(
                "auth {} is not one of {}",
                s.kind.map_or("none", |k| k.as_str()),
                a.join(", ")
            ));
        }
        if !self.users.is_empty() && !is_user(&self.users) {
            out.push(format!(
                "user {} is not one of {}",
                user.unwrap_or("(anonymous)"),
                list(&self.users)
            ));
        }
        if !self.users_not.is_empty() && is_user(&self.users_not) {
            out.push(format!("user {} is excluded", user.unwrap_or("")));
        }
        if !self.groups.is_empty() && !in_groups(&self.groups, groups) {
            out.push(format!("not in any of the groups {}", list(&self.groups)));
        }
        if !self.groups_not.is_empty() && in_groups(&self.groups_not, groups) {
            out.push(format!("in an excluded group ({})", list(&self.groups_not)));
        }
        if !self.source.is_empty() && !self.source.iter().any(|n| n.contains(&s.client_ip)) {
            let n: Vec<String> = self.source.iter().map(|n| n.to_string()).collect();
            out.push(format!("address {} is outside {}", s.client_ip, n.join(", ")));
        }
        let anonymous_fails = self.anonymous.is_some_and(|a| a == s.authenticated);
        let authenticated_fails = self.authenticated.is_some_and(|a| a != s.authenticated);
        if anonymous_fails || authenticated_fails {
            out.push(if s.authenticated {
                "the caller is authenticated (the rule is for anonymous callers)".into()
            } else {
                "the caller is anonymous (the rule is for authenticated callers)".into()
            });
        }
        for (n, v) in &self.headers {
            if !header_is(s.headers, n, v) {
                out.push(format!("header {n} is not {v:?}"));
            }
        }
        let missing: Vec<&String> = self.scopes.iter().filter(|sc| !s.scopes.contains(sc)).collect();
        if !missing.is_empty() {
            let m: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            out.push(format!("missing scopes {}", m.join(", ")));
        }
        out
    }

    /// Every request this rule's matchers accept, `other`'s accept too (conservatively:
    /// true only when that is certain from the matchers themselves).
    fn covers(&self, other: &Rule) -> bool {
        fn any_of<T: PartialEq>(a: &[T], b: &[T]) -> bool {
            a.is_empty() || (!b.is_empty() && b.iter().all(|x| a.contains(x)))
        }
        fn none_of<T: PartialEq>(a: &[T], b: &[T]) -> bool {
            a.iter().all(|x| b.contains(x))
        }
        let paths = self.paths.is_empty()
            || (!other.paths.is_empty() && other.paths.iter().all(|p| self.paths.iter().any(|g| g.covers(p))));
        let sources = self.source.is_empty()
            || (!other.source.is_empty() && other.source.iter().all(|n| self.source.iter().any(|m| m.contains(n))));
        any_of(&self.methods, &other.methods)
            && paths
            && any_of(&self.auth, &other.auth)
            && any_of(&self.users, &other.users)
            && none_of(&self.users_not, &other.users_not)
            && any_of(&self.groups, &other.groups)
            && none_of(&self.groups_not, &other.groups_not)
            && sources
            && none_of(&self.scopes, &other.scopes)
            && self.anonymous.is_none_or(|a| other.anonymous == Some(a))
            && self.authenticated.is_none_or(|a| other.authenticated == Some(a))
            && none_of(&self.headers, &other.headers)
    }
}

enum Match {
    Yes,
    No,
    /// Everything but the required scopes held: worth telling the caller (RFC 6750 §3.1).
    AllButScopes,
}

#[cfg(test)]
mod tests;
