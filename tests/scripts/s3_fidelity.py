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
    print("ok")


if __name__ == "__main__":
    main()
