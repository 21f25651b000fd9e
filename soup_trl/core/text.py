"""Text of a completion or prompt given as a string or as chat messages (TRL passes either)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def completion_text(completion: Any) -> str:
    """Text of a completion given as a string or as chat messages (content as a string or as content blocks)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, Sequence):
        messages = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in messages if m.get("role", "assistant") == "assistant"] or messages
        texts = []
        for message in assistant:
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, Sequence):
                texts.extend(
                    block.get("text", "") if isinstance(block, dict) else str(block)
                    for block in content
                    if not isinstance(block, dict) or block.get("type", "text") == "text"
                )
        return "\n".join(texts)
    return "" if completion is None else str(completion)
