"""The protocol extension point: what every evaluation protocol provides."""

from __future__ import annotations

from abc import ABC, abstractmethod

from calm.protocols.episodes import Episode
from calm.protocols.pools import Pools


class Protocol(ABC):
    """Which clips of a table form the support and query sets of each episode.

    A protocol is one file of the ``protocol`` config group naming its class by ``_target_``
    (``configs/protocol/<name>.yaml``) and is built by ``hydra.utils.instantiate(cfg.protocol)``,
    so a new protocol is a subclass and a yaml file, with no code naming it elsewhere. It sees only
    the table's pools (labels and masks), never features, so ``validate`` runs before any model
    loads and raises ``ProtocolError`` with a fix; ``episodes`` validates, then draws.
    """

    name: str
    n_episodes: int

    @abstractmethod
    def validate(self, pools: Pools) -> None:
        """Raise ``ProtocolError`` if these settings cannot be met by these pools."""

    @abstractmethod
    def episodes(self, pools: Pools) -> list[Episode]:
        """Validate, then draw every episode."""

    @abstractmethod
    def reported_queries(self, episodes: list[Episode]) -> int:
        """The `queries` a results row reports: per class for episodes, the test-set size for a split."""
