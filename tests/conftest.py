"""Shared test fixtures, and the fast subset (`-m "not slow"`) for everyday work."""

from __future__ import annotations

import logging
import os
import sys

# Cache bytecode as Python does by default, even where the environment sets
# PYTHONDONTWRITEBYTECODE: without it every pytest worker rewrites and compiles every test module
# (about 5 s of collection) and every process a test starts (servers, clients, pool workers, Ray
# actors) compiles roost again. The caches go to __pycache__/, which git ignores.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

# One math thread per process, set before NumPy, torch or TensorFlow load (and inherited by every
# process a test starts): the suite runs two pytest workers on two cores, and tiny models whose
# libraries each start a thread per core spend most of their time waiting for each other (the
# torch digits test: 32 s with the default threads on a busy machine, 3.5 s with one).
for _variable in (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
):
    os.environ.setdefault(_variable, "1")

import pytest  # noqa: E402

# Tests that took about two seconds or more (measured with --durations on two workers, on a
# loaded two-core machine) are marked slow here, in one place, so `pytest -m "not slow"` stays
# under a minute; CI runs everything. A test file may also mark its own tests slow.
SLOW_TESTS: dict[str, tuple[str, ...]] = {
    "test_attacks.py": ("test_fedavg_collapses_while_robust_aggregators_hold",),
    "test_compat.py": (
        "test_roost_engines_are_available_through_run_simulation",
        "test_an_older_form_client_keeps_its_flower_state_across_rounds[process]",
    ),
    "test_engines.py": (
        "test_chunks_give_the_same_model_as_one_batch",
        "test_convolutions_give_the_sequential_model_batched_or_one_by_one",
        "test_fit_metrics_match_between_engines",
        "test_process_engine_gives_the_sequential_model_for_any_client_fn",
        "test_process_engine_runs_a_task_like_the_sequential_engine",
        "test_process_engine_says_client_fn_must_be_picklable",
        "test_process_pool_replaces_hung_and_dead_workers",
        "test_process_pool_reuses_its_workers_and_computes_fedavg",
        "test_vectorized_equals_sequential[full-adam]",
        "test_vectorized_equals_sequential[full-fedprox]",
        "test_vectorized_equals_sequential[full-momentum]",
        "test_vectorized_equals_sequential[full-sgd]",
        "test_vectorized_equals_sequential[partial-adam]",
        "test_vectorized_equals_sequential[partial-fedprox]",
        "test_vectorized_equals_sequential[partial-momentum]",
        "test_vectorized_equals_sequential[partial-sgd]",
    ),
    "test_engines_cli.py": (
        "test_an_engine_asked_for_is_named_on_the_first_line",
        "test_default_engine_is_the_fastest_deterministic_and_accurate",
        "test_every_engine_trains_the_same_demo_model",
        "test_without_torch_the_demo_falls_back_with_a_one_line_notice",
    ),
    "test_engines_phases.py": (
        "test_a_new_exchange_abandons_what_is_left_of_the_last_one",
        "test_fit_evaluate_evaluate_fit_with_the_same_clients[process]",
    ),
    "test_engines_registry.py": ("test_every_client_gets_its_partitions_context[process]",),
    "test_flower_apps.py": (
        "test_numpy_app_simulates_with_its_project_settings",
        "test_torch_app_with_a_state_dict_in_simulation_and_over_grpc",
    ),
    "test_grpc_uploads.py": ("test_clients_waiting_for_a_slot_send_no_chunk_until_granted",),
    "test_grpc_transport.py": (
        "test_a_long_fit_outlives_many_keepalive_pings",
        "test_tls_serves_clients_that_trust_its_certificate",
    ),
    "test_grpc_churn.py": (
        "test_200_clients_40_leave_mid_round_and_every_later_round_has_all_the_rest",
        "test_hostile_clients_with_valid_tokens_cannot_stop_the_run_or_change_the_model",
    ),
    "test_keras.py": ("test_keras_adapter_on_torch_backend",),
    "test_notebook.py": ("test_tutorial_notebook_runs_end_to_end",),
    "test_package.py": (
        "test_import_roost_imports_no_ml_framework",
        "test_nothing_below_the_apps_imports_them",
    ),
    "test_phases.py": ("test_the_process_engine_runs_the_same_phases_to_the_same_model",),
    "test_plot.py": (
        "test_roost_plot_command",
        "test_save_run_writes_csv_and_plot_beside_json_and_model",
        "test_simulate_config_file_with_flags_overriding_it",
        "test_the_same_history_gives_the_same_png",
    ),
    "test_privacy_accounting.py": (
        "test_local_epsilon_is_the_gaussian_mechanism_of_dp_accounting",
        "test_noise_multiplier_for_a_target_is_the_smallest_that_meets_it",
        "test_poisson_epsilon_is_dp_accountings_pld[0.01-1.0-20]",
        "test_the_planning_command_reports_epsilon_and_noise",
    ),
    "test_privacy_central.py": ("test_an_empty_poisson_cohort_passes_without_stopping_the_run",),
    "test_privacy_cli.py": (
        "test_a_central_dp_run_reports_epsilon_in_every_output",
        "test_a_local_dp_run_reports_each_clients_epsilon",
        "test_a_run_without_dp_writes_no_privacy_at_all",
        "test_roost_privacy_noise_reaches_the_target_by_dp_accounting",
        "test_target_epsilon_stops_the_run_with_one_line_and_outputs",
    ),
    "test_privacy_local.py": (
        "test_local_noise_multiplier_for_is_the_least_sigma_within_the_target",
        "test_the_per_round_epsilon_is_the_gaussian_mechanisms",
        "test_the_servers_local_dp_accountant_records_each_clients_epsilon",
    ),
    "test_secagg_cli.py": (
        "test_secagg_composes_with_central_dp_on_the_command_line",
        "test_simulate_secagg_gives_the_plaintext_model_within_the_quantization_bound",
    ),
    "test_secagg_protocol.py": (
        "test_thirty_percent_dropouts_leave_exactly_the_survivors_sum[Phase.UNMASK-50-complete]",
    ),
    "test_secure_rounds.py": (
        "test_the_process_engine_carries_each_clients_round_secrets_between_phases",
    ),
    "test_simulate_cli.py": (
        "test_a_different_seed_gives_a_different_run",
        "test_demo_reaches_accuracy_and_is_byte_identical_by_seed",
        "test_simulate_runs_your_app",
    ),
    "test_sklearn.py": (
        "test_logistic_regression_federated_on_digits_reaches_85_percent",
        "test_mlp_federated_on_digits_reaches_85_percent",
        "test_sgd_classifier_on_label_skewed_clients_reaches_85_percent",
    ),
    "test_strategy_cli.py": (
        "test_attack_options_run_the_robustness_experiment",
        "test_clipping_options_change_the_run",
        "test_default_strategy_is_fedavg_and_unchanged",
    ),
    "test_strategy_composition.py": (
        "test_every_preset_resumes_bit_for_bit_from_a_serialised_state[dpfedavg-plain]",
    ),
    "test_new_run.py": (
        "test_pip_install_editable_works",
        "test_run_config_reaches_the_clients_and_flags_win",
        "test_run_resumes_from_its_state_directory",
        "test_simulate_resumes_the_demo",
    ),
    "test_tls_mismatch.py": (
        "test_a_server_that_is_not_there_is_retried_until_the_reconnect_timeout",
    ),
    "test_grpc_hardening.py": (
        "test_clients_of_a_failed_server_keep_reconnecting_and_finish_the_resumed_run",
    ),
    "test_task.py": (
        "test_per_client_training_matches_torch_optim[0.0-adam-wd]",
        "test_per_client_training_matches_torch_optim[0.0-momentum-wd]",
        "test_per_client_training_matches_torch_optim[0.0-nesterov]",
        "test_digits_task_trains_exactly_like_the_numpy_demo_client",
        "test_per_client_training_matches_torch_optim[0.0-sgd]",
    ),
    "test_torch_client.py": ("test_torch_client_federates_the_digits_to_the_demo_accuracy",),
    "test_engines_warm.py": (
        "test_a_stateless_client_gives_identical_results_warm_and_cold[process]",
    ),
    "test_tracking.py": ("test_roost_simulate_logs_to_a_local_mlflow_store",),
}


