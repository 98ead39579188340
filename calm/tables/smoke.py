"""Smoke runs of the tables: every row group through the whole table pipeline on a CPU in minutes.

`configs/tables/smoke.yaml` (plain `--smoke`): generated tones for its `table_smoke` (tiny Qwen2-Audio)
and `table_smoke_clap` (tiny CLAP) row groups in the `folder` layout, and one group left without data
on purpose, so both a filled and a "no data" group go through. Any other table (`--smoke --tables paper`): each row
group keeps its experiment file (protocol,
method, prompt, support draw) but runs on the tiny model of its backbone (`tiny_<backbone>`) and on
generated data written in its dataset's OFFICIAL layout (calm.testing.smoke_layouts), with the
smoke-sized shots of the table's `smoke` section. Every job's data, cache and finished-job records stay
inside the output folder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf

from calm.errors import ConfigError
from calm.tables.jobs import compose_job, job_configs
from calm.tables.smoke_manifests import (
    write_asvspoof_manifests,
    write_audioset_manifests,
    write_esc50_manifests,
    write_vggsound_manifests,
)
from calm.tables.spec import CONFIGS_DIR, RowGroup, ShotSetting, TableSpec, column_order
from calm.testing.smoke_layouts import (
    ESC50_CATEGORIES,
    esc50_rows,
    make_asvspoof,
    make_audioset,
    make_esc50,
    make_vggsound,
)

SMOKE_TABLE = "smoke"
SMOKE_PREFIX = "table_smoke"  # every row group table_smoke* of the smoke table runs on the generated tones
SMOKE_CLASSES = ("low", "mid", "high", "chirp")
SMOKE_DATA = "smoke_data"
SMOKE_MANIFESTS = "manifests"  # under SMOKE_DATA: the authors' files, small (paper.manifests_dir of the replay groups)
REPLAY_DATASET = "manifest"  # a replay group's dataset: it reads the manifests over every dataset's clips
TINY_PREFIX = "tiny_"  # configs/backbone/tiny_<name>.yaml: the tiny random model of backbone <name>


def write_smoke_data(root: Path, clips_per_class: int = 6, seconds: float = 1.0, rate: int = 16000) -> Path:
    """Generated tones, one folder per class (the `folder` dataset layout); each class a different pitch."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    for index, name in enumerate(SMOKE_CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for clip in range(clips_per_class):
            base = 220.0 * 2**index
            pitch = base * (1 + 2 * t) if name == "chirp" else np.full_like(t, base * (1 + 0.02 * clip))
            wave = 0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / rate) + 0.02 * rng.standard_normal(len(t))
            sf.write(root / name / f"{name}_{clip}.wav", wave.astype(np.float32), rate)
    return root


def job_overrides(out_dir: Path) -> list[str]:
    """Keep every job's data (and tiny models), cache and finished-job records inside `out_dir`."""
    out_dir = Path(out_dir)
    return [
        f"paths.data_dir={out_dir / 'data'}",
        f"paths.cache_dir={out_dir / 'cache'}",
        f"paths.finished_dir={out_dir / 'finished'}",
    ]


def smoke_overrides(out_dir: Path, spec: TableSpec | None = None) -> tuple[list[str], dict[str, list[str]]]:
    """The smoke table: write the tones under `out_dir` and return (overrides for every job, per-group
    overrides): every `table_smoke*` group of `spec` (default: the `table_smoke` group) reads the tones."""
    data = write_smoke_data(Path(out_dir) / SMOKE_DATA / "tones")
    groups = [g.experiment for g in spec.groups if g.experiment.startswith(SMOKE_PREFIX)] if spec else [SMOKE_PREFIX]
    return job_overrides(out_dir), {group: [f"dataset.root={data}"] for group in groups}


# Generated data per dataset, in the dataset's official layout; each returns the folder `dataset.root` names.
ESC50_SMOKE = {"classes": 3, "per_class": 10}
VGGSOUND_CLASSES = ("dog barking", "rain", "siren")
AUDIOSET_LABELS = (("/m/dog", "Dog"), ("/m/rain", "Rain"), ("/m/siren", "Siren"))


