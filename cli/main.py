"""``atelier`` — the command line. Subcommands load lazily: ``atelier --help`` imports only this package's
entry point, and ``atelier dataset …`` imports storage but never torch or discord.

To add a subcommand, add one line to :data:`SUBCOMMANDS`: ``name: ("module:attribute", "help")`` where the
attribute is a ``typer.Typer`` (a group of commands, or a single command when it holds just one).
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from cli.state import CliState

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "dataset": ("cli.dataset_cmd:app", "Create datasets and add, caption, check and export their images."),
    "element": ("cli.element_cmd:app", "Your trained Elements and shared ones: list, info, share, export."),
    "db": ("cli.db_cmd:app", "Database schema (migrations)."),
    "worker": ("cli.worker_cmd:app", "Run a GPU worker that takes training and generation jobs from Redis."),
    "run": ("cli.run_cmd:app", "Run everything on this box: Discord bot + worker + embedded Redis."),
    "train": ("cli.train_cmd:app", "Train an Element from a dataset (here, or queued for a worker)."),
    "generate": ("cli.generate_cmd:app", "Generate images with up to four Elements; writes PNG files."),
    "jobs": ("cli.jobs_cmd:app", "Your training and generation jobs: list, show, cancel, retry."),
    "demo": ("cli.demo_cmd:app", "Offline demo: train a tiny Element and render a strength grid (no GPU, no Discord)."),
    "bot": ("cli.bot_cmd:app", "Run the Discord bot (workers run separately with `atelier worker`)."),
}


class LazyGroup(TyperGroup):
    """A click group whose subcommands are imported only when one is run or asked for help.

    The top-level help lists each subcommand from :data:`SUBCOMMANDS` alone: importing every command module (and
    with it storage, the worker and the bot) just to print one line each would make ``atelier --help`` slow.
    """

    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(SUBCOMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in SUBCOMMANDS:
            if self._listing:
                return click.Command(cmd_name, help=SUBCOMMANDS[cmd_name][1])
            return _load(cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


def _load(name: str) -> click.Command:
    target, help_text = SUBCOMMANDS[name]
    module_name, _, attr = target.partition(":")
    obj: Any = getattr(importlib.import_module(module_name), attr or "app")
    command = typer.main.get_command(obj) if isinstance(obj, typer.Typer) else obj
    command.name = name
    if not command.help:
        command.help = help_text
    return command


app = typer.Typer(
    cls=LazyGroup,
    no_args_is_help=True,
    add_completion=False,
    help="Atelier — train LoRA Elements from image datasets and generate with them.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", "-u", envvar="ATELIER_USER",
                                      help="Act as this local user (stored as local:<name>).")] = "local",
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable JSON output for every command.")]
    = False,
) -> None:
    ctx.obj = CliState(user=user, json=json_output)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
