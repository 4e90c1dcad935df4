//! The console's users and their sessions.
//!
//! A user belongs to one account and has one role; user names are unique in the gateway (a
//! login form names no account). The store keeps the password's argon2 hash (made by the
//! caller, `console::password`), never the password. A session is a random id handed to the
//! browser once; the store keeps only its SHA-256, as it does for bearer tokens.

use async_trait::async_trait;

use super::{Millis, StoreError};

/// What a user may do in its account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read only.
    Viewer,
    /// Commands, campaigns, provisioning.
    Operator,
    /// Everything in the account, users and tokens included.
    Admin,
}

impl Role {
    /// Every role, least first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// The name as stored and typed (`admin`, `operator`, `viewer`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// The role of a name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether it may act (start, stop, send), not only read.
    pub fn can_operate(self) -> bool {
        self >= Role::Operator
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user to create.
#[derive(Clone, PartialEq, Eq)]
pub struct NewUser {
    /// Its account.
    pub account_id: String,
    /// Unique in the gateway.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The password's hash in PHC form (`$argon2id$...`).
    pub password_hash: String,
}

/// A stored user.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Stable id.
    pub id: String,
    /// Its account's id.
    pub account_id: String,
    /// Its account's name.
    pub account_name: String,
    /// User name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The password's hash in PHC form.
    pub password_hash: String,
    /// Created, ms.
    pub created_at: Millis,
}

impl std::fmt::Debug for UserRecord {
    // The hash is not printed (it is what an offline guesser needs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("account", &self.account_name)
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// A session just opened: its id goes to the browser once (only its hash is stored).
#[derive(Clone, PartialEq, Eq)]
pub struct NewSession {
    /// The secret the cookie carries.
    pub id: String,
    /// The token every form of the session carries.
    pub csrf: String,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NewSession { .. }")
    }
}

/// A stored session with its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Whose.
    pub user: UserRecord,
    /// Its forms' token.
    pub csrf: String,
    /// Opened, ms.
    pub created_at: Millis,
    /// Last request, ms (updated at most once a minute).
    pub last_seen: Millis,
    /// Absolute end, ms.
    pub expires_at: Millis,
}

/// One line of the console's audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The account it happened in.
    pub account_id: String,
    /// When, ms.
    pub at: Millis,
    /// Who (a user name).
    pub user_name: String,
    /// What (`sign-in`, `campaign.start`, ...).
    pub action: String,
    /// On what (`campaign 3`; empty for sign-in and sign-out).
    pub target: String,
    /// More (a card group, a count, a client address).
    pub detail: String,
}

/// The users part of the store.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates a user; `Duplicate` when the name is taken (in any account), `NotFound` for an
    /// unknown account.
    async fn create_user(&self, user: &NewUser, now: Millis) -> Result<UserRecord, StoreError>;
    /// The user of that name.
    async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Opens a session for a user, good until `expires_at` at most.
    async fn create_session(
        &self,
        user_id: &str,
        now: Millis,
        expires_at: Millis,
    ) -> Result<NewSession, StoreError>;
    /// The session a cookie's id names, with its user (none once closed).
    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError>;
    /// Records activity on a session.
    async fn touch_session(&self, id: &str, now: Millis) -> Result<(), StoreError>;
    /// Closes a session (logout); nothing when it is gone already.
    async fn delete_session(&self, id: &str) -> Result<(), StoreError>;
    /// Appends a line to the account's console audit trail.
    async fn record_action(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// The account's audit trail, newest first, all of it or about one target.
    async fn actions(
        &self,
        account_id: &str,
        target: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError>;
    /// Closes the sessions past their absolute end or idle since before `idle_before`.
    async fn delete_stale_sessions(
        &self,
        now: Millis,
        idle_before: Millis,
    ) -> Result<u64, StoreError>;
}
