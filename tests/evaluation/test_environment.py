"""``evaluation.environment``: what a saved result was computed on."""

import json

import numpy as np
import threadpoolctl

from exactdgn.evaluation import environment


def test_environment_names_versions_cpu_and_numpy_blas_kernel():
    env = environment()
    json.dumps(env)  # JSON-ready as it is
    assert env["blas"], "threadpoolctl (a scikit-learn dependency) lists numpy's BLAS"
    assert env["numpy"] == np.__version__
    assert env["cpus"] >= 1 and env["cpu"]
    # numpy's own BLAS is among the libraries listed, with the kernel it dispatched to
    numpy_blas = [
        i
        for i in threadpoolctl.threadpool_info()
        if i["user_api"] == "blas" and "numpy" in i["filepath"]
    ]
    listed = {(b["internal_api"], b["version"]) for b in env["blas"]}
    for info in numpy_blas:
        assert (info["internal_api"], info["version"]) in listed
    assert all(
        set(b) == {"internal_api", "version", "architecture", "num_threads"} for b in env["blas"]
    )


def test_environment_reports_only_thread_variables_that_are_set(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("EXACTDGN_NUM_THREADS", "3")
    got = environment()["threads_env"]
    assert got.get("EXACTDGN_NUM_THREADS") == "3" and "OMP_NUM_THREADS" not in got
