"""The round trip of ``wsss export masks --format labelstudio`` through a real Label Studio server, on this machine.

    python dev/label_studio_roundtrip.py --venv .venv-label-studio      (make test-label-studio runs it as a test)

With wsss's Python: masks of a few photos (nested regions, ragged ones) are laid out as a route's folder and exported
for Label Studio; a Label Studio server from ``--venv`` (``pip install label-studio``) starts on 127.0.0.1 only, with
SQLite and its data in a temporary folder, its user and API token made by its own command line; then, with the
venv's Python and label-studio-sdk (``client``, below), a project is made with the export's labelling config, the
tasks are imported with their predictions, each prediction is submitted as the task's annotation (what a person does
who accepts it), and the project is exported as JSON through the API. That export, given to ``--masks``
(``open_masks``), must give back the route's masks exactly. The server is stopped at the end (its whole process
group; killed after a bounded wait), whatever happened.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"  # loopback only: the server is never reachable from elsewhere
START_WAIT_S = 300  # the first start migrates its SQLite database
STOP_WAIT_S = 20
CLIENT_WAIT_S = 300


def client(url: str, token: str, tasks: Path, config: Path, out: Path) -> None:
    """In the server's venv (label-studio-sdk): a project, the tasks with predictions imported, each prediction
    submitted as an annotation, the project's JSON export written to ``out``."""
    from label_studio_sdk import LabelStudio

    ls = LabelStudio(base_url=url, api_key=token)
    project = ls.projects.create(title="wsss export masks", label_config=config.read_text())
    ls.projects.import_tasks(id=project.id, request=json.loads(tasks.read_text()))
    for task in ls.tasks.list(project=project.id):
        predictions = ls.predictions.list(task=task.id)
        if len(predictions) != 1:
            raise SystemExit(f"task {task.id}: {len(predictions)} predictions, 1 imported")
        ls.annotations.create(id=task.id, result=predictions[0].result, parent_prediction=predictions[0].id)
    out.write_bytes(b"".join(ls.projects.exports.download_sync(project.id, export_type="JSON")))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _wait_until_up(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"Label Studio stopped (exit {server.returncode}); its log:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(2)
    raise SystemExit(
        f"Label Studio did not answer {url}/health within {START_WAIT_S} s; its log:\n{log.read_text()[-3000:]}"
    )


def _stop(server: subprocess.Popen) -> None:
    """The server's whole process group: SIGTERM, then SIGKILL after STOP_WAIT_S."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(STOP_WAIT_S)


def make_route(folder: Path) -> tuple[Path, dict[str, Any], list[str]]:
    """A route's folder (masks/, data_facts.json) over photos in ROOT/JPEGImages, with nested and ragged masks."""
    import numpy as np
    from PIL import Image
    from scipy.ndimage import gaussian_filter

    from wsss.utils.io import save_label_png

    names = ["background", "cat", "dog", "potted plant"]
    rng = np.random.default_rng(0)
    masks = {}
    nested = np.zeros((48, 64), np.uint8)
    nested[4:40, 6:50], nested[10:30, 14:40], nested[16:24, 20:30], nested[18, 22] = 1, 2, 0, 3
    masks["nested"] = nested
    for i, sigma in enumerate([4, 1]):
        scores = gaussian_filter(rng.normal(size=(len(names), 50, 70)), sigma=(0, sigma, sigma))
        masks[f"ragged{i}"] = scores.argmax(axis=0).astype(np.uint8)
    root, route = folder / "data", folder / "route"
    (root / "JPEGImages").mkdir(parents=True)
    (route / "masks").mkdir(parents=True)
    for id, mask in masks.items():
        Image.fromarray(np.zeros((*mask.shape, 3), np.uint8)).save(root / "JPEGImages" / f"{id}.jpg")
        save_label_png(route / "masks" / f"{id}.png", mask)
    (route / "data_facts.json").write_text(json.dumps({"root": str(root), "class_names": names}))
    return route, masks, names


def round_trip(venv: Path, work: Path) -> dict[str, float]:
    """The round trip in ``work``; its wall seconds by step. SystemExit (a message) when it fails."""
    import numpy as np

    from wsss.data.prepare.annotations import open_masks
    from wsss.runs.export_masks import export_masks

    times, t0 = {}, time.monotonic()
    route, masks, names = make_route(work)
    export_masks(route, "labelstudio", work / "ls", progress=False)
    port, token = _free_port(), secrets.token_hex(20)
    url, log = f"http://{HOST}:{port}", work / "label-studio.log"
    env = {
        **os.environ,
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(work / "data" / "JPEGImages"),
        "LABEL_STUDIO_BASE_DATA_DIR": str(work / "ls-data"),
        "DJANGO_DB": "sqlite",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",  # the token of --user-token, which the client sends
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
    }
    command = [
        str(venv / "bin" / "label-studio"),
        "start",
        "--no-browser",
        "--internal-host",
        HOST,
        "--host",
        url,
        "--port",
        str(port),
        "--data-dir",
        str(work / "ls-data"),
        "--username",
        "wsss@example.com",
        "--password",
        secrets.token_hex(12),
        "--user-token",
        token,
    ]
    with open(log, "wb") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_up(url, server, log)
        times["start the server"] = time.monotonic() - t0
        t1 = time.monotonic()
        exported = work / "export.json"
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                __file__,
                "client",
                url,
                token,
                str(work / "ls" / "tasks.json"),
                str(work / "ls" / "label_config.xml"),
                str(exported),
            ],
            check=True,
            timeout=CLIENT_WAIT_S,
        )
        times["project, import, annotate, export"] = time.monotonic() - t1
    finally:
        _stop(server)
    source = open_masks(exported, names)
    for id, mask in masks.items():
        key = source.find(work / "data" / "JPEGImages" / f"{id}.jpg")
        if key is None:
            raise SystemExit(f"{exported}: no task of photo {id}.jpg")
        got = source.read(key)
        if not np.array_equal(got, mask):
            raise SystemExit(f"{exported} ({key}): {(got != mask).sum()} pixels differ from the route's mask")
    times["all"] = time.monotonic() - t0
    return times


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["client"]:
        url, token, tasks, config, out = argv[1:6]
        client(url, token, Path(tasks), Path(config), Path(out))
        return 0
    from wsss.cli_common import script_parser

    p = script_parser(__doc__)
    p.add_argument("--venv", required=True, help="a venv with label-studio installed (make test-label-studio's)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wsss-label-studio-") as work:
        times = round_trip(Path(args.venv).resolve(), Path(work))
    print("the masks came back equal through Label Studio: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
