#!/usr/bin/env python3
"""The python-tuf side of tests/update-interop-test.sh (runs in a venv with pinned tuf).

    update-interop.py make-repo DIR IMAGE      python-tuf writes a repository (consistent
                                               snapshots, ed25519 keys, a key rotation to
                                               root v2) with IMAGE as an OpenSphere OS target
    update-interop.py fetch BASE_URL ROOT NAME OUT   python-tuf's ngclient refreshes our
                                               repository over HTTPS and downloads NAME
"""
import hashlib
import json
import os
import sys
from datetime import datetime, timedelta, timezone

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer


def make_repo(out, image):
    meta_dir = os.path.join(out, "metadata")
    targets_dir = os.path.join(out, "targets")
    os.makedirs(meta_dir)
    os.makedirs(targets_dir)
    expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=7)
    roles = ["root", "targets", "snapshot", "timestamp"]
    signers = {role: CryptoSigner.generate_ed25519() for role in roles}
    root = Root(expires=expires)  # consistent_snapshot=True by default
    for role in roles:
        root.add_key(signers[role].public_key, role)

    name = os.path.basename(image)
    target = TargetFile.from_file(name, image, ["sha256"])
    target.unrecognized_fields["custom"] = {
        "opensphere": {"kind": "os-image", "version": 7, "hardware": ["qemu-a7"], "release": "py-7"}
    }
    digest = target.hashes["sha256"]
    with open(image, "rb") as src, open(os.path.join(targets_dir, f"{digest}.{name}"), "wb") as dst:
        dst.write(src.read())
    targets = Targets(expires=expires)
    targets.targets[name] = target
    snapshot = Snapshot(expires=expires)
    snapshot.meta["targets.json"] = MetaFile(version=targets.version)
    timestamp = Timestamp(expires=expires)
    timestamp.snapshot_meta = MetaFile(version=snapshot.version)

    ser = JSONSerializer(compact=False)

    def write(md, filename):
        md.to_file(os.path.join(meta_dir, filename), ser)

    md_root = Metadata(root)
    md_root.sign(signers["root"])
    write(md_root, "1.root.json")

    # Rotate the timestamp key (root v2 signed by the root key): the device must follow.
    new_ts = CryptoSigner.generate_ed25519()
    root.revoke_key(signers["timestamp"].public_key.keyid, "timestamp")
    root.add_key(new_ts.public_key, "timestamp")
    root.version = 2
    md_root = Metadata(root)
    md_root.sign(signers["root"])
    write(md_root, "2.root.json")
    signers["timestamp"] = new_ts

    for md, role, filename in [
        (Metadata(targets), "targets", f"{targets.version}.targets.json"),
        (Metadata(snapshot), "snapshot", f"{snapshot.version}.snapshot.json"),
        (Metadata(timestamp), "timestamp", "timestamp.json"),
    ]:
        md.sign(signers[role])
        write(md, filename)
    print(json.dumps({"target": name, "sha256": digest}))


def fetch(base_url, root_path, name, out):
    from tuf.ngclient import Updater

    work = os.path.dirname(os.path.abspath(out))
    meta = os.path.join(work, "ngclient-metadata")
    os.makedirs(meta, exist_ok=True)
    with open(root_path, "rb") as src:
        root = src.read()
    updater = Updater(
        bootstrap=root,
        metadata_dir=meta,
        metadata_base_url=base_url + "/metadata/",
        target_base_url=base_url + "/targets/",
        target_dir=work,
    )
    updater.refresh()
    info = updater.get_targetinfo(name)
    if info is None:
        sys.exit(f"python-tuf: no target {name}")
    path = updater.download_target(info, filepath=out)
    print(
        json.dumps(
            {
                "target": name,
                "length": info.length,
                "custom": info.custom,
                "root_version": updater._trusted_set.root.version,
                "path": path,
            }
        )
    )


if __name__ == "__main__":
    if sys.argv[1] == "make-repo":
        make_repo(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "fetch":
        fetch(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        sys.exit(__doc__)
