//! OAuth 1.0a as a consumer signs it (HMAC-SHA1 over the public URL
//! `https://jira.example.com`), for tests: a signer, the three-legged dance, a signed call.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use jira_auth_proxy::auth::oauth1::rfc5849;

use super::{Proxy, Resp, basic, get, send};

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn problem(r: &Resp) -> String {
    r.headers
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| h.split("oauth_problem=\"").nth(1))
        .and_then(|s| s.split('"').next())
        .unwrap_or("")
        .to_string()
}

/// Who signs: consumer and token, with their secrets, and extra protocol parameters
/// (`oauth_callback`, `oauth_verifier`).
pub struct Signer<'a> {
    pub consumer: &'a str,
    pub secret: &'a str,
    pub token: &'a str,
    pub token_secret: &'a str,
    pub extra: Vec<(&'a str, String)>,
}

impl Signer<'_> {
    pub fn sign(&self, method: &str, path: &str, nonce: &str) -> String {
        let mut oauth: Vec<(String, String)> = vec![
            ("oauth_consumer_key".into(), self.consumer.into()),
            ("oauth_token".into(), self.token.into()),
            ("oauth_signature_method".into(), "HMAC-SHA1".into()),
            ("oauth_timestamp".into(), now().to_string()),
            ("oauth_nonce".into(), nonce.into()),
        ];
        oauth.extend(self.extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let base = rfc5849::base_string(
            method,
            &rfc5849::base_uri("https", "jira.example.com", None, path),
            &oauth,
        );
        let sig = rfc5849::sign_hmac_sha1(&base, self.secret.as_bytes(), self.token_secret.as_bytes());
        oauth.push(("oauth_signature".into(), sig));
        let parts: Vec<String> = oauth
            .iter()
            .map(|(k, v)| format!("{}=\"{}\"", rfc5849::encode(k), rfc5849::encode(v)))
            .collect();
        format!("OAuth {}", parts.join(", "))
    }
}

pub fn form_value(body: &str, key: &str) -> String {
    rfc5849::form_pairs(body)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_default()
}

pub fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    let i = text.find(start).map(|i| i + start.len()).unwrap_or(0);
    let j = text[i..].find(end).map(|j| i + j).unwrap_or(text.len());
    &text[i..j]
}

/// The whole three-legged dance for `user` (Basic `password`) with an HMAC consumer:
/// the access token and its secret, or the first refusal on the way.
pub async fn dance(
    proxy: &Proxy,
    consumer: (&str, &str),
    user: (&str, &str),
    tag: &str,
) -> Result<(String, String), Resp> {
    dance_across(proxy, proxy, consumer, user, tag).await
}

/// The dance with its steps split between two replicas behind one balancer: the request
/// token and the approval page from `first`, the user's decision and the access token
/// from `second`.
pub async fn dance_across(
    first: &Proxy,
    second: &Proxy,
    consumer: (&str, &str),
    user: (&str, &str),
    tag: &str,
) -> Result<(String, String), Resp> {
    let proxy = first;
    let (key, secret) = consumer;
    let s = Signer {
        consumer: key,
        secret,
        token: "",
        token_secret: "",
        extra: vec![("oauth_callback", "oob".into())],
    };
    let path = "/plugins/servlet/oauth/request-token";
    let auth = s.sign("POST", path, &format!("{tag}-r"));
    let r = send("POST", &proxy.url(path), &[("authorization", &auth)], Bytes::new()).await;
    if r.status != 200 {
        return Err(r);
    }
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    let (rt, rts) = (
        form_value(&text, "oauth_token"),
        form_value(&text, "oauth_token_secret"),
    );
    let login = basic(user.0, user.1);
    let page = format!("/plugins/servlet/oauth/authorize?oauth_token={rt}");
    let r = get(&proxy.url(&page), &[("authorization", &login)]).await;
    if r.status != 200 {
        return Err(r);
    }
    let atl = between(
        std::str::from_utf8(&r.body).unwrap(),
        "name=\"atl_token\" value=\"",
        "\"",
    )
    .to_string();
    let proxy = second;
    let r = send(
        "POST",
        &proxy.url("/plugins/servlet/oauth/authorize"),
        &[
            ("authorization", &login),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        Bytes::from(format!("oauth_token={rt}&atl_token={atl}&approve=Allow")),
    )
    .await;
    if r.status != 200 {
        return Err(r);
    }
    let verifier = between(std::str::from_utf8(&r.body).unwrap(), "<code>", "</code>").to_string();
    let s = Signer {
        consumer: key,
        secret,
        token: &rt,
        token_secret: &rts,
        extra: vec![("oauth_verifier", verifier)],
    };
    let path = "/plugins/servlet/oauth/access-token";
    let auth = s.sign("POST", path, &format!("{tag}-a"));
    let r = send("POST", &proxy.url(path), &[("authorization", &auth)], Bytes::new()).await;
    if r.status != 200 {
        return Err(r);
    }
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    Ok((
        form_value(&text, "oauth_token"),
        form_value(&text, "oauth_token_secret"),
    ))
}

/// A REST call signed with an access token.
pub async fn call_with(proxy: &Proxy, consumer: (&str, &str), token: &(String, String), nonce: &str) -> Resp {
    let s = Signer {
        consumer: consumer.0,
        secret: consumer.1,
        token: &token.0,
        token_secret: &token.1,
        extra: vec![],
    };
    let auth = s.sign("GET", "/rest/api/2/myself", nonce);
    get(&proxy.url("/rest/api/2/myself"), &[("authorization", &auth)]).await
}
