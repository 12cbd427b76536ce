"""Run under torchrun by tests/test_distributed.py: a sharded detection + evaluation pass.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_worker.py OUT.pt

Rank 0 saves the gathered detections and metrics to ``OUT.pt``; every rank checks that it holds
the same gathered outputs.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.dist_common import build  # noqa: E402
from tools.engine.epoch import detect, evaluate  # noqa: E402
from tools.runtime import dist  # noqa: E402


def main() -> None:
    with dist.session():
        device = dist.init(torch.device("cpu"))
        model, loader, evaluators = dist.main_first(build)
        outputs = detect(model, loader, device)
        metrics = evaluate(model, loader, evaluators, device)
        same = dist.all_gather([(o["boxes"].tobytes(), o["scores"].tobytes()) for o in outputs])
        assert all(s == same[0] for s in same), "ranks gathered different detections"
        if dist.is_main():
            torch.save({"outputs": outputs, "metrics": metrics, "world": dist.world_size()}, sys.argv[1])


if __name__ == "__main__":
    main()
