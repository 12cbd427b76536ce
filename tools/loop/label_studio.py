"""A running Label Studio as the human of a paused round (``labelstudio_round.py``), through the
official client, ``label-studio-sdk`` (``pip install -e ".[labelstudio]"``; no server needed here).

``push`` makes a project whose labelling config holds the run's classes, uploads the round's images
(Label Studio stores them as ``/data/upload/<project>/<8 hex>-<name>``, so it can show them from
anywhere), and imports one task per image with the model's certain boxes as **predictions**
(pre-annotations the human accepts or fixes) and the round, the file name and the model's estimate
of the AL ratio as task fields. ``pull`` exports the finished annotations and hands them to
:func:`tools.loop.labelling.import_round`, which matches the upload names back to the round's images and
counts the human's edits; ``train_asm_one.py --resume`` then finishes the round.

``push`` is idempotent: ``label_studio.json`` in the round's folder records the project as soon as it
exists and each image as soon as it is uploaded, so a push that was interrupted, or a round whose
tasks were deleted on the server, is completed by running ``push`` again, without a second project,
upload or task.

Authentication is the SDK's: a personal access token (a JWT refresh token; the SDK exchanges it for
short-lived access tokens and refreshes them as they expire) or a legacy API token.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from datasets.atomic import atomic_write_text
from datasets.exports import ImageNames
from tools.loop.labelling import import_round

logger = logging.getLogger(__name__)

PROJECT_FILE = "label_studio.json"  # in the round's labelling folder: where its tasks went
EXPORT_FILE = "label_studio_export.json"  # what pull downloaded


class LabelStudioError(RuntimeError):
    """The server cannot be reached, refuses the token, or answers a request with an error."""


class Client:
    """The calls a round needs, on ``label_studio_sdk.LabelStudio``. ``url`` is the server's address
    (``http://localhost:8080``); every error becomes one :class:`LabelStudioError` line."""

    def __init__(self, url: str, token: str | None, timeout: float = 120.0):
        if not token:
            raise LabelStudioError(
                "no Label Studio API token: pass --token or set LABEL_STUDIO_API_KEY (Account & "
                "Settings > Personal Access Token in Label Studio)"
            )
        try:
            from label_studio_sdk import LabelStudio
            from label_studio_sdk.core.api_error import ApiError
        except ImportError as e:
            raise LabelStudioError(
                f'the Label Studio client is not installed ({e}): pip install -e ".[labelstudio]"'
            ) from None
        self.url, self._api_error = url.rstrip("/"), ApiError
        try:
            self.sdk = LabelStudio(base_url=self.url, api_key=token, timeout=timeout)
        except ApiError as e:  # a personal access token that has expired
            raise LabelStudioError(f"{self.url}: {_detail(e)}; create a new personal access token") from None

    def call(self, what: str, fn, *positional, **keywords):
        """``fn(*positional, **keywords)`` with the SDK's and the network's errors as one line naming
        ``what``."""
        import httpx

        try:
            return fn(*positional, **keywords)
        except self._api_error as e:
            hint = {
                401: "; check the token (--token / LABEL_STUDIO_API_KEY: a personal access token from Account "
                "& Settings)",
                403: "; this token's user may not do this",
                404: "; was it deleted on the server?",
            }.get(e.status_code, "")
            raise LabelStudioError(f"{what} at {self.url}: HTTP {e.status_code} {_detail(e)}{hint}") from None
        except (httpx.TransportError, OSError) as e:
            raise LabelStudioError(
                f"{self.url}: Label Studio is not reachable ({type(e).__name__}: {e}); start it with: "
                "label-studio start --port 8080"
            ) from None

    def create_project(self, title: str, classes: list[str]) -> int:
        project = self.call(
            "creating a project", self.sdk.projects.create, title=title, label_config=label_config(classes)
        )
        return int(project.id)

    def project_exists(self, project: int) -> bool:
        try:
            self.call(f"project {project}", self.sdk.projects.get, project)
        except LabelStudioError as e:
            if "HTTP 404" in str(e):
                return False
            raise
        return True

    def upload(self, project: int, path: str) -> str:
        """Upload one image file (not yet a task); its Label Studio URL. The SDK has no call for a
        file upload, so this posts through the SDK's own HTTP client (its headers and token refresh)."""
        http = self.sdk._client_wrapper.httpx_client

        def post() -> dict:
            with open(path, "rb") as f:
                answer = http.request(
                    f"api/projects/{project}/import",
                    method="POST",
                    params={"commit_to_project": "false"},
                    files={"file": (os.path.basename(path), f)},
                )
            if answer.status_code >= 400:
                raise self._api_error(status_code=answer.status_code, body=answer.text[:300])
            return answer.json()

        ids = self.call(f"uploading {path} to project {project}", post)["file_upload_ids"]
        uploads = self.call("listing the uploads", self.sdk.files.list, project, ids=json.dumps(ids))
        return "/data/" + next(u.file for u in uploads if u.id == ids[0])

    def import_tasks(self, project: int, tasks: list[dict]) -> int:
        answer = self.call(
            f"importing tasks into project {project}", self.sdk.projects.import_tasks, project, request=tasks
        )
        return int(answer.task_count)

    def tasks(self, project: int, page_size: int = 100) -> list[dict]:
        """Every task of the project, page by page (``page_size`` tasks a request)."""
        pages = self.call(
            f"listing project {project}'s tasks", self.sdk.tasks.list, project=project, page_size=page_size
        )
        return self.call(f"listing project {project}'s tasks", lambda: [_plain(t) for t in pages])

    def export(self, project: int) -> list[dict]:
        """The project's tasks and annotations as Label Studio's JSON export (a snapshot export,
        made on the server and downloaded: the way for large projects)."""
        return self.call(f"exporting project {project}", self.sdk.projects.exports.as_json, project)

    def annotate(self, task: int, result: list[dict]) -> None:
        """Submit an annotation of one task (what a human does in the browser; the tests use it)."""
        self.call(
            f"annotating task {task}", self.sdk.annotations.create, task, result=result, was_cancelled=False
        )


def _detail(error) -> str:
    body = error.body
    if isinstance(body, dict):
        body = body.get("detail") or body
    return str(body)[:300]


def _plain(model) -> dict:
    """An SDK model as plain JSON values."""
    return json.loads(model.json()) if hasattr(model, "json") else dict(model)


def label_config(classes: list[str]) -> str:
    """Label Studio's labelling config for boxes of ``classes`` (the names our tasks' results use)."""
    labels = "".join(f'<Label value="{_xml_escape(c)}"/>' for c in classes)
    return (
        f'<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">{labels}'
        "</RectangleLabels></View>"
    )


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _read_state(folder: str) -> dict | None:
    path = os.path.join(folder, PROJECT_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_state(folder: str, state: dict) -> None:
    atomic_write_text(os.path.join(folder, PROJECT_FILE), json.dumps(state, indent=1))


def _project_state(folder: str, client: Client, manifest: dict, title: str | None) -> dict:
    """The round's ``label_studio.json``: read (its project checked on the server), or made with a new
    project and written before anything else is sent, so that a retry reuses that project."""
    state = _read_state(folder) or {}
    path = os.path.join(folder, PROJECT_FILE)
    if state and state["url"] != client.url:
        raise LabelStudioError(
            f"{folder} was pushed to {state['url']} (project {state['project']}), not {client.url}; label "
            f"it there, or delete {path} to push it here"
        )
    if state and not client.project_exists(state["project"]):
        raise LabelStudioError(
            f"project {state['project']} of round {manifest['round']} no longer exists at {client.url}; "
            f"delete {path} and push again (nothing local was lost)"
        )
    if not state:
        run = os.path.basename(os.path.dirname(os.path.dirname(folder)))
        project = client.create_project(
            title or f"ASM round {manifest['round']} ({run})", manifest["classes"]
        )
        state = {
            "url": client.url,
            "project": project,
            "round": manifest["round"],
            "uploads": {},
            "tasks": None,
        }
        _write_state(folder, state)
    return state


def push(folder: str, client: Client, title: str | None = None) -> dict[str, Any]:
    """Make the server hold every task of the paused round in ``folder``: create its project (once),
    upload the images not uploaded yet and import the tasks it lacks, with the model's boxes as
    predictions. ``label_studio.json`` records each step as it is done, so running it again after an
    interruption (or after tasks were deleted on the server) finishes the job and duplicates nothing.

    Raises:
        LabelStudioError: the round's project was deleted on the server (delete ``label_studio.json``
            to push again), it went to another server, or the server refused a request.
    """
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    with open(os.path.join(folder, "label_studio_tasks.json"), encoding="utf-8") as f:
        tasks = json.load(f)
    state = _project_state(folder, client, manifest, title)
    project, uploads = state["project"], state.setdefault("uploads", {})
    started = time.perf_counter()
    for task in tasks:
        name = task["data"]["file_name"]
        if name not in uploads:
            uploads[name] = client.upload(project, os.path.join(manifest["image_root"], name))
            _write_state(folder, state)
        task["data"]["image"] = uploads[name]  # Label Studio serves the uploaded copy
    there = {t["data"].get("file_name") for t in client.tasks(project)}
    missing = [t for t in tasks if t["data"]["file_name"] not in there]
    if missing:
        client.import_tasks(project, missing)
    state["tasks"] = len(tasks)
    _write_state(folder, state)
    logger.info(
        "round %d: %d images uploaded and %d tasks imported (%d were there) into project %d in %.0f s: %s/projects/%d",
        manifest["round"],
        len(tasks),
        len(missing),
        len(tasks) - len(missing),
        project,
        time.perf_counter() - started,
        client.url,
        project,
    )
    return {k: state[k] for k in ("url", "project", "tasks", "round")} | {"imported": len(missing)}


def pull(folder: str, client: Client) -> dict[str, Any]:
    """Export the round's project from Label Studio into ``folder`` and import it
    (:func:`tools.loop.labelling.import_round`); returns what the import wrote.

    Raises:
        LabelStudioError: the round was never pushed, its project or one of its tasks is gone from
            the server (push again: only what is missing is sent).
        AnnotationError: an image is not labelled yet, or a result cannot be read (the task named).
    """
    state = _read_state(folder)
    if state is None:
        raise LabelStudioError(
            f"{folder}: never pushed to Label Studio (no {PROJECT_FILE}); run labelstudio_round.py push"
        )
    if not client.project_exists(state["project"]):
        raise LabelStudioError(
            f"project {state['project']} of round {state['round']} no longer exists at {client.url}; delete "
            f"{os.path.join(folder, PROJECT_FILE)} and push the round again (nothing local was lost)"
        )
    export = client.export(state["project"])
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
        names = [r["file_name"] for r in json.load(f)["preannotations"]]
    index = ImageNames(names)  # the import's own matching: path, name, or the name an upload had
    there = {index.find(t["data"].get("file_name") or t["data"].get("image", "")) for t in export}
    gone = [n for n in names if n not in there]
    if gone:
        raise LabelStudioError(
            f"project {state['project']} has no task for {len(gone)} of the round's images (e.g. {gone[0]}; "
            "deleted on the server?); run labelstudio_round.py push again to send only those, label them, "
            "then pull"
        )
    path = os.path.join(folder, EXPORT_FILE)
    atomic_write_text(path, json.dumps(export))
    return import_round(folder, path, "labelstudio")
