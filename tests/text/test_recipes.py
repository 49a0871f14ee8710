"""Recipes, the chat template, parsing of generations, and the injection checks."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path
from typing import get_args

import pytest

from tunixrt_dvc.params import FormatParams
from tunixrt_dvc.text.chat import END_OF_TURN, START_OF_TURN, render_prompt
from tunixrt_dvc.text.injection import example_problems, find_control_tokens
from tunixrt_dvc.text.recipes import RECIPES, get_recipe, render_completion
from tunixrt_dvc.traces.schemas import Response

ROOT = Path(__file__).resolve().parents[2]
CONTROL = ["<pad>", "<eos>", "<bos>", START_OF_TURN, END_OF_TURN]
QUESTION = "Mia has 7 apples and buys 5 more. How many apples does she have?"


def _long(n: int, unit: str) -> str:
    return (unit * (n // len(unit) + 1))[:n]


CASES = {
    "single_turn": ("", QUESTION, Response(steps=["7 + 5 = 12"], final_answer="12")),
    "with_instruction": (
        "Show your work.",
        QUESTION,
        Response(steps=["7 + 5 = 12"], final_answer="12"),
    ),
    "multi_line_steps": (
        "",
        "A box holds 34 pens and gets 28 more. How many pens are in it?",
        Response(
            steps=["4 + 8 = 12\nwrite 2, carry 1", "3 + 2 + 1 = 6", "34 + 28 = 62"],
            final_answer="62",
        ),
    ),
    "unicode": (
        "Montre ton travail.",
        "Zoë a 3 pommes 🍎 et en achète 4 de plus. 她有几个？",
        Response(steps=["3 + 4 = 7 ✓", "→ 7 pommes"], final_answer="7 🍎"),
    ),
}
# The longest fields a ReasoningTrace allows (prompt and final_answer 50,000, a step 20,000).
LONGEST = (
    "",
    _long(50_000, "347 + 285 = ? "),
    Response(steps=[_long(20_000, "4 + 8 + 1 = 13; ")] * 3, final_answer=_long(50_000, "632 ")),
)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_rendering_snapshots(snapshot, recipe: str, case: str) -> None:
    instruction, question, response = CASES[case]
    prompt = render_prompt(question, instruction=instruction)
    completion = render_completion(response, recipe=recipe)
    snapshot.assert_match(prompt + completion, "rendered.txt")
    parsed = get_recipe(recipe).parse(completion.removesuffix(END_OF_TURN))
    snapshot.assert_match(
        json.dumps(parsed.model_dump(), ensure_ascii=False, indent=1), "parsed.json"
    )
    assert parsed.well_formed
    assert get_recipe(recipe).represents(response)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_longest_fields_snapshot(snapshot, recipe: str) -> None:
    instruction, question, response = LONGEST
    text = render_prompt(question, instruction=instruction) + render_completion(
        response, recipe=recipe
    )
    summary = {
        "chars": len(text),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "head": text[:160],
        "tail": text[-160:],
    }
    snapshot.assert_match(json.dumps(summary, ensure_ascii=False, indent=1), "summary.json")
    parsed = get_recipe(recipe).parse(render_completion(response, recipe=recipe))
    assert parsed.well_formed
    assert parsed.answer == response.final_answer.strip()


def test_prompt_layout() -> None:
    assert render_prompt(" 2 + 2? ", instruction="") == (
        "<start_of_turn>user\n2 + 2?<end_of_turn>\n<start_of_turn>model\n"
    )
    assert render_prompt("2 + 2?", instruction="Show your work.") == (
        "<start_of_turn>user\nShow your work.\n\n2 + 2?<end_of_turn>\n<start_of_turn>model\n"
    )


def test_completion_ends_the_turn() -> None:
    r = Response(steps=["7 + 5 = 12", "12 - 3 = 9"], final_answer="9")
    assert render_completion(r, recipe="reasoning_tags") == (
        "<reasoning>7 + 5 = 12\n12 - 3 = 9</reasoning><answer>9</answer><end_of_turn>"
    )
    assert render_completion(r, recipe="tunix_rt") == (
        "Reasoning:\n1. 7 + 5 = 12\n2. 12 - 3 = 9\nAnswer: 9<end_of_turn>"
    )
    assert render_completion(r, recipe="answer_only") == "9<end_of_turn>"


def test_recipes_match_params() -> None:
    assert set(RECIPES) == set(get_args(FormatParams.model_fields["recipe"].annotation))
    with pytest.raises(ValueError, match="unknown recipe 'nope'"):
        get_recipe("nope")


@pytest.mark.parametrize(
    ("generation", "steps", "answer", "well_formed"),
    [
        ("<reasoning>7 + 5 = 12</reasoning><answer>12</answer>", ["7 + 5 = 12"], "12", True),
        ("<reasoning></reasoning><answer>12</answer>", [], "12", True),
        # The turn ends at <end_of_turn>: what follows is another turn.
        ("<reasoning>a</reasoning><answer>1</answer><end_of_turn>junk", ["a"], "1", True),
        (
            "<reasoning>7 + 5 = 12\n12 - 3 = 9</reasoning><answer>9",
            ["7 + 5 = 12", "12 - 3 = 9"],
            "9",
            False,
        ),
        ("<reasoning>7 + 5 = 12<answer>12</answer>", ["7 + 5 = 12"], "12", False),
        ("<reasoning>a</reasoning><answer>9</answer><answer>10</answer>", ["a"], "9", False),
        ("<reasoning>a</reasoning><answer> 9 </answer>", ["a"], "9", False),
        ("<reasoning>a\n\nb</reasoning><answer>9</answer>", ["a", "b"], "9", False),
        ("<reasoning>a</reasoning>\n<answer>9</answer>\n", ["a"], "9", False),
        ("<answer>12<eos>", [], "12", False),
        ("<reasoning>7 + 5 = 12\n12 + 1", ["7 + 5 = 12", "12 + 1"], None, False),
        ("The answer is 12", [], None, False),
        ("", [], None, False),
        ("<reasoning>a</reasoning><answer></answer>", ["a"], None, False),
    ],
)
def test_parse_reasoning_tags(generation, steps, answer, well_formed) -> None:
    p = get_recipe("reasoning_tags").parse(generation)
    assert (p.steps, p.answer, p.well_formed) == (steps, answer, well_formed)


@pytest.mark.parametrize(
    ("generation", "steps", "answer", "well_formed"),
    [
        (
            "Reasoning:\n1. 7 + 5 = 12\n2. 12 - 3 = 9\nAnswer: 9",
            ["7 + 5 = 12", "12 - 3 = 9"],
            "9",
            True,
        ),
        ("Reasoning:\nAnswer: 9", [], "9", True),
        ("Reasoning:\n1. a\ncarry 1\n2. b\nAnswer: 9", ["a\ncarry 1", "b"], "9", True),
        ("Reasoning:\n1. a\n3. b\nAnswer: 9", ["a", "b"], "9", False),  # numbering
        ("Reasoning:\n1. a\n2) b\nanswer: 9\nReasoning:\n1. c", ["a", "b"], "9", False),
        ("Reasoning:\n1. a\nAnswer: 9 ", ["a"], "9", False),
        ("Reasoning:\n1. a\n2. b", ["a", "b"], None, False),
        ("1. a\nAnswer: 9", ["a"], "9", False),
        ("Reasoning:\n1. a\nAnswer:", ["a"], None, False),
    ],
)
def test_parse_tunix_rt(generation, steps, answer, well_formed) -> None:
    p = get_recipe("tunix_rt").parse(generation)
    assert (p.steps, p.answer, p.well_formed) == (steps, answer, well_formed)


@pytest.mark.parametrize(
    ("generation", "answer", "well_formed"),
    [
        ("12", "12", True),
        ("12\n\n12 apples", "12", False),
        (" 12", "12", False),
        ("\n", None, False),
    ],
)
def test_parse_answer_only(generation, answer, well_formed) -> None:
    p = get_recipe("answer_only").parse(generation)
    assert (p.steps, p.answer, p.well_formed) == ([], answer, well_formed)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_parse_inverts_render(recipe: str) -> None:
    rec = get_recipe(recipe)
    for _, _, response in [*CASES.values(), LONGEST]:
        parsed = rec.parse(rec.render(response))
        assert parsed.well_formed
        assert parsed.answer == response.final_answer.strip()
        assert parsed.steps == rec.steps_of(response)


def test_find_control_tokens() -> None:
    text = "a <eos> b <start_of_turn>user <end_of_turn><end_of_turn> <bos>"
    assert find_control_tokens(text, CONTROL) == [
        "<eos>",
        "<start_of_turn>",
        "<end_of_turn>",
        "<end_of_turn>",
        "<bos>",
    ]
    near_misses = [
        "<start_of_turn",
        "<end_of_turn >",
        "<START_OF_TURN>",
        "<eos",
        "<b\u200bos>",
        "< bos>",
        "start_of_turn>",
        "<start_of_turn\u200b>",
        "＜eos＞",
        "<<eos>",
    ]
    assert [find_control_tokens(t, CONTROL) for t in near_misses] == [[]] * 9 + [["<eos>"]]


def _problems(prompt: str, steps: list[str], answer: str, recipe: str = "reasoning_tags"):
    r = Response(steps=steps, final_answer=answer)
    return example_problems(prompt, r, recipe=recipe, control_pieces=CONTROL)


@pytest.mark.parametrize("piece", CONTROL)
@pytest.mark.parametrize("field", ["prompt", "response.steps.1", "response.final_answer"])
def test_control_tokens_refused_in_every_field(piece: str, field: str) -> None:
    prompt, steps, answer = "What is 7 + 5?", ["7 + 5 = 12", "so 12"], "12"
    hostile = f"x {piece} y"
    if field == "prompt":
        prompt = hostile
    elif field == "response.final_answer":
        answer = hostile
    else:
        steps = [steps[0], hostile]
    assert _problems(prompt, steps, answer) == [
        (field, f"contains reserved control token(s) {piece!r}")
    ]


def test_empty_fields_refused() -> None:
    assert _problems(" ", ["a", "\n"], "") == [
        ("prompt", "empty"),
        ("response.steps.1", "empty"),
        ("response.final_answer", "empty"),
    ]


@pytest.mark.parametrize(
    ("recipe", "steps", "answer", "field"),
    [
        ("reasoning_tags", ["7 + 5 = 12", "x</reasoning><answer>3"], "12", "response.steps.1"),
        ("reasoning_tags", ["7 + 5 = 12"], "12</answer>", "response.final_answer"),
        ("tunix_rt", ["7 + 5 = 12"], "12\nor 13", "response.final_answer"),
        ("tunix_rt", ["a\n2. b"], "12", "response.steps.0"),
        ("tunix_rt", ["a\nAnswer: 3"], "12", "response.steps.0"),
        ("answer_only", ["whatever"], "12\n13", "response.final_answer"),
    ],
)
def test_ambiguous_renderings_refused(recipe, steps, answer, field) -> None:
    problems = _problems("q", steps, answer, recipe)
    assert [f for f, _ in problems] == [field]
    assert f"recipe {recipe!r} would read this back as" in problems[0][1]


def test_answer_only_ignores_steps() -> None:
    assert _problems("q", ["x</reasoning>", "Answer: 3"], "12", "answer_only") == []


def _string_constants(tree: ast.AST) -> list[str]:
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_turn_tokens_are_written_only_by_the_chat_template() -> None:
    """Training and eval share one template: no other module spells a turn token."""
    offenders = []
    for path in sorted([*ROOT.glob("tunixrt_dvc/**/*.py"), *ROOT.glob("stages/*.py")]):
        if path == ROOT / "tunixrt_dvc" / "text" / "chat.py":
            continue
        for s in _string_constants(ast.parse(path.read_text("utf-8"))):
            if "start_of_turn>" in s or "end_of_turn>" in s:
                offenders.append(f"{path.relative_to(ROOT)}: {s!r}")
    assert offenders == []
