"""Prompt templates for models whose tokenizer has no chat template of its own."""
from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True)
class PromptTemplate:
    """Each turn is `prefix + content + suffix`; `generation` opens the assistant's reply."""

    system: tuple[str, str]
    user: tuple[str, str]
    assistant: tuple[str, str]
    generation: str
    default_system: str = ""

    def to_jinja(self) -> str:
        """The same template as a Hugging Face chat template, so the tokenizer can carry it."""

        def lit(text: str) -> str:
            # A JSON string is also a valid Jinja string literal (escapes included).
            return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if text else ""

        def turn(pair: tuple[str, str]) -> str:
            return lit(pair[0]) + "{{ message['content'] }}" + lit(pair[1])

        default = ""
        if self.default_system:
            default = (
                "{% if messages[0]['role'] != 'system' %}"
                + lit(self.system[0] + self.default_system + self.system[1])
                + "{% endif %}"
            )
        return (
            default
            + "{% for message in messages %}"
            + "{% if message['role'] == 'system' %}" + turn(self.system)
            + "{% elif message['role'] == 'user' %}" + turn(self.user)
            + "{% else %}" + turn(self.assistant) + "{% endif %}"
            + "{% endfor %}"
            + "{% if add_generation_prompt %}" + lit(self.generation) + "{% endif %}"
        )


DOLLY = PromptTemplate(
    system=("", "\n\n"),
    user=("### Instruction:\n", "\n\n"),
    assistant=("### Response:\n", "\n\n### End\n\n"),
    generation="### Response:\n",
    default_system="Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.",
)
RED_PAJAMA = PromptTemplate(
    system=("", "\n"),
    user=("<human>: ", "\n"),
    assistant=("<bot>: ", "\n"),
    generation="<bot>:",
)
PHI2 = PromptTemplate(system=("", "\n"), user=("Instruct: ", "\n"), assistant=("Output: ", "\n"), generation="Output:")
CHATML = PromptTemplate(
    system=("<|im_start|>system\n", "<|im_end|>\n"),
    user=("<|im_start|>user\n", "<|im_end|>\n"),
    assistant=("<|im_start|>assistant\n", "<|im_end|>\n"),
    generation="<|im_start|>assistant\n",
)
MISTRAL_INST = PromptTemplate(
    system=("", "\n\n"), user=("[INST] ", " [/INST]"), assistant=("", "</s> "), generation="", default_system=""
)
NEURAL_CHAT = PromptTemplate(
    system=("### System:\n", "\n"),
    user=("### User:\n", "\n"),
    assistant=("### Assistant:\n", "\n"),
    generation="### Assistant:\n",
)
