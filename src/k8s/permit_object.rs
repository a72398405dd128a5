//! Writes to a permit object (`kube-fencer-permit-NODE`,
//! [`crate::decide::permit::object`]): read it (a quorum read), let the
//! core decide from what it says, and write the one annotation that
//! decision names with a precondition on the version read — so that two
//! writers deciding on the same version (a renewal through the API server
//! and the revocation that closes that path) can never both take effect.

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};

use crate::decide::permit::object::{self, PermitState};

/// What to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    Set(&'static str, String),
    Remove(&'static str),
}

/// Read the permit object of `node`; `decide` says from what it says
/// which annotation to change (`None`: nothing) and what to return; the
/// change is written with a precondition on the version read. An error of
/// `decide` is returned as it is, with nothing written.
pub async fn update<T>(
    api: &Api<Lease>,
    node: &str,
    decide: impl FnOnce(&PermitState) -> Result<(Option<Edit>, T), String>,
) -> Result<T, String> {
    attempt(api, node, decide).await.map_err(|(_, e)| e)
}

/// [`update`], read and decided again when the object changed between
/// the read and the write (a 409 on the precondition), up to `attempts`
/// times in all. For a write that must not be lost to an unrelated one
/// on the same object — a grantor's silence report, a renewal — and whose
/// decision stays right when taken again on the newer version.
pub async fn update_fresh<T>(
    api: &Api<Lease>,
    node: &str,
    attempts: usize,
    mut decide: impl FnMut(&PermitState) -> Result<(Option<Edit>, T), String>,
) -> Result<T, String> {
    let mut left = attempts.max(1);
    loop {
        left -= 1;
        match attempt(api, node, &mut decide).await {
            Err((true, e)) if left > 0 => {
                tracing::debug!(node, error = %e, "permit object changed since it was read; reading it again");
            }
            done => return done.map_err(|(_, e)| e),
        }
    }
}

/// One read, decision and conditional write; an error says whether it
/// was a conflict on the version read.
async fn attempt<T>(
    api: &Api<Lease>,
    node: &str,
    decide: impl FnOnce(&PermitState) -> Result<(Option<Edit>, T), String>,
) -> Result<T, (bool, String)> {
    let name = object::name(node);
    let mut lease = api.get(&name).await.map_err(|e| (false, e.to_string()))?;
    let state = object::read(lease.metadata.annotations.as_ref());
    let (edit, out) = decide(&state).map_err(|e| (false, e))?;
    let Some(edit) = edit else {
        return Ok(out);
    };
    let annotations = lease
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    match edit {
        Edit::Set(key, value) => {
            annotations.insert(key.to_string(), value);
        }
        Edit::Remove(key) => {
            annotations.remove(key);
        }
    }
    lease.metadata.managed_fields = None;
    api.replace(&name, &PostParams::default(), &lease)
        .await
        .map_err(|e| (super::is_status(&e, 409), e.to_string()))?;
    Ok(out)
}
