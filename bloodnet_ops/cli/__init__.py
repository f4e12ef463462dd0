"""The ``bloodnet`` command line. Each submodule registers one family of commands and owns it:

- ``cli/data.py``       validate, migrate
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
    logging.getLogger("alembic").setLevel(logging.WARNING)  # plugin and migration chatter


for _name in _FAMILIES:
    importlib.import_module(f"bloodnet_ops.cli.{_name}").register(app)


def main() -> None:
    """Run a command; an expected failure prints two lines (see :mod:`bloodnet_ops.errors`)."""
    try:  # typer >= 0.25 ships its own copy of click
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover
        from click import exceptions as cx

    from bloodnet_ops.errors import explain

    _setup_logging()
    try:
        code = app(standalone_mode=False)  # an explicit exit (--help included) returns its code
    except typer.Abort:
        sys.stderr.write("aborted\n")
        code = 1
    except cx.NoArgsIsHelpError as exc:
        sys.stdout.write(exc.ctx.get_help() + "\n")
        code = 2
    except cx.UsageError as exc:  # a bad argument: the message, and where the help is
        command = exc.ctx.command_path if exc.ctx is not None else "bloodnet"
        sys.stderr.write(f"error: {exc.format_message()}\n  see '{command} --help'\n")
        code = exc.exit_code
    except cx.ClickException as exc:
        sys.stderr.write(f"error: {exc.format_message()}\n")
        code = exc.exit_code
    except Exception as exc:
        known = explain(exc)
        if known is None:
            raise
        sys.stderr.write("\n".join(known.lines()) + "\n")
        code = known.code
    sys.exit(code if isinstance(code, int) else 0)
