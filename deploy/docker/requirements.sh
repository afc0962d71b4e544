#!/usr/bin/env bash
# Re-resolve each image's pinned, hashed requirements from pyproject.toml, held to the versions of
# requirements.lock (the ones the test suite runs), for CPython 3.11 on x86_64 glibc (Debian 12).
#
#   deploy/docker/requirements.sh        (needs the package index; run after `make lock`)
#
# webservice: oncology[serve]; trainer: oncology[train]; index: deploy/index/requirements.in. oncology and oncology-model are left
# out: the images install the application wheel and oncology-model==VERSION themselves.
set -euo pipefail
cd "$(dirname "$0")/../.."
UV=${UV:-.venv/bin/uv}
for pair in serve:webservice train:trainer; do
  extra=${pair%%:*} image=${pair##*:}
  "$UV" pip compile pyproject.toml --quiet --extra "$extra" \
    --constraint requirements.lock \
    --no-emit-package oncology --no-emit-package oncology-model \
    --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
    --generate-hashes --annotation-style line --custom-compile-command deploy/docker/requirements.sh \
    -o "deploy/docker/$image/requirements.txt"
done
# the package index image: pypiserver with its packages in S3 (deploy/index/s3index.py)
"$UV" pip compile deploy/index/requirements.in --quiet --constraint requirements.lock \
  --python-version 3.11 --python-platform x86_64-manylinux_2_36 \
  --generate-hashes --annotation-style line --custom-compile-command deploy/docker/requirements.sh \
  -o deploy/index/requirements.txt
