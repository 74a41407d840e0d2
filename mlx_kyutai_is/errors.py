# Copyright © 2026 mlx-kyutai-is contributors
"""The package's errors: one base class, `Error`, whose messages are written for users.

Commands print an `Error` or an OS error as one line and anything else (a bug) with its type;
`MLX_KYUTAI_IS_DEBUG=1` (or `--debug` on the main command) shows tracebacks instead.
"""

DEBUG_ENV = "MLX_KYUTAI_IS_DEBUG"


class Error(Exception):
    """The base of every error the package raises for users: its message is one line that names
    the file (or option) and what is wrong, so commands print it as it is, without a traceback."""


class UserError(Error):
    """A mistake on the command line or in the inputs that the user can fix."""


def one_line(e: BaseException, hint: str = "") -> str:
    """The message of `e` as one line for users; `hint` is added for errors that are bugs
    (anything but the package's `Error`s and OS errors, which also name their type)."""
    lines = str(e).strip().splitlines()
    msg = lines[0] if lines else ""
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or msg}"
    if not isinstance(e, (Error, OSError)) or not msg:
        return f"{type(e).__name__}: {msg}{hint}" if msg else type(e).__name__
    return msg
