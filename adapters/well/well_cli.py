"""The Well on the command line: write the embedded datasets, inspect any Well path, write stats.yaml.

A module of its own so that the reader (``adapters.well.the_well``) never imports the solvers that use it.

    python -m adapters.well.well_cli generate --out data/the_well     # writes data/the_well/datasets/...
    python -m adapters.well.well_cli inspect data/the_well            # one line per trajectory
    python -m adapters.well.well_cli stats data/the_well/datasets/NAME   # stats.yaml from its train split
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from adapters.well.the_well import SPLITS, read_trajectories
from adapters.well.well_solvers import generate_default
from adapters.well.well_writer import write_stats_yaml


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m adapters.well.well_cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write the embedded datasets in The Well's format")
    gen.add_argument("--out", type=Path, required=True, help="directory that receives datasets/NAME/data/SPLIT/*.hdf5")
    gen.add_argument("--seed", type=int, default=0, help="seed of the random initial conditions")
    gen.add_argument("--datasets", nargs="+", metavar="NAME", help="subset of the embedded datasets (default: all)")
    stats = sub.add_parser("stats", help="write DATASET/stats.yaml (the_well's normalisers) from its train split")
    stats.add_argument("dataset", type=Path, help="dataset directory (NAME, holding data/train/)")
    show = sub.add_parser("inspect", help="list the trajectories under a Well path")
    show.add_argument("path", help="file, dataset dir, datasets root or hf:// URL")
    show.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    args = parser.parse_args(argv)
    if args.command == "generate":
        target = generate_default(args.out, args.seed, args.datasets)
        print(json.loads((target / "generator.json").read_text()))
        print(target)
        return
    if args.command == "stats":
        print(write_stats_yaml(args.dataset))
        return
    for t in read_trajectories(args.path, args.splits):
        fields = ", ".join(f"{k}{list(v.shape)}" for k, v in t.fields.items())
        print(f"{t.dataset} {Path(t.file).name}#{t.index}: t={len(t.time)} grid={t.grid_type}{list(t.shape)} "
              f"bc={ {d: '/'.join(sorted(set(b))) for d, b in t.boundary.items()} } params={t.parameters} fields: {fields}")


if __name__ == "__main__":
    main()
