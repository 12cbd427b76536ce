"""Image decoding: the trainer's reader (``datasets.torch_data.read_image``, PIL) against
torchvision's deprecated ``decode_jpeg`` (what it used before torchvision 0.29 deprecated it), on
the same JPEG files in one process, alternating, best of ``--repeat``; and whether both give the
same pixels.

    python bench/bench_decode.py                      # BCCD's JPEGs from ../shared/data, else tests/data
    python bench/bench_decode.py --images 'data/*.jpg'

The last line is one JSON object: ``decode_time_ratio`` (the reader's time over decode_jpeg's),
``reader_ms_per_image``, ``decode_jpeg_ms_per_image``, ``same_pixels``, ``images``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
import warnings

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from datasets.torch_data import read_image  # noqa: E402

BCCD_JPEGS = os.path.join(ROOT, "..", "shared", "data", "bccd", "JPEGImages", "*.jpg")
TEST_JPEGS = os.path.join(ROOT, "tests", "data", "**", "*.jpg")


def decode_jpeg_reader():
    """torchvision's deprecated JPEG decoder, its warning silenced; None where it is gone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from torchvision.io import ImageReadMode, decode_jpeg, read_file
        except ImportError:
            return None

    def read(path: str) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_jpeg(read_file(path), mode=ImageReadMode.RGB)

    return read


def best_time(read, files: list[str]) -> float:
    start = time.perf_counter()
    for path in files:
        read(path)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default=None, help="a glob of JPEG files (default: BCCD, else tests/data)")
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    files = sorted(glob.glob(args.images or BCCD_JPEGS, recursive=True)) or sorted(
        glob.glob(TEST_JPEGS, recursive=True)
    )
    files = files[: args.limit]
    if not files:
        print("error: no JPEG files found; pass --images", file=sys.stderr)
        return 2
    old = decode_jpeg_reader()
    if old is None:
        print("error: this torchvision has no decode_jpeg to compare with", file=sys.stderr)
        return 2
    same = all(torch.equal(read_image(f).as_subclass(torch.Tensor), old(f)) for f in files)
    times: dict[str, list[float]] = {"reader": [], "decode_jpeg": []}
    for _ in range(args.repeat):  # alternating, so that a busy moment hits both
        times["reader"].append(best_time(read_image, files))
        times["decode_jpeg"].append(best_time(old, files))
    best = {k: min(v) for k, v in times.items()}
    print(
        json.dumps(
            {
                "decode_time_ratio": round(best["reader"] / best["decode_jpeg"], 3),
                "reader_ms_per_image": round(1000 * best["reader"] / len(files), 3),
                "decode_jpeg_ms_per_image": round(1000 * best["decode_jpeg"] / len(files), 3),
                "same_pixels": same,
                "images": len(files),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
