"""S3 fidelity, part 2 (canned ACLs, owners, listings, errors) with boto3 and the aws CLI,
against a running Silo.

Run by tests/s3_fidelity.rs, which starts Silo and passes, in the environment:
SILO_S3_ENDPOINT and a tenant's key (KEY/SECRET). boto3 asks for encoding-type=url on every
listing and decodes what it gets. Exits non-zero on the first failure, with the reason.
"""
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

import boto3
from botocore.client import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["SILO_S3_ENDPOINT"]


def client():
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=os.environ["KEY"],
        aws_secret_access_key=os.environ["SECRET"],
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def anonymous_status(path):
    try:
        with urllib.request.urlopen(f"{ENDPOINT}/{path}") as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def failure(call):
    try:
        call()
    except ClientError as err:
        return err.response["Error"]["Code"], err.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError("the call succeeded but should have failed")


def aws(*args):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=os.environ["KEY"], AWS_SECRET_ACCESS_KEY=os.environ["SECRET"],
               AWS_DEFAULT_REGION="us-east-1")
    aws_cli = os.path.join(os.path.dirname(sys.executable), "aws")
    subprocess.run([aws_cli, "--endpoint-url", ENDPOINT, *args], check=True, env=env, capture_output=True)


def main():
    s3 = client()
    s3.create_bucket(Bucket="fidelity")

    # `aws s3 cp --acl public-read`, as site assets are published.
    with tempfile.NamedTemporaryFile(suffix=".css") as asset:
        asset.write(b"body { color: red }")
        asset.flush()
        aws("s3", "cp", "--acl", "public-read", asset.name, "s3://fidelity/site.css")
        aws("s3", "cp", asset.name, "s3://fidelity/private.css")
    assert anonymous_status("fidelity/site.css") == 200, "a public-read object is public"
    assert anonymous_status("fidelity/private.css") == 403, "a private one is not"
    acl = s3.get_object_acl(Bucket="fidelity", Key="site.css")
    uris = [g["Grantee"].get("URI") for g in acl["Grants"] if g["Permission"] == "READ"]
    assert uris == ["http://acs.amazonaws.com/groups/global/AllUsers"], acl["Grants"]
    s3.put_object_acl(Bucket="fidelity", Key="site.css", ACL="private")
    assert anonymous_status("fidelity/site.css") == 403

    # A bucket ACL as a policy that only says public-read; a grant to someone else is refused.
    owner = s3.get_bucket_acl(Bucket="fidelity")["Owner"]
    policy = {
        "Owner": owner,
        "Grants": [
            {"Grantee": {"Type": "CanonicalUser", "ID": owner["ID"]}, "Permission": "FULL_CONTROL"},
            {"Grantee": {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AllUsers"},
             "Permission": "READ"},
        ],
    }
    s3.put_bucket_acl(Bucket="fidelity", AccessControlPolicy=policy)
    assert anonymous_status("fidelity/private.css") == 200, "a public-read bucket is public"
    policy["Grants"].append({"Grantee": {"Type": "CanonicalUser", "ID": "ab" * 32}, "Permission": "READ"})
    assert failure(lambda: s3.put_bucket_acl(Bucket="fidelity", AccessControlPolicy=policy)) == (
        "InvalidArgument", 400)
    s3.put_bucket_acl(Bucket="fidelity", ACL="private")
    assert anonymous_status("fidelity/private.css") == 403

    # Owners in listings.
    assert s3.list_buckets()["Owner"]["ID"] == owner["ID"]
    listed = s3.list_objects_v2(Bucket="fidelity", FetchOwner=True)["Contents"]
    assert all(o["Owner"]["ID"] == owner["ID"] for o in listed), listed

    # boto3 lists with encoding-type=url and decodes: awkward keys come back as they are.
    awkward = ["a b+c.txt", "x&y<z>/\u00e9 \u00fc", "percent%20kept", "tab\there"]
    for key in awkward:
        s3.put_object(Bucket="fidelity", Key=key, Body=b"k")
    keys = [o["Key"] for o in s3.list_objects(Bucket="fidelity")["Contents"]]
    assert all(key in keys for key in awkward), keys
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="fidelity", Prefix="x&y<z>/")["Contents"]]
    assert keys == ["x&y<z>/\u00e9 \u00fc"], keys
    prefixes = s3.list_objects_v2(Bucket="fidelity", Delimiter="/")["CommonPrefixes"]
    assert [p["Prefix"] for p in prefixes] == ["x&y<z>/"], prefixes
    upload = s3.create_multipart_upload(Bucket="fidelity", Key="up load&")
    uploads = s3.list_multipart_uploads(Bucket="fidelity")["Uploads"]
    assert [u["Key"] for u in uploads] == ["up load&"], uploads
    s3.abort_multipart_upload(Bucket="fidelity", Key="up load&", UploadId=upload["UploadId"])

    # Errors: DeleteObjects over 1000 keys, a copy onto itself, the request id in the body.
    many = {"Objects": [{"Key": f"k{i}"} for i in range(1001)]}
    assert failure(lambda: s3.delete_objects(Bucket="fidelity", Delete=many)) == ("MalformedXML", 400)
    copy = lambda: s3.copy_object(Bucket="fidelity", Key="a b+c.txt", CopySource="fidelity/a b+c.txt")
    assert failure(copy) == ("InvalidRequest", 400)
    try:
        s3.get_object(Bucket="fidelity", Key="missing")
        raise AssertionError("a missing key was found")
    except ClientError as err:
        meta = err.response["ResponseMetadata"]
        assert meta["RequestId"] == meta["HTTPHeaders"]["x-amz-request-id"], meta
        assert meta["HostId"] == meta["HTTPHeaders"]["x-amz-id-2"], meta
    listings_and_limits(s3)
    print("ok")


