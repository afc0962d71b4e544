"""Build the package index image and push it: ``REGISTRY/oncology-index:TAG``, TAG the first 12 hex digits of
the sha256 of its inputs (Dockerfile, requirements.txt, s3index.py), so the same inputs give the same tag.

    .venv/bin/python deploy/index/image.py --registry 127.0.0.1:5000 --base-image oncology-base:bookworm

The pinned wheels are downloaded on the host (``build/wheelhouse/``, as ``deploy/publish.py`` does for the
model images); the build needs no package index. Prints ``REGISTRY/oncology-index:TAG@DIGEST`` on stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
INPUTS = ("Dockerfile", "requirements.txt", "s3index.py")


def image_tag() -> str:
    digest = hashlib.sha256()
    for name in INPUTS:
        digest.update(name.encode() + b"\0" + (HERE / name).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def stage() -> Path:
    import publish

    context = publish.BUILD / "docker" / "index"
    if context.exists():
        import shutil

        shutil.rmtree(context)
    (context / "wheels").mkdir(parents=True)
    requirements = HERE / "requirements.txt"
    publish.download_wheels([requirements])
    for wheel in publish._wheels_for(publish._requirements(requirements)):
        publish._copy(wheel, context / "wheels" / wheel.name)
    for name in ("requirements.txt", "s3index.py"):
        publish._copy(HERE / name, context / name)
    return context


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--registry", default=os.environ.get("ONCOLOGY_REGISTRY"), help="host:port (default: $ONCOLOGY_REGISTRY)")
    parser.add_argument("--base-image", default=os.environ.get("ONCOLOGY_BASE_IMAGE", "python:3.11-slim"))
    parser.add_argument("--docker", default="/usr/bin/docker", help="docker client with BuildKit (default: /usr/bin/docker)")
    parser.add_argument("--tag-only", action="store_true", help="print the tag the inputs give, build nothing")
    args = parser.parse_args(argv)
    if args.tag_only:
        print(image_tag())
        return 0
    if not args.registry:
        parser.error("--registry is required (or set ONCOLOGY_REGISTRY, as infra/up.sh prints it)")
    sys.path.insert(0, str(HERE.parent))  # deploy/: publish.py's wheel download, staging and docker helpers
    import publish

    try:
        docker = publish.Docker(args.docker)
        docker.check()
        context = stage()
        tag = f"{args.registry}/oncology-index:{image_tag()}"
        logs = publish.BUILD / "publish" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / "index-build.log"
        proc = docker.run(["build", "--progress=plain", "-f", str(HERE / "Dockerfile"),
                           "--build-arg", f"BASE_IMAGE={args.base_image}",
                           "--build-arg", f"GIT_COMMIT={publish.git_commit()}", "-t", tag, str(context)], log=log)
        if proc.returncode != 0:
            raise publish.PublishError(f"building {tag} failed: {publish._build_error(proc.stdout)} (full log: {log})")
        publish.say(f"built {tag}")
        reference = f"{tag}@{publish.push_image(docker, tag, logs)}"
        publish.say(f"pushed {reference}")
    except publish.PublishError as exc:
        print(f"index image: error: {exc}", file=sys.stderr)
        return 1
    print(reference)
    return 0


if __name__ == "__main__":
    sys.exit(main())
