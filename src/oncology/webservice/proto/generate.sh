#!/bin/sh
# Regenerate the Python code of the Open Inference Protocol's gRPC service from grpc_predict_v2.proto
# (make proto).  Needs grpcio-tools (a dev dependency); its protoc decides the protobuf runtime the
# service needs (pyproject.toml: protobuf>=<that version>,<next major>).
#
# One edit after protoc: the messages are registered in a descriptor pool of their own, not in
# protobuf's default pool.  Other copies of this protocol (tritonclient's grpc_service.proto, KServe's
# and MLServer's stubs) define the same names (inference.ModelInferRequest ...) in files of other
# names, and two such files in the default pool refuse to load in one process ("duplicate symbol").
# The wire format does not depend on the pool.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../../.." && pwd)            # src/: the generated imports are oncology.webservice.proto....
python=${PYTHON:-python}
"$python" -m grpc_tools.protoc --proto_path="$src" --python_out="$src" --pyi_out="$src" --grpc_python_out="$src" \
    "$here/grpc_predict_v2.proto"
"$python" - "$here/grpc_predict_v2_pb2.py" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
default = "_descriptor_pool.Default().AddSerializedFile("
assert text.count(default) == 1, "protoc's output changed: review the private-pool edit"
text = text.replace(default, "_descriptor_pool.DescriptorPool().AddSerializedFile(")
open(path, "w").write(text)
PY