def listings_and_limits(s3):
    """ListBuckets pages, delimiter edge cases, ListObjectVersions, partNumber GET,
    UploadPartCopy past its source, presigned lifetimes and anonymous misses."""
    for name in ("page-1", "page-2", "page-3"):
        s3.create_bucket(Bucket=name)
    first = s3.list_buckets(Prefix="page-", MaxBuckets=2)
    assert [b["Name"] for b in first["Buckets"]] == ["page-1", "page-2"], first
    rest = s3.list_buckets(Prefix="page-", MaxBuckets=2, ContinuationToken=first["ContinuationToken"])
    assert [b["Name"] for b in rest["Buckets"]] == ["page-3"] and "ContinuationToken" not in rest, rest

    for key in ("d/2006/a", "d/2007/b", "d_x", "d_y"):
        s3.put_object(Bucket="page-1", Key=key, Body=b"k")
    inside = s3.list_objects_v2(Bucket="page-1", Prefix="d/20", Delimiter="/")
    assert [p["Prefix"] for p in inside["CommonPrefixes"]] == ["d/2006/", "d/2007/"], inside
    underscore = s3.list_objects_v2(Bucket="page-1", Delimiter="_")
    assert [p["Prefix"] for p in underscore["CommonPrefixes"]] == ["d_"], underscore
    none = s3.list_objects_v2(Bucket="page-1", MaxKeys=0)
    assert (none["KeyCount"], none["IsTruncated"], "Contents" in none) == (0, False, False), none
    versions = s3.list_object_versions(Bucket="page-1", MaxKeys=1)
    assert [(v["Key"], v["VersionId"], v["IsLatest"]) for v in versions["Versions"]] == [("d/2006/a", "null", True)]
    assert (versions["NextKeyMarker"], versions["NextVersionIdMarker"]) == ("d/2006/a", "null"), versions

    one = os.urandom(5 << 20)
    upload = s3.create_multipart_upload(Bucket="page-1", Key="mp")["UploadId"]
    parts = []
    for number, body in ((1, one), (2, b"second")):
        etag = s3.upload_part(Bucket="page-1", Key="mp", UploadId=upload, PartNumber=number, Body=body)["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
    s3.complete_multipart_upload(Bucket="page-1", Key="mp", UploadId=upload, MultipartUpload={"Parts": parts})
    got = s3.get_object(Bucket="page-1", Key="mp", PartNumber=2)
    assert (got["PartsCount"], got["Body"].read()) == (2, b"second"), got
    upload = s3.create_multipart_upload(Bucket="page-1", Key="copy")["UploadId"]
    copy = lambda: s3.upload_part_copy(Bucket="page-1", Key="copy", UploadId=upload, PartNumber=1,
                                       CopySource="page-1/d_x", CopySourceRange="bytes=0-99")
    assert failure(copy) == ("InvalidRange", 416)
    s3.abort_multipart_upload(Bucket="page-1", Key="copy", UploadId=upload)

    week = s3.generate_presigned_url("get_object", Params={"Bucket": "page-1", "Key": "d_x"}, ExpiresIn=604800)
    with urllib.request.urlopen(week) as response:
        assert response.read() == b"k"
    beyond = s3.generate_presigned_url("get_object", Params={"Bucket": "page-1", "Key": "d_x"}, ExpiresIn=604801)
    try:
        urllib.request.urlopen(beyond)
        raise AssertionError("a presigned URL of more than a week was served")
    except urllib.error.HTTPError as err:
        assert err.code == 400 and b"AuthorizationQueryParametersError" in err.read(), err

    assert anonymous_status("page-1/missing") == 403, "a private bucket's miss"
    assert anonymous_status("no-such-bucket-here/k") == 403, "an unknown bucket (see docs/s3.md)"
    s3.put_bucket_acl(Bucket="page-1", ACL="public-read")
    assert anonymous_status("page-1/missing") == 404, "a public-read bucket's miss"


if __name__ == "__main__":
    main()
