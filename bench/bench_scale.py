"""Memory and time against dataset size: streaming evaluation, and one COCO-size ASM round.

(a) ``eval_rss_growth``: Mask R-CNN (mobile model, small input, every detection kept: 100 per
    image) evaluated with the VOC and the COCO bbox + segm evaluators over ``N`` and ``10 N`` demo
    images, each in a fresh process; the ratio of their peak RSS. Evaluation streams: per batch,
    masks become RLE and only compact results are kept, so the ratio stays near 1.
(b) one ASM round's bookkeeping at COCO train2017 size, in a fresh process: 118,287 records (the
    synthetic instances file of ``bench_load.py``, polygons included) and ``K`` = 10,000 images with
    100 synthetic detections each, through merge, selection (``topk_v1``, the strategy that keeps
    the most state), the pool update, and the checkpoint's save + load.

    python bench/bench_scale.py
    # last line: {"eval_rss_growth": ..., "coco_round_s": ..., "coco_round_peak_gb": ...,
    #             "checkpoint_mb": ..., "checkpoint_s": ...}
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EVAL_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
import argparse, torch
from datasets.synthetic import load_demo
from net.models import build_model
from tools.engine.coco_eval import COCOEvaluator
from tools.engine.epoch import evaluate
from datasets.loaders import eval_loader
from tools.engine.voc_eval import VOCEvaluator
torch.manual_seed(0)
data = load_demo("train", fmt="coco", num_train={n}, num_val=10, cache_dir={cache!r})
model = build_model("maskrcnn_mobilenet_v2_fpn", data.num_classes + 1, min_size=96, preset="cpu_fast")
model.roi_heads.score_thresh = 0.0  # keep 100 detections per image, each with a full-size mask
loader = eval_loader(data.records, data.image_root, batch_size=4)
evaluators = [VOCEvaluator(data.classes), COCOEvaluator(data, ("bbox", "segm"))]
t = time.perf_counter()
metrics = evaluate(model, loader, evaluators, torch.device("cpu"))
print(json.dumps({{"images": len(data.records), "seconds": time.perf_counter() - t,
                  "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                  "segm_AP": metrics["segm/AP"]}}))
"""

ROUND_CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from asm.merge import ASMConfig, merge_batch
from asm.pools import ASMState, initial_pool
from datasets.coco import load_coco
from tools.engine.checkpoint import load_checkpoint, save_checkpoint
data = load_coco({path!r}, "/nonexistent", check_images=False)
records = data.records
rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
t0 = time.perf_counter()
state = ASMState.start("topk_v1", {K}, records, initial_pool(len(records), 0.05, 0), seed=0)
ids = state.next_batch()
by_id = {{r.image_id: r for r in records}}
batch = [by_id[i] for i in ids]
rng = np.random.default_rng(0)
dets = []
for r in batch:  # 100 detections: jittered GT boxes (true positives) and random boxes, score-sorted
    n_gt = len(r.boxes)
    xy = rng.uniform(0, [r.width * 0.8, r.height * 0.8], size=(100, 2))
    wh = rng.uniform(4, [r.width * 0.2 + 4, r.height * 0.2 + 4], size=(100, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    boxes[:n_gt] = r.boxes[:100] + rng.normal(0, 2, size=(min(n_gt, 100), 4)).astype(np.float32)
    labels = rng.integers(1, data.num_classes + 1, size=100)
    labels[:n_gt] = r.labels[:100]
    scores = np.sort(rng.uniform(0.05, 1, size=100))[::-1].astype(np.float32)
    dets.append({{"boxes": boxes, "labels": labels, "scores": scores}})
t1 = time.perf_counter()
results = merge_batch(dets, batch, ASMConfig())
t2 = time.perf_counter()
train = state.apply(results)
t3 = time.perf_counter()
path = os.path.join({work!r}, "round.pth")
save_checkpoint(path, {{"asm": state.state_dict()}})
t4 = time.perf_counter()
back = ASMState.from_state(load_checkpoint(path)["asm"])
t5 = time.perf_counter()
assert back.digest() == state.digest()
print(json.dumps({{"records": len(records), "K": {K}, "train_images": len(train),
                  "merge_s": t2 - t1, "update_s": t3 - t2, "round_s": (t3 - t0) - (t1 - t0) + (t5 - t3),
                  "checkpoint_mb": os.path.getsize(path) / 2**20, "checkpoint_save_s": t4 - t3,
                  "checkpoint_load_s": t5 - t4, "checkpoint_s": t5 - t3, "loaded_gb": rss_loaded,
                  "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}}))
"""


def child(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--n", type=int, default=30, help="images of the small evaluation (the large one: 10 n)"
    )
    parser.add_argument("--K", type=int, default=10_000)
    parser.add_argument("--work", default=os.path.join(ROOT, "bench", "_work"))
    parser.add_argument("--skip-eval", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    result: dict = {}
    if not args.skip_eval:
        cache = os.path.join(args.work, "demo")
        small = child(EVAL_CHILD.format(root=ROOT, n=args.n, cache=cache))
        large = child(EVAL_CHILD.format(root=ROOT, n=10 * args.n, cache=cache))
        print("eval", small, large, flush=True)
        result["eval_rss_growth"] = round(large["rss_gb"] / small["rss_gb"], 4)
        result["eval_peak_gb"] = {
            str(small["images"]): round(small["rss_gb"], 3),
            str(large["images"]): round(large["rss_gb"], 3),
        }
    sys.path.insert(0, ROOT)
    from bench.bench_load import generate

    path = os.path.join(args.work, "instances_synth_118287_860001.json")  # shared with bench_load.py
    if not os.path.exists(path):
        generate(path, 118_287, 860_001)
    rnd = child(ROUND_CHILD.format(root=ROOT, path=path, K=args.K, work=args.work))
    print("round", rnd, flush=True)
    result.update(
        {
            "coco_round_s": round(rnd["round_s"], 2),
            "coco_round_peak_gb": round(rnd["peak_gb"], 3),
            "checkpoint_mb": round(rnd["checkpoint_mb"], 1),
            "checkpoint_s": round(rnd["checkpoint_s"], 2),
            "merge_s": round(rnd["merge_s"], 2),
            "records_gb": round(rnd["loaded_gb"], 3),
        }
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
