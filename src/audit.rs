//! The audit trail: what was done to tokens, by whom and from where, and who was refused.
//!
//! One [`AuditEntry`] shape serves every reader: the store's audit table, the admin API
//! (`GET /admin/v1/audit`), `patgate audit list --json`, and the audit streams (webhook and
//! file sinks, JSON lines). An entry never holds a secret or an `Authorization` value:
//! only token ids, owners, actors, client addresses, methods, paths (never a query) and
//! statuses.
//!
//! Lifecycle entries (create, change, regenerate, revoke, revoke-all, leak report, and
//! an audit stream's create, change and delete) are
//! written by the store in the transaction that makes the change, so an acknowledged
//! change is in the trail whatever happens next. Entries from the request path (refused
//! authentications, and allowed requests counted per token and minute) and policy
//! refusals go through an [`Auditor`]: a bounded queue, written behind the request path in
//! batches, so that no request waits on the trail; what a full queue cannot take is
//! counted and logged, never waited for.

pub mod expiry;
pub mod streams;
pub mod webhook_allow;
pub mod writer;

pub use writer::Auditor;

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[audit]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long entries are kept.
    pub retention: Duration,
    pub allowed_requests: AllowedRequests,
    /// Entries waiting to be written, at most.
    pub queue: usize,
    /// Entries waiting for one stream, at most.
    pub stream_backlog: usize,
    /// Tokens expiring within this long are warned of once.
    pub expiry_warning: Duration,
    /// The folder file streams may write in, absolute; none: file streams are refused,
    /// so that the admin API cannot make the server write just anywhere.
    pub stream_dir: Option<std::path::PathBuf>,
    /// The addresses webhook streams may be delivered to.
    pub webhook_allow: webhook_allow::WebhookAllow,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            retention: Duration::from_secs(90 * 86_400),
            allowed_requests: AllowedRequests::PerMinute,
            queue: 10_000,
            stream_backlog: 10_000,
            expiry_warning: Duration::from_secs(7 * 86_400),
            stream_dir: None,
            webhook_allow: webhook_allow::WebhookAllow::default(),
        }
    }
}

/// How allowed requests enter the trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedRequests {
    /// One entry per token and minute, with the count of its requests.
    PerMinute,
    /// One entry per request.
    Each,
    /// None.
    None,
}

impl AllowedRequests {
    /// The names the config takes.
    pub const NAMES: [&'static str; 3] = ["per_minute", "each", "none"];

    pub fn from_name(name: &str) -> Option<AllowedRequests> {
        match name {
            "per_minute" => Some(AllowedRequests::PerMinute),
            "each" => Some(AllowedRequests::Each),
            "none" => Some(AllowedRequests::None),
            _ => None,
        }
    }
}

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(test, derive(strum::EnumIter))]
pub enum Action {
    /// A token was created.
    Create,
    /// A token's name, scopes, organizations or expiry were changed.
    Update,
    /// A token got a new secret under the same id.
    Regenerate,
    /// A token got a new secret and a new expiry under the same id; the old secret is
    /// remembered.
    Rotate,
    /// A secret that a rotation replaced was presented: the token was revoked.
    RotatedSecretReused,
    /// A token was revoked.
    Revoke,
    /// Every live token of an owner was revoked (one entry a token, this action).
    RevokeAll,
    /// A token was revoked because its secret was reported leaked.
    LeakReport,
    /// A create, change or regenerate was refused by the policy.
    PolicyRefusal,
    /// A request was refused at authentication or authorization (401, 403, 429).
    AuthRefused,
    /// Requests a token made and was allowed, counted per token and minute (`count`).
    Access,
    /// A live token expires within `audit.expiry_warning` (once per token and expiry).
    ExpiryWarning,
    /// An audit stream was created.
    StreamCreate,
    /// An audit stream was renamed, moved, re-keyed, paused or resumed.
    StreamChange,
    /// An audit stream was deleted.
    StreamDelete,
}

impl Action {
    /// Every action, for the tests and for listing them.
    pub const ALL: [Action; 15] = [
        Action::Create,
        Action::Update,
        Action::Regenerate,
        Action::Rotate,
        Action::RotatedSecretReused,
        Action::Revoke,
        Action::RevokeAll,
        Action::LeakReport,
        Action::PolicyRefusal,
        Action::AuthRefused,
        Action::Access,
        Action::ExpiryWarning,
        Action::StreamCreate,
        Action::StreamChange,
        Action::StreamDelete,
    ];

