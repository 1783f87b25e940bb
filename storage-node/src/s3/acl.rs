//! Canned ACLs in S3's terms: the owner (a tenant's canonical id and display name), the
//! `x-amz-acl` and grant headers and `AccessControlPolicy` bodies Silo accepts, and the ACL
//! calls over [`crate::model::bucket`] and [`crate::model::object`].
//!
//! Silo keeps one canned ACL per bucket and per object (`private`, `public-read`,
//! `authenticated-read`): a grant that says the same (the owner's full control, `READ` to the
//! AllUsers or AuthenticatedUsers group) is taken as that ACL; any other grant, to another
//! canonical id in particular, is refused with `400 InvalidArgument` saying so.

use s3s::dto::{AccessControlPolicy, Grant, Grantee, Initiator, Owner, Permission, Type};
use s3s::{S3Result, s3_error};

use super::SiloS3;
use super::bucket::Intent;
use crate::model::bucket::{self as bucket_model, CannedAcl};
use crate::model::object as object_model;
use crate::{ServerSecret, TenantId};

const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";

/// The grant headers of a request (`x-amz-grant-*`), each with the permission it grants.
macro_rules! grant_headers {
    ($input:expr, [$($field:ident => $permission:ident),* $(,)?]) => {
        [$((s3s::dto::Permission::$permission, $input.$field.as_deref())),*]
    };
}
pub(crate) use grant_headers;

/// The grant headers of an object write or PutObjectAcl (objects take no `x-amz-grant-write`).
macro_rules! object_grants {
    ($input:expr) => {
        $crate::s3::acl::grant_headers!($input, [
            grant_full_control => FULL_CONTROL,
            grant_read => READ,
            grant_read_acp => READ_ACP,
            grant_write_acp => WRITE_ACP,
        ])
    };
}
pub(crate) use object_grants;

/// The grant headers of CreateBucket or PutBucketAcl.
macro_rules! bucket_grants {
    ($input:expr) => {
        $crate::s3::acl::grant_headers!($input, [
            grant_full_control => FULL_CONTROL,
            grant_read => READ,
            grant_read_acp => READ_ACP,
            grant_write => WRITE,
            grant_write_acp => WRITE_ACP,
        ])
    };
}
pub(crate) use bucket_grants;

/// The canned ACL an object write (PutObject, CopyObject, CreateMultipartUpload input) asks
/// for by `$tenant`: its `x-amz-acl` or grant headers, `private` when it names none.
macro_rules! object_acl {
    ($s3:expr, $input:expr, $tenant:expr) => {
        $crate::s3::acl::AclRequest {
            canned: $input.acl.as_ref().map(|acl| acl.as_str()),
            policy: None,
            grants: &$crate::s3::acl::object_grants!($input),
        }
        .resolve(&$s3.owner_id($tenant))
        .map(Option::unwrap_or_default)
    };
}
pub(crate) use object_acl;

/// A tenant's canonical id, as S3 shows owners: 64 hex digits, stable, keyed with the server
/// secret so that it does not give away the tenant's row id (hashing 1, 2, 3... would).
pub(crate) fn canonical_id(secret: &ServerSecret, tenant: TenantId) -> String {
    hex::encode(secret.derive_key("silo 2026-11 S3 canonical id", &tenant.0.to_le_bytes()))
}

/// What a request asks of the ACL: its `x-amz-acl`, its body's policy and its grant headers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AclRequest<'a> {
    pub canned: Option<&'a str>,
    pub policy: Option<&'a AccessControlPolicy>,
    pub grants: &'a [(&'static str, Option<&'a str>)],
}

impl AclRequest<'_> {
    /// The canned ACL asked for by the owner whose canonical id is `owner_id` (`None`: the
    /// request names none).
    ///
    /// # Errors
    /// `InvalidArgument` for a canned ACL Silo does not keep or a grant it cannot express,
    /// `InvalidRequest` for a canned ACL with grants besides.
    pub(crate) fn resolve(&self, owner_id: &str) -> S3Result<Option<CannedAcl>> {
        let mut grants: Vec<(String, GrantTo)> = Vec::new();
        for (permission, header) in self.grants {
            for grantee in header.iter().flat_map(|header| parse_grantees(header)) {
                grants.push(((*permission).to_owned(), grantee?));
            }
        }
        if let Some(policy) = self.policy {
            for grant in policy.grants.iter().flatten() {
                let permission = grant.permission.as_ref().map(|p| p.as_str().to_owned()).unwrap_or_default();
                grants.push((permission, GrantTo::of(grant.grantee.as_ref())));
            }
        }
        match (self.canned, grants.is_empty()) {
            (Some(_), false) => {
                Err(s3_error!(InvalidRequest, "Specifying both Canned ACLs and Header Grants is not allowed"))
            }
            (Some(word), true) => canned(word).map(Some),
            (None, true) if self.policy.is_none() => Ok(None),
            (None, _) => from_grants(&grants, owner_id).map(Some),
        }
    }
}

