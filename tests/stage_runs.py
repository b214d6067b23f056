"""Running a stage script's main in this process, as `python stages/<script>` runs it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from skinlesion import cli


def exit_code(stage, script: str, cwd: Path | None = None) -> int:
    """stage.main through cli.run with sys.argv = [script], in `cwd` (default: where the test is);
    0, or the code it exits with (2: one message for bad input)."""
    old_cwd, old_argv = Path.cwd(), sys.argv
    if cwd is not None:
        os.chdir(cwd)
    sys.argv = [script]
    try:
        cli.run(stage.main, cli.stage_parser(stage.__doc__))
        return 0
    except SystemExit as e:
        return e.code
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv
