"""The `trainlens` command. Client commands (`sync`, `import`) are handled here and stay
light; server commands (`serve`, `worker`, `migrate`, `train`) are handed to `app.cli`,
imported only when one of them runs."""

from __future__ import annotations

import importlib
import sys

# name -> ("module:function" taking argv, one-line help). Imported only when run.
CLIENT_COMMANDS: dict[str, tuple[str, str]] = {
    "sync": ("trainlens.sync:main", "upload offline or unsent run folders to a server"),
    "import": (
        "trainlens.tensorboard_import:main",
        "import runs logged elsewhere: `trainlens import tensorboard LOGDIR`",
    ),
}
SERVER_COMMANDS: dict[str, str] = {
    "serve": "the API and the dashboard (and a local worker)",
    "worker": "claim and train queued runs",
    "migrate": "bring the database schema up to date",
    "train": "train a model on its own (see `trainlens train -h`)",
}


def usage() -> str:
    lines = ["usage: trainlens COMMAND [ARGS]", "", "commands:"]
    for name, help_text in SERVER_COMMANDS.items():
        lines.append(f"  {name:<10} {help_text}")
    for name, (_, help_text) in CLIENT_COMMANDS.items():
        lines.append(f"  {name:<10} {help_text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else None
    if command in SERVER_COMMANDS:
        from app.cli import main as server_main

        return server_main(argv)
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
