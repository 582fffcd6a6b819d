"""The portal as an S3 endpoint with stock clients: boto3 (multipart, presigned URLs) and rclone."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError
from sqlmodel import select

from catalog.data_users import issue_s3_secret, update_data_user
from catalog.database import session_scope
from catalog.models import DataTransfer

RCLONE = str(Path(sys.executable).with_name("rclone"))


@pytest.fixture
def secrets(world):
    with session_scope(world) as session:
        # The server key is the admin password unless PDS_PORTAL_SECRET_KEY is set (tests use the default).
        return {login: issue_s3_secret(session, login, "admin") for login in ("alice", "bob")}


def s3(served, secrets, login="alice"):
    return boto3.client(
        "s3",
        endpoint_url=f"{served.url}/s3",
        aws_access_key_id=login,
        aws_secret_access_key=secrets[login],
        region_name="eu-central-1",
        verify=str(served.cert),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def statuses(engine):
    with session_scope(engine) as session:
        return sorted((t.destination_name, t.target, t.status) for t in session.exec(select(DataTransfer)))


def test_boto3_objects_listings_copies_and_deletes(served, secrets, world):
    client = s3(served, secrets)
    assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["bucket", "site"]
    data = os.urandom(300_001)
    put = client.put_object(Bucket="bucket", Key="run/a.bin", Body=data)
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    for key in ("run/b.bin", "run/deep/c.bin", "top.bin"):
        client.put_object(Bucket="bucket", Key=key, Body=key.encode())
    head = client.head_object(Bucket="bucket", Key="run/a.bin")
    assert head["ContentLength"] == len(data)
    assert client.get_object(Bucket="bucket", Key="run/a.bin", Range="bytes=10-19")["Body"].read() == data[10:20]
    assert client.get_object(Bucket="bucket", Key="run/a.bin")["Body"].read() == data

    listed = client.list_objects_v2(Bucket="bucket", Prefix="run/", Delimiter="/")
    assert [o["Key"] for o in listed["Contents"]] == ["run/a.bin", "run/b.bin"]
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == ["run/deep/"]
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="bucket", PaginationConfig={"PageSize": 2})
    assert [o["Key"] for page in pages for o in page["Contents"]] == [
        "run/a.bin",
        "run/b.bin",
        "run/deep/c.bin",
        "top.bin",
    ]
    with pytest.raises(ClientError, match="InvalidArgument"):
        client.list_objects_v2(Bucket="bucket", MaxKeys=-1)

    client.copy_object(Bucket="bucket", Key="copy.bin", CopySource={"Bucket": "bucket", "Key": "run/a.bin"})
    assert client.get_object(Bucket="bucket", Key="copy.bin")["Body"].read() == data
    deleted = client.delete_objects(Bucket="bucket", Delete={"Objects": [{"Key": "run/b.bin"}, {"Key": "top.bin"}]})
    assert sorted(d["Key"] for d in deleted["Deleted"]) == ["run/b.bin", "top.bin"]
    client.delete_object(Bucket="bucket", Key="copy.bin")
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="bucket")["Contents"]]
    assert keys == ["run/a.bin", "run/deep/c.bin"]
    with pytest.raises(ClientError, match="NoSuchKey"):
        client.get_object(Bucket="bucket", Key="top.bin")


def test_boto3_multipart_upload_of_200_mib_and_a_presigned_get(served, secrets, world, tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(200):
            f.write(os.urandom(1 << 20))
    client = s3(served, secrets)
    config = TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=16 << 20, max_concurrency=4)
    client.upload_file(str(big), "bucket", "big/big.bin", Config=config)
    assert statuses(world) == [("bucket", "big/big.bin", "Queued")]
    back = tmp_path / "back.bin"
    client.download_file("bucket", "big/big.bin", str(back), Config=config)
    assert md5(back) == md5(big)

    url = client.generate_presigned_url("get_object", Params={"Bucket": "bucket", "Key": "big/big.bin"}, ExpiresIn=60)
    by_curl = tmp_path / "curl.bin"
    done = subprocess.run(["curl", "-sS", "--fail", "--cacert", str(served.cert), "-o", str(by_curl), url], timeout=300)
    assert done.returncode == 0
    assert md5(by_curl) == md5(big)
    tampered = url.replace("big%2Fbig.bin", "big%2Fother.bin").replace("big/big.bin", "big/other.bin")
    code = subprocess.run(
        ["curl", "-sS", "--cacert", str(served.cert), "-o", os.devnull, "-w", "%{http_code}", tampered],
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    assert code == "403"
    # Staged parts are gone once the upload is composed.
    assert not list((tmp_path / "store").rglob("part-*"))


def test_a_multipart_upload_left_unfinished_is_removed_by_purge_after_the_retention(served, secrets, world, store):
    from datetime import UTC, datetime, timedelta

    from catalog import multipart

    client = s3(served, secrets)
    left = client.create_multipart_upload(Bucket="bucket", Key="left.bin")["UploadId"]
    client.upload_part(Bucket="bucket", Key="left.bin", UploadId=left, PartNumber=1, Body=b"x" * 100_000)
    assert multipart.read_manifest(store, left).path == "/bucket/left.bin"

    # Within the retention time nothing goes; after it, the manifest and every part go.
    assert multipart.remove_abandoned(store, timedelta(days=7)) == 0
    assert multipart.remove_abandoned(store, timedelta(days=7), now=datetime.now(UTC) + timedelta(days=8)) == 1
    assert not store.exists(multipart.part_key(left, 1))
    with pytest.raises(ClientError, match="NoSuchUpload"):
        client.complete_multipart_upload(
            Bucket="bucket",
            Key="left.bin",
            UploadId=left,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": "x"}]},
        )
    assert statuses(world) == []


def rclone(served, secrets, *args, login="alice"):
    env = dict(os.environ) | {
        "RCLONE_CONFIG": os.devnull,
        "RCLONE_CONFIG_PORTAL_TYPE": "s3",
        "RCLONE_CONFIG_PORTAL_PROVIDER": "Other",
        "RCLONE_CONFIG_PORTAL_ENDPOINT": f"{served.url}/s3",
        "RCLONE_CONFIG_PORTAL_ACCESS_KEY_ID": login,
        "RCLONE_CONFIG_PORTAL_SECRET_ACCESS_KEY": secrets[login],
        "RCLONE_CONFIG_PORTAL_FORCE_PATH_STYLE": "true",
        "RCLONE_CA_CERT": str(served.cert),
    }
    return subprocess.run([RCLONE, *args], env=env, capture_output=True, text=True, timeout=300, check=False)


def test_rclone_copies_to_and_from_the_s3_endpoint(served, secrets, world, tmp_path):
    local = tmp_path / "local"
    (local / "sub").mkdir(parents=True)
    for i in range(3):
        (local / f"f{i}.bin").write_bytes(os.urandom(100_000 + i))
    (local / "sub" / "g.bin").write_bytes(os.urandom(30 << 20))
    up = rclone(
        served, secrets, "copy", "--s3-upload-cutoff", "10M", "--s3-chunk-size", "8M", str(local), "portal:bucket/r"
    )
    assert up.returncode == 0, up.stderr
    back = tmp_path / "back"
    down = rclone(served, secrets, "copy", "portal:bucket/r", str(back))
    assert down.returncode == 0, down.stderr
    for path in local.rglob("*.bin"):
        assert md5(back / path.relative_to(local)) == md5(path)
    check = rclone(served, secrets, "check", str(local), "portal:bucket/r")
    assert check.returncode == 0, check.stderr


def test_s3_permissions_traversal_and_quotas(served, secrets, world):
    alice, bob = s3(served, secrets), s3(served, secrets, "bob")
    with pytest.raises(ClientError, match="AccessDenied"):
        bob.put_object(Bucket="bucket", Key="x.bin", Body=b"x")
    with pytest.raises(ClientError, match="NoSuchBucket|AccessDenied"):
        alice.list_objects_v2(Bucket="other")
    bob.put_object(Bucket="other", Key="secret.bin", Body=b"bob's secret")
    for key in ("../other/secret.bin", "a/../../other/secret.bin", "/other/secret.bin", "./x.bin"):
        with pytest.raises(ClientError) as caught:
            alice.put_object(Bucket="bucket", Key=key, Body=b"overwrite")
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 404)
    with pytest.raises(ClientError):
        alice.get_object(Bucket="..", Key="other/secret.bin")
    wrong = boto3.client(
        "s3", endpoint_url=f"{served.url}/s3", aws_access_key_id="alice", aws_secret_access_key="wrong",
        region_name="eu-central-1", verify=str(served.cert), config=Config(s3={"addressing_style": "path"}),
    )  # fmt: skip
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        wrong.list_buckets()
    assert statuses(world) == [("other", "secret.bin", "Queued")]

    with session_scope(world) as session:
        update_data_user(session, "alice", {"upload_quota_bytes": 10})
    with pytest.raises(ClientError, match="QuotaExceeded"):
        alice.put_object(Bucket="bucket", Key="big.bin", Body=b"x" * 100)


def test_deletes_outside_the_users_rights_are_refused_and_delete_nothing(served, secrets, world):
    alice, bob = s3(served, secrets), s3(served, secrets, "bob")
    bob.put_object(Bucket="other", Key="secret.bin", Body=b"bob's secret")
    alice.put_object(Bucket="bucket", Key="kept.bin", Body=b"alice's")

    def refused(call, **kwargs):
        with pytest.raises(ClientError) as caught:
            call(**kwargs)
        return caught.value.response["ResponseMetadata"]["HTTPStatusCode"], caught.value.response["Error"]["Code"]

    # `other` is out of alice's reach: answered as a bucket that does not exist, like one that does not.
    for bucket in ("other", "nowhere"):
        assert refused(alice.delete_object, Bucket=bucket, Key="secret.bin") == (404, "NoSuchBucket")
        many = {"Objects": [{"Key": "secret.bin"}, {"Key": "missing.bin"}]}
        assert refused(alice.delete_objects, Bucket=bucket, Delete=many) == (404, "NoSuchBucket")
    # bob sees `bucket` (get, dir) but may not delete there.
    assert refused(bob.delete_object, Bucket="bucket", Key="kept.bin") == (403, "AccessDenied")
    assert refused(bob.delete_object, Bucket="bucket", Key="missing.bin") == (403, "AccessDenied")
    many = {"Objects": [{"Key": "kept.bin"}]}
    assert refused(bob.delete_objects, Bucket="bucket", Delete=many) == (403, "AccessDenied")
    assert statuses(world) == [("bucket", "kept.bin", "Queued"), ("other", "secret.bin", "Queued")]
    # Where the user may delete, a missing key is deleted, as S3 answers it.
    alice.delete_object(Bucket="bucket", Key="missing.bin")
    assert alice.delete_objects(Bucket="bucket", Delete={"Objects": [{"Key": "missing.bin"}]})["Deleted"]


def test_a_multipart_upload_is_aborted_only_by_its_owner(served, secrets, world, store):
    from catalog import multipart

    alice, bob = s3(served, secrets), s3(served, secrets, "bob")
    bob.put_object(Bucket="other", Key="seed.bin", Body=b"x")  # bob may put at `other`
    upload = bob.create_multipart_upload(Bucket="other", Key="big.bin")["UploadId"]
    bob.upload_part(Bucket="other", Key="big.bin", UploadId=upload, PartNumber=1, Body=b"y" * 1000)
    with pytest.raises(ClientError, match="NoSuchUpload"):
        alice.abort_multipart_upload(Bucket="bucket", Key="big.bin", UploadId=upload)
    with pytest.raises(ClientError, match="NoSuchUpload|NoSuchBucket"):
        alice.abort_multipart_upload(Bucket="other", Key="big.bin", UploadId=upload)
    with pytest.raises(ClientError, match="NoSuchUpload"):
        bob.abort_multipart_upload(Bucket="other", Key="another.bin", UploadId=upload)
    assert store.exists(multipart.part_key(upload, 1))
    bob.abort_multipart_upload(Bucket="other", Key="big.bin", UploadId=upload)
    assert not store.exists(multipart.part_key(upload, 1))
    with pytest.raises(ClientError, match="NoSuchUpload"):
        bob.abort_multipart_upload(Bucket="other", Key="big.bin", UploadId=upload)


def test_after_two_puts_and_a_delete_no_older_version_shows_again(served, secrets, world):
    client = s3(served, secrets)
    client.put_object(Bucket="bucket", Key="d/v.bin", Body=b"version 1")
    client.put_object(Bucket="bucket", Key="d/v.bin", Body=b"version 2")
    assert client.get_object(Bucket="bucket", Key="d/v.bin")["Body"].read() == b"version 2"
    client.delete_object(Bucket="bucket", Key="d/v.bin")
    with pytest.raises(ClientError, match="NoSuchKey"):
        client.get_object(Bucket="bucket", Key="d/v.bin")
    assert "Contents" not in client.list_objects_v2(Bucket="bucket")
    assert "Contents" not in client.list_objects(Bucket="bucket", Prefix="d/")

    client.put_object(Bucket="bucket", Key="m.bin", Body=b"version 1")
    client.put_object(Bucket="bucket", Key="m.bin", Body=b"version 2")
    deleted = client.delete_objects(Bucket="bucket", Delete={"Objects": [{"Key": "m.bin"}]})
    assert [d["Key"] for d in deleted["Deleted"]] == ["m.bin"]
    with pytest.raises(ClientError, match="404"):
        client.head_object(Bucket="bucket", Key="m.bin")
    assert statuses(world) == [("bucket", "d/v.bin", "Stopped")] * 2 + [("bucket", "m.bin", "Stopped")] * 2
