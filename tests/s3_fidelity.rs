//! S3 fidelity, part 2 (issue 14), through the AWS SDK for Rust against the real binary on
//! loopback: canned ACLs (one mechanism with the management API's public-read switch), the
//! owner in listings, listings and errors exactly as AWS answers them.

use crate::common;

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketCannedAcl, CompletedMultipartUpload, CompletedPart, Grant, ObjectCannedAcl, Permission, Type,
};
use common::{Silo, scratch, silo_cli_json};

const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";

/// One Silo with two tenants (`tenant-a`, `tenant-b`) and a client of each.
struct Fixture {
    silo: Silo,
    a: Client,
    b: Client,
    http: reqwest::Client,
    _tmp: tempfile::TempDir,
}

impl Fixture {
    async fn start(label: &str) -> Fixture {
        let url = pg_local::testing::shared().fresh_database(label).await;
        let tmp = scratch();
        let mut silo = Silo::start(&tmp.path().join("data"), &["--postgres-url", &url]);
        silo.wait_ready(Duration::from_secs(30)).await;
        let mut clients = Vec::new();
        for tenant in ["tenant-a", "tenant-b"] {
            silo_cli_json(&silo, &["tenant", "create", tenant]);
            let key = silo_cli_json(&silo, &["key", "create", tenant]);
            let field = |name: &str| key[name].as_str().expect("key field").to_string();
            clients.push(common::sdk_client(&silo, &field("access_key_id"), &field("secret_access_key")));
        }
        let b = clients.pop().expect("client b");
        let a = clients.pop().expect("client a");
        Fixture { silo, a, b, http: reqwest::Client::new(), _tmp: tmp }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.silo.addr)
    }

    /// The status of an anonymous GET and HEAD of `path`.
    async fn anonymous(&self, path: &str) -> (u16, u16) {
        let get = self.http.get(self.url(path)).send().await.expect("anonymous get").status().as_u16();
        let head = self.http.head(self.url(path)).send().await.expect("anonymous head").status().as_u16();
        (get, head)
    }

    /// The management API's view of `bucket`'s public-read switch.
    async fn public_read(&self, bucket: &str) -> bool {
        let shown = self
            .http
            .get(format!("http://{}/v1/buckets/{bucket}", self.silo.addr))
            .bearer_auth(self.silo.token())
            .send()
            .await
            .expect("show bucket");
        let shown: serde_json::Value = shown.json().await.expect("bucket json");
        shown["public_read"].as_bool().expect("public_read")
    }

    async fn set_public_read(&self, bucket: &str, public_read: bool) {
        let patched = self
            .http
            .patch(format!("http://{}/v1/buckets/{bucket}", self.silo.addr))
            .bearer_auth(self.silo.token())
            .json(&serde_json::json!({ "public_read": public_read }))
            .send()
            .await
            .expect("patch bucket");
        assert_eq!(patched.status(), 200);
    }
}

/// The S3 error code and HTTP status of a failed call.
fn failure<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    result: Result<T, SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> (String, u16) {
    let err = result.expect_err("the call must fail");
    let status = err.raw_response().map_or(0, |response| response.status().as_u16());
    (err.code().unwrap_or_default().to_string(), status)
}

/// The group a set of grants lets read, if any (besides the owner's full control).
fn readers(grants: &[Grant]) -> Vec<String> {
    grants
        .iter()
        .filter(|grant| grant.permission() == Some(&Permission::Read))
        .filter_map(|grant| grant.grantee().and_then(|grantee| grantee.uri()).map(str::to_owned))
        .collect()
}

