"""Chat conversations: a source cell read as one, and one shown to a judge or reviewer as text.

A conversation is a list of `{role, content}` messages, roles `system`, `user` and `assistant` (TRL's
and the OpenAI API's). The conversation an item's answers follow ends with the user's turn; what
came before it (a system message, earlier turns) is kept whole, so the generator answers the last
turn in context and the judges see it too. A conversation of one user message is a single-turn
prompt: judges get the paper's Table 8 prompts for those, MT-Bench's multi-turn layout for the rest.
"""

from __future__ import annotations

import polars as pl

MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})
MESSAGES = pl.List(MESSAGE)
ROLES = ("system", "user", "assistant")
LABELS = {"system": "System", "user": "User"}  # how a transcript names each speaker (the assistant by its letter)


def user_turn(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def read_messages(value: object) -> list[dict]:
    """A chat cell as messages (only `role` and `content` kept); ValueError saying what is wrong."""
    if not isinstance(value, list) or not value:
        raise ValueError("holds no list of chat messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"message {i} is not a {{role, content}} message with text content")
        if m["role"] not in ROLES:
            raise ValueError(f"message {i} has role {m['role']!r} (expected one of {', '.join(ROLES)})")
        if m["role"] == "system" and i:
            raise ValueError(f"message {i} is a system message after the conversation began")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def conversation(value: object, *, reference_last: bool = False) -> tuple[list[dict], str | None]:
    """(the conversation the answers follow, the reference answer taken from it) for a prompt cell:
    text is one user turn; chat messages must end with the user's turn, or, with `reference_last`,
    with an assistant turn that is the reference answer (the conversation before it is the prompt).
    ValueError saying what is wrong."""
    if isinstance(value, str) and value.strip():
        return user_turn(value), None
    if not isinstance(value, list):
        raise ValueError("holds no prompt text (expected a string or a list of chat messages ending with the user's turn)")
    messages = read_messages(value)
    reference = None
    if reference_last:
        if messages[-1]["role"] != "assistant":
            raise ValueError(f"ends with a {messages[-1]['role']} turn, not an assistant turn (the reference answer)")
        reference, messages = messages[-1]["content"], messages[:-1]
    if not messages or messages[-1]["role"] != "user":
        last = f"{'an' if messages[-1]['role'] == 'assistant' else 'a'} {messages[-1]['role']} turn" if messages else "no turn"
        hint = "" if reference_last else " (with source.reference_column set to this column, a final assistant turn is the reference answer)"
        raise ValueError(f"ends with {last}, not the user's{hint}")
    if not messages[-1]["content"].strip():
        raise ValueError("ends with an empty user turn")
    return messages, reference


def is_multi_turn(messages: list[dict] | None) -> bool:
    """Anything besides one user message: a system message or earlier turns."""
    return messages is not None and len(messages) > 1


def transcript(messages: list[dict], answer: str | None = None, assistant: str = "Assistant") -> str:
    """The conversation (and a final answer) as MT-Bench's judges read it: `### User:` and
    `### <assistant>:` sections, `### System:` first when there is one."""
    turns = [*messages, *([{"role": "assistant", "content": answer}] if answer is not None else [])]
    return "\n\n".join(f"### {LABELS.get(m['role'], assistant)}:\n{m['content']}" for m in turns)
