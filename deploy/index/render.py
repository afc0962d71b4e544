"""Set the index image in rendered manifests: `make index-deploy` pipes `kubectl kustomize` through this.

    kubectl kustomize deploy/k8s/index/local | python deploy/index/render.py --image REG/oncology-index:TAG
"""

from __future__ import annotations

import argparse
import sys

import yaml


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True, help="e.g. 127.0.0.1:5000/oncology-index:503aa0e66884")
    args = parser.parse_args()
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    found = 0
    for doc in docs:
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "oncology-index":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                if container["name"] == "index":
                    container["image"] = args.image
                    found += 1
    if found != 1:
        print("error: the manifests have no Deployment oncology-index with a container index", file=sys.stderr)
        return 2
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
