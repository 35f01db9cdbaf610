"""`rotnet ui`'s page stores the model-training view as the browser's default (MLflow's UI
otherwise falls back to GenAI wherever a link lacks `workflowType`, e.g. its Compare
button); other responses pass through untouched. Checked in Chromium in test_ui_browser."""

from __future__ import annotations

import asyncio
import gzip

from rotnet.ui_view import WORKFLOW_KEY, model_training_default, server_options

PAGE = b"<!doctype html><html><head><meta charset='utf-8'></head><body></body></html>"


def served(path: str, body: bytes = PAGE, encoding: str = "gzip") -> tuple[dict, bytes, list]:
    """What the wrapped app sends for GET `path`; the inner app gzips when it is asked to."""
    seen_headers = []

    async def inner(scope, receive, send):
        seen_headers.extend(scope["headers"])
        zipped = (b"accept-encoding", b"gzip") in scope["headers"]
        content = gzip.compress(body) if zipped else body
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/html"), (b"content-length", str(len(content)).encode())]})
        await send({"type": "http.response.body", "body": content[:10], "more_body": True})
        await send({"type": "http.response.body", "body": content[10:]})

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": path, "headers": [(b"accept-encoding", encoding.encode())]}
    asyncio.run(model_training_default(inner)(scope, None, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:]), seen_headers


def test_the_page_sets_the_model_training_default_before_the_app_runs():
    headers, body, asked = served("/")
    assert (b"accept-encoding", b"gzip") not in asked  # asked uncompressed, to rewrite it
    assert body.startswith(b"<!doctype html><html><head><script>")
    assert WORKFLOW_KEY.encode() in body and b'"machine_learning"' in body
    assert body.index(b"<script>") < body.index(b"<meta")  # before anything else loads
    assert headers[b"content-length"] == str(len(body)).encode()


def test_other_responses_pass_through():
    _, body, asked = served("/ajax-api/2.0/mlflow/runs/search", b'{"runs": []}')
    assert gzip.decompress(body) == b'{"runs": []}' and (b"accept-encoding", b"gzip") in asked


def test_rotnet_ui_serves_it_where_the_install_registers_it(monkeypatch):
    assert server_options() == ["--app-name", "rotnet"]  # this checkout's install
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [])
    assert server_options() == []  # an older install: MLflow's plain app, not an error
