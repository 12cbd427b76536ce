"""Rounds served to a real Label Studio server and read back, through the official SDK.

The server (the ``label-studio`` package, ``pip install -e ".[labelstudio-server]"``) is started on
127.0.0.1 with a temporary data folder; a personal access token is minted and legacy tokens are
switched off, so every test authenticates as users do since Label Studio 1.17. One test pauses a
demo run (``--oracle none``), pushes the round, acts as the human through the API (accepts a
prediction, moves one, deletes the rest, draws a box, changes a label), pulls, resumes, and checks
the counts against what it did, by hand. The others push a small round of their own: a push cut
short and retried, pagination, an expired access token, a wrong token, an unreachable server, a
project and a task deleted on the server. They skip only when the server is not installed.
"""

import copy
import datetime
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
from PIL import Image

from asm.pools import ASMState
from datasets.records import Record, RecordSet, record_from_dict
from labelstudio_round import main as ls_main
from tests.helpers import paused_demo_argv
from tools.engine.checkpoint import load_checkpoint
from tools.loop.label_studio import PROJECT_FILE, Client, LabelStudioError, pull, push
from tools.loop.labelling import export_round
from train_asm_one import main as train_main

LABEL_STUDIO = shutil.which("label-studio", path=os.path.dirname(sys.executable)) or shutil.which(
    "label-studio"
)
pytestmark = pytest.mark.skipif(
    LABEL_STUDIO is None, reason='label-studio is not installed (pip install -e ".[labelstudio]")'
)
sdk_tokens = pytest.importorskip(
    "label_studio_sdk.tokens.client_ext"
)  # the client's clock, for the refresh test
TOKEN = "asm0test0token0000000000000000000000000"  # legacy: only to mint the personal access token
START_TIMEOUT = 900  # first start: Django migrations, minutes on 2 busy cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    """``(url, personal access token)`` of a Label Studio started for this module, with legacy tokens
    switched off once the personal one is made; stopped afterwards."""
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
        legacy = Client(url, TOKEN)  # the legacy token mints a personal access token, then is switched off
        pat = legacy.call("minting a token", legacy.sdk.tokens.create).token
        legacy.call(
            "switching legacy tokens off",
            legacy.sdk.jwt_settings.update,
            api_token_ttl_days=365,
            api_tokens_enabled=True,
            legacy_api_tokens_enabled=False,
        )
        yield url, pat
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
        if k == 0 and len(preds) > 1:  # ... except on the first image: move the second by 30% of its width
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
        client.annotate(task["id"], result)
        final[task["data"]["file_name"]] = result
    return final


def _expected_edits(counts: list[int]) -> dict[str, int]:
    """What :func:`_human` did to tasks holding ``counts`` predictions, in task order, by hand: on
    every task the first box kept; on the first a second box moved 30% of its width (IoU 0.54) and
    one box drawn in an empty spot; on the second the kept box relabelled; every other box deleted."""
    first, second = counts[0], counts[1]
    kept = [min(n, 1) + (k == 0 and n > 1) for k, n in enumerate(counts)]
    return {
        "added": 1,
        "moved": int(first > 1),
        "relabelled": int(second >= 1),
        "confirmed": sum(min(n, 1) for n in counts) - int(second >= 1),
        "deleted": sum(n - m for n, m in zip(counts, kept)),
    }


def test_round_trip_through_a_running_label_studio(label_studio, tmp_path, capsys, monkeypatch):
    url, pat = label_studio
    monkeypatch.setenv("LABEL_STUDIO_URL", url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", pat)  # a personal access token: the default since 1.17
    out = str(tmp_path / "run")
    argv = paused_demo_argv(tmp_path, out)
    assert train_main(argv) == 4  # paused for the human
    folder = os.path.join(out, "labelling", "round1")
    command = open(os.path.join(folder, "continue.txt")).read().strip()
    assert command.endswith(f"--resume {os.path.join(out, 'last.pth')}") and "--weights" not in command

    assert ls_main(["push", "--run", out]) == 0
    state = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert state["tasks"] == 3 and state["imported"] == 3
    client = Client(url, pat)
    tasks = client.tasks(state["project"])
    assert len(tasks) == 3
    for task in tasks:  # uploaded: Label Studio serves the image itself, under a hash-prefixed name
        assert task["data"]["image"].startswith(f"/data/upload/{state['project']}/")
        assert task["data"]["image"].endswith(os.path.basename(task["data"]["file_name"]))
        assert 0.0 <= task["data"]["al_ratio_estimate"] <= 1.0 and task["data"]["asm_round"] == 1
        served = client.sdk._client_wrapper.httpx_client.request(
            task["data"]["image"].lstrip("/"), method="GET"
        )
        assert served.content[:3] == b"\xff\xd8\xff"  # the JPEG itself
    manifest = json.load(open(os.path.join(folder, "manifest.json")))
    pre = {p["file_name"]: record_from_dict(p) for p in manifest["preannotations"]}
    assert sum(len(p) for p in pre.values()) >= 3, "the demo model should pre-annotate a few boxes"

    _human(client, state["project"], pre)
    assert ls_main(["pull", "--run", out]) == 0
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    in_order = [len(pre[t["data"]["file_name"]]) for t in sorted(tasks, key=lambda t: t["id"])]
    expected = _expected_edits(in_order)
    assert {k: counts[k] for k in expected} == expected
    assert expected["deleted"] >= 1 and expected["confirmed"] >= 1  # the demo's boxes exercise each edit

    assert train_main(argv + ["--resume", os.path.join(out, "last.pth")]) == 0
    ckpt = load_checkpoint(os.path.join(out, "last.pth"))
    assert len(ASMState.from_state(ckpt["asm"]).labelled) == 9 and ckpt["awaiting"] is None
    done = ckpt["asm"]["rounds"][0]
    assert done["moved"] == counts["moved"] and done["drawn"] == counts["added"] + counts["relabelled"]


# -- a round of our own: push, retry, pagination, and what the server can do wrong ------------------
def _round(tmp_path, name="round1") -> str:
    """A paused round's folder (as ``train_asm_one.py --oracle none`` writes it) of three 64 x 48
    JPEGs: two with one model box each, one with none."""
    root = tmp_path / "images"
    pre = [
        Record("a", "imgs/a.jpg", 64, 48, [[4, 4, 30, 30]], [1]),
        Record("b", "imgs/b.jpg", 64, 48, [[10, 10, 40, 40]], [2]),
        Record("c", "imgs/c.jpg", 64, 48),
    ]
    for k, r in enumerate(pre):
        os.makedirs(root / "imgs", exist_ok=True)
        Image.fromarray(np.full((48, 64, 3), 60 * k, np.uint8)).save(root / r.file_name)
    folder = str(tmp_path / name)
    export_round(
        folder, 1, pre, [np.full(len(r), 0.9) for r in pre], RecordSet(pre, ("cat", "dog"), str(root))
    )
    return folder


def _files(folder) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes."""
    return {
        os.path.join(d, n): open(os.path.join(d, n), "rb").read()
        for d, _, names in os.walk(folder)
        for n in names
    }


