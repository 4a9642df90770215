"""Cold start in a fresh process: import, load (weights, device, backend build) and the first synthesis.

Run as ``python -m zvperf.suite.coldstart JSON``; prints one JSON line with the phase timings.
A new process is the only honest cold start: in the benchmark process, caches filled by earlier
benchmarks (allocator pools, autotuning, compiled graphs) would make a rebuilt engine look warm.
"""

from __future__ import annotations

import time

_START = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402

from zvperf.backends import get_backend  # noqa: E402
from zvperf.engine.device import on_engine_stream, synchronize  # noqa: E402
from zvperf.engine.pipeline import Synthesizer  # noqa: E402
from zvperf.engine.weights import load_weights  # noqa: E402


def main(spec: dict) -> dict[str, float]:
    imported = time.perf_counter()
    with on_engine_stream(spec["device"]):  # as the benchmarks run it
        weights = load_weights(spec["model"], spec["weights"])
        synthesizer = Synthesizer(weights, spec["device"], spec["precision"])
        backend = get_backend(spec["backend"])
        synthesizer.solver = backend.prepare(synthesizer.model, spec["device"], spec["precision"])
        synchronize(spec["device"])
        loaded = time.perf_counter()
        with torch.inference_mode():
            synthesizer.synthesize(spec["text"], spec["prompt_wav"], spec["prompt_text"], num_step=spec["num_step"])
        synchronize(spec["device"])
    done = time.perf_counter()
    return {"import_s": imported - _START, "load_s": loaded - imported, "first_call_s": done - loaded}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
