"""none: dense training; every call is a no-op."""


class NoPruner:
    """Pruning method "none": prunes nothing, saves nothing."""

    def __init__(self, model, optimizer, schedule):
        pass

    def step(self, iter_num, observe=True):
        pass

    def current_target(self, iter_num):
        return 0.0

    def state_dict(self):
        return {}

    def load_state_dict(self, state_dict):
        pass


PRUNER = NoPruner
