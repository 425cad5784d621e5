"""The command line of training (it sits above :mod:`segros.pipeline`, which resolves the base)::

    python -m segros.train --preset small --method segros --out out/demo [--runs-dir runs] [--evaluate]
                           [--max-steps N] [--set key=value ...] [--num-workers N] [--quiet]
    accelerate launch [--config_file accelerate_configs/8gpu_ddp.yaml] -m segros.train ...   (several processes)
    python -m segros.train pretrain --preset small --out out/base-demo [--max-steps N] [--set key=value ...]

``--out`` is the run folder, anywhere on disk. ``--runs-dir`` is the run store a fine-tune takes its
shared "w/o SFT" base from (``init_from="auto"``: ``<runs-dir>/base/<backbone>_<hash>``, pretrained
there first when missing); the default ``runs`` is the committed store, so the small preset reuses
its base. ``pretrain`` trains the base of the preset's config into ``--out`` (``--max-steps`` sets
its pretraining steps). ``--num-workers``: DataLoader workers decoding images (docs/data.md: at
least 3 per GPU for the paper's models).

Exit codes: 0 done; 2 a setting that names no data (a ``paper-*`` preset without ``t2i_data``: the
message names the paper's dataset for that row), a missing path or an unknown column, stopped
before the first step; 1 a run that stopped (too much unreadable data, a non-finite loss).
"""

from __future__ import annotations

import argparse
import sys

from segros.data.sources import NoDataSourceError, SourceError
from segros.pipeline import base_config, evaluate_run, train_run
from segros.presets import METHODS, PRESETS, get_preset
from segros.train import pretrain


def parse_sets(pairs, parser):
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            parser.error(f"--set expects key=value, got {pair!r}")
        k, v = pair.split("=", 1)
        out[k.strip()] = v
    return out


def config_from_args(args, parser):
    try:
        config = get_preset(args.preset)
        overrides = parse_sets(args.set, parser)
        if getattr(args, "method", None):
            overrides["method"] = args.method
        if args.max_steps is not None:
            overrides["max_steps"] = str(args.max_steps)
        return config.replace(**overrides)
    except ValueError as e:
        parser.error(str(e))


def make_parser(stage):
    parser = argparse.ArgumentParser(prog="python -m segros.train" + (" pretrain" if stage == "pretrain" else ""),
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", help=f"one of {', '.join(PRESETS)}")
    if stage == "finetune":
        parser.add_argument("--method", default=None, help=f"one of {', '.join(METHODS)}")
        parser.add_argument("--runs-dir", default="runs",
                            help="the run store whose base/ a fine-tune starts from (default: runs)")
        parser.add_argument("--evaluate", action="store_true", help="also generate and score (results.json)")
    parser.add_argument("--out", required=True, help="the run folder")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field")
    parser.add_argument("--num-workers", type=int, default=0,
                        help="DataLoader workers that decode and preprocess images (default 0: in the training process)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    stage = "finetune"
    if argv and argv[0] == "pretrain":
        stage, argv = "pretrain", argv[1:]
    parser = make_parser(stage)
    args = parser.parse_args(argv)
    config = config_from_args(args, parser)
    progress = not args.quiet
    try:
        if stage == "pretrain":
            if args.max_steps is not None:
                config = config.replace(pretrain_steps=args.max_steps)
            pretrain(base_config(config), args.out, progress=progress)
        else:
            model = train_run(config, args.out, args.runs_dir, progress=progress, num_workers=args.num_workers)
            if args.evaluate:
                print(evaluate_run(model, config, args.out, progress=progress))
    except (NoDataSourceError, SourceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
