"""What every stage script shares: argument parsing and errors written for people."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .errors import DataError, ModelFileError, ParamsError, PretrainedWeightsError, TrainingError

# Errors whose message already says what is wrong and how to fix it: no traceback.
USER_ERRORS = (ParamsError, DataError, PretrainedWeightsError, ModelFileError, TrainingError, FileNotFoundError)


def stage_parser(doc: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    return parser


def run(main: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser) -> None:
    args = parser.parse_args()
    try:
        main(args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; outputs are unchanged (a rerun of train resumes from its last checkpoint)",
              file=sys.stderr)
        sys.exit(130)