def write_esc50(root: Path) -> Path:
    """ESC-50-master with 3 classes x 10 clips (2 per fold: test fold 1 has 2 per class, folds 2-5 hold 8)."""
    make_esc50(root, esc50_rows(**ESC50_SMOKE), seconds=0.5)
    return root


def write_vggsound(root: Path) -> Path:
    """vggsound.csv and mp4 clips (audio and video streams): 3 classes x (4 train + 2 test)."""
    rows, present = [], {}
    for i in range(18):
        youtube_id = f"smoke{i:06d}"
        rows.append((youtube_id, 30, VGGSOUND_CLASSES[i % 3], "train" if i < 12 else "test"))
        present[f"{youtube_id}_000030"] = "mp4"
    return make_vggsound(root, rows, present)


def write_audioset(root: Path) -> Path:
    """The segment CSVs, class_labels_indices.csv and flac clips: 3 labels, 9 train and 6 eval clips,
    every third clip carrying a second label."""
    labels = list(AUDIOSET_LABELS)
    train, evaluation, clips = [], [], {}
    for i in range(15):
        mids = [labels[i % 3][0]] + ([labels[(i + 1) % 3][0]] if i % 3 == 0 else [])
        youtube_id = f"smoke{i:06d}"
        (train if i < 9 else evaluation).append((youtube_id, 0.0, 10.0, ",".join(mids)))
        clips[f"{youtube_id}_000000.flac"] = "train" if i < 9 else "eval"
    return make_audioset(root, labels, train, evaluation, clips, seconds=0.5)


def write_asvspoof(root: Path) -> Path:
    """LA/ with the CM protocol files and flac clips: 6 train and 6 eval utterances, half spoofed."""

    def lines(prefix: str) -> list[str]:
        return [
            f"LA_0001 LA_{prefix}_{i:07d} - {'-' if i < 3 else 'A01'} {'bonafide' if i < 3 else 'spoof'}"
            for i in range(6)
        ]

    make_asvspoof(root, {"train": lines("T"), "eval": lines("E")}, seconds=0.5)
    return root


SMOKE_DATASETS: dict[str, Callable[[Path], Path]] = {
    "esc50": write_esc50,
    "vggsound": write_vggsound,
    "audioset": write_audioset,
    "asvspoof2019_la": write_asvspoof,
}


def write_manifests(folder: Path, seeds: Sequence[int]) -> Path:
    """Every manifest a replay group names, small, over the clips the writers above generate (their file
    names and splits are restated here from those writers); `seeds`: the seeded support files to write."""
    esc = {
        ESC50_CATEGORIES[t]: [r[0] for r in sorted(esc50_rows(**ESC50_SMOKE), key=lambda r: r[5]) if r[2] == t]
        for t in range(ESC50_SMOKE["classes"])
    }
    write_esc50_manifests(folder, list(esc), esc)
    stems = {name: [f"smoke{c + 3 * k:06d}_000030" for k in range(6)] for c, name in enumerate(VGGSOUND_CLASSES)}
    write_vggsound_manifests(folder, stems, seeds)
    names = [name for _, name in AUDIOSET_LABELS]
    clips = [
        (f"smoke{i:06d}_000000.flac", [names[i % 3]] + ([names[(i + 1) % 3]] if i % 3 == 0 else [])) for i in range(15)
    ]
    write_audioset_manifests(folder, clips[:9], clips[9:], names)
    spoofs = [(i, "bonafide" if i < 3 else "spoof") for i in range(6)]
    write_asvspoof_manifests(
        folder, [(f"LA_T_{i:07d}", c) for i, c in spoofs], [(f"LA_E_{i:07d}", c) for i, c in spoofs]
    )
    return folder


def replay_overrides(out_dir: Path, written: dict[str, Path], groups: Sequence[RowGroup]) -> list[str]:
    """A replay group's smoke overrides: the manifests (written once, with every seed any group names)
    and every dataset's generated clips (`paper.clips.<dataset>`), writing the datasets not yet written."""
    for dataset, writer in SMOKE_DATASETS.items():
        if dataset not in written:
            written[dataset] = writer(out_dir / SMOKE_DATA / dataset)
    folder = out_dir / SMOKE_DATA / SMOKE_MANIFESTS
    if not folder.is_dir():
        write_manifests(folder, sorted({seed for group in groups for seed in group.seeds}))
    return [f"paper.manifests_dir={folder}", *(f"paper.clips.{d}={root}" for d, root in written.items())]


