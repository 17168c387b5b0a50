"""The `trainlens` command. Client commands (`sync`, `import`) are handled here and stay
light; server commands (`serve`, `worker`, `migrate`, `train`) run their own module in a
child process (`python -m app.cli serve`, `python -m trainer.worker`, ...)."""

from __future__ import annotations

import importlib
import os
import sys

# name -> ("module:function" taking argv, one-line help). Imported only when run.
CLIENT_COMMANDS: dict[str, tuple[str, str]] = {
    "sync": ("trainlens.sync:main", "upload offline or unsent run folders to a server"),
    "import": (
        "trainlens.tensorboard_import:main",
        "import runs logged elsewhere: `trainlens import tensorboard LOGDIR`",
    ),
}
# name -> (module run with `python -m`, its arguments first, one-line help).
SERVER_COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("app.cli serve", "the API and the dashboard (and a local worker)"),
    "worker": ("trainer.worker", "claim and train queued runs from an API (`--url`)"),
    "migrate": ("app.cli migrate", "bring the database schema up to date"),
    "train": ("trainer.cli", "train a model on its own (see `trainlens train -h`)"),
}


def usage() -> str:
    lines = ["usage: trainlens COMMAND [ARGS]", "", "commands:"]
    for name, (_, help_text) in SERVER_COMMANDS.items():
        lines.append(f"  {name:<10} {help_text}")
    for name, (_, help_text) in CLIENT_COMMANDS.items():
        lines.append(f"  {name:<10} {help_text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else None
    if command in SERVER_COMMANDS:
        # The server, the worker and the trainer are other packages (SQLAlchemy, torch):
        # this process becomes theirs (exec: same pid, so signals reach it), and this
        # client package imports none of them.
        module, *leading = SERVER_COMMANDS[command][0].split()
        os.execv(sys.executable, [sys.executable, "-m", module, *leading, *argv[1:]])
    if command in CLIENT_COMMANDS:
        target, _ = CLIENT_COMMANDS[command]
        module, function = target.split(":")
        return int(getattr(importlib.import_module(module), function)(argv[1:]))
    if command in ("-h", "--help"):
        print(usage())
        return 0
    print(usage(), file=sys.stderr)
    if command is not None:
        print(f"\ntrainlens: unknown command {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
