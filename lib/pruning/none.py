"""none: dense training; every call is a no-op."""


class NoPruner:
    """Pruning method "none": prunes nothing, saves nothing."""

    def __init__(self, model, optimizer, schedule):
        self.weights = {}  # nothing is pruned (lib/pruning/_masks.py reads this)

    def step(self, iter_num, observe=True):
        return False

    def current_target(self, iter_num):
        return 0.0

    def state_dict(self):
        return {}

    def load_state_dict(self, state_dict):
        pass


PRUNER = NoPruner
