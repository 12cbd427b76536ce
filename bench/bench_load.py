"""Time and peak RSS of building records from a train2017-sized COCO JSON vs pycocotools COCO().

A synthetic instances file with COCO train2017's scale (118,287 images, 860,001 boxes, a short
polygon per box, 80 non-contiguous categories) is generated once into ``--work``. Each loader then
runs in a fresh Python process (so peak RSS is its own), ``--repeat`` times, alternating; the best
time of each is compared. ``load_coco`` runs with ``check_images=False`` (the file has no images),
which is the part comparable to ``COCO()``: parse and index.

    python bench/bench_load.py            # last line: {"load_time_ratio": ..., "peak_rss_gb": ...}
    python bench/bench_load.py --repeat 3 --json-out docs/bench_load_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import emit  # noqa: E402
from tools.runtime.process import cpu_model  # noqa: E402

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
t = time.perf_counter()
if {which!r} == "pycocotools":
    from pycocotools.coco import COCO
    import contextlib, io
    with contextlib.redirect_stdout(io.StringIO()):
        obj = COCO({path!r})
    n = len(obj.anns)
else:
    from datasets.coco import load_coco
    obj = load_coco({path!r}, "/nonexistent", check_images=False)
    n = obj.num_boxes()
dt = time.perf_counter() - t
print(json.dumps({{"time": dt, "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "boxes": n}}))
"""


def generate(path: str, num_images: int, num_boxes: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    cat_ids = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
    sizes = rng.choice([(640, 480), (480, 640), (640, 427), (500, 375)], size=num_images)
    image_of = np.sort(rng.integers(1, num_images + 1, size=num_boxes))
    xy = rng.uniform(0, 300, size=(num_boxes, 2)).round(2)
    wh = rng.uniform(2, 300, size=(num_boxes, 2)).round(2)
    cats = rng.choice(cat_ids, size=num_boxes)
    images = [
        {
            "id": i + 1,
            "file_name": f"{i + 1:012d}.jpg",
            "width": int(w),
            "height": int(h),
            "license": 1,
            "date_captured": "2013-11-14 16:28:13",
        }
        for i, (w, h) in enumerate(sizes)
    ]
    anns = []
    for k in range(num_boxes):
        x, y = xy[k].tolist()
        w, h = wh[k].tolist()
        poly = [x, y, x + w, y, x + w, y + h, x + w / 2, y + h + 0.0, x, y + h, x, y + h / 2]
        anns.append(
            {
                "id": k + 1,
                "image_id": int(image_of[k]),
                "category_id": int(cats[k]),
                "bbox": [x, y, w, h],
                "area": round(w * h, 2),
                "iscrowd": 0,
                "segmentation": [[round(v, 2) for v in poly]],
            }
        )
    cats_json = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in cat_ids]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(
            {"info": {}, "licenses": [], "images": images, "annotations": anns, "categories": cats_json}, f
        )
    os.replace(tmp, path)


def run_child(which: str, path: str) -> dict:
    code = CHILD.format(root=ROOT, which=which, path=path)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", default=os.path.join(ROOT, "bench", "_work"))
    parser.add_argument("--images", type=int, default=118_287)
    parser.add_argument("--boxes", type=int, default=860_001)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json-out", default=None, help="also write the figures here (indented JSON)")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    path = os.path.join(args.work, f"instances_synth_{args.images}_{args.boxes}.json")
    if not os.path.isfile(path):
        print(f"generating {path} ...", flush=True)
        generate(path, args.images, args.boxes)
    print(f"file: {os.path.getsize(path) / 2**20:.0f} MiB", flush=True)
    results: dict[str, list[dict]] = {"pycocotools": [], "asm": []}
    for _ in range(args.repeat):
        for which in results:
            results[which].append(run_child(which, path))
            print(which, results[which][-1], flush=True)
    assert results["asm"][0]["boxes"] == results["pycocotools"][0]["boxes"] == args.boxes
    ours = min(r["time"] for r in results["asm"])
    base = min(r["time"] for r in results["pycocotools"])
    print(f"COCO(): {base:.2f} s, peak {max(r['rss_gb'] for r in results['pycocotools']):.2f} GB")
    print(f"load_coco: {ours:.2f} s, peak {max(r['rss_gb'] for r in results['asm']):.2f} GB")
    return emit(
        {
            "load_time_ratio": round(ours / base, 3),
            "peak_rss_gb": round(max(r["rss_gb"] for r in results["asm"]), 3),
            "baseline_peak_rss_gb": round(max(r["rss_gb"] for r in results["pycocotools"]), 3),
            "load_s": round(ours, 2),
            "baseline_load_s": round(base, 2),
            "repeat": args.repeat,
            "images": args.images,
            "boxes": args.boxes,
            "cpu": cpu_model(),
        },
        args.json_out,
    )


if __name__ == "__main__":
    sys.exit(main())
