"""Generation workflows: `single` (one model answers) and `feedback` (the paper's LLM Feedback Loop).

Feedback loop for one prompt: the generator answers; each reviewer returns an evaluation, a score out
of 10 and feedback; the generator revises in the same conversation (with several reviewers, all
feedback in one message). `iterations` answers are written; every answer but the last is reviewed.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

from builders.conversation import is_multi_turn, transcript
from builders.llm.engine import Engine
from builders.llm.types import ChatResponse, OutputFormat
from builders.prompts import count_word, render
from builders.recipe import Recipe

OVERALL = re.compile(r"Overall\s+Score[\s*_:#\-]*(\d+(?:\.\d+)?)(?:\s*/\s*(\d+))?", re.IGNORECASE)
FEEDBACK = re.compile(r"^[ \t]*(?:#+[ \t]*)?\**Feedback\**[ \t]*:?[ \t]*\**(.*)", re.IGNORECASE | re.MULTILINE | re.DOTALL)

REVIEW_GRAMMAR = (
    'root ::= "### Evaluation: " text "\\n### Overall Score: " score "/10\\n### Feedback: " text\n'
    "text ::= [^#\\n]{1,600}\n"
    'score ::= ("10" | [0-9] ("." [0-9])?)\n'
)


@dataclass(frozen=True)
class Review:
    text: str
    score: float | None  # out of 10; None when it cannot be read
    feedback: str  # the feedback section, or the whole review when it has none
    response: ChatResponse


def parse_review(text: str) -> tuple[float | None, str]:
    """(score out of 10 or None, feedback) from a reviewer's answer; the last score given wins."""
    scores = [m for m in OVERALL.finditer(text) if m.group(2) in (None, "10")]
    score = float(scores[-1].group(1)) if scores else None
    if score is not None and not 0 <= score <= 10:
        score = None
    m = FEEDBACK.search(text)
    feedback = m.group(1).strip() if m and m.group(1).strip() else text.strip()
    return score, feedback


@dataclass
class Answer:
    """One candidate as the workflow produced it."""

    iteration: int
    response: ChatResponse
    feedback: str | None = None
    reviews: list[Review] = field(default_factory=list)


def reviewer_prompt(recipe: Recipe, conversation: list[dict], response: str) -> str:
    """The reviewer's user message (the paper's Table 12): the question and the response; for a
    conversation (a system message or earlier turns), the whole conversation, then the response to
    its last turn."""
    question = conversation[-1]["content"]
    if not is_multi_turn(conversation):
        return render(recipe, "generation.reviewer_user_prompt", question=question, response=response)
    return render(recipe, "generation.reviewer_multi_turn_user_prompt", conversation=transcript(conversation),
                  question=question, response=response)


async def review(engine: Engine, recipe: Recipe, reviewer: str, conversation: list[dict], response: str) -> Review:
    messages = [
        {"role": "system", "content": render(recipe, "generation.reviewer_system_prompt")},
        {"role": "user", "content": reviewer_prompt(recipe, conversation, response)},
    ]
    r = await engine.chat(reviewer, messages, output=OutputFormat(grammar=REVIEW_GRAMMAR))
    score, feedback = parse_review(r.text)
    return Review(r.text, score, feedback, r)


def _revision_request(recipe: Recipe, reviews: list[Review]) -> str:
    if len(reviews) == 1:
        return render(recipe, "generation.revise_prompt", feedback=reviews[0].feedback)
    blocks = "\n".join(
        f"[Start of Assistant {i}'s Feedback]\n{r.feedback}\n[End of Assistant {i}'s Feedback]"
        for i, r in enumerate(reviews, 1)
    )
    return render(recipe, "generation.revise_multi_prompt", feedbacks=blocks, n=count_word(len(reviews)))


def _opening(recipe: Recipe, conversation: list[dict]) -> list[dict]:
    """What the generator is sent: the item's conversation, after the recipe's system prompt unless
    the conversation has a system message of its own (which wins)."""
    system = render(recipe, "generation.system_prompt")
    if not system or conversation[0]["role"] == "system":
        return list(conversation)
    return [{"role": "system", "content": system}, *conversation]


async def single(engine: Engine, recipe: Recipe, conversation: list[dict]) -> list[Answer]:
    """`iterations` samples of the next assistant turn of `conversation` (ending with the user's turn)."""
    g = recipe.generation
    answers = []
    for k in range(g.iterations):
        r = await engine.chat(g.generator, _opening(recipe, conversation), sample_index=k)
        answers.append(Answer(k + 1, r))
    return answers


async def feedback_loop(engine: Engine, recipe: Recipe, prompt: list[dict]) -> list[Answer]:
    """The loop on the next assistant turn of `prompt`; reviewers see `prompt` and the turn."""
    g = recipe.generation
    conversation = _opening(recipe, prompt)
    answers: list[Answer] = []
    feedback_text = None
    for k in range(1, g.iterations + 1):
        r = await engine.chat(g.generator, conversation)
        answer = Answer(k, r, feedback=feedback_text)
        answers.append(answer)
        if k == g.iterations:
            break
        answer.reviews = list(await asyncio.gather(*(review(engine, recipe, rv, prompt, r.text) for rv in g.reviewers)))
        request = _revision_request(recipe, answer.reviews)
        feedback_text = "\n\n".join(rv.feedback for rv in answer.reviews)
        conversation = conversation + [{"role": "assistant", "content": r.text}, {"role": "user", "content": request}]
    return answers


WORKFLOWS = {"single": single, "feedback": feedback_loop}
