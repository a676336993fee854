"""The base class of every error stvsr raises on purpose.

``except StvsrError`` catches every user-fixable problem the package reports (options, data, checkpoints,
evaluation, inference, a training run that stopped) and nothing else. Each subclass lives next to the code
that raises it and keeps the builtin base it always had (``OptionsError`` is a ``ValueError``, ``DataError`` a
``RuntimeError``, ...), so existing ``except ValueError`` / ``except RuntimeError`` handlers still work.

The message is for people. What a caller needs to decide is an attribute (``OptionsError.problems``,
``MissingClipsError.left``, ``EvaluationStopped.exit_code``, ``CorruptValueError.key``, ...): no code branches on
the text of a message.
"""

from __future__ import annotations


class StvsrError(Exception):
    """A problem stvsr found and explains in its message (bad options, missing or damaged data, ...)."""
