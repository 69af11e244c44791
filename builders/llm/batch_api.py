"""The providers' batch APIs, through their official SDKs: upload a JSONL file of chat-completions
requests, start a job on it, poll the job, read its output and error files.

OpenAI and Together take the same request lines (`custom_id`, `method`, `url`, `body`) and write the
same result lines; they differ in how a file is uploaded, in what `create` returns and in their
status names, which `JobState` maps to four: running, completed, failed, ended (expired or
cancelled: the lines it finished are in its output file, the others were never answered).
"""

from __future__ import annotations

import inspect
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builders.llm.logprobs import read_logprobs
from builders.llm.types import Completion

ENDPOINT = "/v1/chat/completions"
STATES = {
    "validating": "running", "in_progress": "running", "finalizing": "running", "cancelling": "running",
    "completed": "completed", "failed": "failed", "expired": "ended", "cancelled": "ended",
}


@dataclass(frozen=True)
class JobState:
    state: str  # running | completed | failed | ended
    output_file_id: str | None
    error_file_id: str | None
    detail: str  # the provider's own status, and its errors when it failed


def line(custom_id: str, body: dict) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}


UNANSWERED = {"batch_expired", "batch_cancelled"}  # error codes of lines a job never got to


def parse_result(row: dict) -> tuple[str, Completion | str | None]:
    """(custom_id, the completion) for an answered line, (custom_id, why) for a failed one,
    (custom_id, None) for one the job never got to."""
    custom_id = row.get("custom_id", "")
    response = row.get("response") or {}
    body = response.get("body") or {}
    if isinstance(row.get("error"), dict) and row["error"].get("code") in UNANSWERED:
        return custom_id, None
    if row.get("error") or response.get("status_code") != 200 or not body.get("choices"):
        error = row.get("error") or body.get("error") or {"message": f"status {response.get('status_code')}"}
        return custom_id, str(error.get("message", error) if isinstance(error, dict) else error)
    choice, usage = body["choices"][0], body.get("usage") or {}
    return custom_id, Completion(
        text=(choice.get("message") or {}).get("content") or "",
        tokens_in=usage.get("prompt_tokens", 0) or 0,
        tokens_out=usage.get("completion_tokens", 0) or 0,
        finish_reason=choice.get("finish_reason"),
        logprobs=read_logprobs(choice.get("logprobs")),
    )


async def _maybe(value):
    return await value if inspect.isawaitable(value) else value


class OpenAIBatchAPI:
    def __init__(self, client):
        self.client = client

    async def upload(self, jsonl: bytes) -> str:
        file = await self.client.files.create(file=("requests.jsonl", jsonl), purpose="batch")
        return file.id

    async def create(self, file_id: str, metadata: dict[str, str]) -> str:
        job = await self.client.batches.create(
            input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h", metadata=metadata
        )
        return job.id

    async def find(self, file_id: str) -> str | None:
        """The job already started on `file_id`, if any (after a crash between create and journal)."""
        async for job in self.client.batches.list(limit=100):
            if job.input_file_id == file_id:
                return job.id
        return None

    async def state(self, job_id: str) -> JobState:
        job = await self.client.batches.retrieve(job_id)
        errors = "; ".join(e.message or "" for e in (job.errors.data or [])) if job.errors else ""
        return JobState(STATES.get(job.status, "running"), job.output_file_id, job.error_file_id,
                        f"{job.status}{': ' + errors if errors else ''}")

    async def read(self, file_id: str) -> str:
        content = await self.client.files.content(file_id)
        return content.text


class TogetherBatchAPI(OpenAIBatchAPI):
    async def upload(self, jsonl: bytes) -> str:
        with tempfile.TemporaryDirectory() as tmp:  # the SDK uploads from a path
            path = Path(tmp) / "requests.jsonl"
            path.write_bytes(jsonl)
            file = await self.client.files.upload(path, purpose="batch-api", check=False)
        return file.id

    async def create(self, file_id: str, metadata: dict[str, str]) -> str:
        created = await self.client.batches.create(input_file_id=file_id, endpoint=ENDPOINT)
        return created.job.id

    async def find(self, file_id: str) -> str | None:
        for job in await self.client.batches.list():
            if job.input_file_id == file_id:
                return job.id
        return None

    async def state(self, job_id: str) -> JobState:
        job = await self.client.batches.retrieve(job_id)
        status = (job.status or "").lower()
        return JobState(STATES.get(status, "running"), job.output_file_id, job.error_file_id,
                        f"{status}{': ' + job.error if job.error else ''}")

    async def read(self, file_id: str) -> str:
        response = await self.client.files.content(file_id)
        return await _maybe(response.text())


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
