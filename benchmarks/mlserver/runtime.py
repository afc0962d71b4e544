"""The oncology model as an MLServer custom runtime, for benchmarks/grpc_v2.py --mlserver: the same
`Classifier` (from the same store) behind MLServer's own V2 gRPC server, written as MLServer's
documentation shows a custom runtime (its numpy and string codecs)."""

from __future__ import annotations

import os

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse

from oncology_model import Classifier


class OncologyRuntime(MLModel):
    async def load(self) -> bool:
        self._classifier = Classifier.from_uri(os.environ["ONCOLOGY_BENCH_STORE"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = NumpyCodec.decode_input(payload.inputs[0]).reshape(-1, 9).tolist()
        classifier = self._classifier
        probabilities = classifier.score_rows(rows)
        labels = [classifier.label(p).value for p in probabilities]
        decisions = [str(d) for d in classifier.decide_many(probabilities)]
        return InferenceResponse(model_name=self.name, model_version=classifier.version, outputs=[
            StringCodec.encode_output("label", labels),
            NumpyCodec.encode_output("probability", np.asarray(probabilities, dtype=np.float64)),
            StringCodec.encode_output("decision", decisions),
        ])
