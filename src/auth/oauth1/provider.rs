//! The three-legged OAuth 1.0a endpoints Jira serves, answered by the proxy itself:
//! `request-token` (a consumer asks, signed, with `oauth_callback`), `authorize` (a signed-in
//! user approves on a plain page; the form carries Jira's field names `oauth_token`,
//! `atl_token`, `approve`/`deny`) and `access-token` (the consumer trades the approved
//! request token and its `oauth_verifier`). Request tokens expire (default 10 minutes) and
//! are single use; access tokens last Jira's 5 years by default.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use super::inbound::{Expect, OAuth1Auth};
use super::{rfc5849, tokens};
use crate::auth::{AuthError, AuthRequest};
use crate::error::{Body, ProxyError, full};
use crate::store::StoreError;

pub const REQUEST_TOKEN: &str = "/plugins/servlet/oauth/request-token";
pub const AUTHORIZE: &str = "/plugins/servlet/oauth/authorize";
pub const ACCESS_TOKEN: &str = "/plugins/servlet/oauth/access-token";
/// Where a signed-in user lists and revokes their own access tokens (Jira's page).
pub const USER_TOKENS: &str = "/plugins/servlet/oauth/users/access-tokens";

pub struct Provider {
    auth: Arc<OAuth1Auth>,
    realm: String,
    request_ttl: Duration,
    access_ttl: Duration,
    /// Keys the pages' form tokens (`atl_token`) to the user and request token. Shared by
    /// every replica through the state store, so a page served by one is accepted by another.
    form_key: tokio::sync::OnceCell<hmac::Key>,
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn html_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect()
}

fn page(status: StatusCode, title: &str, body_html: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\"><h1>{t}</h1>{body_html}</body></html>",
        t = html_escape(title)
    );
    let mut r = reply(status, "text/html;charset=UTF-8", html);
    let h = r.headers_mut();
    // The approval page must not be framed (clickjacking) nor load anything.
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    r
}

impl Provider {
    pub fn new(
        auth: Arc<OAuth1Auth>,
        realm: String,
        request_ttl: Duration,
        access_ttl: Duration,
    ) -> Result<Self, String> {
        Ok(Provider {
            auth,
            realm,
            request_ttl,
            access_ttl,
            form_key: tokio::sync::OnceCell::new(),
        })
    }

