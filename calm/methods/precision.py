"""The authors' post-backbone arithmetic in the backbone's dtype (`evaluate.dtype=model`).

Their runner kept the class prototypes, the normalised query activations, the cosines, the division
by tau and the softmax in the model's dtype (bf16 for Qwen2.5-Omni, fp16 for Qwen2-Audio), and cast
the per-head posteriors to float32 only after the softmax; reliabilities, weights and scores were
float32. Here, in that order:

1. prototypes: each class's support rows summed one at a time in support order (`+=` in the dtype,
   rounding after every addition), divided by the class count in the dtype, then L2-normalised in
   the dtype (x / max(‖x‖, 1e-8));
2. each clip's head vectors L2-normalised in the dtype;
3. cosines as one batched product in the dtype, divided by tau in the dtype, softmax over classes
   in the dtype, then cast to float32.

float32 (the default) never comes here: the estimators keep their float32 code path, bit for bit.
"""

from __future__ import annotations

import torch

from calm.errors import ConfigError
from calm.methods.prototypes import NORM_FLOOR

ARITHMETIC_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_arithmetic_dtype(name: str) -> None:
    if name not in ARITHMETIC_DTYPES:
        raise ConfigError(
            f"unknown arithmetic_dtype {name!r}",
            f"use one of {', '.join(ARITHMETIC_DTYPES)} (evaluate.dtype=model picks the backbone's)",
        )


def arithmetic_dtype(name: str) -> torch.dtype:
    """The torch dtype of an `arithmetic_dtype` name."""
    check_arithmetic_dtype(name)
    return ARITHMETIC_DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """The `arithmetic_dtype` name of a torch dtype (a backbone's activation dtype)."""
    names = {value: key for key, value in ARITHMETIC_DTYPES.items()}
    if dtype not in names:
        raise ConfigError(f"no arithmetic_dtype for {dtype}", f"use one of {', '.join(ARITHMETIC_DTYPES)}")
    return names[dtype]


def normalize_in(x: torch.Tensor) -> torch.Tensor:
    """x / max(‖x‖, 1e-8) along the last axis, every step in x's dtype."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(NORM_FLOOR)


def low_precision_prototypes(
    features: torch.Tensor, labels: torch.Tensor, n_classes: int, dtype: torch.dtype
) -> torch.Tensor:
    """Normalised class prototypes (K, C, d) in `dtype`: step 1 of the module docstring.

    The t-th support row of every class is added in step t (classes at once), so each class's sum
    rounds after every addition in support order, as a running `+=` does.
    """
    rows = features.to(dtype)
    n, n_heads, head_dim = rows.shape
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    counts = torch.bincount(labels, minlength=n_classes)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.arange(n, device=labels.device) - starts[sorted_labels]
    sums = torch.zeros(n_classes, n_heads, head_dim, dtype=dtype, device=rows.device)
    for step in range(int(counts.max())):
        picked = order[position == step]
        classes = labels[picked]
        sums[classes] = sums[classes] + rows[picked]
    # a division by an int, as torch does it for a low-precision tensor: in float32, rounded once
    means = (sums.float() / counts.clamp_min(1).to(rows.device, torch.float32)[:, None, None]).to(dtype)
    return normalize_in(means).transpose(0, 1).contiguous()


def low_precision_cosines(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Cosines (K, m, C) in the prototypes' dtype: the clips' head vectors normalised in that dtype,
    then one batched product with the normalised prototypes (step 2 and the product of step 3)."""
    queries = normalize_in(features.to(prototypes.dtype))
    return torch.bmm(prototypes, queries.permute(1, 2, 0)).transpose(1, 2)


def low_precision_softmax(cosines: torch.Tensor, tau: float) -> torch.Tensor:
    """softmax_c(cosines / tau) in the cosines' dtype, then cast to float32 (the rest of step 3)."""
    return torch.softmax(cosines / float(tau), dim=-1).to(torch.float32)


def low_precision_posteriors(features: torch.Tensor, prototypes: torch.Tensor, tau: float) -> torch.Tensor:
    """Per-head posteriors (K, m, C) as float32, computed in the prototypes' dtype: steps 2 and 3."""
    return low_precision_softmax(low_precision_cosines(features, prototypes), tau)