def smoke_shots(spec: TableSpec, shots: ShotSetting) -> ShotSetting:
    """A real shot setting's smoke size: K mapped by the table's `smoke.shots`, the draw kept."""
    if shots.k is None:
        return shots
    if shots.k not in spec.smoke_shots:
        raise ConfigError(
            f"table {spec.name!r}: no smoke size for {shots.k}-shot",
            f"add {shots.k}: <small K> to `smoke.shots` in configs/tables/{spec.name}.yaml",
        )
    return replace(shots, k=spec.smoke_shots[shots.k])


def smoke_spec(spec: TableSpec) -> TableSpec:
    """`spec` with every group's shot settings at their smoke size, a seeded group's first `smoke.seeds`
    seeds, and a title that says so."""
    groups = tuple(
        replace(
            g,
            shots=tuple(dict.fromkeys(smoke_shots(spec, s) for s in g.shots)),
            seeds=g.seeds[: spec.smoke_seeds] if spec.smoke_seeds else g.seeds,
        )
        for g in spec.groups
    )
    columns = tuple(sorted({s for g in groups for s in g.shots}, key=column_order))
    return replace(
        spec,
        title=f"Smoke run (tiny backbones, generated data; numbers mean nothing) of: {spec.title}",
        shots=columns,
        groups=groups,
    )


def table_smoke_overrides(spec: TableSpec, out_dir: Path) -> dict[str, list[str]]:
    """Per-group overrides of a table's smoke run: the tiny backbone, the generated data (each dataset
    written once under `out_dir`), the table's and the group's smoke overrides. Composes each group's
    first job once to read its backbone and dataset (opens `job_configs()` itself)."""
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    per_group: dict[str, list[str]] = {}
    with job_configs():
        for group in spec.groups:
            cfg = compose_job(
                group, group.shots[0], out_dir, job_overrides(out_dir), group.seeds[0] if group.seeds else None
            )
            dataset, backbone = str(cfg.dataset.name), str(cfg.backbone.name)
            if dataset not in SMOKE_DATASETS and dataset != REPLAY_DATASET:
                raise ConfigError(
                    f"row group {group.label!r}: no generated smoke data for dataset {dataset!r}",
                    f"add a writer for it to SMOKE_DATASETS in calm/tables/smoke.py (have {sorted(SMOKE_DATASETS)})",
                )
            tiny = backbone if backbone.startswith(TINY_PREFIX) else f"{TINY_PREFIX}{backbone}"
            if not (CONFIGS_DIR / "backbone" / f"{tiny}.yaml").is_file():
                raise ConfigError(
                    f"row group {group.label!r}: backbone {backbone!r} has no tiny model for the smoke run",
                    f"add configs/backbone/{tiny}.yaml",
                )
            if dataset == REPLAY_DATASET:
                data = replay_overrides(out_dir, written, spec.groups)
            else:
                if dataset not in written:
                    written[dataset] = SMOKE_DATASETS[dataset](out_dir / SMOKE_DATA / dataset)
                data = [f"dataset.root={written[dataset]}"]
            per_group[group.experiment] = [f"backbone={tiny}", *data, *spec.smoke_overrides, *group.smoke_overrides]
    return per_group


def smoke_tables(specs: Sequence[TableSpec], out_dir: Path) -> tuple[list[TableSpec], list[str], dict[str, list[str]]]:
    """The smoke runs of `specs`: (the specs to build, overrides for every job, per-group overrides)."""
    built, per_group = [], {}
    for spec in specs:
        if spec.name == SMOKE_TABLE:
            per_group.update(smoke_overrides(out_dir, spec)[1])
            built.append(spec)
        else:
            smoke = smoke_spec(spec)
            per_group.update(table_smoke_overrides(smoke, out_dir))
            built.append(smoke)
    return built, job_overrides(out_dir), per_group
