//! S3 fidelity, part 2 (issue 14), through the AWS SDK for Rust against the real binary on
//! loopback: canned ACLs (one mechanism with the management API's public-read switch), the
//! owner in listings, listings and errors exactly as AWS answers them.

use crate::common;

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketCannedAcl, BucketVersioningStatus, CompletedMultipartUpload, CompletedPart, Delete, EncodingType,
    Grant, MetadataDirective, ObjectCannedAcl, ObjectIdentifier, Permission, Type, VersioningConfiguration,
};
use common::{Silo, noise};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
pub(crate) const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";

/// One Silo with two tenants (`tenant-a`, `tenant-b`) and a client of each.
pub(crate) struct Fixture {
    pub(crate) silo: Silo,
    /// Tenant A's key (id and secret).
    pub(crate) key: (String, String),
    pub(crate) a: Client,
    pub(crate) b: Client,
    pub(crate) http: reqwest::Client,
    pub(crate) _tmp: tempfile::TempDir,
}

impl Fixture {
    pub(crate) async fn start(label: &str) -> Fixture {
        let (silo, tmp) = common::silo_on_fresh_catalog(label).await;
        let mut keys: Vec<_> =
            ["tenant-a", "tenant-b"].iter().map(|tenant| common::tenant_with_key(&silo, tenant)).collect();
        let a = common::sdk_client(&silo, &keys[0].0, &keys[0].1);
        let b = common::sdk_client(&silo, &keys[1].0, &keys[1].1);
        let key = keys.swap_remove(0);
        Fixture { silo, key, a, b, http: reqwest::Client::new(), _tmp: tmp }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.silo.addr)
    }

    /// The status of an anonymous GET and HEAD of `path`.
    pub(crate) async fn anonymous(&self, path: &str) -> (u16, u16) {
        let get = self.http.get(self.url(path)).send().await.expect("anonymous get").status().as_u16();
        let head = self.http.head(self.url(path)).send().await.expect("anonymous head").status().as_u16();
        (get, head)
    }

    /// The management API's view of `bucket`'s public-read switch.
    pub(crate) async fn public_read(&self, bucket: &str) -> bool {
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

    pub(crate) async fn set_public_read(&self, bucket: &str, public_read: bool) {
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
pub(crate) fn failure<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    result: Result<T, SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> (String, u16) {
    let err = result.expect_err("the call must fail");
    let status = err.raw_response().map_or(0, |response| response.status().as_u16());
    (err.code().unwrap_or_default().to_string(), status)
}

/// The group a set of grants lets read, if any (besides the owner's full control).
pub(crate) fn readers(grants: &[Grant]) -> Vec<String> {
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

/// The text of an element in an XML document, if it is there.
pub(crate) fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

#[tokio::test]
async fn listings_encode_keys_and_follow_aws_on_delimiters() {
    let fx = Fixture::start("fidelity_listing").await;
    let a = &fx.a;
    a.create_bucket().bucket("list").send().await.expect("create bucket");
    let keys = [
        "a b/c+d.txt",
        "photos/2006/feb/b.jpg",
        "photos/2006/jan/a.jpg",
        "photos/2007/c.jpg",
        "photos_x_y",
        "photos_x_z",
        "x&y<z/\u{e9}",
    ];
    for key in keys {
        a.put_object().bucket("list").key(key).body(ByteStream::from_static(b"k")).send().await.expect("put");
    }
    // encoding-type=url: keys, prefixes and delimiters URL-encoded (space as +, / kept).
    let v2 = a.list_objects_v2().bucket("list").encoding_type(EncodingType::Url).delimiter("/");
    let v2 = v2.send().await.expect("list v2 url");
    assert_eq!(v2.encoding_type(), Some(&EncodingType::Url));
    let prefixes: Vec<_> = v2.common_prefixes().iter().filter_map(|p| p.prefix()).collect();
    assert_eq!(prefixes, ["a+b/", "photos/", "x%26y%3Cz/"]);
    let listed: Vec<_> = v2.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(listed, ["photos_x_y", "photos_x_z"]);
    let v1 = a.list_objects().bucket("list").encoding_type(EncodingType::Url).prefix("x&y<z/");
    let v1 = v1.marker("x&y").send().await.expect("list v1 url");
    let listed: Vec<_> = v1.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(listed, ["x%26y%3Cz/%C3%A9"]);
    assert_eq!((v1.prefix(), v1.marker()), (Some("x%26y%3Cz/"), Some("x%26y")), "markers and prefixes too");
    let up = a.create_multipart_upload().bucket("list").key("up load&").send().await.expect("create upload");
    let uploads = a.list_multipart_uploads().bucket("list").encoding_type(EncodingType::Url).send();
    let uploads = uploads.await.expect("list uploads url");
    assert_eq!(uploads.uploads()[0].key(), Some("up+load%26"));
    let abort = a.abort_multipart_upload().bucket("list").key("up load&");
    abort.upload_id(up.upload_id().expect("id")).send().await.expect("abort");

    // ListMultipartUploads: a delimiter, key and upload id markers.
    let mut ids = Vec::new();
    for key in ["dir/a", "dir/b", "solo", "solo", "z"] {
        let up = a.create_multipart_upload().bucket("list").key(key).send().await.expect("create upload");
        ids.push(up.upload_id.expect("id"));
    }
    let folded = a.list_multipart_uploads().bucket("list").delimiter("/").max_uploads(2).send().await;
    let folded = folded.expect("list uploads");
    let prefixes: Vec<_> = folded.common_prefixes().iter().filter_map(|p| p.prefix()).collect();
    assert_eq!((prefixes, folded.delimiter()), (vec!["dir/"], Some("/")));
    assert_eq!(folded.uploads().iter().filter_map(|u| u.upload_id()).collect::<Vec<_>>(), [ids[2].as_str()]);
    assert_eq!((folded.is_truncated(), folded.next_key_marker()), (Some(true), Some("solo")));
    let rest = a.list_multipart_uploads().bucket("list").delimiter("/").key_marker("solo");
    let rest = rest.upload_id_marker(folded.next_upload_id_marker().expect("next id")).send().await;
    let rest = rest.expect("the next page");
    let listed: Vec<_> = rest.uploads().iter().filter_map(|u| u.upload_id()).collect();
    assert_eq!(listed, [ids[3].as_str(), ids[4].as_str()], "the second upload of solo, then z");
    assert_eq!((rest.is_truncated(), rest.key_marker()), (Some(false), Some("solo")));
    let after_dir = a.list_multipart_uploads().bucket("list").delimiter("/").key_marker("dir/").send().await;
    let after_dir = after_dir.expect("after a common prefix");
    assert!(after_dir.common_prefixes().is_empty(), "dir/ was on the page before");
    for (key, id) in ["dir/a", "dir/b", "solo", "solo", "z"].iter().zip(&ids) {
        a.abort_multipart_upload().bucket("list").key(*key).upload_id(id).send().await.expect("abort");
    }
    // ListObjectVersions: an unversioned bucket's keys, each its one `null` version.
    let versions = a.list_object_versions().bucket("list").encoding_type(EncodingType::Url).prefix("x&y<z/");
    let versions = versions.send().await.expect("list versions");
    let listed: Vec<_> =
        versions.versions().iter().map(|v| (v.key(), v.version_id(), v.is_latest())).collect();
    assert_eq!(listed, [(Some("x%26y%3Cz/%C3%A9"), Some("null"), Some(true))]);
    let paged = a.list_object_versions().bucket("list").max_keys(2).send().await.expect("list versions");
    assert_eq!((paged.is_truncated(), paged.next_key_marker()), (Some(true), Some("photos/2006/feb/b.jpg")));
    let rest = a.list_object_versions().bucket("list").key_marker("photos/2006/feb/b.jpg").max_keys(1);
    let rest = rest.send().await.expect("next page");
    assert_eq!(rest.versions()[0].key(), Some("photos/2006/jan/a.jpg"));
    let refused = a.list_objects_v2().bucket("list").encoding_type(EncodingType::from("base64")).send().await;
    assert_eq!(failure(refused), ("InvalidArgument".into(), 400));

    // A prefix that ends inside a delimiter; a delimiter other than /.
    let inside =
        a.list_objects_v2().bucket("list").prefix("photos/20").delimiter("/").send().await.expect("list");
    let prefixes: Vec<_> = inside.common_prefixes().iter().filter_map(|p| p.prefix()).collect();
    assert_eq!(prefixes, ["photos/2006/", "photos/2007/"]);
    let underscore =
        a.list_objects_v2().bucket("list").prefix("photos").delimiter("_").send().await.expect("list");
    let prefixes: Vec<_> = underscore.common_prefixes().iter().filter_map(|p| p.prefix()).collect();
    assert_eq!(prefixes, ["photos_"]);
    assert!(underscore.contents().iter().all(|o| o.key().is_some_and(|k| k.starts_with("photos/"))));
    // max-keys=0: nothing, and not truncated, as AWS answers.
    let none = a.list_objects_v2().bucket("list").max_keys(0).send().await.expect("max-keys 0");
    assert_eq!((none.contents().len(), none.is_truncated(), none.key_count()), (0, Some(false), Some(0)));
    // The marker is echoed.
    let v1 = a.list_objects().bucket("list").marker("photos/").send().await.expect("list v1");
    assert_eq!(v1.marker(), Some("photos/"));
    // An empty delimiter is no delimiter: no Delimiter element in the reply.
    fx.set_public_read("list", true).await;
    for query in ["list-type=2&delimiter=", "delimiter="] {
        let raw = fx.http.get(fx.url(&format!("list?{query}"))).send().await.expect("raw list");
        let xml = raw.text().await.expect("xml");
        assert!(!xml.contains("<Delimiter"), "{query}: {xml}");
        assert!(xml.contains("<Key>photos/2007/c.jpg</Key>"), "{query}: every key listed");
    }
}

#[tokio::test]
async fn errors_as_aws_gives_them() {
    let fx = Fixture::start("fidelity_errors").await;
    let a = &fx.a;
    a.create_bucket().bucket("err").send().await.expect("create bucket");
    a.put_object().bucket("err").key("one").body(ByteStream::from_static(b"one")).send().await.expect("put");

    // Buckets are unversioned, and say so to their owner only; turning versioning on is refused.
    let versioning = a.get_bucket_versioning().bucket("err").send().await.expect("versioning");
    assert!(versioning.status().is_none() && versioning.mfa_delete().is_none(), "{versioning:?}");
    assert_eq!(
        failure(fx.b.get_bucket_versioning().bucket("err").send().await),
        ("AccessDenied".into(), 403)
    );
    let enable = VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build();
    let refused = a.put_bucket_versioning().bucket("err").versioning_configuration(enable).send().await;
    assert_eq!(failure(refused), ("NotImplemented".into(), 501));

    // DeleteObjects with more than 1000 keys.
    let ids: Vec<ObjectIdentifier> =
        (0..1001).map(|i| ObjectIdentifier::builder().key(format!("k{i}")).build().expect("id")).collect();
    let delete = Delete::builder().set_objects(Some(ids)).build().expect("delete");
    let refused = a.delete_objects().bucket("err").delete(delete).send().await;
    assert_eq!(failure(refused), ("MalformedXML".into(), 400));

    // CopyObject onto itself changing nothing; with REPLACE it is a metadata update.
    let same = a.copy_object().bucket("err").key("one").copy_source("err/one").send().await;
    assert_eq!(failure(same), ("InvalidRequest".into(), 400));
    let replace = a.copy_object().bucket("err").key("one").copy_source("err/one");
    replace
        .metadata_directive(MetadataDirective::Replace)
        .content_type("text/plain")
        .send()
        .await
        .expect("replace");

    // GET and HEAD with partNumber: that part, and the part count.
    let first = noise(5 << 20, 1);
    let upload = a.create_multipart_upload().bucket("err").key("mp").send().await.expect("create upload");
    let id = upload.upload_id().expect("id");
    let mut parts = Vec::new();
    for (number, body) in [(1, first.clone()), (2, b"second part".to_vec())] {
        let part = a.upload_part().bucket("err").key("mp").upload_id(id).part_number(number);
        let etag = part.body(ByteStream::from(body)).send().await.expect("part").e_tag;
        parts.push(CompletedPart::builder().part_number(number).set_e_tag(etag).build());
    }
    let done = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
    let complete = a.complete_multipart_upload().bucket("err").key("mp").upload_id(id);
    complete.multipart_upload(done).send().await.expect("complete");
    let got = a.get_object().bucket("err").key("mp").part_number(2).send().await.expect("get part 2");
    assert_eq!(got.parts_count(), Some(2));
    let length = first.len() + 11;
    assert_eq!(got.content_range(), Some(format!("bytes {}-{}/{length}", first.len(), length - 1).as_str()));
    assert_eq!(got.body.collect().await.expect("body").into_bytes().as_ref(), b"second part");
    let head = a.head_object().bucket("err").key("mp").part_number(1).send().await.expect("head part 1");
    assert_eq!((head.parts_count(), head.content_length()), (Some(2), Some(first.len() as i64)));
    let missing = a.get_object().bucket("err").key("mp").part_number(3).send().await;
    assert_eq!(failure(missing), ("InvalidPartNumber".into(), 416));
    let single = a.get_object().bucket("err").key("one").part_number(1).send().await.expect("single part 1");
    assert_eq!(single.body.collect().await.expect("body").into_bytes().as_ref(), b"one");

    // UploadPartCopy with a range past the source.
    let upload = a.create_multipart_upload().bucket("err").key("copy").send().await.expect("create upload");
    let copy = a.upload_part_copy().bucket("err").key("copy").upload_id(upload.upload_id().expect("id"));
    let copy = copy.part_number(1).copy_source("err/one").copy_source_range("bytes=0-99");
    assert_eq!(failure(copy.send().await), ("InvalidRange".into(), 416));

    // Presigned URLs: X-Amz-Expires below 1 or above a week; expired.
    let minute = PresigningConfig::expires_in(Duration::from_secs(60)).expect("presign config");
    let get = a.get_object().bucket("err").key("one").presigned(minute).await.expect("presign");
    for expires in ["0", "604801"] {
        let url = get.uri().replace("X-Amz-Expires=60", &format!("X-Amz-Expires={expires}"));
        let response = fx.http.get(&url).send().await.expect("presigned");
        assert_eq!(response.status(), 400, "X-Amz-Expires={expires}");
        assert_eq!(
            element(&response.text().await.expect("xml"), "Code"),
            Some("AuthorizationQueryParametersError")
        );
    }
    let short = PresigningConfig::builder()
        .start_time(std::time::SystemTime::now() - Duration::from_secs(60))
        .expires_in(Duration::from_secs(1))
        .build()
        .expect("config");
    let expired = a.get_object().bucket("err").key("one").presigned(short).await.expect("presign");
    let response = fx.http.get(expired.uri()).send().await.expect("expired");
    assert_eq!(response.status(), 403);
    let xml = response.text().await.expect("xml");
    assert_eq!(
        (element(&xml, "Code"), element(&xml, "Message")),
        (Some("AccessDenied"), Some("Request has expired"))
    );

    // Every error body carries the request id of its x-amz-request-id header, and a host id.
    for path in ["no-such-bucket/k", "err/one?response-content-type=x", "err?list-type=2"] {
        let response = fx.http.get(fx.url(path)).send().await.expect("request");
        assert!(response.status().is_client_error(), "{path}");
        let header =
            |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (id, host) =
            (header("x-amz-request-id").expect("request id"), header("x-amz-id-2").expect("host id"));
        let xml = response.text().await.expect("xml");
        assert_eq!(element(&xml, "RequestId"), Some(id.as_str()), "{path}: {xml}");
        assert_eq!(element(&xml, "HostId"), Some(host.as_str()), "{path}: {xml}");
    }
    let err = a.get_object().bucket("err").key("missing").send().await.expect_err("no such key");
    let header = err.raw_response().and_then(|r| r.headers().get("x-amz-request-id")).map(str::to_owned);
    assert!(header.is_some_and(|id| id.len() == 16), "SDK errors carry the id too");
    let ok = a.head_object().bucket("err").key("one").send().await;
    assert!(ok.is_ok(), "successes carry ids as well, and nothing else changes");
}

#[tokio::test]
async fn chunked_puts_without_a_length_are_stored_and_anonymous_misses_answer_as_aws() {
    let fx = Fixture::start("fidelity_chunked").await;
    let a = &fx.a;
    a.create_bucket().bucket("stream").send().await.expect("create bucket");
    let minute = PresigningConfig::expires_in(Duration::from_secs(60)).expect("presign config");
    let put = a.put_object().bucket("stream").key("chunked.bin").presigned(minute).await.expect("presign");
    let path =
        put.uri().split_once(&fx.silo.addr.to_string()).map(|(_, path)| path.to_owned()).expect("path");
    let body = noise(300_000, 9);
    let mut stream = tokio::net::TcpStream::connect(fx.silo.addr).await.expect("connect");
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        fx.silo.addr
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    for chunk in body.chunks(64 * 1024) {
        stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.expect("size");
        stream.write_all(chunk).await.expect("chunk");
        stream.write_all(b"\r\n").await.expect("crlf");
    }
    stream.write_all(b"0\r\n\r\n").await.expect("last chunk");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let got = a.get_object().bucket("stream").key("chunked.bin").send().await.expect("get");
    assert_eq!(got.body.collect().await.expect("body").into_bytes().as_ref(), body.as_slice());

    // Anonymous misses: a missing key of a private bucket is 403 (as on AWS: the caller may
    // not list it), of a public-read bucket 404; an unknown bucket is 403 (AWS: 404; see s3.md).
    assert_eq!(fx.anonymous("stream/missing").await, (403, 403));
    fx.set_public_read("stream", true).await;
    let missing = fx.http.get(fx.url("stream/missing")).send().await.expect("get");
    assert_eq!(missing.status(), 404);
    assert_eq!(element(&missing.text().await.expect("xml"), "Code"), Some("NoSuchKey"));
    assert_eq!(fx.anonymous("no-such-bucket-here/k").await, (403, 403));
}

#[tokio::test]
async fn boto3_and_the_aws_cli_see_the_same_acls_owners_listings_and_errors() {
    let fx = Fixture::start("fidelity_boto3").await;
    common::run_s3_script("s3_fidelity.py", &fx.silo, &[("KEY", &fx.key.0), ("SECRET", &fx.key.1)]).await;
}
