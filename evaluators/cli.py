"""The ``unitune`` command line.

Each subcommand lives in the module that holds its logic; a module plugs in by defining
``add_arguments(parser: argparse.ArgumentParser) -> None`` and ``run(args: argparse.Namespace) -> int``.
Modules are imported only when their command is parsed, so ``unitune eval`` never imports torch.
One spelling per concept: an output folder is ``--out-dir`` everywhere (:func:`add_out_dir`); the old
``--out`` still works as a hidden alias. A bad option prints the usage of the subcommand it was given to.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from pathlib import Path
from typing import Any

from evaluators.errors import UserError

__all__ = ["COMMANDS", "HIDDEN_ALIASES", "HelpFormatter", "add_out_dir", "main", "plain_text"]

#: Old option spellings that still parse but are not shown in ``--help``.
HIDDEN_ALIASES = frozenset(["--out"])

_ROLE = re.compile(r":[a-z]+:`~?([^`]*)`")


def plain_text(text: str) -> str:
    """Help text without reST markup (roles and double backticks), for the terminal.

    Example:

    >>> plain_text("writes ``OUT/x.json``; see :func:`llamafactory_ext.hmer.build_file` and `--k`")
    'writes OUT/x.json; see llamafactory_ext.hmer.build_file and --k'
    """
    return _ROLE.sub(r"\1", text).replace("``", "").replace("`", "")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout, strips reST markup and hides :data:`HIDDEN_ALIASES`."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        shown = [o for o in action.option_strings if o not in HIDDEN_ALIASES]
        if shown == action.option_strings or not shown:
            return super()._format_action_invocation(action)
        copy = argparse.Action(shown, action.dest, nargs=action.nargs, metavar=action.metavar)
        return super()._format_action_invocation(copy)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return super()._fill_text(plain_text(text), width, indent)

    def _expand_help(self, action: argparse.Action) -> str:
        return plain_text(super()._expand_help(action))


def add_out_dir(
    parser: argparse.ArgumentParser, help: str, default: Path | None = None, required: bool = False
) -> None:
    """The output-folder option of every subcommand: ``--out-dir DIR`` (old spelling ``--out``, hidden).

    Example:

    >>> p = argparse.ArgumentParser(); add_out_dir(p, "where")
    >>> p.parse_args(["--out", "x"]).out_dir, p.parse_args(["--out-dir", "y"]).out_dir
    (PosixPath('x'), PosixPath('y'))
    """
    parser.add_argument(
        "--out-dir", "--out", dest="out_dir", type=Path, default=default, required=required, help=help
    )


#: ``command -> module`` or ``command -> {subcommand -> module}``; help text is the module's first line.
COMMANDS: dict[str, str | dict[str, str]] = {
    "tiny-model": "llamafactory_ext.tiny_model",
    "data": {
        "hmer": "llamafactory_ext.hmer.cli",
        "hmer-folds": "llamafactory_ext.hmer.folds",
        "validate": "llamafactory_ext.validate",
        "fer-sft": "llamafactory_ext.fer_data",
        "fer-rlvr": "trl_grpo.rlvr_data",
        "hmer-rlvr": "trl_grpo.hmer_rlvr",
    },
    "eval": {
        "hmer": "evaluators.hmer.cli",
        "fer": "evaluators.fer.cli",
    },
    "edl": {
        "run": "llamafactory_ext.hmer.edl_pipeline",
        "plan": "llamafactory_ext.hmer.edl_plan",
    },
    "eval-all": "evaluators.suite",
    "infer": "evaluators.inference.cli",
    "demo-data": {
        "hmer": "llamafactory_ext.demo_data.hmer",
        "fer": "llamafactory_ext.demo_data.fer",
    },
    "demo": "llamafactory_ext.demo",
    "recipes": "llamafactory_ext.assets",
}


def _summary(module_name: str) -> str | None:
    """First docstring line of a plug-in module, or ``None`` when it is not built yet."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            return None
        raise
    return (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""


def _add(subparsers: argparse._SubParsersAction, name: str, module_name: str) -> None:
    summary = _summary(module_name)
    if summary is None:
        parser = subparsers.add_parser(name, help="(not built yet)")
        parser.set_defaults(_run=lambda args, n=name: _not_built(n))
        return
    module = importlib.import_module(module_name)
    parser = subparsers.add_parser(
        name, help=plain_text(summary), description=module.__doc__, formatter_class=HelpFormatter
    )
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run, _parser=parser)


def _not_built(name: str) -> int:
    logging.getLogger("unitune").error("`unitune %s` is not built yet in this version.", name)
    return 3


def _positionals(argv: list[str]) -> list[str]:
    """The words of ``argv`` before its first option: the command and, for a group, its subcommand."""
    words = []
    for arg in argv:
        if arg.startswith("-"):
            if words:
                break
            continue  # a global option such as -v before the command
        words.append(arg)
    return words[:2]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Build the parser, importing only the plug-in module of the command being run.

    ``unitune eval hmer ...`` imports ``evaluators.hmer.cli`` and nothing else of the ``eval`` group; a
    group's modules are all imported (for their help lines) only for ``unitune GROUP --help``.
    """
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="unitune", description=__doc__.strip().splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    words = _positionals(argv)
    wanted = words[0] if words else None
    for name, target in COMMANDS.items():
        if isinstance(target, str):
            if wanted == name:
                _add(sub, name, target)
            else:
                sub.add_parser(name, help=f"see: unitune {name} --help")
            continue
        group = sub.add_parser(name, help=f"{name}: {', '.join(target)}")
        group_sub = group.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
        group_sub.required = True
        chosen = words[1] if wanted == name and len(words) > 1 and words[1] in target else None
        for sub_name, module_name in target.items():
            if wanted == name and chosen in (None, sub_name):
                _add(group_sub, sub_name, module_name)
            else:
                group_sub.add_parser(sub_name, help=f"see: unitune {name} {sub_name} --help")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``unitune`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if extra:  # argparse would report these with the top-level usage; name the subcommand's instead
        leaf: Any = getattr(args, "_parser", parser)
        leaf.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args._run(args) or 0)
    except UserError as err:
        logging.getLogger("unitune").error("%s", err)
        return 2
    except (PermissionError, FileExistsError, NotADirectoryError, IsADirectoryError) as err:
        # A path the user gave that cannot be written or read (checked early where possible): one line, no traceback.
        where = f" {err.filename}" if err.filename else ""
        logging.getLogger("unitune").error("cannot use%s: %s.", where, err.strerror or err)
        return 2
    except UnicodeDecodeError as err:
        # Readers name the file; this is the net for one that does not.
        logging.getLogger("unitune").error(
            "an input is not UTF-8 text (%s); convert it to UTF-8.", err.reason
        )
        return 2
    except KeyboardInterrupt:
        logging.getLogger("unitune").error("interrupted; finished work is kept on disk.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
