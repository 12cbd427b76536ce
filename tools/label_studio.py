"""A running Label Studio as the human of a paused round, over its REST API (``labelstudio_round.py``).

``push`` makes a project whose labelling config holds the run's classes, uploads the round's images
(Label Studio stores them as ``/data/upload/<project>/<8 hex>-<name>``, so it can show them from
anywhere), and imports one task per image with the model's certain boxes as **predictions**
(pre-annotations the human accepts or fixes) and the round, the file name and the model's estimate
of the AL ratio as task fields. ``pull`` exports the finished annotations and hands them to
:func:`tools.labelling.import_round`, which matches the upload names back to the round's images and
counts the human's edits; ``train_asm_one.py --resume`` then finishes the round.

Authentication: a legacy API token (``Authorization: Token ...``) or a personal access token (a JWT,
exchanged at ``/api/token/refresh`` for a short-lived access token). Only the standard library is
used, so the trainer does not depend on the Label Studio SDK.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from typing import Any
from urllib import error, parse, request

from datasets.atomic import atomic_write_text
from tools.labelling import import_round

logger = logging.getLogger(__name__)

PROJECT_FILE = "label_studio.json"  # in the round's labelling folder: where its tasks went
EXPORT_FILE = "label_studio_export.json"  # what pull downloaded


class LabelStudioError(RuntimeError):
    """The server cannot be reached, refuses the token, or answers a request with an error."""


class Client:
    """The few REST calls a round needs. ``url`` is the server's address (``http://localhost:8080``)."""

    def __init__(self, url: str, token: str, timeout: float = 120.0):
        if not token:
            raise LabelStudioError(
                "no Label Studio API token: pass --token or set LABEL_STUDIO_API_KEY (Account & "
                "Settings > Access Token in Label Studio)"
            )
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout
        self._auth = f"Token {token}"
        if (
            token.count(".") == 2
        ):  # a personal access token (JWT refresh token): exchange it for an access token
            access = self.request("POST", "/api/token/refresh", {"refresh": token}, auth=False)["access"]
            self._auth = f"Bearer {access}"

    def request(
        self,
        method: str,
        path: str,
        payload: Any = None,
        files: dict[str, str] | None = None,
        auth: bool = True,
    ) -> Any:
        """Send one request (JSON ``payload`` or multipart ``files``: field -> path) and decode the answer.

        Raises:
            LabelStudioError: naming the URL and what the server said.
        """
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = self._auth
        body = None
        if files is not None:
            body, headers["Content-Type"] = _multipart(files)
        elif payload is not None:
            body, headers["Content-Type"] = json.dumps(payload).encode(), "application/json"
        req = request.Request(self.url + path, data=body, headers=headers, method=method)
        try:
            with request.urlopen(req, timeout=self.timeout) as answer:
                text = answer.read().decode("utf-8")
        except error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:300]
            hint = "; check the token (--token / LABEL_STUDIO_API_KEY)" if e.code in (401, 403) else ""
            raise LabelStudioError(f"{method} {self.url + path}: HTTP {e.code} {detail}{hint}") from None
        except (error.URLError, OSError) as e:
            raise LabelStudioError(
                f"{self.url}: Label Studio is not reachable ({getattr(e, 'reason', e)}); start it "
                "with: label-studio start --port 8080"
            ) from None
        return json.loads(text) if text.strip() else None

    def create_project(self, title: str, classes: list[str]) -> int:
        return int(
            self.request("POST", "/api/projects", {"title": title, "label_config": label_config(classes)})[
                "id"
            ]
        )

    def upload(self, project: int, paths: list[str]) -> list[str]:
        """Upload image files (not yet tasks); their Label Studio URLs, in the order of ``paths``."""
        urls = []
        for path in paths:
            answer = self.request(
                "POST", f"/api/projects/{project}/import?commit_to_project=false", files={"file": path}
            )
            ids = answer["file_upload_ids"]
            uploads = self.request(
                "GET", f"/api/projects/{project}/file-uploads?ids={parse.quote(json.dumps(ids))}"
            )
            urls.append("/data/" + next(u["file"] for u in uploads if u["id"] == ids[0]))
        return urls

    def import_tasks(self, project: int, tasks: list[dict]) -> int:
        return int(self.request("POST", f"/api/projects/{project}/import", tasks)["task_count"])

    def tasks(self, project: int) -> list[dict]:
        answer = self.request("GET", f"/api/tasks?project={project}&page_size=100000&fields=all")
        return answer["tasks"] if isinstance(answer, dict) else answer

    def export(self, project: int) -> list[dict]:
        return self.request("GET", f"/api/projects/{project}/export?exportType=JSON&download_all_tasks=true")


