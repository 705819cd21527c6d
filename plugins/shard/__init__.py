"""``shard://?child=URL&weight=3&child=URL&weight=7``: child stores with weights (Querator's
partition stores with affinity weights).

Each key lives on one child, chosen by weighted rendezvous hashing over the children's ids (see
:mod:`kvctl_plugins.shard.placement`): shares follow the weights with nothing dropped, and a
weight change moves only the keys whose owner changed.  Children are given in order, each
``child=`` followed by its optional ``weight=`` (default 1) and ``name=`` (its id; default: the
profile name, else the child's URL redacted); child URLs are percent-encoded, and a child without
``:`` is a profile name from the config file (see :mod:`kvctl_plugins.shard.spec`).  A profile
whose ``url`` is a shard URL defines a shard in the config file::

    [profiles.queues]
    url = "shard://?child=badger-01&weight=3&child=postgres-01&weight=7"

Reads go to the owner; with ``fallback=true`` (the default) a key its owner lacks is looked for
on the other children too, so keys stay visible between a weight change and the rebalance.
Writes go to the owner; deletes remove every copy.  Scans merge the children in key order when
all of them scan in order (a key held twice shows once), else chain them.  ``stats`` shows each
child's share of the keys beside its share of the weight, and how many keys are misplaced.

After changing weights, ``ShardStore.rebalance()`` moves exactly the keys whose owner changed
(copy, then delete; newer copies win).  ``kvctl migrate OLD_SHARD_URL NEW_SHARD_URL`` would copy
every key instead and leave the old copies behind, so it is not the tool for a rebalance.
The store's capabilities are those all children share.
"""

from .store import RebalanceReport, ShardStore

__all__ = ["RebalanceReport", "ShardStore"]
