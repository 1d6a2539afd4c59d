//! The ONE place errors become HTTP responses. Bodies use Jira's error shape
//! `{"errorMessages":[...],"errors":{}}` so REST clients report them as they would
//! Jira's own. Messages are fixed strings: nothing from the request (and so no secret)
//! is echoed back.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

/// A body that broke off: a client's request body, or Jira's answer.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(String);

impl From<String> for BodyError {
    fn from(s: String) -> BodyError {
        BodyError(s)
    }
}

impl From<&str> for BodyError {
    fn from(s: &str) -> BodyError {
        BodyError(s.to_owned())
    }
}

impl From<hyper::Error> for BodyError {
    fn from(e: hyper::Error) -> BodyError {
        BodyError(e.to_string())
    }
}

/// The body type of every request and response the proxy sends.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BodyError>;

/// No body.
pub fn empty() -> Body {
    http_body_util::Empty::new().map_err(|never| match never {}).boxed()
}

/// A body held in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Malformed or ambiguous request (client error).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// No credentials, and the rules do not admit anonymous callers.
    #[error("authentication required")]
    AuthRequired { challenges: Vec<HeaderValue> },
    /// Credentials were presented and refused.
    #[error("authentication failed")]
    AuthFailed { challenges: Vec<HeaderValue> },
    /// Too many failed attempts for this account.
    #[error("locked out")]
    LockedOut { retry_after: Duration },
    /// A rule's rate limit: Jira Data Center's answer, with its headers.
    #[error("rate limited")]
    RateLimited {
        retry_after: Duration,
        headers: Vec<(&'static str, HeaderValue)>,
    },
    /// Authenticated, but the rules deny the request.
    #[error("forbidden")]
    Forbidden,
    /// A bearer credential lacks a scope a rule requires (RFC 6750 §3.1).
    #[error("insufficient scope")]
    InsufficientScope { challenge: Option<HeaderValue> },
    /// Refused with a fixed explanation the caller needs (e.g. Jira's CAPTCHA lock).
    #[error("refused: {0}")]
    Refused(&'static str),
    /// A body the proxy must read itself (an OAuth form) is over its cap.
    #[error("payload too large")]
    PayloadTooLarge,
    /// Jira could not be reached or broke the connection.
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    /// Jira ran the request as someone other than the user the proxy asserted.
    #[error("identity not honoured by Jira")]
    IdentityNotHonoured,
    /// Jira did not answer within `upstream.response_timeout`.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// A dependency of a decision (state store, verifier) failed: fail closed.
    #[error("dependency unavailable: {0}")]
    Dependency(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::AuthRequired { .. } | ProxyError::AuthFailed { .. } => StatusCode::UNAUTHORIZED,
            ProxyError::LockedOut { .. } | ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::Forbidden | ProxyError::Refused(_) | ProxyError::InsufficientScope { .. } => {
                StatusCode::FORBIDDEN
            }
            ProxyError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::UpstreamUnreachable(_) | ProxyError::IdentityNotHonoured => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Dependency(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn message(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(m) => m,
            ProxyError::AuthRequired { .. } | ProxyError::AuthFailed { .. } => {
                "You are not authenticated. Authentication required to perform this operation."
            }
            ProxyError::LockedOut { .. } => "Too many failed login attempts for this account. Try again later.",
            ProxyError::RateLimited { .. } => "Rate limit exceeded. Try again later.",
            ProxyError::Forbidden | ProxyError::InsufficientScope { .. } => {
                "You do not have permission to perform this operation."
            }
            ProxyError::Refused(m) => m,
            ProxyError::PayloadTooLarge => "The form body is too large to check its OAuth signature.",
            ProxyError::UpstreamUnreachable(_) => "Jira could not be reached. Try again later.",
            ProxyError::UpstreamTimeout => "Jira did not answer in time.",
            ProxyError::IdentityNotHonoured => {
                "Jira did not run the request as the authenticated user; check the application link's impersonation setting."
            }
            ProxyError::Dependency(_) => "Authentication is temporarily unavailable. Try again later.",
            ProxyError::Internal(_) => "Internal error in the authentication proxy.",
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let mut resp = jira_error(self.status(), self.message());
        let headers = resp.headers_mut();
        match self {
            ProxyError::AuthRequired { challenges } | ProxyError::AuthFailed { challenges } => {
                for c in challenges {
                    headers.append(WWW_AUTHENTICATE, c);
                }
            }
            ProxyError::InsufficientScope { challenge: Some(c) } => {
                headers.insert(WWW_AUTHENTICATE, c);
            }
            ProxyError::LockedOut { retry_after } => {
                let secs = retry_after.as_secs().max(1);
                headers.insert(RETRY_AFTER, HeaderValue::from(secs));
            }
            ProxyError::RateLimited {
                retry_after,
                headers: limits,
            } => {
                // Whole seconds, rounded up: a client that waits this long gets a token.
                let secs = retry_after.as_millis().div_ceil(1000).max(1) as u64;
                headers.insert(RETRY_AFTER, HeaderValue::from(secs));
                for (name, value) in limits {
                    headers.insert(name, value);
                }
            }
            _ => {}
        }
        resp
    }
}

/// A Jira-shaped JSON error response.
pub fn jira_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "errorMessages": [message], "errors": {} }).to_string();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json;charset=UTF-8"));
    resp
}