def test_an_interrupted_push_is_finished_by_a_retry_without_duplicates(label_studio, tmp_path, monkeypatch):
    url, pat = label_studio
    client = Client(url, pat)
    folder = _round(tmp_path)
    real_upload, uploads = Client.upload, []

    def upload_then_fail(self, project, path):
        if len(uploads) == 2:
            raise LabelStudioError("connection lost")  # cut short after two of three images
        uploads.append(path)
        return real_upload(self, project, path)

    monkeypatch.setattr(Client, "upload", upload_then_fail)
    with pytest.raises(LabelStudioError, match="connection lost"):
        push(folder, client, title="interrupted push")
    state = json.load(open(os.path.join(folder, PROJECT_FILE)))
    assert state["tasks"] is None and sorted(state["uploads"]) == ["imgs/a.jpg", "imgs/b.jpg"]
    monkeypatch.setattr(Client, "upload", real_upload)
    done = push(folder, client, title="interrupted push")
    assert done["project"] == state["project"] and done["imported"] == 3
    projects = [p for p in client.sdk.projects.list() if p.title == "interrupted push"]
    assert len(projects) == 1  # never a second project
    assert (
        len(client.sdk.files.list(state["project"], all_=True)) == 3
    )  # the third image uploaded once, the others not again
    # a task deleted on the server: pull names the fix, a second push sends that one task alone
    tasks = client.tasks(state["project"], page_size=2)  # three tasks over two pages
    assert sorted(t["data"]["file_name"] for t in tasks) == ["imgs/a.jpg", "imgs/b.jpg", "imgs/c.jpg"]
    gone = next(t for t in tasks if t["data"]["file_name"] == "imgs/b.jpg")
    client.sdk.tasks.delete(str(gone["id"]))
    before = _files(folder)
    with pytest.raises(
        LabelStudioError, match=r"no task for 1 of the round's images \(e.g. imgs/b.jpg; .*push again"
    ):
        pull(folder, client)
    assert _files(folder) == before  # nothing lost, nothing half-written
    assert push(folder, client)["imported"] == 1
    assert len(client.tasks(state["project"])) == 3


def test_an_expired_access_token_is_refreshed(label_studio, monkeypatch):
    """The personal access token is exchanged for short-lived access tokens (5 minutes); one that
    has expired is refreshed before the next request."""
    url, pat = label_studio
    client = Client(url, pat)
    tokens = client.sdk._client_wrapper._tokens_client
    client.tasks(1)
    first = tokens._access_token
    refreshed = []
    real_refresh = tokens.refresh
    monkeypatch.setattr(tokens, "refresh", lambda *a, **k: refreshed.append(1) or real_refresh(*a, **k))

    class Later(datetime.datetime):  # the SDK's clock, 10 minutes on: the access token has expired
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime.now(tz) + datetime.timedelta(minutes=10)

    monkeypatch.setattr(sdk_tokens, "datetime", Later)
    assert isinstance(client.tasks(1), list)
    assert refreshed and tokens._access_token != first


def test_bad_tokens_servers_and_deleted_projects_end_in_one_line(label_studio, tmp_path, capsys, caplog):
    url, pat = label_studio
    with pytest.raises(LabelStudioError, match=r"HTTP 401 .*check the token"):
        Client(url, "not-a-token-at-all").tasks(1)
    with pytest.raises(LabelStudioError, match=r"not reachable .*label-studio start"):
        Client(f"http://127.0.0.1:{_free_port()}", pat).tasks(1)
    with pytest.raises(LabelStudioError, match="no Label Studio API token"):
        Client(url, "")
    client = Client(url, pat)
    folder = _round(tmp_path)
    project = push(folder, client, title="to be deleted")["project"]
    client.sdk.projects.delete(project)
    before = _files(folder)
    for action in (pull, push):
        with pytest.raises(LabelStudioError, match=rf"project {project} of round 1 no longer exists .*push"):
            action(folder, client)
    assert _files(folder) == before  # nothing local lost
