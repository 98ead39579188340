"""One switch for the authors' behaviours: `protocol.authors_modes` (true under protocol=paper, false
under the clean defaults). Each behaviour keeps its own config key, whose default is written
`${calm.authors:AUTHORS_VALUE,CLEAN_VALUE}`; setting the key directly overrides the switch for that one
behaviour (docs/fidelity.md lists them)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

AUTHORS_RESOLVER = "calm.authors"
SWITCH = "protocol.authors_modes"


def authors_value(authors: Any, clean: Any, *, _root_: DictConfig) -> Any:
    """`authors` when the composed config's `protocol.authors_modes` is true, else `clean` (also when the
    config has no protocol, e.g. an estimator YAML composed on its own)."""
    switch = OmegaConf.select(_root_, SWITCH, default=False)
    if not isinstance(switch, bool):
        raise ValueError(f"{SWITCH} must be true or false, got {switch!r}")
    return authors if switch else clean


def register_authors_resolver() -> None:
    """Make `${calm.authors:a,b}` resolvable in this process (idempotent)."""
    if not OmegaConf.has_resolver(AUTHORS_RESOLVER):
        OmegaConf.register_new_resolver(AUTHORS_RESOLVER, authors_value)


register_authors_resolver()