    /// An OAuth refusal as Jira answers it: 401, the OAuth challenge with the problem, and
    /// the problem in the body.
    fn problem(&self, problem: &str) -> Response<Body> {
        let mut r = reply(
            StatusCode::UNAUTHORIZED,
            "text/plain;charset=UTF-8",
            format!("oauth_problem={problem}"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("OAuth realm=\"{}\", oauth_problem=\"{problem}\"", self.realm)) {
            r.headers_mut().insert(http::header::WWW_AUTHENTICATE, v);
        }
        r
    }

    /// A page refusing approval when the consumer may not act as this user.
    fn not_for(&self, consumer: &str, user: &str) -> Option<Response<Body>> {
        let name = self.auth.consumer_name(consumer).unwrap_or(consumer);
        let allowed = self
            .auth
            .consumer(consumer)
            .is_some_and(|c| c.three_legged && c.may_act_as(user));
        (!allowed).then(|| {
            page(
                StatusCode::FORBIDDEN,
                "Not allowed",
                &format!(
                    "<p><b>{}</b> may not be given access as <b>{}</b>. Ask your Jira administrator.</p>",
                    html_escape(name),
                    html_escape(user)
                ),
            )
        })
    }

    /// The form-token key: the first replica to need one stores a random key; all use it.
    async fn form_key(&self) -> Result<&hmac::Key, StoreError> {
        self.form_key
            .get_or_try_init(|| async {
                const KEY: &str = "oauth1:form-key";
                let fresh = tokens::random_token()?;
                let store = self.auth.store();
                store
                    .put_if_absent(KEY, Bytes::from(fresh), Duration::from_secs(400 * 86_400))
                    .await?;
                let secret = store
                    .get(KEY)
                    .await?
                    .ok_or_else(|| StoreError::Unavailable("the form-token key vanished".into()))?;
                Ok(hmac::Key::new(hmac::HMAC_SHA256, &secret))
            })
            .await
    }

    async fn form_token_ok(&self, user: &str, token: &str, atl: &str) -> Result<bool, StoreError> {
        let tag = (0..atl.len() / 2)
            .filter_map(|i| u8::from_str_radix(atl.get(2 * i..2 * i + 2)?, 16).ok())
            .collect::<Vec<u8>>();
        Ok(hmac::verify(self.form_key().await?, format!("{user}\0{token}").as_bytes(), &tag).is_ok())
    }

    async fn form_token(&self, user: &str, token: &str) -> Result<String, StoreError> {
        let tag = hmac::sign(self.form_key().await?, format!("{user}\0{token}").as_bytes());
        Ok(crate::auth::cache::hex(tag.as_ref()))
    }

    pub async fn request_token(&self, req: &AuthRequest<'_>) -> Result<Response<Body>, AuthError> {
        let v = match self.auth.verify(req, Expect::NoToken).await? {
            Ok(v) => v,
            Err(p) => return Ok(self.problem(p)),
        };
        if !v.consumer.three_legged {
            return Ok(self.problem("permission_denied"));
        }
        let callback = v
            .params
            .iter()
            .find(|(k, _)| k == "oauth_callback")
            .map(|(_, c)| c.clone());
        let callback = match callback {
            Some(c) if c == "oob" || c.starts_with("https://") || c.starts_with("http://") => c,
            _ => return Ok(self.problem("parameter_rejected")),
        };
        let (token, secret) = (tokens::random_token()?, tokens::random_token()?);
        let record = tokens::RequestToken {
            consumer: v.consumer.key,
            secret: secret.clone(),
            callback,
            user: None,
            verifier: None,
        };
        tokens::put_request(&**self.auth.store(), &token, &record, self.request_ttl).await?;
        Ok(reply(
            StatusCode::OK,
            "application/x-www-form-urlencoded",
            format!(
                "oauth_token={}&oauth_token_secret={}&oauth_callback_confirmed=true",
                rfc5849::encode(&token),
                rfc5849::encode(&secret)
            ),
        ))
    }

    pub async fn access_token(&self, req: &AuthRequest<'_>) -> Result<Response<Body>, AuthError> {
        let v = match self.auth.verify(req, Expect::RequestToken).await? {
            Ok(v) => v,
            Err(p) => return Ok(self.problem(p)),
        };
        let Some(request) = v.request else {
            return Ok(self.problem("token_rejected"));
        };
        let verifier = v
            .params
            .iter()
            .find(|(k, _)| k == "oauth_verifier")
            .map(|(_, x)| x.as_str());
        let (Some(user), Some(want)) = (request.user.as_deref(), request.verifier.as_deref()) else {
            return Ok(self.problem("permission_unknown"));
        };
        if !v.consumer.three_legged || !v.consumer.may_act_as(user) {
            return Ok(self.problem("permission_denied"));
        }
        let matches =
            verifier.is_some_and(|got| bool::from(subtle::ConstantTimeEq::ct_eq(got.as_bytes(), want.as_bytes())));
        if !matches {
            return Ok(self.problem("permission_denied"));
        }
        // Single use: the request token is gone before the access token exists.
        tokens::delete_request(&**self.auth.store(), &v.token).await?;
        let (token, secret) = (tokens::random_token()?, tokens::random_token()?);
        let now = tokens::unix_now();
        let record = tokens::AccessToken {
            consumer: v.consumer.key,
            secret: secret.clone(),
            user: user.to_owned(),
            created: now,
            expires: now + self.access_ttl.as_secs(),
        };
        tokens::put_access(&**self.auth.store(), &token, &record, self.access_ttl).await?;
        Ok(reply(
            StatusCode::OK,
            "application/x-www-form-urlencoded",
            format!(
                "oauth_token={}&oauth_token_secret={}&oauth_expires_in={}",
                rfc5849::encode(&token),
                rfc5849::encode(&secret),
                self.access_ttl.as_secs()
            ),
        ))
    }

    /// GET: the approval page for a signed-in `user`.
    pub async fn authorize_page(&self, query: Option<&str>, user: &str) -> Result<Response<Body>, AuthError> {
        let token = query
            .map(rfc5849::form_pairs)
            .unwrap_or_default()
            .into_iter()
            .find(|(k, _)| k == "oauth_token")
            .map(|(_, v)| v);
        let Some(token) = token else {
            return Ok(page(
                StatusCode::BAD_REQUEST,
                "Missing request token",
                "<p>The link has no oauth_token.</p>",
            ));
        };
        let Some(record) = tokens::get_request(&**self.auth.store(), &token).await? else {
            return Ok(page(
                StatusCode::BAD_REQUEST,
                "Unknown or expired request",
                "<p>Start again from the application.</p>",
            ));
        };
        if let Some(refused) = self.not_for(&record.consumer, user) {
            return Ok(refused);
        }
        let name = self.auth.consumer_name(&record.consumer).unwrap_or(&record.consumer);
        let body = format!(
            "<p><b>{name}</b> asks to read and change data in Jira as <b>{user}</b>.</p>\
             <form method=\"post\" action=\"{AUTHORIZE}\">\
             <input type=\"hidden\" name=\"oauth_token\" value=\"{t}\">\
             <input type=\"hidden\" name=\"atl_token\" value=\"{f}\">\
             <button type=\"submit\" name=\"approve\" value=\"Allow\">Allow</button> \
             <button type=\"submit\" name=\"deny\" value=\"Deny\">Deny</button></form>",
            name = html_escape(name),
            user = html_escape(user),
            t = html_escape(&token),
            f = self.form_token(user, &token).await?,
        );
        Ok(page(StatusCode::OK, "Allow access?", &body))
    }

    /// POST: the user's decision (form fields `oauth_token`, `atl_token`, `approve`/`deny`).
    pub async fn authorize_decision(
        &self,
        form: &[(String, String)],
        user: &str,
    ) -> Result<Response<Body>, ProxyError> {
        let get = |n: &str| form.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        let (Some(token), Some(atl)) = (get("oauth_token"), get("atl_token")) else {
            return Err(ProxyError::BadRequest("The approval form is incomplete."));
        };
        let dep = |e: crate::store::StoreError| ProxyError::Dependency(e.to_string());
        if !self.form_token_ok(user, token, atl).await.map_err(dep)? {
            return Ok(page(
                StatusCode::FORBIDDEN,
                "XSRF check failed",
                "<p>Open the approval page again.</p>",
            ));
        }
        let store = self.auth.store();
        let dep = |e: crate::store::StoreError| ProxyError::Dependency(e.to_string());
        let Some(mut record) = tokens::get_request(&**store, token).await.map_err(dep)? else {
            return Ok(page(
                StatusCode::BAD_REQUEST,
                "Unknown or expired request",
                "<p>Start again from the application.</p>",
            ));
        };
        if let Some(refused) = self.not_for(&record.consumer, user) {
            return Ok(refused);
        }
        if get("approve").is_none() {
            tokens::delete_request(&**store, token).await.map_err(dep)?;
            return Ok(page(
                StatusCode::OK,
                "Access denied",
                "<p>The application was not given access.</p>",
            ));
        }
        let verifier = tokens::random_token().map_err(dep)?;
        record.user = Some(user.to_owned());
        record.verifier = Some(verifier.clone());
        tokens::put_request(&**store, token, &record, self.request_ttl)
            .await
            .map_err(dep)?;
        if record.callback == "oob" {
            let body = format!(
                "<p>Give this verification code to the application:</p><p><code>{}</code></p>",
                html_escape(&verifier)
            );
            return Ok(page(StatusCode::OK, "Access allowed", &body));
        }
        let sep = if record.callback.contains('?') { '&' } else { '?' };
        let location = format!(
            "{}{sep}oauth_token={}&oauth_verifier={}",
            record.callback,
            rfc5849::encode(token),
            rfc5849::encode(&verifier)
        );
        let mut r = reply(StatusCode::FOUND, "text/plain;charset=UTF-8", String::new());
        let loc =
            HeaderValue::from_str(&location).map_err(|_| ProxyError::BadRequest("The callback is not a valid URL."))?;
        r.headers_mut().insert(http::header::LOCATION, loc);
        Ok(r)
    }
}

impl Provider {
    fn json(status: StatusCode, v: serde_json::Value) -> Response<Body> {
        reply(status, "application/json;charset=UTF-8", v.to_string())
    }