    /// The name in JSON and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Regenerate => "regenerate",
            Action::Rotate => "rotate",
            Action::RotatedSecretReused => "rotated_secret_reused",
            Action::Revoke => "revoke",
            Action::RevokeAll => "revoke_all",
            Action::LeakReport => "leak_report",
            Action::PolicyRefusal => "policy_refusal",
            Action::AuthRefused => "auth_refused",
            Action::Access => "access",
            Action::ExpiryWarning => "expiry_warning",
            Action::StreamCreate => "stream_create",
            Action::StreamChange => "stream_change",
            Action::StreamDelete => "stream_delete",
        }
    }

    /// The action of this name.
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// Whether what was asked was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    /// The name in JSON and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }

    /// The outcome of this name.
    pub fn from_name(name: &str) -> Option<Outcome> {
        match name {
            "success" => Some(Outcome::Success),
            "failure" => Some(Outcome::Failure),
            _ => None,
        }
    }
}

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The entry's place in the store's trail, rising (0 until stored): the paging cursor.
    #[serde(default)]
    pub seq: i64,
    /// When, in Unix milliseconds (RFC 3339 in JSON, to the millisecond).
    #[serde(with = "rfc3339_millis")]
    pub time: i64,
    pub action: Action,
    pub outcome: Outcome,
    /// Why it failed, in one line (the refusal's reason), or what it did.
    pub reason: Option<String>,
    /// The token concerned, when there is one (also a known token refused as expired or
    /// revoked).
    pub token_id: Option<String>,
    /// The token's owner.
    pub owner: Option<String>,
    /// Who did it: the caller's owner on the admin API, `cli:USER@HOST` for the CLI on the
    /// store, `leak report`, or none for a request on the proxy (the token is the actor).
    pub actor: Option<String>,
    /// The client address, through trusted proxies.
    pub client: Option<IpAddr>,
    pub method: Option<String>,
    /// The normalized path, never the query.
    pub path: Option<String>,
    /// The pattern of the route matched, when the request got that far (a 401 did not:
    /// the credential is judged before the route is looked up).
    pub route: Option<String>,
    pub status: Option<u16>,
    /// How many requests the entry stands for: 1, or more for [`Action::Access`].
    pub count: u32,
}

impl AuditEntry {
    /// An entry at `time` (Unix ms) with only its action and outcome; fill in the rest.
    pub fn new(time: i64, action: Action, outcome: Outcome) -> AuditEntry {
        AuditEntry {
            seq: 0,
            time,
            action,
            outcome,
            reason: None,
            token_id: None,
            owner: None,
            actor: None,
            client: None,
            method: None,
            path: None,
            route: None,
            status: None,
            count: 1,
        }
    }
}

pub use crate::clock::now_millis;

/// Who made a change, as the store records it with the change: the actor's name and the
/// client address it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    pub name: Option<String>,
    pub client: Option<IpAddr>,
}

impl Actor {
    /// An actor known by name only (the CLI, a leak report).
    pub fn named(name: impl Into<String>) -> Actor {
        Actor {
            name: Some(name.into()),
            client: None,
        }
    }
}

mod rfc3339_millis {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        let secs = ms.div_euclid(1000);
        let millis = ms.rem_euclid(1000);
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0));
        let whole = humantime::format_rfc3339_seconds(t).to_string();
        // 2026-12-06T16:20:00Z -> 2026-12-06T16:20:00.123Z
        s.serialize_str(&format!("{}.{millis:03}Z", whole.trim_end_matches('Z')))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = String::deserialize(d)?;
        let t = humantime::parse_rfc3339(&text).map_err(serde::de::Error::custom)?;
        let since = t.duration_since(std::time::UNIX_EPOCH).map_err(serde::de::Error::custom)?;
        i64::try_from(since.as_millis()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_action_once_by_its_own_name() {
        use strum::IntoEnumIterator;
        let every: Vec<Action> = Action::iter().collect();
        assert_eq!(Action::ALL.to_vec(), every, "Action::ALL must list every action, in order");
        for a in Action::iter() {
            assert_eq!(Action::from_name(a.as_str()), Some(a));
        }
    }

    #[test]
    fn an_entry_reads_back_as_it_was_written() {
        let mut e = AuditEntry::new(1_765_038_000_123, Action::Revoke, Outcome::Success);
        e.token_id = Some("tok1".into());
        e.client = Some("2001:db8::1".parse().unwrap());
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["time"], "2025-12-06T16:20:00.123Z");
        assert_eq!(json["action"], "revoke");
        assert_eq!(json["outcome"], "success");
        assert_eq!(json["client"], "2001:db8::1");
        assert_eq!(serde_json::from_value::<AuditEntry>(json).unwrap(), e);
    }

    #[test]
    fn names_are_one_reading() {
        for a in Action::ALL {
            assert_eq!(Action::from_name(a.as_str()), Some(a));
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        for o in [Outcome::Success, Outcome::Failure] {
            assert_eq!(Outcome::from_name(o.as_str()), Some(o));
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
    }
}
