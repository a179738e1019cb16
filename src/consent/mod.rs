//! Consent: evaluating a requesting payer's Consent (`$member-match`, §pdex-203/207), the
//! stored consents of matched members, and the sensitivity allowance they grant. The
//! authorization server asks this module before it issues a member-scoped token
//! (§pdex-222..224); the bulk engine asks it again per member when an export runs.
//!
//! Depends on `store` and `auth` (types only).

use crate::auth::OrgIdentifier;
use crate::store::Store;

/// What a stored consent lets a requesting organization receive for one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberGrant {
    /// The member's Patient id in our store.
    pub patient_id: String,
    /// `#sensitive` policy → true; `#regular` → false.
    pub allow_sensitive: bool,
}

/// The member-scoped-token check (§pdex-222..224): finds the latest active stored consent of
/// `member` (a `Patient/{id}` reference, a bare id, or the member's UMB) whose recipient is
/// `requester`, checks its period covers today and its policy can still be honoured, and says
/// what the token may carry. `Ok(None)` means no valid consent: the token endpoint answers
/// `invalid_grant`.
pub async fn member_grant(
    store: &Store,
    requester: &OrgIdentifier,
    member: &str,
) -> anyhow::Result<Option<MemberGrant>> {
    // Stored consents arrive with the member-match work; until then no consent exists.
    let _ = (store, requester, member);
    Ok(None)
}
