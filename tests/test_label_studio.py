"""A round served to a real Label Studio server and read back.

The server (the ``label-studio`` package, ``pip install -e ".[labelstudio]"``) is started on
127.0.0.1 with a temporary data folder and an API token. The test pauses a demo run
(``--oracle none``), pushes the round, acts as the human through the REST API (accepts a
prediction, moves one, deletes the rest, draws a box, changes a label), pulls, resumes, and checks
the pool and the counts. It skips only when the package is not installed.
"""

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from asm.edits import Edits, count_edits
from asm.pools import ASMState
from datasets.records import record_from_dict
from labelstudio_round import main as ls_main
from tests.helpers import paused_demo_argv
from tools.checkpoint import load_checkpoint
from tools.label_studio import Client
from train_asm_one import main as train_main

LABEL_STUDIO = shutil.which("label-studio", path=os.path.dirname(sys.executable)) or shutil.which(
    "label-studio"
)
pytestmark = pytest.mark.skipif(
    LABEL_STUDIO is None, reason='label-studio is not installed (pip install -e ".[labelstudio]")'
)
TOKEN = "asm0test0token0000000000000000000000000"
START_TIMEOUT = 900  # first start: Django migrations, minutes on 2 busy cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    """The URL of a Label Studio started for this module; stopped afterwards."""
    data = tmp_path_factory.mktemp("label_studio")
    port = _free_port()
    env = dict(
        os.environ,
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        LATEST_VERSION_CHECK="false",
        COLLECT_ANALYTICS="false",
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
    )
    log_path = data / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                LABEL_STUDIO,
                "start",
                "--no-browser",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--data-dir",
                str(data / "data"),
                "--username",
                "human@example.com",
                "--password",
                "asm-test-password",
                "--user-token",
                TOKEN,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"label-studio exited with code {proc.returncode}: {log_path.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"label-studio did not answer within {START_TIMEOUT} s: {log_path.read_text()[-2000:]}"
                )
            time.sleep(2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _empty_spot(record) -> tuple[float, float]:
    """Top-left corner (percent) of a 10% x 10% box that overlaps no pre-annotation much: a new box."""
    from asm.merge import box_iou

    spots = [(x, y) for y in range(0, 91, 5) for x in range(0, 91, 5)]
    boxes = np.array(
        [
            [
                x * record.width / 100,
                y * record.height / 100,
                (x + 10) * record.width / 100,
                (y + 10) * record.height / 100,
            ]
            for x, y in spots
        ]
    )
    overlap = box_iou(boxes, record.boxes).max(1) if len(record) else np.zeros(len(spots))
    return spots[int(overlap.argmin())]


def _human(client: Client, project: int, pre: dict) -> dict[str, list]:
    """Label every task through the API; returns the final boxes per file name (pixels, labels)."""
    final = {}
    tasks = sorted(client.tasks(project), key=lambda t: t["id"])
    for k, task in enumerate(tasks):
        preds = copy.deepcopy(task["predictions"][0]["result"]) if task["predictions"] else []
        result = preds[:1]  # accept the first prediction as it is, delete the others ...
        if (
            k == 0 and len(preds) > 1
        ):  # ... except on the first image: move the second one by 30% of its width
            moved = copy.deepcopy(preds[1])
            moved["value"]["x"] += 0.3 * moved["value"]["width"]
            result.append(moved)
        if k == 1 and result:  # the second image: a label changed
            result[0]["value"]["rectanglelabels"] = [
                "circle" if result[0]["value"]["rectanglelabels"] != ["circle"] else "square"
            ]
        record = pre[task["data"]["file_name"]]
        x, y = _empty_spot(record)
        drawn = {
            "type": "rectanglelabels",
            "from_name": "label",
            "to_name": "image",
            "original_width": record.width,
            "original_height": record.height,
            "value": {
                "x": x,
                "y": y,
                "width": 10,
                "height": 10,
                "rotation": 0,
                "rectanglelabels": ["square"],
            },
        }
        if k == 0:
            result.append(drawn)  # a box the model missed
        for item in result:
            item.pop("id", None)
            item["origin"] = "manual"
        client.request(
            "POST", f"/api/tasks/{task['id']}/annotations", {"result": result, "was_cancelled": False}
        )
        final[task["data"]["file_name"]] = result
    return final


def test_round_trip_through_a_running_label_studio(label_studio, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", TOKEN)
    out = str(tmp_path / "run")
    argv = paused_demo_argv(tmp_path, out)
    assert train_main(argv) == 4  # paused for the human
    folder = os.path.join(out, "labelling", "round1")
    command = open(os.path.join(folder, "continue.txt")).read().strip()
    assert command.endswith(f"--resume {os.path.join(out, 'last.pth')}") and "--weights" not in command

    assert ls_main(["push", "--run", out]) == 0
    state = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert state["tasks"] == 3
    client = Client(label_studio, TOKEN)
    tasks = client.tasks(state["project"])
    assert len(tasks) == 3
    for task in tasks:  # uploaded: Label Studio serves the image itself, under a hash-prefixed name
        assert task["data"]["image"].startswith(f"/data/upload/{state['project']}/")
        assert task["data"]["image"].endswith(os.path.basename(task["data"]["file_name"]))
        assert 0.0 <= task["data"]["al_ratio_estimate"] <= 1.0 and task["data"]["asm_round"] == 1
        with urllib.request.urlopen(
            urllib.request.Request(
                label_studio + task["data"]["image"], headers={"Authorization": f"Token {TOKEN}"}
            )
        ) as r:
            assert r.read(3) == b"\xff\xd8\xff"  # the JPEG itself
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    pre = {p["file_name"]: record_from_dict(p) for p in manifest["preannotations"]}
    assert sum(len(p) for p in pre.values()) >= 3, "the demo model should pre-annotate a few boxes"

    final = _human(client, state["project"], pre)
    assert ls_main(["pull", "--run", out]) == 0
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = Edits()
    classes = manifest["classes"]
    for name, result in final.items():  # what the human did, counted from what we sent
        p = pre[name]
        boxes = [
            [
                r["value"]["x"] * p.width / 100,
                r["value"]["y"] * p.height / 100,
                (r["value"]["x"] + r["value"]["width"]) * p.width / 100,
                (r["value"]["y"] + r["value"]["height"]) * p.height / 100,
            ]
            for r in result
        ]
        labels = [classes.index(r["value"]["rectanglelabels"][0]) + 1 for r in result]
        expected += count_edits(p.boxes, p.labels, np.asarray(boxes).reshape(-1, 4), labels)[0]
    assert {k: counts[k] for k in expected.as_dict()} == expected.as_dict()
    assert counts["added"] >= 1 and counts["deleted"] >= 1 and counts["confirmed"] >= 1
    assert counts["moved"] + counts["relabelled"] >= 1

    assert train_main(argv + ["--resume", os.path.join(out, "last.pth")]) == 0
    ckpt = load_checkpoint(os.path.join(out, "last.pth"))
    assert len(ASMState.from_state(ckpt["asm"]).labelled) == 9 and ckpt["awaiting"] is None
    done = ckpt["asm"]["rounds"][0]
    assert done["moved"] == counts["moved"] and done["drawn"] == counts["added"] + counts["relabelled"]
