"""A stand-in for the Hugging Face Hub API on 127.0.0.1, enough for `HfApi.create_repo`,
`create_branch` and `upload_folder` of small files: it keeps every commit's files and the requests'
authorization headers, so tests can check what was uploaded, where, and with which token."""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict] = {}  # repo id -> {"private": bool, "branches": {name: {path: bytes}}}
        self.commits: list[dict] = []  # {"repo", "revision", "summary", "files"}
        self.authorizations: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                hub.authorizations.append(self.headers.get("authorization", ""))
                size = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(size) if size else b""
                self._json(*hub.handle(self.path, body))

            def do_GET(self):
                self._json({"error": "not found"}, 404)

            def _json(self, obj, code=200):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def handle(self, path: str, body: bytes) -> tuple[dict, int]:
        if path == "/api/repos/create":
            req = json.loads(body)
            repo = f"{req['organization']}/{req['name']}"
            self.repos.setdefault(repo, {"private": req.get("visibility") == "private", "branches": {"main": {}}})
            return {"url": f"{self.url}/datasets/{repo}", "name": repo}, 200
        if path == "/api/validate-yaml":
            return {"errors": [], "warnings": []}, 200
        m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/(branch|preupload|commit)/(.+)", path)
        if not m or m.group(1) not in self.repos:
            return {"error": f"no route or repo for {path}"}, 404
        repo, action, revision = m.group(1), m.group(2), m.group(3)
        branches = self.repos[repo]["branches"]
        if action == "branch":
            branches.setdefault(revision, dict(branches["main"]))
            return {}, 200
        if action == "preupload":
            files = json.loads(body)["files"]
            return {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}, 200
        if revision not in branches:
            return {"error": f"no branch {revision}"}, 404
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        files = {e["value"]["path"]: base64.b64decode(e["value"]["content"]) for e in lines if e["key"] == "file"}
        summary = next(e["value"]["summary"] for e in lines if e["key"] == "header")
        branches[revision].update(files)
        self.commits.append({"repo": repo, "revision": revision, "summary": summary, "files": files})
        oid = f"{len(self.commits):040d}"
        return {"commitUrl": f"{self.url}/datasets/{repo}/commit/{oid}", "commitOid": oid, "success": True}, 200

    def checkout(self, repo: str, revision: str, dest: Path) -> Path:
        """Write a branch's files to `dest`, as a clone of the dataset repo would hold them."""
        for path, data in self.repos[repo]["branches"][revision].items():
            (dest / path).parent.mkdir(parents=True, exist_ok=True)
            (dest / path).write_bytes(data)
        return dest
