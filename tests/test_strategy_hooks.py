"""roost's own extension point: a FedAvg subclass that samples clients by a score it learns across
rounds (the example of docs/how-to/strategy.md), its state in the checkpoint tree, resumed bit
for bit."""

from __future__ import annotations

import numpy as np

import roost
from roost.core.types import FitIns, FitRes

NUM_CLIENTS = 6
FITS: list[tuple[int, int]] = []
"""(round, client) of every fit of the last run (the sequential engine runs them here)."""


class ScoreSampler(roost.FedAvg):
    """Samples clients in proportion to a score: the running mean of the loss each reported."""

    def init_own_state(self, parameters):
        return {"scores": {}}  # client id -> score; grows as clients take part

    def configure_fit(self, server_round, parameters, client_ids, rng, state):
        scores = state["own"]["scores"]
        weights = np.array([scores.get(str(c), 1.0) for c in client_ids])
        count = min(self.num_fit_clients(len(client_ids)), len(client_ids))
        chosen = rng.choice(len(client_ids), count, replace=False, p=weights / weights.sum())
        extra = self.on_fit_config_fn(server_round) if self.on_fit_config_fn else {}
        instruction = FitIns(parameters, {**self.fit_config_defaults, **extra})
        return [(client_ids[i], instruction) for i in sorted(chosen)], state

    def aggregate_fit(self, server_round, parameters, outcomes, state):
        scores = dict(state["own"]["scores"])

        def scored(outcomes):  # looks at each result as it streams past
            for client_id, result in outcomes:
                if isinstance(result, FitRes):
                    old = scores.get(str(client_id), 1.0)
                    scores[str(client_id)] = 0.5 * old + 0.5 * result.metrics["loss"]
                yield client_id, result

        fitted = super().aggregate_fit(server_round, parameters, scored(outcomes), state)
        return fitted._replace(state={**fitted.state, "own": {"scores": scores}})


class Noisy(roost.Client):
    """Client k reports loss k + 1: the sampler should come to favour the high ids."""

    def __init__(self, k: int) -> None:
        self.k = k

    def get_parameters(self, config):
        return [np.zeros(2)]

    def fit(self, parameters, config):
        FITS.append((int(config["server_round"]), self.k))
        return [parameters[0] + self.k], 10, {"loss": float(self.k + 1)}

    def evaluate(self, parameters, config):
        return 0.0, 10, {}


def run(rounds: int, **options):
    strategy = ScoreSampler(
        fraction_fit=0.5,
        min_fit_clients=2,
        min_available_clients=NUM_CLIENTS,
        fraction_evaluate=0.0,
        initial_parameters=[np.zeros(2)],
        on_fit_config_fn=lambda server_round: {"server_round": server_round},
    )
    FITS.clear()
    states = []
    history = roost.run_simulation(
        lambda context: Noisy(context.partition_id),
        NUM_CLIENTS,
        strategy=strategy,
        config=roost.ServerConfig(num_rounds=rounds),
        seed=1,
        on_round_end=lambda state: states.append(state.strategy_state["own"]),
        **options,
    )
    return history, states


def test_the_strategy_learns_scores_and_samples_by_them() -> None:
    history, states = run(12)
    scores = states[-1]["scores"]
    assert set(scores) <= {str(k) for k in range(NUM_CLIENTS)} and len(scores) >= 4
    for client_id, score in scores.items():  # a running mean of 1.0 and losses k + 1
        assert 1.0 <= score <= int(client_id) + 1
    assert [record.fit_results for record in history.rounds] == [3] * 12
    # Clients with higher losses are sampled more: after the first round, the high half (scores
    # near 4, 5, 6) is picked far more often than the low half (near 1, 2, 3).
    later = [k for server_round, k in FITS if server_round > 1]
    assert sum(k >= 3 for k in later) > 1.5 * sum(k < 3 for k in later)


def test_its_own_state_is_checkpointed_and_resumed_bit_for_bit(tmp_path) -> None:
    whole, whole_states = run(5)
    run(3, state_dir=tmp_path)
    resumed, resumed_states = run(5, state_dir=tmp_path, resume=True)
    assert resumed.parameters[0].tobytes() == whole.parameters[0].tobytes()
    assert resumed_states[-1] == whole_states[-1]  # the learned scores, float for float


def test_a_strategy_without_state_of_its_own_keeps_its_tree() -> None:
    tree = roost.FedAvg().init([np.zeros(1)])
    assert "own" not in tree
    assert ScoreSampler().init([np.zeros(1)])["own"] == {"scores": {}}
