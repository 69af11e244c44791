"""The LLM layer: one async engine over registered providers, with a persistent response cache."""

from builders.llm.engine import Engine
from builders.llm.types import ChatResponse, Completion, Message

__all__ = ["ChatResponse", "Completion", "Engine", "Message"]
