"""S3 integrity, checksums, retries and conditional writes with boto3, against a running Silo.

Run by tests/s3_integrity.rs, which starts Silo and passes, in the environment:
SILO_S3_ENDPOINT and a tenant's key (KEY/SECRET). boto3 sends a CRC32 checksum by default.
Exits non-zero on the first failure, with the reason.
"""
import base64
import hashlib
import os
import zlib

import boto3
from botocore.client import Config
from botocore.exceptions import ClientError


def client():
    return boto3.client(
        "s3",
        endpoint_url=os.environ["SILO_S3_ENDPOINT"],
        aws_access_key_id=os.environ["KEY"],
        aws_secret_access_key=os.environ["SECRET"],
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def failure(call):
    try:
        call()
    except ClientError as err:
        return err.response["Error"]["Code"], err.response["ResponseMetadata"]["HTTPStatusCode"]
    raise AssertionError("the call succeeded but should have failed")


def b64(digest):
    return base64.b64encode(digest).decode()


def crc32(data):
    return b64(zlib.crc32(data).to_bytes(4, "big"))


def main():
    s3 = client()
    s3.create_bucket(Bucket="boto")
    body = os.urandom(200_000)

    # Content-MD5.
    s3.put_object(Bucket="boto", Key="md5", Body=body, ContentMD5=b64(hashlib.md5(body).digest()))
    bad = b64(hashlib.md5(b"other").digest())
    assert failure(lambda: s3.put_object(Bucket="boto", Key="bad", Body=body, ContentMD5=bad)) == ("BadDigest", 400)
    assert failure(lambda: s3.head_object(Bucket="boto", Key="bad"))[1] == 404, "nothing stored"

    # boto3's default CRC32, returned with ChecksumMode and checked by boto3 on GET.
    put = s3.put_object(Bucket="boto", Key="crc", Body=body)
    assert put.get("ChecksumCRC32") == crc32(body), put
    head = s3.head_object(Bucket="boto", Key="crc", ChecksumMode="ENABLED")
    assert head.get("ChecksumCRC32") == crc32(body), head
    got = s3.get_object(Bucket="boto", Key="crc", ChecksumMode="ENABLED")["Body"].read()
    assert got == body
    wrong = b64(hashlib.sha256(b"other").digest())
    assert failure(lambda: s3.put_object(Bucket="boto", Key="bad", Body=body, ChecksumSHA256=wrong)) == (
        "BadDigest",
        400,
    )

    # Stored headers and response overrides.
    s3.put_object(
        Bucket="boto",
        Key="page",
        Body=body,
        ContentEncoding="gzip",
        ContentLanguage="nl",
        CacheControl="max-age=5",
        ContentDisposition="inline",
    )
    head = s3.head_object(Bucket="boto", Key="page")
    assert (head["ContentEncoding"], head["ContentLanguage"], head["CacheControl"]) == ("gzip", "nl", "max-age=5")
    got = s3.get_object(Bucket="boto", Key="page", ResponseContentType="text/plain", ResponseCacheControl="no-cache")
    assert (got["ContentType"], got["CacheControl"]) == ("text/plain", "no-cache"), got

    # Multipart with a composite CRC32, a retried completion, and GetObjectAttributes.
    one, two = os.urandom(5 << 20), os.urandom(1000)
    upload = s3.create_multipart_upload(Bucket="boto", Key="multi", ChecksumAlgorithm="CRC32")["UploadId"]
    parts = []
    for number, data in ((1, one), (2, two)):
        part = s3.upload_part(
            Bucket="boto", Key="multi", UploadId=upload, PartNumber=number, Body=data, ChecksumAlgorithm="CRC32"
        )
        assert part["ChecksumCRC32"] == crc32(data), part
        parts.append({"PartNumber": number, "ETag": part["ETag"], "ChecksumCRC32": part["ChecksumCRC32"]})
    done = {"Parts": parts}
    first = s3.complete_multipart_upload(Bucket="boto", Key="multi", UploadId=upload, MultipartUpload=done)
    composite = crc32(zlib.crc32(one).to_bytes(4, "big") + zlib.crc32(two).to_bytes(4, "big")) + "-2"
    assert first["ChecksumCRC32"] == composite, first
    again = s3.complete_multipart_upload(Bucket="boto", Key="multi", UploadId=upload, MultipartUpload=done)
    assert again["ETag"] == first["ETag"], "a retried completion answers the same ETag"
    attributes = s3.get_object_attributes(
        Bucket="boto", Key="multi", ObjectAttributes=["ETag", "Checksum", "ObjectParts", "ObjectSize", "StorageClass"]
    )
    assert attributes["ObjectSize"] == len(one) + len(two), attributes
    assert attributes["ObjectParts"]["TotalPartsCount"] == 2, attributes
    assert attributes["Checksum"]["ChecksumCRC32"] == composite, attributes

    # Conditional writes.
    s3.put_object(Bucket="boto", Key="lock", Body=b"one", IfNoneMatch="*")
    assert failure(lambda: s3.put_object(Bucket="boto", Key="lock", Body=b"two", IfNoneMatch="*")) == (
        "PreconditionFailed",
        412,
    )
    etag = s3.head_object(Bucket="boto", Key="lock")["ETag"]
    assert failure(lambda: s3.put_object(Bucket="boto", Key="lock", Body=b"two", IfMatch='"0123"')) == (
        "PreconditionFailed",
        412,
    )
    s3.put_object(Bucket="boto", Key="lock", Body=b"two", IfMatch=etag)
    assert s3.get_object(Bucket="boto", Key="lock")["Body"].read() == b"two"
    parts_and_more(s3)
    print("ok")


def parts_and_more(s3):
    """UploadPart's Content-MD5, a part uploaded twice, full-object checksums, a conditional
    completion."""
    data = os.urandom(300_000)
    upload = s3.create_multipart_upload(Bucket="boto", Key="parts")["UploadId"]
    part = lambda body, **extra: s3.upload_part(
        Bucket="boto", Key="parts", UploadId=upload, PartNumber=1, Body=body, **extra)
    bad = b64(hashlib.md5(b"other").digest())
    assert failure(lambda: part(data, ContentMD5=bad)) == ("BadDigest", 400)
    assert failure(lambda: part(data, ContentMD5="AAAA")) == ("InvalidDigest", 400)
    first = part(os.urandom(1000))
    second = part(data, ContentMD5=b64(hashlib.md5(data).digest()))
    listed = s3.list_parts(Bucket="boto", Key="parts", UploadId=upload)["Parts"]
    assert [p["ETag"] for p in listed] == [second["ETag"]], "the last upload of a part wins"
    both = {"Parts": [{"PartNumber": 1, "ETag": first["ETag"]}, {"PartNumber": 1, "ETag": second["ETag"]}]}
    # Naming both uploads of the part completes with the last; If-None-Match: * on a new key.
    s3.complete_multipart_upload(
        Bucket="boto", Key="parts", UploadId=upload, MultipartUpload=both, IfNoneMatch="*")
    assert s3.get_object(Bucket="boto", Key="parts")["Body"].read() == data

    lock = s3.head_object(Bucket="boto", Key="lock")["ETag"]
    upload = s3.create_multipart_upload(Bucket="boto", Key="lock")["UploadId"]
    etag = s3.upload_part(Bucket="boto", Key="lock", UploadId=upload, PartNumber=1, Body=b"three")["ETag"]
    done = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    complete = lambda **extra: s3.complete_multipart_upload(
        Bucket="boto", Key="lock", UploadId=upload, MultipartUpload=done, **extra)
    assert failure(lambda: complete(IfNoneMatch="*")) == ("PreconditionFailed", 412)
    assert failure(lambda: complete(IfMatch='"0123"')) == ("PreconditionFailed", 412)
    complete(IfMatch=lock)
    assert s3.get_object(Bucket="boto", Key="lock")["Body"].read() == b"three"

    # Full-object CRC32: the whole body's, checked at completion.
    one, two = os.urandom(5 << 20), os.urandom(1000)
    upload = s3.create_multipart_upload(
        Bucket="boto", Key="full", ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT")["UploadId"]
    parts = []
    for number, body in ((1, one), (2, two)):
        uploaded = s3.upload_part(
            Bucket="boto", Key="full", UploadId=upload, PartNumber=number, Body=body, ChecksumAlgorithm="CRC32")
        parts.append({"PartNumber": number, "ETag": uploaded["ETag"], "ChecksumCRC32": uploaded["ChecksumCRC32"]})
    complete = lambda whole: s3.complete_multipart_upload(
        Bucket="boto", Key="full", UploadId=upload, MultipartUpload={"Parts": parts},
        ChecksumType="FULL_OBJECT", ChecksumCRC32=whole)
    assert failure(lambda: complete(crc32(b"not it"))) == ("BadDigest", 400)
    done = complete(crc32(one + two))
    assert (done["ChecksumCRC32"], done["ChecksumType"]) == (crc32(one + two), "FULL_OBJECT"), done
    head = s3.head_object(Bucket="boto", Key="full", ChecksumMode="ENABLED")
    assert (head["ChecksumCRC32"], head["ChecksumType"]) == (crc32(one + two), "FULL_OBJECT"), head
    assert s3.get_object(Bucket="boto", Key="full", ChecksumMode="ENABLED")["Body"].read() == one + two


if __name__ == "__main__":
    main()