    /// The signed-in user's access tokens: `GET` lists them (HTML, or JSON when the client
    /// asks for `application/json`), `POST` revokes one from the page's form (`revoke`, with
    /// the page's `atl_token`), `DELETE {USER_TOKENS}/{id}` revokes one for REST clients.
    pub async fn user_tokens(
        &self,
        parts: &http::request::Parts,
        path: &str,
        body: Body,
        user: &str,
    ) -> Result<Response<Body>, ProxyError> {
        let store = self.auth.store();
        let dep = |e: crate::store::StoreError| ProxyError::Dependency(e.to_string());
        let sub_id = path.strip_prefix(USER_TOKENS).and_then(|r| r.strip_prefix('/'));
        let wants_json = parts
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"));
        let not_found = || {
            Self::json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"errorMessages": ["No such access token."], "errors": {}}),
            )
        };
        match (&parts.method, sub_id) {
            (&http::Method::DELETE, Some(id)) => {
                Ok(match tokens::revoke(&**store, id, Some(user)).await.map_err(dep)? {
                    Some(_) => {
                        let mut r = Response::new(full(Bytes::new()));
                        *r.status_mut() = StatusCode::NO_CONTENT;
                        r
                    }
                    None => not_found(),
                })
            }
            (&http::Method::GET, None) => {
                let list = tokens::list_for_user(&**store, user).await.map_err(dep)?;
                if wants_json {
                    let items: Vec<serde_json::Value> = list
                        .iter()
                        .map(|t| {
                            serde_json::json!({
                                "id": t.id,
                                "consumerKey": t.consumer,
                                "consumerName": self.auth.consumer_name(&t.consumer).unwrap_or(&t.consumer),
                                "created": crate::time::rfc3339_secs(t.created),
                                "expires": crate::time::rfc3339_secs(t.expires),
                            })
                        })
                        .collect();
                    return Ok(Self::json(StatusCode::OK, serde_json::json!({ "accessTokens": items })));
                }
                self.tokens_html(&list, user).await.map_err(dep)
            }
            (&http::Method::POST, None) => {
                let form = read_small_form(body, 16 * 1024).await?;
                let get = |n: &str| form.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
                let (Some(id), Some(atl)) = (get("revoke"), get("atl_token")) else {
                    return Err(ProxyError::BadRequest("The form is incomplete."));
                };
                if !self.form_token_ok(user, "access-tokens", atl).await.map_err(dep)? {
                    return Ok(page(
                        StatusCode::FORBIDDEN,
                        "XSRF check failed",
                        "<p>Open the page again.</p>",
                    ));
                }
                tokens::revoke(&**store, id, Some(user)).await.map_err(dep)?;
                let mut r = reply(StatusCode::SEE_OTHER, "text/plain;charset=UTF-8", String::new());
                r.headers_mut()
                    .insert(http::header::LOCATION, HeaderValue::from_static(USER_TOKENS));
                Ok(r)
            }
            (_, Some(_)) => Ok(not_found()),
            _ => Err(ProxyError::BadRequest("Use GET, POST or DELETE.")),
        }
    }

    async fn tokens_html(&self, list: &[tokens::Listed], user: &str) -> Result<Response<Body>, StoreError> {
        let atl = self.form_token(user, "access-tokens").await?;
        let rows: String = list
            .iter()
            .map(|t| {
                format!(
                    "<tr><td>{name}</td><td>{created}</td><td>{expires}</td><td>\
                     <form method=\"post\" action=\"{USER_TOKENS}\" style=\"margin:0\">\
                     <input type=\"hidden\" name=\"revoke\" value=\"{id}\">\
                     <input type=\"hidden\" name=\"atl_token\" value=\"{atl}\">\
                     <button type=\"submit\">Revoke</button></form></td></tr>",
                    name = html_escape(self.auth.consumer_name(&t.consumer).unwrap_or(&t.consumer)),
                    created = crate::time::rfc3339_secs(t.created),
                    expires = crate::time::rfc3339_secs(t.expires),
                    id = html_escape(&t.id),
                )
            })
            .collect();
        let body = if list.is_empty() {
            format!("<p>No application has access as <b>{}</b>.</p>", html_escape(user))
        } else {
            format!(
                "<p>These applications can use Jira as <b>{}</b>.</p>\
                 <table><tr><th>Application</th><th>Allowed</th><th>Expires</th><th></th></tr>{rows}</table>",
                html_escape(user)
            )
        };
        Ok(page(StatusCode::OK, "OAuth access tokens", &body))
    }
}

/// Reads a small body (the approval form) under a cap.
pub async fn read_small_form(body: Body, cap: usize) -> Result<Vec<(String, String)>, ProxyError> {
    use http_body_util::BodyExt;
    let bytes: Bytes = http_body_util::Limited::new(body, cap)
        .collect()
        .await
        .map_err(|_| ProxyError::PayloadTooLarge)?
        .to_bytes();
    let text = std::str::from_utf8(&bytes).map_err(|_| ProxyError::BadRequest("The form body is not UTF-8."))?;
    Ok(rfc5849::form_pairs(text))
}
