"""Serve a paused round to a running Label Studio and read the labels back (``tools/loop/label_studio.py``).

label-studio start --port 8080                      # once; copy the API token from Account & Settings
export LABEL_STUDIO_API_KEY=<token>
python train_asm_one.py --oracle none --output-dir outputs/run ...   # pauses at the next round
python labelstudio_round.py push --run outputs/run        # a project with the images and the model's boxes
# label in the browser: accept, move, delete or draw boxes; submit every task
python labelstudio_round.py pull --run outputs/run        # reads the annotations back, counts the edits
python train_asm_one.py --oracle none --output-dir outputs/run ... --resume   # continues the round
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from datasets import AnnotationError
from tools.engine.checkpoint import last_path
from tools.loop.config import parse_checked
from tools.loop.label_studio import Client, LabelStudioError, pull, push
from tools.loop.labelling import awaiting_folder

logger = logging.getLogger("label_studio")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "action", choices=("push", "pull"), help="push: send the paused round; pull: read its labels back"
    )
    p.add_argument("--run", required=True, help="the output folder of the paused train_asm_one.py run")
    p.add_argument(
        "--url",
        default=os.environ.get("LABEL_STUDIO_URL", "http://localhost:8080"),
        help="Label Studio's address (default $LABEL_STUDIO_URL or http://localhost:8080)",
    )
    p.add_argument(
        "--token",
        default=os.environ.get("LABEL_STUDIO_API_KEY"),
        help="API token: legacy or personal access token (default $LABEL_STUDIO_API_KEY)",
    )
    p.add_argument("--title", default=None, help="push: the project's title (default: the round and the run)")
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_checked(get_args_parser(), argv)
    try:
        folder = awaiting_folder(args.run)
        client = Client(args.url, args.token)
        if args.action == "push":
            state = push(folder, client, args.title)
            print(json.dumps(state))
            logger.info(
                "label the %d tasks at %s/projects/%d, then: python labelstudio_round.py pull --run %s",
                state["tasks"],
                client.url,
                state["project"],
                args.run,
            )
        else:
            imported = pull(folder, client)
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
            command = os.path.join(folder, "continue.txt")
            if os.path.isfile(command):
                with open(command, encoding="utf-8") as f:
                    logger.info("labels imported; continue the run with:\n  %s", f.read().strip())
            else:
                logger.info(
                    "labels imported; continue the run with its options and --resume %s",
                    last_path(args.run),
                )
    except (AnnotationError, LabelStudioError, ValueError, FileNotFoundError, KeyError) as e:
        logger.error("%s", e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
