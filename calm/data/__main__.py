"""`python -m calm.data ls`, `validate DATASET ROOT` and `manifests DIR --root ROOT`: inspect data, load no model.

`validate` composes the same dataset config as `run.py dataset=DATASET dataset.root=ROOT`, so a
dataset that validates is one the pipeline reads the same way. `manifests` measures the authors'
manifest files in DIR (sizes, clips found under ROOT, clips shared by every pair), mapping their paths
with the anchors of configs/dataset/manifest.yaml.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.table import Table

from calm.config.assets import REPO_ROOT
from calm.data.manifest_overlap import pair_overlaps, summarize_manifests
from calm.data.manifest_paths import PathMapper
from calm.data.registry import dataset_classes, dataset_names, read_dataset
from calm.data.roots import require_folder
from calm.data.validate import dataset_report
from calm.errors import CalmError, ConfigError

SHOWN = 10


def dataset_config(name: str, root: str | None, settings: Sequence[str]) -> tuple[DictConfig, str]:
    """The composed `dataset` config with `root` and `key=value` settings applied (a key with or without
    the `dataset.` prefix, as on the run.py command line), and `paths.data_dir`."""
    if name not in dataset_names():
        raise ConfigError(
            f"unknown dataset {name!r}", f"choose one of {sorted(dataset_names())} (see `python -m calm.data ls`)"
        )
    overrides = [f"dataset={name}", *(_dataset_override(s) for s in settings)]
    try:
        with initialize_config_dir(str(REPO_ROOT / "configs"), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
    except HydraException as err:
        raise ConfigError(
            f"cannot apply --set {' '.join(settings)}: {err}", f"use keys of configs/dataset/{name}.yaml, as key=value"
        ) from err
    if root is not None:
        with open_dict(cfg.dataset):
            cfg.dataset.root = root
    return cfg.dataset, str(cfg.paths.data_dir)


def _dataset_override(setting: str) -> str:
    """`csv=x` or `dataset.csv=x` (run.py's spelling) as the override `dataset.csv=x`; a leading + or ~ kept."""
    key = setting.lstrip("+~")
    sign = setting[: len(setting) - len(key)]
    return sign + (key if key.startswith("dataset.") else f"dataset.{key}")


def list_datasets(console: Console) -> None:
    """One row per file in configs/dataset, described by the class its `_target_` names."""
    table = Table(title="datasets (dataset=NAME)", show_lines=True)
    for column in ("name", "description", "layout under dataset.root", "source"):
        table.add_column(column)
    for name, cls in dataset_classes():
        table.add_row(name, cls.description, cls.layout, cls.source)
    console.print(table)


def print_report(report: dict, console: Console) -> None:
    splits = sorted(report["per_split_class"])
    table = Table(title=f"{report['dataset']}: {report['source']}")
    table.add_column("class")
    for split in splits:
        table.add_column(split, justify="right")
    table.add_column("all", justify="right")
    for name, total in report["per_class"].items():
        table.add_row(name, *(str(report["per_split_class"][s][name]) for s in splits), str(total))
    console.print(table)
    per_split = ", ".join(f"{k}: {v}" for k, v in report["per_split"].items())
    console.print(f"{report['clips']} clips, {report['classes']} classes ({per_split})")
    for key in ("missing", "undecodable"):
        paths = report[key]
        style = "red" if paths else "green"
        console.print(f"[{style}]{key}: {len(paths)}[/{style}]")
        for path in paths[:SHOWN]:
            reason = report["undecodable_reasons"].get(path, "") if key == "undecodable" else ""
            console.print(f"  {path}" + (f"  ({reason})" if reason else ""), markup=False, highlight=False)
        if len(paths) > SHOWN:
            console.print(f"  ... and {len(paths) - SHOWN} more (--json lists all)")
    if not report["probed"]:
        console.print("clip headers not read (--no-probe): undecodable files are not checked")
    elif report["decoded"]:
        console.print("every clip decoded whole (--strict)")


def manifests_report(folder: str, root: str | None, settings: Sequence[str]) -> dict:
    """Per manifest under `folder` its counts, and every pair's shared clips (`calm.data.manifest_overlap`)."""
    cfg, _ = dataset_config("manifest", root, settings)
    fix = "give the folder holding the manifests (e.g. a checkout of the authors' SAVs/data)"
    mapper = (
        None if root is None else PathMapper(require_folder(Path(root).expanduser(), "clips root", fix), cfg.anchors)
    )
    summaries, skipped = summarize_manifests(
        require_folder(Path(folder).expanduser(), "manifests folder", fix),
        mapper,
        tuple(cfg.extensions),
        int(cfg.pseudo_trials),
    )
    return {
        "folder": folder,
        "root": root,
        "manifests": [s.as_dict() for s in summaries],
        "pairs": [p.as_dict() for p in pair_overlaps(summaries)],
        "not_manifests": skipped,
    }


def print_manifests(report: dict, console: Console) -> None:
    table = Table(
        title=f"manifests in {report['folder']}" + (f" (clips under {report['root']})" if report["root"] else "")
    )
    for column in ("manifest", "entries", "clips", "classes", "per class min/median/max", "found", "missing"):
        table.add_column(column, justify="left" if column == "manifest" else "right")
    for m in report["manifests"]:
        per = m["entries_per_class"]
        missing = (
            "-"
            if m["missing"] is None
            else str(m["missing"]) + (f" (+{m['ambiguous']} ambiguous)" if m["ambiguous"] else "")
        )
        table.add_row(
            m["manifest"],
            str(m["entries"]),
            str(m["distinct_clips"]),
            str(m["classes"]),
            f"{per['min']} / {per['median']:g} / {per['max']}",
            "-" if m["found"] is None else str(m["found"]),
            missing,
        )
    console.print(table)
    shared = [p for p in report["pairs"] if p["shared_clips"]]
    pairs = Table(title="distinct audio files shared by two manifests")
    for column in ("first", "second", "shared", "% of first", "% of second"):
        pairs.add_column(column, justify="left" if column in ("first", "second") else "right")
    for p in shared:
        pairs.add_row(
            p["first"],
            p["second"],
            str(p["shared_clips"]),
            f"{p['percent_of_first']:.1f}",
            f"{p['percent_of_second']:.1f}",
        )
    if shared:
        console.print(pairs)
    console.print(
        f"{len(report['pairs']) - len(shared)} of {len(report['pairs'])} pairs share no audio file"
        + ("" if report["root"] else " (paths compared as written: no --root)")
    )
    for name, reason in report["not_manifests"].items():
        console.print(f"not a manifest: {name} ({reason})", markup=False, highlight=False)


def add_set_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """The repeatable `--set KEY=VALUE` option of a subcommand (dataset settings, as on the run.py command line)."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help_text)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m calm.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("ls", help="the datasets the framework knows, with the layout each reads")
    check = commands.add_parser("validate", help="counts per split and class, missing and undecodable files")
    check.add_argument("dataset", help="a name from `ls`")
    check.add_argument("root", help="the dataset.root folder (for hf: the dataset path or hub id)")
    check.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    add_set_option(
        check,
        "another dataset setting, as on the run.py command line: dataset.csv=list.csv "
        "(the `dataset.` prefix may be left out; repeatable)",
    )
    check.add_argument("--no-probe", action="store_true", help="skip reading every clip's header")
    check.add_argument(
        "--strict",
        action="store_true",
        help="decode every clip whole, and exit with status 1 if any is missing or undecodable",
    )
    manifests = commands.add_parser(
        "manifests", help="per manifest file its size and clips found; clips shared by pairs"
    )
    manifests.add_argument("folder", help="the folder of manifests (searched recursively for *.json)")
    manifests.add_argument("--root", help="the dataset.root their clips are mapped onto (counts found / missing)")
    manifests.add_argument("--json", action="store_true", help="print one JSON object (every pair) instead of tables")
    add_set_option(manifests, "a manifest dataset setting, e.g. anchors=[audio/] (repeatable)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    console.width = max(console.width, 120)
    if args.command == "ls":
        list_datasets(console)
        return 0
    if args.command == "manifests":
        try:
            found = manifests_report(args.folder, args.root, args.set)
        except CalmError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps(found))
        else:
            print_manifests(found, console)
        return 0
    try:
        cfg, data_dir = dataset_config(args.dataset, args.root, args.set)
        loaded = read_dataset(cfg, data_dir)
    except CalmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = dataset_report(loaded.table, loaded.missing, probe=not args.no_probe, decode=args.strict)
    report["config"] = OmegaConf.to_container(cfg, resolve=True)
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report, console)
    return 1 if args.strict and (report["missing"] or report["undecodable"]) else 0


if __name__ == "__main__":
    sys.exit(main())
