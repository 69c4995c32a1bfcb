"""The `longtrove` command line: one typer app, each area registering its own subcommands."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="longtrove",
    help="Prepare and check long-context training data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
longctx_app = typer.Typer(
    help="Long-context tests: build suites, evaluate a served model, report scores.",
    no_args_is_help=True,
)
app.add_typer(longctx_app, name="longctx")


def _register_commands() -> None:
    # Each module owns its subcommands; heavy imports stay inside the command bodies so that
    # `longtrove --help` is fast.
    from pipelines.commands import (
        curate,
        datasets,
        demo,
        export_megatron,
        longctx_build,
        longctx_eval,
        shards,
    )

    for module in (curate, datasets, demo, shards, longctx_build, longctx_eval, export_megatron):
        module.register(app, longctx_app)


_register_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
