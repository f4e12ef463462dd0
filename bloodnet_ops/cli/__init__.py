"""The ``bloodnet`` command line. Each submodule registers one family of commands and owns it:

- ``cli/data.py``       validate
- ``cli/modelcmd.py``   train, eval, ablation, predict
- ``cli/screen.py``     screen, demo
- ``cli/analytics.py``  audit, adjudicate, drift
- ``cli/dashcmd.py``    dashboard
- ``cli/synthcmd.py``   synth

Heavy imports (torch, great-expectations, pydicom) happen inside the commands so ``--help`` is fast.
With ``--json``, stdout carries exactly one JSON document and every log line goes to stderr.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

app = typer.Typer(
    name="bloodnet",
    help="BloodNet Screening: ICH screening of head CT (research use only, not a medical device).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_FAMILIES = ("data", "modelcmd", "screen", "analytics", "dashcmd", "synthcmd")


def _setup_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


for _name in _FAMILIES:
    try:
        importlib.import_module(f"bloodnet_ops.cli.{_name}").register(app)
    except ModuleNotFoundError as exc:  # a family not written yet must not break the others
        if exc.name != f"bloodnet_ops.cli.{_name}":
            raise


def main() -> None:
    _setup_logging()
    app()
