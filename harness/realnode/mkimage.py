#!/usr/bin/env python3
"""Write a one-layer container image archive (docker-save format, which
`ctr images import` reads) from files on this machine, without a registry.

  mkimage.py OUT.tar --tag NAME:TAG [--tag ...] --file PATH_IN_IMAGE=SRC [...]
             [--entrypoint /path [arg ...]]

Every file is stored as root-owned, mode 0755 (they are meant to be static
binaries). Used by the real-node start-up test (tests/realnode/startup.rs)
to make a pause image (registry.k8s.io/pause:3.10) and a probe image out of
harness/realnode/probe.c.
"""
import argparse
import hashlib
import io
import json
import tarfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--tag", action="append", required=True)
    ap.add_argument("--file", action="append", required=True)
    ap.add_argument("--entrypoint", nargs="+", default=None)
    a = ap.parse_args()

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
        for spec in a.file:
            dest, src = spec.split("=", 1)
            data = open(src, "rb").read()
            ti = tarfile.TarInfo(dest.lstrip("/"))
            ti.size, ti.mode, ti.mtime = len(data), 0o755, 0
            t.addfile(ti, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()

    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": a.entrypoint, "Env": ["PATH=/"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "harness/realnode/mkimage.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": a.tag, "Layers": ["layer.tar"]}]

    with tarfile.open(a.out, mode="w") as out:
        for name, data in (
            ("layer.tar", layer_bytes),
            (config_name, config_bytes),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o644
            out.addfile(ti, io.BytesIO(data))


if __name__ == "__main__":
    main()
