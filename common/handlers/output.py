"""``BatchOutputAsList``: our trainers keep their batch output whole (``decollate: false``: no per-item split of
every tensor at every iteration); MONAI's default handler transforms expect the decollated form, a list of item
dicts, and read ``from_engine(["loss"], first=True)`` (e.g. the ``MLFlowHandler`` that ``--tracking mlflow`` adds).
This handler presents the batch output ``{"loss": ..., ...}`` as ``[{"loss": ..., ...}]`` right after each
iteration, so both kinds of handlers read the loss."""

from __future__ import annotations

from ignite.engine import Engine, Events

__all__ = ["BatchOutputAsList"]


class BatchOutputAsList:
    """Wrap a dict ``engine.state.output`` in a one-element list at ``ITERATION_COMPLETED``; attach it before the
    handlers that read the output (first in the trainer's handler list)."""

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if isinstance(engine.state.output, dict):
            engine.state.output = [engine.state.output]
