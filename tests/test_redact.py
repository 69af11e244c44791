"""No credential in any output: a provider that echoes the request's Authorization header leaves the
key in no written file and not on stderr; the dataset card names only the models the recipe uses;
a base_url carrying a credential never reaches the card or dvc.lock."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from openai_server import completion_body

from builders.card import card
from builders.loader import load_recipe
from builders.redact import redact, register_key_variable
from builders.stages import STAGES, run_stage
from builders.tables import TABLES, read_table
from conftest import dvc_repo, fellowship, run, tiny_recipe

KEY = "sk-echo-0123456789abcdefSECRET"


def test_redact_masks_keys_tokens_user_info_and_key_parameters(monkeypatch):
    monkeypatch.setenv("MY_PROVIDER_KEY", KEY)
    register_key_variable("MY_PROVIDER_KEY")
    text = (f"HTTP 401: bad key {KEY}; Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig "
            "at https://user:hunter2hunter2@api.example.com/v1?api-version=2024&api-key=abc123&sig=zz")
    masked = redact(text)
    assert KEY not in masked and "eyJhbGci" not in masked and "hunter2" not in masked
    assert "abc123" not in masked and "sig=zz" not in masked
    assert "Bearer [redacted]" in masked and "https://[redacted]@api.example.com/v1?api-version=2024" in masked
    assert redact(masked) == masked
    ordinary = "The bearer of bad news wrote to ann@example.com about https://example.com/a?page=2."
    assert redact(ordinary) == ordinary


class EchoHandler(BaseHTTPRequestHandler):
    """An OpenAI-compatible server that echoes the Authorization header: in a 401 error body for
    model `echo-error`, inside the answer for any other model."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        auth = self.headers.get("Authorization", "")
        if body["model"] == "echo-error":
            status, payload = 401, {"error": {"message": f"Incorrect API key provided in header 'Authorization: {auth}'",
                                              "type": "invalid_request_error", "code": "invalid_api_key"}}
        else:
            status, payload = 200, completion_body(body)
            message = payload["choices"][0]["message"]
            message["content"] = f"{message['content']}\n(request had Authorization: {auth}; key {auth[7:]})"
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def echo_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _files_holding(root, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_an_echoed_key_reaches_no_written_file_and_not_stderr(project, tmp_path, echo_server, monkeypatch):
    monkeypatch.setenv("ECHO_API_KEY", KEY)
    endpoint = f"provider: openai-compatible, base_url: '{echo_server}', api_key_env: ECHO_API_KEY"
    path = tiny_recipe(project)
    text = path.read_text()
    text = text.replace("writer: {provider: fake, model: auto}", f"writer: {{{endpoint}, model: echo-answer}}")
    text = text.replace("judge: {provider: fake, model: auto}", f"judge: {{{endpoint}, model: echo-error}}")
    text = text.replace("    models: [judge]\n", "    models: [judge]\n    max_parse_failure_rate: 1.0\n")
    path.write_text(text)

    result = fellowship("-v", "build", "tiny", "--no-progress", cwd=project)

    data = tmp_path / "data" / "tiny"
    scores = read_table(TABLES["scores"], data)
    assert set(scores["outcome"]) == {"api_error"}
    assert all("HTTP 401" in e and "Bearer [redacted]" in e for e in scores["parse_error"])
    candidates = read_table(TABLES["candidates"], data)
    assert all("Authorization: Bearer [redacted]; key [redacted]" in r for r in candidates["response"])
    assert _files_holding(tmp_path, KEY) == []  # tables, response cache (and its journal), ledger, everything
    assert KEY not in result.stderr + result.stdout

    # the stage that fails on those errors says so in one line, without the key
    path.write_text(text.replace("max_parse_failure_rate: 1.0", "max_parse_failure_rate: 0.1"))
    failed = fellowship("build", "tiny", "--stage", "scores", "--no-progress", cwd=project, check=False)
    assert failed.returncode == 1 and KEY not in failed.stderr and "[redacted]" in failed.stderr
    assert _files_holding(tmp_path, KEY) == []


def test_the_card_names_only_the_models_the_recipe_uses(project, tmp_path):
    path = tiny_recipe(project)
    text = path.read_text().replace("models:\n", "models:\n  spare: {provider: openai-compatible, model: unused-model, "
                                               "base_url: 'http://10.1.2.3:9/v1'}\n")
    path.write_text(text.replace("name: tiny\n", "name: tiny\ndescription: mirrored at https://bob:pw-0123456789@mirror.example\n"))
    recipe = load_recipe(path)
    for stage in STAGES:
        run_stage(recipe, stage, progress=False)
    text = card(recipe, tmp_path / "data" / "tiny", "someone/tiny")
    assert "spare" not in text and "unused-model" not in text and "10.1.2.3" not in text
    assert "writer" in text and "fake/auto" in text
    assert "pw-0123456789" not in text and "https://[redacted]@mirror.example" in text


def test_a_credentialed_base_url_never_reaches_dvc_lock(project, tmp_path):
    path = tiny_recipe(project)
    path.write_text(path.read_text().replace(
        "writer: {provider: fake, model: auto}",
        "writer: {provider: openai-compatible, model: m, base_url: 'https://user:sk-lock-0123456789abcdef@h.example/v1?api-key=sk-lock-0123456789abcdef'}"))
    env = dvc_repo(project, tmp_path, ["tiny"])
    result = run(["dvc", "repro"], project, env, check=False)
    assert result.returncode != 0
    assert "models.writer.base_url: the URL carries a credential" in result.stdout + result.stderr
    assert "sk-lock" not in result.stdout + result.stderr
    assert _files_holding(project, "sk-lock") == [str(path)]  # only the recipe the user wrote holds it
