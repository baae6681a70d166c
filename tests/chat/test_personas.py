"""Personas: template variables, rendering, and clear 400s."""

from __future__ import annotations

from typing import Any

import pytest

from daehwa.chat.personas import render_persona, resolve_persona, template_variables
from daehwa.config import PersonaSettings
from daehwa.errors import InvalidInput

TUTOR = PersonaSettings(
    title="언어 튜터",
    system_prompt=(
        "당신은 {언어} 선생님입니다. {상황}에서 {레벨} 수준으로 대화하세요. {언어}로만 답하세요."
    ),
    first_message="안녕하세요! {상황} 연습을 시작해 볼까요?",
    model="scripted",
    temperature=0.3,
)
VALUES = {"언어": "일본어", "상황": "카페 주문", "레벨": "초급"}


def test_lists_variables_in_order_without_duplicates() -> None:
    assert template_variables(TUTOR) == ["언어", "상황", "레벨"]


def test_renders_system_prompt_and_first_message() -> None:
    rendered = render_persona(TUTOR, VALUES, name="tutor")
    assert rendered.system_prompt == (
        "당신은 일본어 선생님입니다. 카페 주문에서 초급 수준으로 대화하세요. 일본어로만 답하세요."
    )
    assert rendered.first_message == "안녕하세요! 카페 주문 연습을 시작해 볼까요?"
    assert rendered.model == "scripted"
    assert rendered.temperature == 0.3
    assert rendered.variables == VALUES


def test_missing_variables_are_named() -> None:
    with pytest.raises(InvalidInput) as info:
        render_persona(TUTOR, {"언어": "영어"}, name="tutor")
    assert info.value.status == 400
    assert info.value.field == "variables"
    assert "{상황}" in info.value.message and "{레벨}" in info.value.message
    assert "{언어}" not in info.value.message.split("(")[0]


def test_unknown_variables_are_refused() -> None:
    with pytest.raises(InvalidInput) as info:
        render_persona(TUTOR, {**VALUES, "기분": "좋음"})
    assert "unknown {기분}" in info.value.message


def test_values_must_be_short_strings() -> None:
    bad: dict[str, Any] = {**VALUES, "레벨": 3}
    with pytest.raises(InvalidInput, match="must be a string"):
        render_persona(TUTOR, bad)
    with pytest.raises(InvalidInput, match="longer than"):
        render_persona(TUTOR, {**VALUES, "레벨": "가" * 1001})


def test_values_are_not_reinterpreted_as_templates() -> None:
    rendered = render_persona(TUTOR, {**VALUES, "언어": "{레벨}"})
    assert rendered.system_prompt.startswith("당신은 {레벨} 선생님입니다.")


def test_double_braces_are_literal() -> None:
    persona = PersonaSettings(system_prompt='JSON 예시: {{"name": "{이름}"}}')
    assert template_variables(persona) == ["이름"]
    assert render_persona(persona, {"이름": "민수"}).system_prompt == 'JSON 예시: {"name": "민수"}'


def test_persona_without_variables_or_first_message() -> None:
    persona = PersonaSettings(system_prompt="당신은 친절한 비서입니다.")
    rendered = render_persona(persona, {})
    assert rendered.system_prompt == "당신은 친절한 비서입니다."
    assert rendered.first_message is None


def test_resolve_unknown_persona() -> None:
    with pytest.raises(InvalidInput) as info:
        resolve_persona({"tutor": TUTOR}, "chef", {})
    assert info.value.field == "persona"
    assert "tutor" in info.value.message
    assert resolve_persona({"tutor": TUTOR}, "tutor", VALUES).name == "tutor"
