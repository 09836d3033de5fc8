//! Who is calling: API keys, the caller a key stands for, and the cached key check (the
//! middleware in front of the routes is `http::auth`'s).
//!
//! A key belongs to one user. A non-admin caller acts only as that user: it may name itself in
//! a body or query (`user_id`), naming anyone else is refused (403), and another user's
//! resources answer 404 so their ids don't leak. Admin keys act for anyone. With auth disabled
//! (local use) every request is an admin that must name its user.

mod authenticator;
mod keys;

pub use authenticator::Authenticator;
pub use keys::{ApiKey, CreatedKey, KeyError, KeyStore};

// Read with the rest of the settings in `crate::config`, below this module.
pub use crate::config::{AuthMode, AuthSettings};

/// The identity a request acts as, put in the request's extensions by the auth middleware
/// before any handler or rate limiter runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's user; `None` when auth is disabled (local use), where a request may act for
    /// any user it names.
    pub user_id: Option<String>,
    /// Admin keys (and disabled auth) may act for every user.
    pub admin: bool,
}

/// Why a caller may not act as the user a request names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActAsError {
    #[error("does not match the API key's user")]
    OtherUser,
    #[error("is required")]
    Missing,
}

impl Caller {
    /// The caller of every request while auth is disabled.
    pub fn local() -> Self {
        Self { user_id: None, admin: true }
    }

    /// The key under which this caller's requests are counted by per-user limits.
    pub fn limit_key(&self) -> &str {
        self.user_id.as_deref().unwrap_or("local")
    }

    /// The user a request acts as, given the `user_id` it names (if any): the key's own user by
    /// default; another user only for admins.
    pub fn act_as(&self, requested: Option<&str>) -> Result<String, ActAsError> {
        match (requested, self.user_id.as_deref()) {
            (Some(requested), _) if self.admin => Ok(requested.to_owned()),
            (Some(requested), Some(own)) if requested == own => Ok(own.to_owned()),
            (Some(_), _) => Err(ActAsError::OtherUser),
            (None, Some(own)) => Ok(own.to_owned()),
            (None, None) => Err(ActAsError::Missing),
        }
    }

    /// Whether this caller may see a resource of `owner`.
    pub fn may_access(&self, owner: &str) -> bool {
        self.admin || self.user_id.as_deref() == Some(owner)
    }

    /// The user whose resources a listing is limited to: a non-admin sees only its own, an
    /// admin whatever it asks for (everything when it names nobody).
    pub fn list_scope(&self, requested: Option<&str>) -> Result<Option<String>, ActAsError> {
        if self.admin { Ok(requested.map(str::to_owned)) } else { self.act_as(requested).map(Some) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> Caller {
        Caller { user_id: Some(id.into()), admin: false }
    }

    #[test]
    fn a_user_acts_only_as_itself() {
        assert_eq!(user("ann").act_as(None), Ok("ann".into()));
        assert_eq!(user("ann").act_as(Some("ann")), Ok("ann".into()));
        assert_eq!(user("ann").act_as(Some("bob")), Err(ActAsError::OtherUser));
        assert!(user("ann").may_access("ann"));
        assert!(!user("ann").may_access("bob"));
        assert_eq!(user("ann").list_scope(None), Ok(Some("ann".into())));
        assert_eq!(user("ann").list_scope(Some("bob")), Err(ActAsError::OtherUser));
    }

    #[test]
    fn an_admin_acts_for_anyone() {
        let admin = Caller { user_id: Some("root".into()), admin: true };
        assert_eq!(admin.act_as(None), Ok("root".into()));
        assert_eq!(admin.act_as(Some("bob")), Ok("bob".into()));
        assert!(admin.may_access("bob"));
        assert_eq!(admin.list_scope(None), Ok(None));
    }

    #[test]
    fn without_auth_a_request_names_its_user() {
        assert_eq!(Caller::local().act_as(None), Err(ActAsError::Missing));
        assert_eq!(Caller::local().act_as(Some("bob")), Ok("bob".into()));
        assert_eq!(Caller::local().list_scope(None), Ok(None));
    }
}
