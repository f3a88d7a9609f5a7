"""magnitude: prunes the smallest |w| (Zhu & Gupta, 2017)."""

from lib.pruning._base import MaskPruner


class MagnitudePruner(MaskPruner):
    """Score |w|: the smallest weights go first."""

    def scores(self, name, weight):
        return weight.abs()


PRUNER = MagnitudePruner