def label_config(classes: list[str]) -> str:
    """Label Studio's labelling config for boxes of ``classes`` (the names our tasks' results use)."""
    labels = "".join(f'<Label value="{_xml_escape(c)}"/>' for c in classes)
    return (
        f'<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">{labels}'
        "</RectangleLabels></View>"
    )


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _multipart(files: dict[str, str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for field, path in files.items():
        with open(path, "rb") as f:
            content = f.read()
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{os.path.basename(path)}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
        parts.append(head.encode() + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def push(folder: str, client: Client, title: str | None = None) -> dict[str, Any]:
    """Create a project for the paused round in ``folder``, upload its images and import its tasks
    with the model's boxes as predictions; ``label_studio.json`` in ``folder`` remembers where.

    Raises:
        LabelStudioError: the round was pushed already (the file names the project), or the server
            refused a request.
    """
    state_path = os.path.join(folder, PROJECT_FILE)
    if os.path.isfile(state_path):
        with open(state_path, encoding="utf-8") as f:
            state = json.load(f)
        raise LabelStudioError(
            f"{folder} was pushed already to project {state['project']} at {state['url']}; label it "
            f"there, or delete {state_path} to push again"
        )
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    with open(os.path.join(folder, "label_studio_tasks.json"), encoding="utf-8") as f:
        tasks = json.load(f)
    title = (
        title
        or f"ASM round {manifest['round']} ({os.path.basename(os.path.dirname(os.path.dirname(folder)))})"
    )
    project = client.create_project(title, manifest["classes"])
    paths = [os.path.join(manifest["image_root"], t["data"]["file_name"]) for t in tasks]
    started = time.perf_counter()
    for task, url in zip(tasks, client.upload(project, paths)):
        task["data"]["image"] = url  # Label Studio serves the uploaded copy
    count = client.import_tasks(project, tasks)
    state = {"url": client.url, "project": project, "tasks": count, "round": manifest["round"]}
    atomic_write_text(state_path, json.dumps(state, indent=1))
    logger.info(
        "round %d: %d images uploaded and %d tasks imported into project %d in %.0f s: %s/projects/%d",
        manifest["round"],
        len(paths),
        count,
        project,
        time.perf_counter() - started,
        client.url,
        project,
    )
    return state


def pull(folder: str, client: Client) -> dict[str, Any]:
    """Export the round's project from Label Studio into ``folder`` and import it
    (:func:`tools.labelling.import_round`); returns what the import wrote.

    Raises:
        LabelStudioError: the round was never pushed.
        AnnotationError: an image is not labelled yet, or a result cannot be read (the task named).
    """
    state_path = os.path.join(folder, PROJECT_FILE)
    if not os.path.isfile(state_path):
        raise LabelStudioError(
            f"{folder}: never pushed to Label Studio (no {PROJECT_FILE}); run labelstudio_round.py push"
        )
    with open(state_path, encoding="utf-8") as f:
        state = json.load(f)
    export = client.export(state["project"])
    path = os.path.join(folder, EXPORT_FILE)
    atomic_write_text(path, json.dumps(export))
    return import_round(folder, path, "labelstudio")
