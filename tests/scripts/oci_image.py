"""Writes a small OCI image layout (two layers, one of ~12 MiB) to the directory given."""
import gzip, hashlib, io, json, os, sys, tarfile

def blob(root, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(root, "blobs", "sha256")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}

def layer(files):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, content in files:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), hashlib.sha256(tar_bytes).hexdigest()

root = sys.argv[1]
os.makedirs(root, exist_ok=True)
big = hashlib.shake_256(b"silo registry layer").digest(12 * 1024 * 1024 + 123)
layers = [layer([("app/media.bin", big)]), layer([("etc/motd", b"hello from silo\n")])]
descs = []
for gz, _ in layers:
    d = blob(root, gz)
    d["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
    descs.append(d)
config = {"architecture": "amd64", "os": "linux",
          "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff for _, diff in layers]},
          "config": {}}
cdesc = blob(root, json.dumps(config).encode())
cdesc["mediaType"] = "application/vnd.oci.image.config.v1+json"
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": cdesc, "layers": descs}
mdesc = blob(root, json.dumps(manifest).encode())
mdesc["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
mdesc["annotations"] = {"org.opencontainers.image.ref.name": "v1"}
with open(os.path.join(root, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [mdesc]}, f)
with open(os.path.join(root, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
print(mdesc["digest"])
