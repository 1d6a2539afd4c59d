//! OAuth 1.0a as Jira speaks it. `rfc5849` holds the signature rules both directions
//! share; `inbound` checks requests signed by consumers.

pub mod inbound;
pub mod provider;
pub mod rfc5849;
pub mod tokens;
