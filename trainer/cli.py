"""`trainlens train`: run the trainer from a shell.

    trainlens train --config cfg.json --data FILE --out DIR [--preset NAME] [--resume]
                    [--<field> VALUE ...]

Settings are layered: TrainConfig defaults, then the preset, then the config file, then
flags. Every TrainConfig field has a flag (`--n_layer 6` or `--n-layer 6`; nested fields
as `--faults.nan_step 40`); boolean flags alone mean true. Also `python -m trainer.cli`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from trainer.config import TrainConfig
from trainer.corpus import BUILTIN_DATASET
from trainer.presets import PRESETS, preset_overrides

NESTED = ("actions", "faults")


def _field_specs() -> list[tuple[str, Any]]:
    """(dotted name, annotation) for every settable field, nested ones included."""
    specs: list[tuple[str, Any]] = []
    for name, field in TrainConfig.model_fields.items():
        if name in NESTED:
            nested: type[BaseModel] = field.annotation  # type: ignore[assignment]
            specs += [(f"{name}.{sub}", f.annotation) for sub, f in nested.model_fields.items()]
        else:
            specs.append((name, field.annotation))
    return specs


def _is_bool(annotation: Any) -> bool:
    return annotation is bool


def _is_text(annotation: Any) -> bool:
    """str, Literal[...] of strings, or str | None: passed through as text."""
    if annotation is str:
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return all(isinstance(arg, str) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return any(_is_text(arg) for arg in args if arg is not type(None))
    return False


def _coerce(text: str, annotation: Any) -> Any:
    """Flag text to a JSON-ish value; pydantic does the real validation afterwards."""
    if text.lower() in ("none", "null"):
        return None
    if _is_text(annotation):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # let pydantic report it against the field


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainlens train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="JSON file of TrainConfig fields")
    parser.add_argument("--data", type=Path, help="text file to train on (default: the dataset)")
    parser.add_argument("--out", type=Path, required=True, help="run directory")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="scenario preset as base")
    parser.add_argument("--resume", action="store_true", help="continue from DIR's checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    fields = parser.add_argument_group("config fields (override the file)")
    for name, annotation in _field_specs():
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        extra: dict[str, Any] = {"nargs": "?", "const": "true"} if _is_bool(annotation) else {}
        fields.add_argument(*flags, dest=f"field:{name}", metavar="VALUE", **extra)
    return parser


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key in NESTED:
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_config(args: argparse.Namespace) -> TrainConfig:
    settings: dict[str, Any] = preset_overrides(args.preset) if args.preset else {}
    if args.config is not None:
        settings = _deep_merge(settings, json.loads(args.config.read_text()))
    annotations = dict(_field_specs())
    flags: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if dest.startswith("field:") and value is not None:
            name = dest.removeprefix("field:")
            head, _, sub = name.partition(".")
            coerced = _coerce(value, annotations[name])
            if sub:
                flags.setdefault(head, {})[sub] = coerced
            else:
                flags[name] = coerced
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and "nproc" not in flags:
        flags["nproc"] = world_size  # launched by torchrun: the process count is known
    return TrainConfig.model_validate(_deep_merge(settings, flags))


def load_text(config: TrainConfig, data: Path | None) -> str:
    if data is not None:
        return data.read_text(encoding="utf-8")
    if config.dataset == BUILTIN_DATASET:
        from trainer.corpus import builtin_corpus

        return builtin_corpus()
    raise ValueError(
        f"dataset '{config.dataset}' is an uploaded dataset; pass its text with --data FILE"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = build_config(args)
        text = load_text(config, args.data)
    except ValidationError as exc:
        print("invalid configuration:", file=sys.stderr)
        for error in exc.errors(include_url=False):
            field = ".".join(str(part) for part in error["loc"])
            # Combination checks have no single field; their message names the fields.
            reason = error["msg"].removeprefix("Value error, ")
            print(f"  {field}: {reason}" if field else f"  {reason}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    # Imported here so that `--help` and config errors answer without loading torch.
    from trainer.progress import ProgressSink
    from trainer.sink import JsonlSink, MetricSink
    from trainer.train import train

    args.out.mkdir(parents=True, exist_ok=True)
    sink: MetricSink = JsonlSink(args.out)
    if not args.quiet:
        sink = ProgressSink(sink, config.max_steps)
    try:
        result = train(config, text, args.out, sink, resume=args.resume)
    finally:
        sink.close()
    if int(os.environ.get("RANK", "0")) == 0:
        best = f"{result.best_val_loss:.4f}" if result.best_val_loss is not None else "n/a"
        why = f" ({result.reason})" if result.reason else ""
        print(f"{result.status}{why} at step {result.step}; best val loss {best}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
