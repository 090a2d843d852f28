"""Run a callable when an engine starts: prerequisite weights (a frozen anatomical network, a teacher) are loaded
when training starts rather than when the config is parsed, so a bundle's workflow can be built and validated (MONAI's
property check instantiates the trainer) before the prerequisite stage has produced its checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["CallOnStart"]


class CallOnStart:
    """Call ``fn()`` at ``Events.STARTED`` of the engine it is attached to.

    Attach it before :class:`common.handlers.ResumeFromLatest` (ignite runs handlers of one event in attachment
    order), so that a resumed checkpoint overrides what ``fn`` initialised.
    """

    def __init__(self, fn: Callable[[], Any]) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.fn())
