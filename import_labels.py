"""Read a round's corrected labels back from a labelling tool, so that ``--resume`` can continue.

    python train_asm_one.py --oracle none ...            # pauses, exports labelling/round<r>/
    python import_labels.py --run outputs/run --labels export_from_label_studio.json
    python train_asm_one.py --oracle none ... --resume             # continues outputs/run

Formats: a Label Studio JSON export, CVAT for images 1.1 XML, a folder of VOC XML files, or COCO
JSON (``--format auto`` tells them apart). Prints the human edits against the pre-annotations:
boxes added, deleted, moved (matched at IoU < 0.8), relabelled and confirmed.
"""

from __future__ import annotations

import argparse
import json
import logging

from datasets import AnnotationError
from tools.loop.config import parse_checked
from tools.loop.labelling import import_for_run


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="the output folder of the paused train_asm_one.py run")
    p.add_argument("--labels", required=True, help="the labelling tool's export (file or VOC folder)")
    p.add_argument(
        "--format",
        default="auto",
        choices=("auto", "labelstudio", "cvat", "voc", "coco"),
        help="the export's format (auto: from the file)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_checked(get_args_parser(), argv)
    logging.basicConfig(level=logging.INFO)
    try:
        imported = import_for_run(args.run, args.labels, args.format)
    except (AnnotationError, ValueError, FileNotFoundError, KeyError) as e:
        logging.getLogger("import_labels").error("%s", e)
        return 2
    print(
        json.dumps(
            {
                "round": imported["round"],
                "images": len(imported["records"]),
                **imported["edits"],
                "nudged": imported["nudged"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