/// The canned ACL `word` names. `bucket-owner-read` and `bucket-owner-full-control` give the
/// bucket's owner what it has anyway (an object's owner is its bucket's): `private`.
fn canned(word: &str) -> S3Result<CannedAcl> {
    match word {
        "private" | "bucket-owner-read" | "bucket-owner-full-control" => Ok(CannedAcl::Private),
        "public-read" => Ok(CannedAcl::PublicRead),
        "authenticated-read" => Ok(CannedAcl::AuthenticatedRead),
        other => Err(s3_error!(
            InvalidArgument,
            "Silo keeps the canned ACLs private, public-read and authenticated-read; {other} is refused"
        )),
    }
}

/// Whom a grant names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GrantTo {
    Id(String),
    Group(String),
    Email(String),
}

impl GrantTo {
    fn of(grantee: Option<&Grantee>) -> GrantTo {
        match grantee {
            Some(Grantee { uri: Some(uri), .. }) => GrantTo::Group(uri.clone()),
            Some(Grantee { id: Some(id), .. }) => GrantTo::Id(id.clone()),
            Some(Grantee { email_address: Some(email), .. }) => GrantTo::Email(email.clone()),
            _ => GrantTo::Id(String::new()),
        }
    }
}

/// The grantees of a grant header: `id="...", uri="...", emailAddress="..."`, comma-separated.
fn parse_grantees(header: &str) -> impl Iterator<Item = S3Result<GrantTo>> + '_ {
    header.split(',').map(str::trim).filter(|item| !item.is_empty()).map(|item| {
        let (kind, value) = item
            .split_once('=')
            .ok_or_else(|| s3_error!(InvalidArgument, "a grant header names grantees as id=\"...\""))?;
        let value = value.trim().trim_matches('"').to_owned();
        match kind.trim().to_ascii_lowercase().as_str() {
            "id" => Ok(GrantTo::Id(value)),
            "uri" => Ok(GrantTo::Group(value)),
            "emailaddress" => Ok(GrantTo::Email(value)),
            _ => Err(s3_error!(InvalidArgument, "a grantee is id=, uri= or emailAddress=")),
        }
    })
}

/// The canned ACL that `grants` amount to, for the owner `owner_id`.
fn from_grants(grants: &[(String, GrantTo)], owner_id: &str) -> S3Result<CannedAcl> {
    let mut acl = CannedAcl::Private;
    for (permission, grantee) in grants {
        match (grantee, permission.as_str()) {
            (GrantTo::Id(id), _) if id == owner_id => {}
            (GrantTo::Group(uri), Permission::READ) if uri == ALL_USERS => acl = CannedAcl::PublicRead,
            (GrantTo::Group(uri), Permission::READ) if uri == AUTHENTICATED_USERS => {
                if acl == CannedAcl::Private {
                    acl = CannedAcl::AuthenticatedRead;
                }
            }
            (GrantTo::Id(id), _) => {
                return Err(s3_error!(
                    InvalidArgument,
                    "Silo does not grant access to other canonical ids ({id}): a bucket or object is its \
                     tenant's; use the canned ACLs private, public-read or authenticated-read"
                ));
            }
            (GrantTo::Email(_), _) => {
                return Err(s3_error!(
                    UnresolvableGrantByEmailAddress,
                    "Silo does not grant access by e-mail address; use a canned ACL"
                ));
            }
            (GrantTo::Group(uri), permission) => {
                return Err(s3_error!(
                    InvalidArgument,
                    "Silo grants groups READ only (AllUsers: public-read, AuthenticatedUsers: \
                     authenticated-read); {permission} to {uri} is refused"
                ));
            }
        }
    }
    Ok(acl)
}

/// The grants S3 shows for `acl`: the owner's full control, and the group that may read.
fn grants_of(acl: CannedAcl, owner: &Owner) -> Vec<Grant> {
    let owner_grant = Grant {
        grantee: Some(Grantee {
            display_name: owner.display_name.clone(),
            id: owner.id.clone(),
            type_: Type::from_static(Type::CANONICAL_USER),
            email_address: None,
            uri: None,
        }),
        permission: Some(Permission::from_static(Permission::FULL_CONTROL)),
    };
    let group = match acl {
        CannedAcl::Private => None,
        CannedAcl::PublicRead => Some(ALL_USERS),
        CannedAcl::AuthenticatedRead => Some(AUTHENTICATED_USERS),
    };
    let read = group.map(|uri| Grant {
        grantee: Some(Grantee {
            display_name: None,
            id: None,
            type_: Type::from_static(Type::GROUP),
            email_address: None,
            uri: Some(uri.to_owned()),
        }),
        permission: Some(Permission::from_static(Permission::READ)),
    });
    std::iter::once(owner_grant).chain(read).collect()
}

impl SiloS3 {
    /// The tenant as S3 shows an owner: its canonical id and its name.
    pub(crate) async fn owner_of(&self, tenant: TenantId) -> S3Result<Owner> {
        let name = bucket_model::tenant_name(self.pool(), tenant).await?;
        Ok(Owner { id: Some(self.owner_id(Some(tenant))), display_name: Some(name) })
    }

