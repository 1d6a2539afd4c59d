//! Chain semantics with scripted members: first success wins, a rejection is never
//! rescued, errors fail closed, all-absent is anonymous.

use super::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

enum Script {
    Absent,
    Accept(&'static str),
    Reject(&'static str),
    Fail,
}

struct Scripted {
    kind: AuthKind,
    script: Script,
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl Authenticator for Scripted {
    fn kind(&self) -> AuthKind {
        self.kind
    }
    fn challenge(&self) -> Option<HeaderValue> {
        Some(HeaderValue::from_static(self.kind.as_str()))
    }
    async fn authenticate(&self, _req: &AuthRequest<'_>) -> Result<Outcome, AuthError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(match self.script {
            Script::Absent => Outcome::NotPresent,
            Script::Accept(u) => Outcome::Authenticated(Principal::new(self.kind, u.into(), vec![])),
            Script::Reject(c) => Outcome::Rejected(RejectReason::new(c)),
            Script::Fail => return Err(AuthError::Internal("down".into())),
        })
    }
}

fn chain(scripts: Vec<(AuthKind, Script)>) -> (Chain, Vec<Arc<AtomicUsize>>) {
    let mut counters = Vec::new();
    let members = scripts
        .into_iter()
        .map(|(kind, script)| {
            let calls = Arc::new(AtomicUsize::new(0));
            counters.push(calls.clone());
            Arc::new(Scripted { kind, script, calls }) as Arc<dyn Authenticator>
        })
        .collect();
    (Chain::new(members), counters)
}

async fn run(c: &Chain) -> Verdict {
    run_on(c, &http::Request::new(()).into_parts().0).await
}

async fn run_on(c: &Chain, parts: &http::request::Parts) -> Verdict {
    c.authenticate(&AuthRequest {
        parts,
        authorization: parts.headers.get(http::header::AUTHORIZATION),
        client_ip: [127, 0, 0, 1].into(),
        now: SystemTime::now(),
        at: std::time::Instant::now(),
        form: None,
        tls: false,
        session_ids: &[],
        basic: Default::default(),
        bearer: Default::default(),
    })
    .await
}

#[tokio::test]
async fn all_absent_is_anonymous() {
    let (c, _) = chain(vec![
        (AuthKind::Session, Script::Absent),
        (AuthKind::Basic, Script::Absent),
    ]);
    assert!(matches!(run(&c).await, Verdict::Anonymous));
}

#[tokio::test]
async fn first_success_wins_and_later_members_are_not_asked() {
    let (c, calls) = chain(vec![
        (AuthKind::Session, Script::Absent),
        (AuthKind::Jwt, Script::Accept("alice")),
        (AuthKind::Basic, Script::Accept("mallory")),
    ]);
    match run(&c).await {
        Verdict::Authenticated(p) => assert_eq!((p.kind(), p.subject()), (AuthKind::Jwt, "alice")),
        _ => panic!("expected success"),
    }
    assert_eq!(calls[2].load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_rejection_is_never_rescued_by_a_later_member() {
    let (c, calls) = chain(vec![
        (AuthKind::Jwt, Script::Reject("expired")),
        (AuthKind::Basic, Script::Accept("alice")),
    ]);
    assert!(matches!(run(&c).await, Verdict::Rejected(AuthKind::Jwt, r) if r.code == "expired"));
    assert_eq!(calls[1].load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_dependency_error_fails_closed() {
    let (c, calls) = chain(vec![
        (AuthKind::Introspection, Script::Fail),
        (AuthKind::Basic, Script::Accept("alice")),
    ]);
    assert!(matches!(run(&c).await, Verdict::Failed(AuthKind::Introspection, _)));
    assert_eq!(calls[1].load(Ordering::SeqCst), 0);
}

#[test]
fn one_challenge_per_member_in_order() {
    let (c, _) = chain(vec![(AuthKind::Jwt, Script::Absent), (AuthKind::Basic, Script::Absent)]);
    let got: Vec<&[u8]> = c.challenges().iter().map(|h| h.as_bytes()).collect();
    assert_eq!(got, vec![&b"jwt"[..], &b"basic"[..]]);
}

#[test]
fn names_are_lowercased_and_borrowed_when_already_lower_case() {
    use std::borrow::Cow;
    assert!(matches!(
        super::lowercase("alice.smith@x"),
        Cow::Borrowed("alice.smith@x")
    ));
    assert_eq!(super::lowercase("Alice"), "alice");
    assert_eq!(super::lowercase("ÄLICE"), "älice");
    assert_eq!(super::lowercase("ǅemal"), "ǆemal");
}

/// Answers at once for requests without an `X-Wait` header; counts the calls that waited.
struct Quick {
    waited: Arc<AtomicUsize>,
}

#[async_trait]
impl Authenticator for Quick {
    fn kind(&self) -> AuthKind {
        AuthKind::ApiKey
    }
    fn challenge(&self) -> Option<HeaderValue> {
        None
    }
    fn at_once(&self, req: &AuthRequest<'_>) -> Option<Result<Outcome, AuthError>> {
        (!req.parts.headers.contains_key("x-wait")).then_some(Ok(Outcome::NotPresent))
    }
    async fn authenticate(&self, req: &AuthRequest<'_>) -> Result<Outcome, AuthError> {
        if let Some(r) = self.at_once(req) {
            return r;
        }
        self.waited.fetch_add(1, Ordering::SeqCst);
        Ok(Outcome::Authenticated(Principal::new(
            AuthKind::ApiKey,
            "waited".into(),
            vec![],
        )))
    }
}

#[tokio::test]
async fn an_answer_ready_at_once_is_taken_without_calling_authenticate() {
    let waited = Arc::new(AtomicUsize::new(0));
    let (_, calls) = chain(vec![(AuthKind::Basic, Script::Accept("alice"))]);
    let members: Vec<Arc<dyn Authenticator>> = vec![
        Arc::new(Quick { waited: waited.clone() }),
        Arc::new(Scripted {
            kind: AuthKind::Basic,
            script: Script::Accept("alice"),
            calls: calls[0].clone(),
        }),
    ];
    let c = Chain::new(members);
    match run(&c).await {
        Verdict::Authenticated(p) => assert_eq!(p.subject(), "alice"),
        _ => panic!("the next member decides"),
    }
    assert_eq!(waited.load(Ordering::SeqCst), 0);
    assert_eq!(
        calls[0].load(Ordering::SeqCst),
        1,
        "a member without an answer at once is awaited"
    );
    // With the header, the member has no answer at once: its `authenticate` decides.
    let parts = http::Request::get("/")
        .header("x-wait", "1")
        .body(())
        .expect("request")
        .into_parts()
        .0;
    let verdict = run_on(&c, &parts).await;
    assert!(matches!(verdict, Verdict::Authenticated(p) if p.subject() == "waited"));
    assert_eq!(waited.load(Ordering::SeqCst), 1);
}

#[test]
fn bearer_tokens_are_visible_ascii_after_a_case_insensitive_scheme() {
    let of = |v: &[u8]| {
        HeaderValue::from_bytes(v)
            .ok()
            .and_then(|v| bearer_of(&v).map(str::to_owned))
    };
    assert_eq!(of(b"Bearer abc.def-_~+/="), Some("abc.def-_~+/=".into()));
    assert_eq!(of(b"bEaReR   tok \t"), Some("tok".into()));
    let long = format!("Bearer {}", "x".repeat(600));
    assert_eq!(of(long.as_bytes()).map(|t| t.len()), Some(600));
    for refused in [
        &b"Bearer "[..],
        b"Bearer \t ",
        b"Basic abc",
        b"Bearerabc",
        b"Bearer t\xc3\xa9st",
        b"Bearer \x80",
    ] {
        assert_eq!(of(refused), None, "{refused:?}");
    }
}

#[test]
fn a_shared_principal_is_one_copy_per_listener_thread() {
    let shared = Arc::new(SharedPrincipal::new(
        Principal::for_tests(AuthKind::ApiKey, "carol", &["bots"]),
        2,
    ));
    let on = |i: Option<usize>| {
        let shared = shared.clone();
        std::thread::spawn(move || {
            if let Some(i) = i {
                crate::server::set_worker_index(i);
            }
            (shared.here(), shared.here())
        })
        .join()
        .expect("thread")
    };
    let (a, a_again) = on(Some(0));
    let (b, _) = on(Some(1));
    let (other, _) = on(None);
    assert!(Arc::ptr_eq(&a.0, &a_again.0), "a thread keeps its copy");
    assert!(!Arc::ptr_eq(&a.0, &b.0), "threads do not share one");
    assert!(
        Arc::ptr_eq(&other.0, &shared.principal.0),
        "other threads share the original"
    );
    assert!(!Arc::ptr_eq(&a.0, &shared.principal.0));
    for p in [&a, &b] {
        assert_eq!(p, &shared.principal);
        assert_eq!(
            (p.kind(), p.subject(), p.groups()),
            (AuthKind::ApiKey, "carol", &["bots".to_string()][..])
        );
    }
}
