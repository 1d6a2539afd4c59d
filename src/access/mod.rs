//! Access rules, compiled at load: first matching rule wins, `access.default` when none
//! matches. Pure and synchronous. `mode = "report"` logs would-be denials and allows.

pub mod glob;

use std::net::IpAddr;

use http::Method;
use ipnet::IpNet;

use crate::auth::{AuthKind, Principal};
use crate::config::{AccessConfig, AccessMode, Effect, RuleConfig};
use glob::Glob;

/// What the policy sees of a request.
pub struct Subject<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    /// How the caller authenticated; set without a principal for tokens handed to Jira.
    pub kind: Option<AuthKind>,
    pub principal: Option<&'a Principal>,
    pub jira_user: Option<&'a str>,
    pub client_ip: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What the rules say.
    pub effect: Effect,
    /// The rule that decided, `None` for the default.
    pub rule: Option<String>,
    /// False in report mode: a `Deny` is logged, not enforced.
    pub enforced: bool,
    /// On a denial: the scopes of an earlier allow rule that held in every other respect,
    /// so a bearer caller can be told `insufficient_scope`.
    pub missing_scopes: Option<Vec<String>>,
}

impl Decision {
    pub fn denies(&self) -> bool {
        self.effect == Effect::Deny && self.enforced
    }
}

struct Rule {
    name: String,
    effect: Effect,
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
}

pub struct Policy {
    default: Effect,
    mode: AccessMode,
    rules: Vec<Rule>,
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

impl Policy {
    pub fn compile(cfg: &AccessConfig) -> Result<Policy, String> {
        let rules = cfg.rules.iter().map(compile_rule).collect::<Result<_, _>>()?;
        Ok(Policy {
            default: cfg.default,
            mode: cfg.mode,
            rules,
        })
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn decide(&self, s: &Subject<'_>) -> Decision {
        let enforced = self.mode == AccessMode::Enforce;
        let mut missing_scopes = None;
        for r in &self.rules {
            match r.matches(s) {
                Match::Yes => {
                    let missing_scopes = if r.effect == Effect::Deny { missing_scopes } else { None };
                    return Decision {
                        effect: r.effect,
                        rule: Some(r.name.clone()),
                        enforced,
                        missing_scopes,
                    };
                }
                Match::AllButScopes if r.effect == Effect::Allow && missing_scopes.is_none() => {
                    missing_scopes = Some(r.scopes.clone());
                }
                _ => {}
            }
        }
        Decision {
            missing_scopes,
            effect: self.default,
            rule: None,
            enforced,
        }
    }
}

fn compile_rule(r: &RuleConfig) -> Result<Rule, String> {
    let paths = r.paths.iter().map(|p| Glob::compile(p)).collect::<Result<_, _>>()?;
    Ok(Rule {
        name: r.name.clone(),
        effect: r.effect,
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
    })
}

impl Rule {
    fn matches(&self, s: &Subject<'_>) -> Match {
        let authed = s.principal.is_some();
        let user = s.jira_user.map(str::to_lowercase);
        let groups: Vec<String> = s.principal.map(|p| lower(p.groups())).unwrap_or_default();
        let in_groups = |list: &[String]| list.iter().any(|g| groups.contains(g));
        let is_user = |list: &[String]| user.as_ref().is_some_and(|u| list.contains(u));
        let others = (self.methods.is_empty() || self.methods.contains(s.method))
            && (self.paths.is_empty() || self.paths.iter().any(|g| g.matches(s.path)))
            && (self.auth.is_empty() || s.kind.is_some_and(|k| self.auth.contains(&k)))
            && (self.users.is_empty() || is_user(&self.users))
            && (self.users_not.is_empty() || !is_user(&self.users_not))
            && (self.groups.is_empty() || in_groups(&self.groups))
            && (self.groups_not.is_empty() || !in_groups(&self.groups_not))
            && (self.source.is_empty() || self.source.iter().any(|n| n.contains(&s.client_ip)))
            && self.anonymous.is_none_or(|a| a != authed)
            && self.authenticated.is_none_or(|a| a == authed);
        let scopes = self.scopes.is_empty()
            || s.principal
                .is_some_and(|p| self.scopes.iter().all(|sc| p.scopes().contains(sc)));
        match (others, scopes) {
            (true, true) => Match::Yes,
            (true, false) => Match::AllButScopes,
            _ => Match::No,
        }
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