# The longest test files (by --durations), longest first. With `--dist loadgroup` pytest-xdist
# hands out single tests in collection order, so these start first and the short tests fill in
# around them (with `--dist loadfile` it ordered files by their number of tests, and the long
# files of few tests ran alone at the end).
LONGEST_FILES: tuple[str, ...] = (
    "test_fresh_venv.py",
    "test_keras.py",
    "test_examples.py",
    "test_new_run.py",
    "test_flower_apps.py",
    "test_engines.py",
    "test_grpc_e2e.py",
    "test_notebook.py",
)

# Files whose tests share one expensive module fixture (a Ray start, a Keras subprocess run) mark
# themselves `xdist_group`, so that one worker runs them all and makes the fixture once.


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests listed in SLOW_TESTS slow; run the longest files first."""
    slow = {(module, name) for module, names in SLOW_TESTS.items() for name in names}
    for item in items:
        if (item.path.name, item.name) in slow:
            item.add_marker(pytest.mark.slow)
    rank = {name: index for index, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept within


@pytest.fixture(scope="session")
def keras_on_torch() -> dict[str, dict]:
    """test_keras's and test_keras_task's checks, run in one Keras-on-torch process (Keras takes
    about 10 s to start); by module name. Their tests share the xdist group "keras_torch"."""
    from keras_checks import run_keras_checks

    pytest.importorskip("torch")
    return run_keras_checks(["test_keras", "test_keras_task"], "torch", timeout=400)


@pytest.fixture(autouse=True)
def _roost_logs_propagate(caplog: pytest.LogCaptureFixture) -> None:
    """Let caplog see roost's INFO logs in every test."""
    caplog.set_level(logging.INFO, logger="roost")