    /// The canonical id of `tenant` (none for an anonymous caller).
    pub(crate) fn owner_id(&self, tenant: Option<TenantId>) -> String {
        tenant.map(|tenant| canonical_id(self.store.server_secret(), tenant)).unwrap_or_default()
    }

    /// The tenant as S3 shows an upload's initiator (the owner: keys act for their tenant).
    pub(crate) fn initiator_of(owner: &Owner) -> Initiator {
        Initiator { id: owner.id.clone(), display_name: owner.display_name.clone() }
    }

    /// A bucket's owner and grants; its owner only may read them.
    pub(crate) async fn bucket_acl(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
    ) -> S3Result<(Owner, Vec<Grant>)> {
        let found = self.bucket(caller, bucket, Intent::Write).await?;
        let owner = self.owner_of(found.tenant).await?;
        let grants = grants_of(found.acl, &owner);
        Ok((owner, grants))
    }

    /// Sets a bucket's canned ACL; its owner only may.
    pub(crate) async fn put_bucket_acl_for(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        request: AclRequest<'_>,
    ) -> S3Result<()> {
        let found = self.bucket(caller, bucket, Intent::Write).await?;
        let acl = request.resolve(&self.owner_id(Some(found.tenant)))?.ok_or_else(missing_acl)?;
        Ok(bucket_model::set_acl(&self.store, bucket, found.id, acl).await?)
    }

    /// An object's owner and grants; its bucket's owner only may read them.
    pub(crate) async fn object_acl(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
    ) -> S3Result<(Owner, Vec<Grant>)> {
        let found = self.bucket(caller, bucket, Intent::Write).await?;
        let row = self.object_in(caller, bucket, found.id, key).await?;
        let owner = self.owner_of(row.tenant).await?;
        let grants = grants_of(row.headers.acl, &owner);
        Ok((owner, grants))
    }

    /// Sets an object's canned ACL; its bucket's owner only may.
    pub(crate) async fn put_object_acl_for(
        &self,
        caller: Option<TenantId>,
        bucket: &str,
        key: &str,
        request: AclRequest<'_>,
    ) -> S3Result<()> {
        let found = self.bucket(caller, bucket, Intent::Write).await?;
        let acl = request.resolve(&self.owner_id(Some(found.tenant)))?.ok_or_else(missing_acl)?;
        if object_model::set_acl(&self.store, bucket, found.id, key, acl).await? {
            Ok(())
        } else {
            Err(s3_error!(NoSuchKey))
        }
    }
}

/// A Put*Acl that names no ACL, as AWS answers it.
fn missing_acl() -> s3s::S3Error {
    s3_error!(MissingSecurityHeader, "the request names no ACL: send x-amz-acl, grant headers or a policy")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(canned: Option<&str>, grants: &[(&'static str, Option<&str>)]) -> S3Result<Option<CannedAcl>> {
        AclRequest { canned, policy: None, grants }.resolve(&canonical_id(&secret(), TenantId(7)))
    }

    use sha2::{Digest, Sha256};

    fn secret() -> ServerSecret {
        ServerSecret::from_bytes([3; 32])
    }

    #[test]
    fn canonical_ids_are_keyed_by_the_server_secret() {
        let id = canonical_id(&secret(), TenantId(7));
        assert_eq!(id.len(), 64);
        assert_ne!(id, canonical_id(&ServerSecret::from_bytes([4; 32]), TenantId(7)));
        assert_ne!(id, hex::encode(Sha256::digest("silo-tenant:7")), "not a hash of the row id alone");
    }

    #[test]
    fn canned_acls_are_kept_and_others_refused() {
        assert_eq!(resolve(None, &[]).ok(), Some(None));
        assert_eq!(resolve(Some("public-read"), &[]).ok(), Some(Some(CannedAcl::PublicRead)));
        assert_eq!(resolve(Some("bucket-owner-full-control"), &[]).ok(), Some(Some(CannedAcl::Private)));
        let err = resolve(Some("public-read-write"), &[]).expect_err("refused");
        assert_eq!(err.code().as_str(), "InvalidArgument");
    }

    #[test]
    fn grants_that_say_a_canned_acl_are_taken_as_it() {
        let owner = format!("id=\"{}\"", canonical_id(&secret(), TenantId(7)));
        let all = format!("uri=\"{ALL_USERS}\"");
        let grants =
            [(Permission::FULL_CONTROL, Some(owner.as_str())), (Permission::READ, Some(all.as_str()))];
        assert_eq!(resolve(None, &grants).ok(), Some(Some(CannedAcl::PublicRead)));
    }

    #[test]
    fn grants_to_other_ids_are_refused_clearly() {
        let other = format!("id=\"{}\"", canonical_id(&secret(), TenantId(8)));
        let err = resolve(None, &[(Permission::READ, Some(other.as_str()))]).expect_err("refused");
        assert_eq!(err.code().as_str(), "InvalidArgument");
        assert!(err.message().unwrap_or_default().contains("other canonical ids"));
        let err = resolve(Some("private"), &[(Permission::READ, Some(other.as_str()))]).expect_err("both");
        assert_eq!(err.code().as_str(), "InvalidRequest");
    }
}
