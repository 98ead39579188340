"""The authors' manifests, small, for the paper table's smoke run: every file a replay group names
(configs/experiment/replay_*.yaml), written in their schema (calm.tables.manifest_schema) over the clips
the smoke run generates in each dataset's official layout (calm.tables.smoke), with their cluster's
absolute paths, so the replay groups read them exactly as they would read the real SAVs/data.

The files keep the real ones' relations at toy size: ESC-50's test file is the union of its val and
test-split files, the 40-shot files repeat a clip under another option order and hold a test clip (so the
rows are marked and the notes give the measured share), the pseudo-labelled files carry one wrong label
and the votes behind each, VGGSound has a val file of its own and one cleaned support file per seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from calm.tables.manifest_schema import audioset, mcq, pseudo, spoof, write

ESC_PATH = "/data/sls/scratch/mvideet/datasets/ESC-50-master/audio_16k/"
VGG_AUDIO = "/data/sls/scratch/yuangong/avbyol2/egs/vggsound/preprocess/data/audio_16k/"
VGG_VIDEO = "/data/sls/placesaudio/datasets/VGGSound/video/"
AUDIOSET_PATH = "/data/sls/scratch/mvideet/datasets/audioset/audio/"
LA_PATH = "/data/sls/scratch/mvideet/datasets/LA/ASVspoof2019_LA_{split}/flac/"


def rotated(classes: Sequence[str], shift: int) -> list[str]:
    """The classes as options, in an order that moves with `shift` (their files vary the option order)."""
    return [classes[(i + shift) % len(classes)] for i in range(len(classes))]


def write_esc50_manifests(folder: Path, classes: Sequence[str], files: dict[str, list[str]]) -> None:
    """esc/: `files` maps each class to its clip names (index 0 and 5 in fold 1, the rest in folds 2-5)."""

    def entry(name: str, label: str, shift: int = 0) -> dict:
        return mcq(ESC_PATH + name, label, rotated(classes, shift), code=f"/m/esc{classes.index(label):02d}")

    val = [entry(clips[0], c) for c, clips in files.items()]
    test_split = [entry(clips[5], c, 1) for c, clips in files.items()]
    forty = [
        e
        for c, clips in files.items()
        for e in (entry(clips[3], c), entry(clips[3], c, 2), entry(clips[0], c, 1), entry(clips[5], c, 2))
    ]
    write(folder / "esc" / "esc_mcq_train.json", [entry(clips[k], c) for c, clips in files.items() for k in (1, 2)])
    write(folder / "esc" / "esc_mcq_val.json", val)
    write(folder / "esc" / "esc_mcq_test_split.json", test_split)
    write(folder / "esc" / "esc_mcq_test.json", val + test_split)
    write(folder / "esc" / "esc50_mcq_40shot_train.json", forty)
    wrong = classes[1]
    labelled = [
        pseudo(
            e,
            wrong if i == 0 else e["mapped_label"],
            [wrong if i == 0 else e["mapped_label"]] * 5 + ["", "a sound", e["mapped_label"].upper()],
        )
        for i, e in enumerate(forty)
    ]
    write(folder / "esc" / "pseudolabeled_esc_40shot_mcq_qwen2.5_8trials.json", labelled)


def write_vggsound_manifests(folder: Path, stems: dict[str, list[str]], seeds: Sequence[int]) -> None:
    """vggsound/: `stems` maps each class to its six clip stems (0-3 in the train split, 4-5 in test); one
    cleaned support file per seed, each a different pair of train clips."""
    classes = list(stems)

    def entry(stem: str, label: str, shift: int = 0, video: bool = False) -> dict:
        return mcq(
            VGG_AUDIO + f"{stem}.flac",
            label,
            rotated(classes, shift),
            code=f"vgg_{classes.index(label)}",
            video=VGG_VIDEO + f"{stem}.mp4" if video else None,
        )

    def part(indices: Sequence[int], video: bool = False) -> list[dict]:
        return [entry(s[k], c, k, video) for c, s in stems.items() for k in indices]

    write(folder / "vggsound" / "vggsound_mcq_train_20shot.json", part((0, 1)))
    write(folder / "vggsound" / "vggsound_mcq_train_40shot.json", part((0, 1, 2)))
    write(folder / "vggsound" / "vggsound_mcq_val.json", part((3,)))
    write(folder / "vggsound" / "vggsound_mcq_test.json", part((4, 5)))
    write(folder / "vggsound" / "vggsound_mcq_test_split.json", part((4,)))
    for n, seed in enumerate(seeds):
        write(folder / "vggsound" / f"vggsound_train_cleaned_{seed}.json", part((n % 3, (n + 1) % 3)))
    write(folder / "vggsound" / "vgg_video_train.json", part((0, 1), video=True))
    write(folder / "vggsound" / "vgg_video_test.json", part((4, 5), video=True))


def write_audioset_manifests(
    folder: Path,
    train: Sequence[tuple[str, Sequence[str]]],
    evaluation: Sequence[tuple[str, Sequence[str]]],
    names: Sequence[str],
) -> None:
    """audioset/: one question per positive label; the training file pseudo-labelled (confidence only, as
    theirs), the test file with the answer in `correct_label`."""

    def questions(clips: Sequence[tuple[str, Sequence[str]]], test: bool, offset: int) -> list[dict]:
        entries = []
        for n, (clip, labels) in enumerate(clips):
            others = [[o for o in names if o != label] for label in labels]
            entries += audioset(AUDIOSET_PATH + clip, labels, offset + n, others, test)
        return entries

    pseudo_labelled = [{**e, "pseudo_label_confidence": 0.875} for e in questions(train, False, 0)]
    write(folder / "audioset" / "pseudolabeled_audioset_qwen2-audio-instruct_train_8trials.json", pseudo_labelled)
    write(folder / "audioset" / "audioset_test_individual_mcqs.json", questions(evaluation, True, len(train)))


def write_asvspoof_manifests(
    folder: Path, train: Sequence[tuple[str, str]], evaluation: Sequence[tuple[str, str]]
) -> None:
    """LA_AvSpoof/: (utterance id, class) per entry, no options (the question lists both classes)."""
    for name, split, rows in (("LA_train.json", "train", train), ("LA_eval.json", "eval", evaluation)):
        write(folder / "LA_AvSpoof" / name, [spoof(LA_PATH.format(split=split) + f"{u}.flac", c) for u, c in rows])
