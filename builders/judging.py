"""Judge conversations: a recipe's templates filled with one call's question and answers.

What differs between strategies (placeholders, verdict format, grammar, parsing) is in
`builders.strategies`; this module renders the recipe's templates for one call and asks the judge,
re-asking once for the verdict in the required format when the first answer cannot be read (as the
paper does). Debate referees (Tables 9-10) see the question, the answers, the discussion so far and
an instruction.
"""

from __future__ import annotations

from dataclasses import dataclass

from builders.errors import ProviderError
from builders.judgment_parser import Judgment
from builders.llm.engine import Engine
from builders.conversation import is_multi_turn
from builders.prompts import debate_user_field, judge_field, render
from builders.recipe import Recipe
from builders.strategies import JudgeSpec, count_word, fence_marker, score_format, variant

DEBATE = "judge.panel.debate"  # where a recipe keeps its debate templates


@dataclass(frozen=True)
class Conversation:
    """One judge call's messages, the marker fencing its answers, and the answers it shows (a line
    of the judge's that copies one of theirs is a quote, never a verdict)."""

    messages: list[dict]
    marker: str
    quoted: tuple[str, ...]


def messages(recipe: Recipe, question: str, responses: list[str], *, histories: list[list[dict]] | None = None,
             reference: str | None = None) -> Conversation:
    """The judge conversation for `responses` (in presentation order) under the recipe's strategy.
    `histories`: the conversation each response answers (the item's, or the candidate's own); when
    any is more than one user message, the judge sees each assistant's conversation with the user
    (MT-Bench's multi-turn layout), else the question alone (the paper's Table 8). `reference`: a
    reference answer, shown fenced like the answers under the reference-guided prompts. Everything
    shown but the judge's instructions (earlier turns included) is fenced by the call's marker."""
    spec = JudgeSpec.of(recipe.judge.panel)
    kind, marker, quoted, values = _shown(spec, question, responses, histories, reference)
    system = render(recipe, judge_field("system", kind), **spec.strategy.system_values(len(responses), spec.scale, spec.reasoning))
    user = render(recipe, judge_field("user", kind), **values)
    return Conversation([{"role": "system", "content": system}, {"role": "user", "content": user}], marker, quoted)


def _shown(spec: JudgeSpec, question: str, responses: list[str], histories: list[list[dict]] | None,
           reference: str | None) -> tuple[str, str, tuple[str, ...], dict]:
    """(template variant, the call's fence marker, every text shown that a verdict line may not copy,
    the user template's values) for a call showing `responses`, their conversations and a reference."""
    multi = histories is not None and any(is_multi_turn(h) for h in histories)
    extra = [m["content"] for h in histories for m in h] if multi else []
    extra += [reference] if reference is not None else []
    marker = fence_marker([question, *responses, *extra])
    values = spec.strategy.user_values(question, responses, marker, histories=histories if multi else None,
                                       reference=reference)
    return variant(multi, reference is not None), marker, (*responses, *extra), values


def role_name(role: str) -> str:
    return role.replace("_", " ").title()  # general_public -> General Public


def history_text(turns: list[dict]) -> str:
    return "\n".join(f"[{role_name(t['role'])}]: {t['message']}" for t in turns) or "(none yet)"


def debate_messages(recipe: Recipe, question: str, responses: list[str], turns: list[dict], instruction: str, *,
                    histories: list[list[dict]] | None = None, reference: str | None = None) -> Conversation:
    """The conversation a referee sees: the paper's system prompt and user message structure, with
    each assistant's conversation with the user in place of the question when it is more than one
    user message, and the reference answer when there is one, fenced as the judges see them."""
    # referees debate under the combined strategy (the loader refuses any other), so its values serve
    kind, marker, quoted, values = _shown(JudgeSpec.of(recipe.judge.panel), question, responses, histories, reference)
    system = render(recipe, f"{DEBATE}.system_prompt", n=count_word(len(responses)), scale=recipe.judge.panel.scale)
    user = render(recipe, f"{DEBATE}.{debate_user_field(kind)}", **values, history=history_text(turns), instruction=instruction)
    return Conversation([{"role": "system", "content": system}, {"role": "user", "content": user}], marker, quoted)


def final_instruction(recipe: Recipe, role: str, n: int) -> str:
    """What a referee is told when the debate is over: give the final scores."""
    return render(recipe, f"{DEBATE}.final_prompt", role_name=role_name(role), score_format=score_format(n, recipe.judge.panel.scale))


@dataclass(frozen=True)
class Answer:
    """A judge's final answer to one call: the judgment (None after an api_error), its outcome, why it
    failed, the raw last answer, how many answers it took, and the call's usage columns."""

    judgment: Judgment | None
    outcome: str
    error: str | None
    raw: str
    attempts: int
    usage: dict

    @property
    def ok(self) -> bool:
        return self.judgment is not None and self.judgment.ok


async def ask(engine: Engine, spec: JudgeSpec, model: str, conversation: Conversation, n: int) -> Answer:
    """One judge call over `n` responses, read as `spec` says; an unreadable verdict is asked for once
    more in the format. Provider failures after retries become `api_error`, never a score."""
    forced = spec.output_format(n)
    limit = spec.max_tokens(n)
    responses = []
    try:
        turns = conversation.messages
        for attempt in range(2):
            if attempt:
                turns = turns + [{"role": "assistant", "content": responses[-1].text}, spec.reask(n)]
            responses.append(await engine.chat(model, turns, output=forced, max_tokens=limit))
            judgment = spec.read(responses[-1].text, responses[-1].logprobs, n,
                                 marker=conversation.marker, quoted=conversation.quoted)
            if judgment.ok:
                break
        outcome, error = judgment.outcome, judgment.error
    except ProviderError as e:  # retries exhausted or not retryable: recorded, never a score
        judgment, outcome, error = None, "api_error", str(e)
    usage = {
        "tokens_in": sum(r.tokens_in for r in responses),
        "tokens_out": sum(r.tokens_out for r in responses),
        "cost_usd": sum(r.cost_usd for r in responses),
        "latency_s": sum(r.latency_s for r in responses),
    }
    return Answer(judgment, outcome, error, responses[-1].text if responses else "", len(responses), usage)
