"""The MLflow UI opening in its model-training view wherever a page is entered.

MLflow 3.17's UI picks its GenAI or model-training view from the URL's `workflowType`, else
from the browser's stored choice (localStorage `mlflow.workflowType_v1`), GenAI when none
is stored. rotnet's links carry the parameter, but the UI's own buttons (*Compare*) drop it,
and a new browser then flips to GenAI. `rotnet ui` serves MLflow's app wrapped by
`model_training_default`, which makes the page store the model-training choice when the
browser has none (a choice the user made in the UI's switch is kept). Plain ASGI, no MLflow.
"""

from __future__ import annotations

WORKFLOW_KEY = "mlflow.workflowType_v1"  # MLflow's key (name + "_v" + version) and JSON value
DEFAULT_SCRIPT = ("<script>try{if(!localStorage.getItem('%s'))localStorage.setItem('%s',"
                  "'\"machine_learning\"')}catch(e){}</script>" % (WORKFLOW_KEY, WORKFLOW_KEY)).encode()
PAGES = ("/", "/index.html")  # where the single-page app's HTML is served
APP_NAME = "rotnet"  # pyproject.toml's `mlflow.app` entry point: `ui_app`


def with_default_view(html: bytes) -> bytes:
    """The UI's page with the model-training default set before its scripts run."""
    return html.replace(b"<head>", b"<head>" + DEFAULT_SCRIPT, 1)


def model_training_default(app):
    """`app` (MLflow's ASGI app), its page rewritten by `with_default_view`; the page is
    asked for uncompressed so it can be rewritten."""
    async def wrapped(scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in PAGES:
            return await app(scope, receive, send)
        scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k.lower() != b"accept-encoding"]}
        start, body = {}, []

        async def rewrite(message):
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                return await send(message)
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            page = with_default_view(b"".join(body))
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(page)).encode())]})
            await send({"type": "http.response.body", "body": page})

        await app(scope, receive, rewrite)
    return wrapped


def ui_app():
    """The ASGI app `rotnet ui` serves (a uvicorn factory, registered as the `mlflow.app` entry
    point `rotnet`): MLflow's own, opening in its model-training view."""
    from rotnet.tracking import mlflow_ui_app

    return model_training_default(mlflow_ui_app())


def server_options() -> list[str]:
    """The `mlflow ui` options that serve `ui_app`: none where this install does not register
    the entry point yet (an install older than pyproject.toml: `make install` renews it)."""
    from importlib.metadata import entry_points

    registered = {e.name for e in entry_points(group="mlflow.app")}
    return ["--app-name", APP_NAME] if APP_NAME in registered else []
