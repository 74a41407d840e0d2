# Copyright © 2026 mlx-kyutai-is contributors
"""How every command reports an error: one line on stderr, never a traceback (unless debugging).

The package's own errors and OS errors carry messages written for users; anything else (a bug)
also names its type. `MLX_KYUTAI_IS_DEBUG=1` (or `--debug` on the main command) shows tracebacks.
"""

import os
import sys
from pathlib import Path

DEBUG_ENV = "MLX_KYUTAI_IS_DEBUG"
_PACKAGE_DIR = Path(__file__).parent


def raised_by_package(e: BaseException) -> bool:
    """True if the package's own code raised `e` (its message was written for users)."""
    if type(e).__module__.startswith("mlx_kyutai_is"):
        return True
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and _PACKAGE_DIR in Path(tb.tb_frame.f_code.co_filename).parents


def one_line(e: BaseException, hint: str = "") -> str:
    """The message of `e` as one line for users; `hint` is added for errors that are bugs."""
    lines = str(e).strip().splitlines()
    msg = lines[0] if lines else ""
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or msg}"
    if not (raised_by_package(e) or isinstance(e, OSError)) or not msg:
        return f"{type(e).__name__}: {msg}{hint}" if msg else type(e).__name__
    return msg


def run_command(prog: str, fn) -> int:
    """Run a command's body `fn()` (returning its exit status, None for 0) with the house error
    handling: Ctrl-C exits 130, an error prints ``PROG: error: ...`` and exits 1."""
    try:
        code = fn()
        return 0 if code is None else code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr, flush=True)
        return 1