fn owner_has_full_control(grants: &[Grant], owner_id: &str) -> bool {
    grants.iter().any(|grant| {
        grant.permission() == Some(&Permission::FullControl)
            && grant.grantee().is_some_and(|g| g.r#type() == &Type::CanonicalUser && g.id() == Some(owner_id))
    })
}

#[tokio::test]
async fn object_canned_acls_let_anonymous_callers_read_that_object_only() {
    let fx = Fixture::start("fidelity_object_acl").await;
    let a = &fx.a;
    a.create_bucket().bucket("site").send().await.expect("create bucket");
    let put = |key: &'static str| a.put_object().bucket("site").key(key).body(ByteStream::from_static(b"x"));
    put("public.css").acl(ObjectCannedAcl::PublicRead).send().await.expect("public put");
    put("private.css").send().await.expect("private put");
    put("auth.css").acl(ObjectCannedAcl::AuthenticatedRead).send().await.expect("auth put");
    assert_eq!(fx.anonymous("site/public.css").await, (200, 200), "a public-read object is anyone's to read");
    assert_eq!(fx.anonymous("site/private.css").await, (403, 403));
    assert_eq!(fx.anonymous("site/auth.css").await, (403, 403), "authenticated-read needs a key");
    // Another tenant's key reads a public-read object (AllUsers), nothing else.
    fx.b.get_object().bucket("site").key("public.css").send().await.expect("b reads a public object");
    assert_eq!(failure(fx.b.get_object().bucket("site").key("private.css").send().await).1, 403);
    let put_anon = fx.http.put(fx.url("site/public.css")).body("y").send().await.expect("anonymous put");
    assert_eq!(put_anon.status(), 403, "public-read is not public-write");

    let acl = a.get_object_acl().bucket("site").key("public.css").send().await.expect("get acl");
    let owner = acl.owner().expect("owner");
    assert_eq!(owner.display_name(), Some("tenant-a"));
    let owner_id = owner.id().expect("owner id").to_owned();
    assert_eq!(owner_id.len(), 64, "a canonical id is 64 hex digits");
    assert!(owner_has_full_control(acl.grants(), &owner_id));
    assert_eq!(readers(acl.grants()), vec![ALL_USERS.to_owned()]);
    let acl = a.get_object_acl().bucket("site").key("auth.css").send().await.expect("get acl");
    assert_eq!(readers(acl.grants()), vec![AUTHENTICATED_USERS.to_owned()]);

    // PutObjectAcl turns it off and on again; a missing key is NoSuchKey.
    let set =
        |key: &'static str, acl: ObjectCannedAcl| a.put_object_acl().bucket("site").key(key).acl(acl).send();
    set("public.css", ObjectCannedAcl::Private).await.expect("make private");
    assert_eq!(fx.anonymous("site/public.css").await, (403, 403));
    let acl = a.get_object_acl().bucket("site").key("public.css").send().await.expect("get acl");
    assert!(readers(acl.grants()).is_empty());
    set("private.css", ObjectCannedAcl::PublicRead).await.expect("make public");
    assert_eq!(fx.anonymous("site/private.css").await, (200, 200));
    assert_eq!(failure(set("missing.css", ObjectCannedAcl::PublicRead).await), ("NoSuchKey".into(), 404));
    // Only the owner reads or changes an ACL.
    assert_eq!(failure(fx.b.get_object_acl().bucket("site").key("private.css").send().await).1, 403);
    let b_set = fx.b.put_object_acl().bucket("site").key("private.css").acl(ObjectCannedAcl::Private);
    assert_eq!(failure(b_set.send().await).1, 403);

    // CopyObject takes the ACL its request names, not the source's.
    let copy = a.copy_object().bucket("site").key("copy.css").copy_source("site/private.css");
    copy.send().await.expect("copy");
    assert_eq!(fx.anonymous("site/copy.css").await, (403, 403), "a copy is private unless it says otherwise");
    let copy = a.copy_object().bucket("site").key("copy2.css").copy_source("site/public.css");
    copy.acl(ObjectCannedAcl::PublicRead).send().await.expect("copy public");
    assert_eq!(fx.anonymous("site/copy2.css").await, (200, 200));

    // CreateMultipartUpload's ACL is the completed object's.
    let upload = a.create_multipart_upload().bucket("site").key("big.bin").acl(ObjectCannedAcl::PublicRead);
    let id = upload.send().await.expect("create upload").upload_id.expect("upload id");
    let part = a.upload_part().bucket("site").key("big.bin").upload_id(&id).part_number(1);
    let etag = part.body(ByteStream::from_static(b"part")).send().await.expect("part").e_tag;
    let done = CompletedMultipartUpload::builder()
        .parts(CompletedPart::builder().part_number(1).set_e_tag(etag).build())
        .build();
    let complete = a.complete_multipart_upload().bucket("site").key("big.bin").upload_id(&id);
    complete.multipart_upload(done).send().await.expect("complete");
    assert_eq!(fx.anonymous("site/big.bin").await, (200, 200));
}

#[tokio::test]
async fn bucket_acls_and_the_management_switch_are_one_state() {
    let fx = Fixture::start("fidelity_bucket_acl").await;
    let a = &fx.a;
    a.create_bucket().bucket("assets").acl(BucketCannedAcl::PublicRead).send().await.expect("create public");
    a.put_object()
        .bucket("assets")
        .key("logo.png")
        .body(ByteStream::from_static(b"png"))
        .send()
        .await
        .expect("put");
    assert!(fx.public_read("assets").await, "x-amz-acl on CreateBucket is the management API's switch");
    assert_eq!(fx.anonymous("assets/logo.png").await, (200, 200));
    let acl = a.get_bucket_acl().bucket("assets").send().await.expect("get bucket acl");
    assert_eq!(readers(acl.grants()), vec![ALL_USERS.to_owned()]);

    fx.set_public_read("assets", false).await;
    let acl = a.get_bucket_acl().bucket("assets").send().await.expect("get bucket acl");
    assert!(readers(acl.grants()).is_empty(), "the switch turned the canned ACL off");
    assert_eq!(fx.anonymous("assets/logo.png").await, (403, 403));

    a.put_bucket_acl()
        .bucket("assets")
        .acl(BucketCannedAcl::PublicRead)
        .send()
        .await
        .expect("put bucket acl");
    assert!(fx.public_read("assets").await, "PutBucketAcl is seen by the management API");
    assert_eq!(fx.anonymous("assets/logo.png").await, (200, 200));
    let authenticated = a.put_bucket_acl().bucket("assets").acl(BucketCannedAcl::AuthenticatedRead);
    authenticated.send().await.expect("authenticated-read");
    assert!(!fx.public_read("assets").await);
    let acl = a.get_bucket_acl().bucket("assets").send().await.expect("get bucket acl");
    assert_eq!(readers(acl.grants()), vec![AUTHENTICATED_USERS.to_owned()]);
    assert_eq!(fx.anonymous("assets/logo.png").await, (403, 403));

    // Grants: to the owner and the AllUsers group as a policy are taken as public-read; to
    // another tenant's canonical id, refused with a message that says why.
    let owner = acl.owner().expect("owner").clone();
    let owner_id = owner.id().expect("owner id").to_owned();
    let b_id =
        fx.b.list_buckets().send().await.expect("b lists").owner().and_then(|o| o.id()).map(str::to_owned);
    let b_id = b_id.expect("b's canonical id");
    assert_ne!(owner_id, b_id);
    let grant = fx.a.put_bucket_acl().bucket("assets").grant_read(format!("id=\"{b_id}\""));
    let err = grant.send().await.expect_err("a grant to another tenant is refused");
    assert_eq!(err.code(), Some("InvalidArgument"));
    assert!(err.message().unwrap_or_default().contains("other canonical ids"), "{err:?}");
    let grant = fx.a.put_bucket_acl().bucket("assets").grant_read(format!("uri=\"{ALL_USERS}\""));
    grant.grant_full_control(format!("id=\"{owner_id}\"")).send().await.expect("grants that are public-read");
    assert!(fx.public_read("assets").await);
    let refused = a.put_bucket_acl().bucket("assets").acl(BucketCannedAcl::PublicReadWrite).send().await;
    assert_eq!(failure(refused), ("InvalidArgument".into(), 400));
    // Only the owner reads or changes a bucket's ACL.
    assert_eq!(failure(fx.b.get_bucket_acl().bucket("assets").send().await).1, 403);
    assert_eq!(
        failure(fx.b.put_bucket_acl().bucket("assets").acl(BucketCannedAcl::Private).send().await).1,
        403
    );
}

#[tokio::test]
async fn the_owner_appears_where_aws_shows_it() {
    let fx = Fixture::start("fidelity_owner").await;
    let a = &fx.a;
    a.create_bucket().bucket("owned").send().await.expect("create bucket");
    a.put_object().bucket("owned").key("k").body(ByteStream::from_static(b"v")).send().await.expect("put");
    let listed = a.list_buckets().send().await.expect("list buckets");
    let owner = listed.owner().expect("ListBuckets shows the owner").clone();
    assert_eq!(owner.display_name(), Some("tenant-a"));
    let id = owner.id().expect("owner id");

    let v1 = a.list_objects().bucket("owned").send().await.expect("list v1");
    let shown = v1.contents()[0].owner().expect("v1 shows each object's owner");
    assert_eq!((shown.id(), shown.display_name()), (Some(id), Some("tenant-a")));
    let v2 = a.list_objects_v2().bucket("owned").send().await.expect("list v2");
    assert!(v2.contents()[0].owner().is_none(), "v2 shows no owner unless asked");
    let v2 = a.list_objects_v2().bucket("owned").fetch_owner(true).send().await.expect("list v2");
    assert_eq!(v2.contents()[0].owner().and_then(|o| o.id()), Some(id));

    let upload = a.create_multipart_upload().bucket("owned").key("up").send().await.expect("create upload");
    let upload_id = upload.upload_id().expect("upload id");
    let uploads = a.list_multipart_uploads().bucket("owned").send().await.expect("list uploads");
    let listed = &uploads.uploads()[0];
    assert_eq!(listed.owner().and_then(|o| o.id()), Some(id));
    assert_eq!(listed.initiator().and_then(|o| o.display_name()), Some("tenant-a"));
    let parts =
        a.list_parts().bucket("owned").key("up").upload_id(upload_id).send().await.expect("list parts");
    assert_eq!(parts.owner().and_then(|o| o.id()), Some(id));
    assert_eq!(parts.initiator().and_then(|o| o.id()), Some(id));
}

#[tokio::test]
async fn list_buckets_pages_by_max_buckets_continuation_token_and_prefix() {
    let fx = Fixture::start("fidelity_list_buckets").await;
    let a = &fx.a;
    for name in ["img-1", "img-2", "img-3", "log-1"] {
        a.create_bucket().bucket(name).send().await.expect("create bucket");
    }
    let names = |out: &aws_sdk_s3::operation::list_buckets::ListBucketsOutput| -> Vec<String> {
        out.buckets().iter().filter_map(|b| b.name().map(str::to_owned)).collect()
    };
    let all = a.list_buckets().send().await.expect("list");
    assert_eq!(names(&all), ["img-1", "img-2", "img-3", "log-1"]);
    assert!(all.continuation_token().is_none(), "one page");
    let first = a.list_buckets().max_buckets(2).send().await.expect("first page");
    assert_eq!(names(&first), ["img-1", "img-2"]);
    let token = first.continuation_token().expect("a token while more follow");
    let second = a.list_buckets().max_buckets(2).continuation_token(token).send().await.expect("second page");
    assert_eq!(names(&second), ["img-3", "log-1"]);
    assert!(second.continuation_token().is_none());
    let img = a.list_buckets().prefix("img-").max_buckets(2).send().await.expect("prefix");
    assert_eq!((names(&img), img.prefix()), (vec!["img-1".to_owned(), "img-2".to_owned()], Some("img-")));
    let rest = a.list_buckets().prefix("img-").continuation_token(img.continuation_token().expect("token"));
    assert_eq!(names(&rest.send().await.expect("rest")), ["img-3"]);
    assert_eq!(failure(a.list_buckets().max_buckets(0).send().await), ("InvalidArgument".into(), 400));
}
