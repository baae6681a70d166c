"""Personas: chat-room types whose system prompt is a template with variables.

A persona in the config (``[personas.NAME]``) holds a system prompt such as
``"당신은 {언어} 선생님입니다. {상황}에서 {레벨} 수준으로 대화하세요."``, an optional
first message (the bot speaks first), a model and a temperature. A conversation is
created with a persona and values for its variables; the rendered prompt is what the
model sees. ``{{`` and ``}}`` stand for literal braces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from daehwa.config import PersonaSettings
from daehwa.errors import InvalidInput

# A variable is any run of non-space, non-brace characters in single braces ({언어}).
_VARIABLE = re.compile(r"\{\{|\}\}|\{([^{}\s]+)\}")
MAX_VALUE_CHARS = 1_000


@dataclass(slots=True, frozen=True)
class RenderedPersona:
    """A persona with its variables filled in."""

    name: str
    system_prompt: str
    first_message: str | None
    model: str | None
    temperature: float | None
    variables: dict[str, str] = field(default_factory=dict)


def template_variables(persona: PersonaSettings) -> list[str]:
    """The variables the persona's templates use, in order of first appearance."""
    seen: dict[str, None] = {}
    for template in (persona.system_prompt, persona.first_message or ""):
        for match in _VARIABLE.finditer(template):
            if match.group(1) is not None:
                seen.setdefault(match.group(1))
    return list(seen)


def _fill(template: str, values: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        return values[match.group(1)]

    return _VARIABLE.sub(replace, template)


def render_persona(
    persona: PersonaSettings, variables: Mapping[str, str], *, name: str = ""
) -> RenderedPersona:
    """Fill the persona's templates with ``variables``.

    Raises :class:`InvalidInput` (``field="variables"``) naming every missing
    variable, every unknown one, and any value that is not a short string.
    """
    expected = template_variables(persona)
    missing = [v for v in expected if v not in variables]
    unknown = sorted(v for v in variables if v not in expected)
    problems = []
    if missing:
        problems.append("missing " + ", ".join(f"{{{v}}}" for v in missing))
    if unknown:
        problems.append("unknown " + ", ".join(f"{{{v}}}" for v in unknown))
    for key, value in variables.items():
        if key in expected and not isinstance(value, str):
            problems.append(f"{{{key}}} must be a string")
        elif key in expected and len(value) > MAX_VALUE_CHARS:
            problems.append(f"{{{key}}} is longer than {MAX_VALUE_CHARS} characters")
    if problems:
        label = f"persona {name!r}" if name else "the persona"
        accepted = ", ".join(f"{{{v}}}" for v in expected) or "none"
        raise InvalidInput(
            f"variables for {label}: {'; '.join(problems)} (it takes: {accepted})",
            field="variables",
        )
    values = {k: variables[k] for k in expected}
    return RenderedPersona(
        name=name,
        system_prompt=_fill(persona.system_prompt, values),
        first_message=_fill(persona.first_message, values) if persona.first_message else None,
        model=persona.model,
        temperature=persona.temperature,
        variables=values,
    )


def resolve_persona(
    personas: Mapping[str, PersonaSettings], name: str, variables: Mapping[str, str]
) -> RenderedPersona:
    """Look up persona ``name`` in the config and render it.

    An unknown name is :class:`InvalidInput` with ``field="persona"``.
    """
    persona = personas.get(name)
    if persona is None:
        known = ", ".join(sorted(personas)) or "none configured"
        raise InvalidInput(f"unknown persona {name!r} (known: {known})", field="persona")
    return render_persona(persona, variables, name=name)
