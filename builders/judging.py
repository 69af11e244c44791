"""Judge prompts and output grammars for the paper's three strategies (Appendix A, Table 8).

- direct: two responses, the judge picks A, B or C (tie);
- independent: one response per conversation, scored out of `scale`;
- combined: all responses in one conversation, each scored out of `scale` (adapted to N responses);
- debate referees (Tables 9-10): the question, the answers, the discussion so far, an instruction.

Parsing lives in `builders.judgment_parser`; `parse_judgment` is re-exported here.
"""

from __future__ import annotations

from builders.judgment_parser import Judgment, parse_judgment
from builders.llm.types import OutputFormat
from builders.prompts import count_word, letter, render
from builders.recipe import Recipe

__all__ = ["Judgment", "answer_format", "grammar", "json_schema", "messages", "output_format", "parse_judgment", "reask_message"]


def score_format(n: int, scale: int) -> str:
    return "\n".join(f"### Score Assistant {letter(i)}: {'XYZW'[i % 4]}/{scale}" for i in range(n))


def answer_format(strategy: str, n: int, scale: int) -> str:
    """The verdict lines each strategy's prompt asks for."""
    if strategy == "direct":
        return "### Answer: A or B or C"
    if strategy == "independent":
        return f"### Overall Score: X/{scale}"
    return score_format(n, scale)


def render_responses(responses: list[str]) -> str:
    blocks = []
    for i, text in enumerate(responses):
        a = letter(i)
        blocks.append(f"[The Start of Assistant {a}'s Answer]\n{text}\n[The End of Assistant {a}'s Answer]")
    return "\n\n".join(blocks)


def messages(recipe: Recipe, question: str, responses: list[str]) -> list[dict]:
    """The judge conversation for `responses` (in presentation order) under the recipe's strategy."""
    panel = recipe.judge.panel
    n, scale = len(responses), panel.scale
    values = {
        "combined": ({"n": count_word(n), "scale": scale, "score_format": score_format(n, scale)},
                     {"question": question, "responses": render_responses(responses)}),
        "independent": ({"scale": scale}, {"question": question, "response": responses[0]}),
        "direct": ({}, {"question": question, "responses": render_responses(responses)}),
    }[panel.strategy]
    system = render(recipe, "judge.panel.system_prompt", **values[0])
    user = render(recipe, "judge.panel.user_prompt", **values[1])
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


DEBATE = "judge.panel.debate"  # where a recipe keeps its debate templates


def role_name(role: str) -> str:
    return role.replace("_", " ").title()  # general_public -> General Public


def history_text(turns: list[dict]) -> str:
    return "\n".join(f"[{role_name(t['role'])}]: {t['message']}" for t in turns) or "(none yet)"


def debate_messages(recipe: Recipe, question: str, responses: list[str], turns: list[dict], instruction: str) -> list[dict]:
    """The conversation a referee sees: the paper's system prompt and user message structure."""
    system = render(recipe, f"{DEBATE}.system_prompt", n=count_word(len(responses)), scale=recipe.judge.panel.scale)
    user = render(recipe, f"{DEBATE}.user_prompt", question=question, responses=render_responses(responses),
                  history=history_text(turns), instruction=instruction)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def reask_message(strategy: str, n: int, scale: int) -> dict:
    """The follow-up sent once when a judge's answer cannot be parsed (as the paper does)."""
    return {
        "role": "user",
        "content": "Your verdict could not be read. Reply again with only the verdict, exactly in this format:\n"
        + answer_format(strategy, n, scale),
    }


def _score_rule(scale: int) -> str:
    return {5: '[0-5] ("." [0-9])?', 10: '("10" | [0-9] ("." [0-9])?)', 100: '("100" | [1-9]? [0-9])'}[scale]


def grammar(strategy: str, n: int, scale: int) -> str:
    """GBNF forcing a strategy's answer format, for providers that support grammars."""
    if strategy == "direct":
        verdict = '"\\n### Answer: " [ABC]'
    elif strategy == "independent":
        verdict = f'"\\n### Overall Score: " score "/{scale}"'
    else:
        verdict = " ".join(f'"\\n### Score Assistant {letter(i)}: " score "/{scale}"' for i in range(n))
    return (
        f'root ::= "### Evaluation Evidence: " evidence {verdict}\n'
        "evidence ::= [^#\\n]{1,700}\n"
        f"score ::= {_score_rule(scale)}\n"
    )


def json_schema(strategy: str, n: int) -> dict:
    """The structured-output schema of a verdict; `parse_judgment` reads answers of this shape."""
    if strategy == "direct":
        verdict = {"answer": {"type": "string", "enum": ["A", "B", "C"]}}
    elif strategy == "independent":
        verdict = {"score": {"type": "number"}}
    else:
        letters = [letter(i) for i in range(n)]
        verdict = {"scores": {
            "type": "object",
            "properties": {a: {"type": "number"} for a in letters},
            "required": letters,
            "additionalProperties": False,
        }}
    properties = {"evaluation": {"type": "string"}, **verdict}
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def output_format(recipe: Recipe, n: int) -> OutputFormat:
    """How a judge's answer is constrained: the text format's grammar where grammars are supported,
    and, with `judge.panel.structured`, a JSON schema where structured output is supported."""
    panel = recipe.judge.panel
    schema = json_schema(panel.strategy, n) if panel.structured else None
    return OutputFormat(grammar=grammar(panel.strategy, n, panel.scale), json_schema=schema)
