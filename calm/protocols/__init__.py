"""Evaluation protocols: which clips form the support and query sets (docs/design/protocols.md).

``Pools`` holds one clip table's labels and support/query masks, checked once; a ``Protocol``
(``EpisodicProtocol``: N-way K-shot episodes; ``PaperProtocol``: the paper's fixed split) turns
pools into ``Episode`` objects of row indices, never features, so it is validated and run before
any model loads. Protocols are built from the ``protocol`` config group by ``_target_``.
"""

from calm.protocols.base import Protocol
from calm.protocols.episodes import Episode, derive_seed, multilabel_targets
from calm.protocols.episodic import EpisodicProtocol
from calm.protocols.paper import PaperProtocol
from calm.protocols.pools import MultiLabelPools, Pools
from calm.protocols.row_marks import shared_file_marks, support_marks

__all__ = [
    "Episode",
    "EpisodicProtocol",
    "MultiLabelPools",
    "PaperProtocol",
    "Pools",
    "Protocol",
    "derive_seed",
    "multilabel_targets",
    "shared_file_marks",
    "support_marks",
]
