"""Text zero-shot of an audio-text embedding model (CLAP): each class name, written into the prompt
templates, goes through the text tower; a class's text centroid is the mean of its templates' normalised
embeddings; a query clip gets the class whose centroid has the highest cosine with the clip's cached
audio embedding. No support clip is read. The cosines are the prototype machinery's
(`calm.methods.prototypes`), with the text centroids as the prototypes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from calm.backbones.base import Backbone
from calm.baselines.generation import place_model
from calm.config.builder import build
from calm.errors import ConfigError
from calm.methods.base import Estimator
from calm.methods.prototypes import (
    FeaturesLike,
    LabelsLike,
    check_fitted,
    cosine_similarities,
    l2_normalize,
)

LABEL_FIELD = "{label}"


@dataclass(frozen=True)
class TextZeroShotSettings:
    """The `text_zero_shot` block of the method config: the results row's name and the prompt templates."""

    row: str
    templates: tuple[str, ...]

    def __post_init__(self) -> None:
        templates = self.templates
        if (
            isinstance(templates, str)
            or not isinstance(templates, Sequence)
            or not templates
            or not all(isinstance(t, str) and LABEL_FIELD in t for t in templates)
        ):
            raise ConfigError(
                f"text_zero_shot.templates must be a non-empty list of texts holding {LABEL_FIELD}, got {templates!r}",
                'e.g. templates: ["This is a sound of {label}."]',
            )
        if not isinstance(self.row, str) or not self.row:
            raise ConfigError(
                f"text_zero_shot.row must name the results row, got {self.row!r}", "e.g. row: clap_zero_shot"
            )
        object.__setattr__(self, "templates", tuple(templates))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> TextZeroShotSettings:
        """Settings from the `method.text_zero_shot` block, built by `calm.config.builder.build` (an
        unknown or missing key is a ConfigError naming the accepted ones)."""
        return build(cfg, "method", cls=cls, key="method.text_zero_shot")

    def texts(self, class_name: str) -> list[str]:
        """The template texts of one class; underscores in dataset class names are read as spaces."""
        label = class_name.replace("_", " ")
        return [template.replace(LABEL_FIELD, label) for template in self.templates]


def check_text_tower(backbone: Backbone) -> None:
    """Refuse, before any extraction, a backbone that cannot embed text."""
    if not callable(getattr(backbone, "embed_texts", None)):
        raise ConfigError(
            f"method.text_zero_shot needs a backbone with a text tower; {backbone.name!r} has none",
            "use backbone=clap (or tiny_clap), or a method without text_zero_shot",
        )


def text_centroids(
    backbone: Backbone, class_names: Sequence[str], settings: TextZeroShotSettings, device: torch.device
) -> torch.Tensor:
    """Per class, the mean of its template texts' normalised text embeddings, (C, d) float32 on the CPU;
    loads the model onto `device` if extraction did not."""
    check_text_tower(backbone)
    place_model(backbone, device)
    texts = [text for name in class_names for text in settings.texts(name)]
    embeddings = l2_normalize(backbone.embed_texts(texts).float())
    return embeddings.view(len(class_names), len(settings.templates), -1).mean(dim=1)


class TextPrototypes(Estimator):
    """Nearest text centroid by cosine: `centroids` (C, d) are the prototypes of one episode's classes
    (local label order), the clip features (n, 1, d) its single audio-embedding head. `fit` reads only
    the support set's shape (no label is learnt), so every method's `fit` / `predict` API holds."""

    def __init__(self, centroids: torch.Tensor) -> None:
        self.centroids = centroids

    def fit(
        self, features: FeaturesLike, labels: LabelsLike, *, n_classes: int | None = None, tie_seed: int | None = None
    ) -> TextPrototypes:
        _, _, n_classes = self._support(features, labels, n_classes)
        if self.n_heads_ != 1 or self.centroids.shape != (n_classes, self.head_dim_):
            raise ConfigError(
                f"text zero-shot needs one embedding per clip of size {self.centroids.shape[1]} and "
                f"{self.centroids.shape[0]} classes; got {self.n_heads_} heads of {self.head_dim_} "
                f"and {n_classes} classes",
                "use backbone=clap: its feature is the audio embedding",
            )
        self.prototypes_ = l2_normalize(self.centroids.float())[None]
        return self

    def predict_scores(self, features: FeaturesLike) -> torch.Tensor:
        """Cosines (m, C) of the query audio embeddings with the text centroids."""
        check_fitted(self, "prototypes_")
        query = self._query(features)
        return cosine_similarities(query, self.prototypes_.to(query.device))[0]
