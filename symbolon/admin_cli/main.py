"""The ``symbolon`` command's entry point (``python -m symbolon.admin_cli.main`` too).

Kept light on purpose: a process started with multiprocessing's ``spawn`` (parse processes,
crash walkers) imports its parent's main module again before its work, and the commands'
imports, the whole server, made each of those processes about 60 MiB larger and slower to start.
"""

from __future__ import annotations


def main() -> None:
    from symbolon.admin_cli.commands import cli

    cli(prog_name="symbolon")


if __name__ == "__main__":
    main()
