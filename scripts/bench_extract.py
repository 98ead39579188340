"""Speed of the framework's activation extraction against a reference-style loop, on Qwen2-Audio-7B's dimensions.

The model has Qwen2-Audio-7B's real dimensions (real config and model classes) with random
weights, built directly on the device in bf16 (no download, no CPU copy): speed does not depend on
the weight values. In one run, on the same model and the same clips, it times:

* reference: the reference-style loop: one clip at a time, the outer model's forward (LM head
  included), the full 30 s mel input, forward pre-hooks keeping every layer's whole o_proj input
  (sliced at the last token afterwards), `torch.cuda.empty_cache()` after each clip;
* batched: the framework's extraction (`HeadExtractor.predict_step` on the backbone's collated
  batches: left padding, the base model without the LM head, hooks slicing the last token) with
  the audio encoder on the full 30 s input (`encoder_cut=false`);
* batched+cut: the same with the padding-aware encoder (the default, `encoder_cut=true`);
* batched+cut+compile (`--compile`): the same with `backbone.compile_blocks=true`, the language
  model's norms and MLPs compiled with torch.compile (calm.backbones.compiled_blocks).

Batches are planned as `calm.extraction.extract` plans them (longest clips first). Preprocessing (the
processor's log-mel features, on the CPU, in DataLoader workers in the framework) is done before
the timed loops for every path and timed apart. The ratios against the reference, all measured in
this process on the same device, are what to read.

FLOPs actually needed per clip (a multiply-add counts 2; L real mel frames, n = (L-1)//2 + 1
encoder positions, a = (n-2)//2 + 1 audio tokens, t real LM tokens; encoder d, ffn f, E layers,
m mel bins; LM hidden h, H query and K key/value heads of size dh, ffn i, M layers):

    encoder = 2·L·3m·d + 2·n·3d·d + E·(2·n·(4d² + 2d·f) + 4·n²·d) + 2·a·d·h      (convs, layers, projector)
    lm      = M·(2·t·(h·H·dh + 2·h·K·dh + H·dh·h + 3·h·i) + 2·t·(t+1)·H·dh)       (causal attention)

The LM head is not needed and not counted. MFU = needed FLOPs / seconds / the GPU's dense bf16 peak.

    python scripts/bench_extract.py --clip-seconds 5 --clips 256 --batch-size 32 --compile    # on a GPU
    python scripts/bench_extract.py --tiny                                           # CPU smoke test
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import (
    Qwen2AudioConfig,
    Qwen2AudioEncoderConfig,
    Qwen2AudioForConditionalGeneration,
    Qwen2Config,
)

from calm.backbones.hooks import find_layer_modules
from calm.backbones.qwen2_audio import LM_LAYER_PATTERN, Qwen2AudioBackbone
from calm.extraction.plan import plan_batches
from calm.extraction.trainer_pass import HeadExtractor, trimmed_for_capture
from calm.testing.tiny import (
    byte_level_pieces,
    tiny_qwen2_audio_config,
    tiny_qwen2_audio_processor,
)

# Qwen/Qwen2-Audio-7B-Instruct config.json: Whisper-large-v3-sized encoder, Qwen2-7B language model.
QWEN2_AUDIO_7B_AUDIO = dict(
    d_model=1280,
    encoder_layers=32,
    encoder_attention_heads=20,
    encoder_ffn_dim=5120,
    num_mel_bins=128,
    max_source_positions=1500,
)
QWEN2_AUDIO_7B_TEXT = dict(
    hidden_size=4096,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    intermediate_size=11008,
    vocab_size=156032,
    max_position_embeddings=8192,
    rms_norm_eps=1e-5,
    tie_word_embeddings=False,
)
# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, by a substring of torch.cuda.get_device_name().
BF16_PEAKS = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("RTX 4090", 165e12),
)
PROMPT = "What is the sound in this clip? Answer with one word."


def bench_processor() -> Any:
    """The real processor classes with a tokenizer that makes each word of the chat template and
    prompt one token, as Qwen2's real vocabulary does; a bytes-only tokenizer would triple the text
    tokens (123 instead of 41) and time a language model with more work than the real one does."""
    rendered = tiny_qwen2_audio_processor().apply_chat_template(
        [{"role": "user", "content": [{"type": "audio", "audio": "clip"}, {"type": "text", "text": PROMPT}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    plain = re.split(r"<\|[A-Za-z_]+\|>", rendered)
    return tiny_qwen2_audio_processor(words=[piece for text in plain for piece in byte_level_pieces(text)])


def bf16_peak(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    return name, next((peak for key, peak in BF16_PEAKS if key in name), None)


def build_model(
    tiny: bool, device: torch.device, dtype: torch.dtype, processor: Any
) -> Qwen2AudioForConditionalGeneration:
    """Random weights of the real classes, allocated and initialised on `device` (never a CPU copy)."""
    if tiny:
        config = tiny_qwen2_audio_config(processor.tokenizer, seed=0)
    else:
        config = Qwen2AudioConfig(
            audio_config=Qwen2AudioEncoderConfig(**QWEN2_AUDIO_7B_AUDIO),
            text_config=Qwen2Config(**QWEN2_AUDIO_7B_TEXT),
            audio_token_index=processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
        )
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2AudioForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def synthetic_clips(n: int, seconds: float, jitter: float, seed: int = 0) -> list[np.ndarray]:
    """Tone plus noise; lengths uniform in [seconds·(1-jitter), seconds]."""
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        length = int(16000 * seconds * (1.0 - jitter * rng.random()))
        t = np.arange(length) / 16000
        clips.append(
            (0.3 * np.sin(2 * np.pi * (200 + 37 * i) * t) + 0.05 * rng.standard_normal(length)).astype(np.float32)
        )
    return clips


def needed_flops(config: Any, mel_frames: int, tokens: int) -> tuple[float, float]:
    """(encoder, LM) FLOPs one clip needs: encoder on its real mel frames, LM on its real tokens (no LM head)."""
    a, tx = config.audio_config, config.text_config
    d, f, m = a.d_model, a.encoder_ffn_dim, a.num_mel_bins
    n = (mel_frames - 1) // 2 + 1
    audio_tokens = (n - 2) // 2 + 1
    h, heads, kv, i = tx.hidden_size, tx.num_attention_heads, tx.num_key_value_heads, tx.intermediate_size
    dh = getattr(tx, "head_dim", None) or h // heads
    encoder = (
        2 * mel_frames * 3 * m * d
        + 2 * n * 3 * d * d
        + a.encoder_layers * (2 * n * (4 * d * d + 2 * d * f) + 4 * n * n * d)
        + 2 * audio_tokens * d * h
    )
    t = tokens
    lm = tx.num_hidden_layers * (
        2 * t * (h * heads * dh + 2 * h * kv * dh + heads * dh * h + 3 * h * i) + 2 * t * (t + 1) * heads * dh
    )
    return float(encoder), float(lm)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class WholeSequenceHooks:
    """The reference's hooks: every layer's whole o_proj input kept, sliced at the last token afterwards."""

    def __init__(self, model: torch.nn.Module, pattern: str) -> None:
        self.modules = find_layer_modules(model, pattern)
        self.kept: dict[str, torch.Tensor] = {}

    def __enter__(self) -> WholeSequenceHooks:
        self.kept = {}

        def keep(path: str):
            return lambda _module, args: self.kept.__setitem__(path, args[0].detach())

        self.handles = [module.register_forward_pre_hook(keep(path)) for path, module in self.modules]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()

    def last_token(self) -> torch.Tensor:
        return torch.cat([self.kept[path][:, -1].float() for path, _ in self.modules], dim=-1)


def run_reference(
    model: torch.nn.Module, inputs: list[dict[str, torch.Tensor]], device: torch.device, heads: int, head_dim: int
) -> torch.Tensor:
    rows = []
    hooks = WholeSequenceHooks(model, LM_LAYER_PATTERN.format(layers=r"\d+"))
    with torch.no_grad():
        for one in inputs:
            with hooks:
                model(**{k: v.to(device) for k, v in one.items()}, use_cache=False)
            rows.append(hooks.last_token().reshape(1, -1, head_dim).cpu())
            hooks.kept = {}
            if device.type == "cuda":
                torch.cuda.empty_cache()
    out = torch.cat(rows)
    assert out.shape[1] == heads
    return out


def run_framework(
    extractor: HeadExtractor, batches: list[tuple[list[int], dict[str, torch.Tensor]]], n: int
) -> torch.Tensor:
    rows = torch.empty(0)
    for index, (ids, inputs) in enumerate(batches):
        batch = trimmed_for_capture(
            extractor.backbone, {"ids": ids, "errors": {}, "inputs": inputs}
        )  # as ClipBatches does
        out = extractor.predict_step(batch, index)["rows"]
        if rows.numel() == 0:
            rows = torch.empty(n, *out.shape[1:], dtype=out.dtype)
        rows[ids] = out
    return rows


def timed(fn: Any, device: torch.device) -> tuple[Any, float, int | None]:
    """(result, seconds, peak device bytes) of one call."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return result, seconds, peak


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny random model on the CPU in fp32 (smoke test)")
    parser.add_argument("--clip-seconds", type=float, default=5.0, help="clip length (5 or 10 in the issue)")
    parser.add_argument("--clips", type=int, default=None, help="clips per path (default 256; --tiny 6)")
    parser.add_argument("--batch-size", type=int, default=None, help="framework batch size (default 32; --tiny 3)")
    parser.add_argument("--jitter", type=float, default=0.0, help="clip lengths uniform in [s·(1-jitter), s]")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed passes per path, round-robin, median (default 1; --tiny 3)"
    )
    parser.add_argument(
        "--dtype", choices=("auto", "fp32", "bf16"), default="auto", help="auto: bf16 on a GPU, fp32 on the CPU"
    )
    parser.add_argument("--skip-uncut", action="store_true", help="do not time batching without the encoder cut")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time backbone.compile_blocks=true "
        "(torch.compile of the norms and MLPs between hooks), after the eager paths",
    )
    args = parser.parse_args(argv)
    n = args.clips or (6 if args.tiny else 256)
    batch_size = args.batch_size or (3 if args.tiny else 32)
    repeats = args.repeats or (3 if args.tiny else 1)
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    auto = torch.float32 if device.type == "cpu" else torch.bfloat16
    dtype = {"auto": auto, "fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    precision = "32-true" if dtype == torch.float32 else "bf16-true"

    processor = bench_processor()
    model = build_model(args.tiny, device, dtype, processor)
    params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as folder:  # config + processor files only: the backbone reads no weights
        model.config.save_pretrained(folder)
        processor.save_pretrained(folder)
        settings = {"name": "bench", "hub_id": "bench/qwen2-audio", "path": folder, "assets_name": None}
        backbones = {cut: Qwen2AudioBackbone(**settings, precision=precision, encoder_cut=cut) for cut in (True, False)}
        compiled = Qwen2AudioBackbone(**settings, precision=precision, encoder_cut=True, compile_blocks=True)
        for each in (*backbones.values(), compiled):
            each.processor  # noqa: B018 - read the processor files while the folder exists
            each.config  # noqa: B018
        for each in backbones.values():
            each.attach(model)
    backbone = backbones[True]

    clips = synthetic_clips(n, args.clip_seconds, args.jitter)
    durations = {str(i): len(c) / 16000 for i, c in enumerate(clips)}
    plan = [[int(i) for i in ids] for ids in plan_batches(list(durations), durations, batch_size)]
    start = time.perf_counter()
    batches = [(ids, backbone.collate([clips[i] for i in ids], [PROMPT] * len(ids))) for ids in plan]
    collate_seconds = time.perf_counter() - start
    rendered = backbone.render_prompt(PROMPT)
    singles = [
        {k: v for k, v in processor(text=[rendered], audio=[c], sampling_rate=16000, return_tensors="pt").items()}
        for c in clips
    ]
    mel = [int(s["feature_attention_mask"].sum()) for s in singles]
    tokens = [int(s["attention_mask"].sum()) for s in singles]
    flops = [needed_flops(model.config, frames, t) for frames, t in zip(mel, tokens, strict=True)]
    total_flops = sum(e + lm for e, lm in flops)

    extractors = {cut: HeadExtractor(backbones[cut], model).to(device) for cut in (True, False)}
    heads, head_dim = backbone.n_heads, backbone.head_dim
    paths = {
        "reference": lambda: run_reference(model, singles, device, heads, head_dim),
        "batched": lambda: run_framework(extractors[False], batches, n),
        "batched+cut": lambda: run_framework(extractors[True], batches, n),
    }
    if args.skip_uncut:
        del paths["batched"]
    # Warm-up on one batch / one clip each (kernel selection, allocator), then one timed pass each.
    run_reference(model, singles[:1], device, heads, head_dim)
    for cut in (True, False):
        run_framework(extractors[cut], batches[:1], n)
    runs: dict[str, list[tuple[Any, float, int | None]]] = {name: [] for name in paths}
    for _ in range(repeats):  # round-robin, so machine load hits every path alike
        for name, fn in paths.items():
            runs[name].append(timed(fn, device))
    if args.compile:  # last: compiling changes the shared model in place
        extractor = HeadExtractor(compiled, compiled.attach(model)).to(device)
        started = time.perf_counter()
        for warm in {0, len(batches) - 1}:  # compiles for the first shape, then once more for dynamic shapes
            run_framework(extractor, batches[warm : warm + 1], n)
        print(f"compiling the hook-free blocks (warm-up, not timed below): {time.perf_counter() - started:.0f} s")
        runs["batched+cut+compile"] = [
            timed(lambda: run_framework(extractor, batches, n), device) for _ in range(repeats)
        ]
    measured = {
        name: (
            got[-1][0],
            float(np.median([s for _, s, _ in got])),
            None if got[0][2] is None else max(p for _, _, p in got),
        )
        for name, got in runs.items()
    }

    device_name, peak = bf16_peak(device)
    reference_rows = measured["reference"][0]
    scale = float(reference_rows.abs().max())
    size = f"{params / 1e9:.2f} B" if params > 1e8 else f"{params / 1e6:.2f} M"
    print(
        f"model: Qwen2-Audio{' (tiny)' if args.tiny else '-7B'} dimensions, random weights, {size} "
        f"parameters, {str(dtype).removeprefix('torch.')}, sdpa, on {device_name}"
    )
    print(
        f"clips: {n} of {args.clip_seconds:g} s (jitter {args.jitter:g}), mean {np.mean(mel):.0f} real mel frames, "
        f"{np.mean(tokens):.0f} LM tokens; framework batch size {batch_size}, {len(batches)} batches, longest first"
    )
    print(
        f"needed work: {total_flops / n / 1e12:.3f} TFLOP per clip "
        f"(encoder {sum(e for e, _ in flops) / n / 1e12:.3f}, LM {sum(lm for _, lm in flops) / n / 1e12:.3f}); "
        f"bf16 peak {'n/a' if peak is None else f'{peak / 1e12:.0f} TFLOP/s'}"
    )
    print(
        f"preprocessing (CPU, one process, not timed below): {n / collate_seconds:.1f} clips/s; "
        f"median of {repeats} timed pass(es) per path after one warm-up"
    )
    print(f"{'path':20} {'clips/s':>9} {'vs ref':>7} {'peak mem':>10} {'MFU':>7}  max|diff| vs reference (rel.)")
    results: dict[str, Any] = {
        "paths": {},
        "device": device_name,
        "parameters": params,
        "flops_per_clip": total_flops / n,
        "clips": n,
        "batch_size": batch_size,
    }
    base_rate = n / measured["reference"][1]
    for name, (rows, seconds, peak_bytes) in measured.items():
        rate = n / seconds
        mfu = total_flops / seconds / peak if peak else None
        diff = float((rows.float() - reference_rows).abs().max())
        results["paths"][name] = dict(
            clips_per_s=rate,
            seconds=seconds,
            ratio=rate / base_rate,
            peak_bytes=peak_bytes,
            mfu=mfu,
            max_abs_diff=diff,
            rel_diff=diff / max(scale, 1e-12),
            rows=rows,
        )
        memory = "n/a" if peak_bytes is None else f"{peak_bytes / 2**30:.1f} GiB"
        print(
            f"{name:20} {rate:9.2f} {rate / base_rate:6.2f}x {memory:>10} "
            f"{'n/a' if mfu is None else f'{100 * mfu:.1f}%':>7}  {diff:.2e} ({diff / max(scale, 1e-12):.1e})"
        )
    best = results["paths"]["batched+cut"]
    print(
        f"ratio batched+cut / reference: {best['ratio']:.2f}x "
        "(targets on a GPU: >= 7x with 5 s clips, >= 3.5x with 10 s; MFU >= 55%)"
    )
    if "batched+cut+compile" in results["paths"]:
        print(f"ratio batched+cut+compile / reference: {results['paths']['batched+cut+compile']['ratio']:.2f}x")
    if "batched" in results["paths"]:
        uncut = results["paths"]["batched"]["rows"]
        same = torch.equal(uncut, best["rows"])
        cut_diff = float((uncut.float() - best["rows"].float()).abs().max())
        results["cut_identical"], results["cut_max_diff"] = same, cut_diff
        print(
            f"encoder cut vs full 30 s input: {'bit-identical' if same else f'max |diff| {cut_diff:.2e}'} "
            "(rows as cached, fp16)"
        )
    return results


if __name__ == "__main__":
    main()
