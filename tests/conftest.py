"""Shared fixtures: a small synthetic Fashion-MNIST and a kernel of this interpreter."""

from __future__ import annotations

import json
import os
import sys

import pytest

SMALL_TRAIN = 3000
SMALL_TEST = 500


@pytest.fixture(scope="session", autouse=True)
def train_memo(tmp_path_factory):
    """The training service's memo for this test session, never the user's own."""
    path = tmp_path_factory.mktemp("train-memo")
    old = os.environ.get("LABGRADER_TRAIN_CACHE")
    os.environ["LABGRADER_TRAIN_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("LABGRADER_TRAIN_CACHE", None)
    else:
        os.environ["LABGRADER_TRAIN_CACHE"] = old


@pytest.fixture(scope="session", autouse=True)
def data_cache_root(tmp_path_factory):
    """Where `grade` keeps the decoded data and font list in this test session, never the user's own."""
    path = tmp_path_factory.mktemp("data-cache")
    old = os.environ.get("LABGRADER_DATA_CACHE")
    os.environ["LABGRADER_DATA_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("LABGRADER_DATA_CACHE", None)
    else:
        os.environ["LABGRADER_DATA_CACHE"] = old


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    """A data dir with 3000 train / 500 test synthetic images (seed 0), written once per session;
    world-readable, as a sandbox's uid needs."""
    from reference.synth import write_synthetic

    return world_readable(write_synthetic(tmp_path_factory.mktemp("fmnist-small"), n_train=SMALL_TRAIN,
                                          n_test=SMALL_TEST, seed=0))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """600 train / 100 test synthetic images (seed 0), world-readable: for running the whole lab
    notebook (10 epochs) in seconds."""
    from reference.synth import write_synthetic

    return world_readable(write_synthetic(tmp_path_factory.mktemp("fmnist-tiny"), n_train=600, n_test=100, seed=0))


def world_readable(folder):
    folder.chmod(0o755)
    for f in folder.iterdir():
        f.chmod(0o644)
    return folder


@pytest.fixture(scope="session")
def python_kernel(tmp_path_factory):
    """A kernelspec that runs ipykernel with this very interpreter (not whatever `python3` resolves to).

    -> (kernel_name, KernelSpecManager) for nbclient.NotebookClient's kernel manager.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    root = tmp_path_factory.mktemp("kernels")
    name = "labgrader-test-python"
    (root / name).mkdir()
    (root / name / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "labgrader tests", "language": "python",
    }))
    return name, KernelSpecManager(kernel_dirs=[str(root)])


@pytest.fixture
def run_notebook(python_kernel):
    """Execute a notebook in a folder with extra environment variables; -> the executed notebook."""
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    name, ksm = python_kernel

    def run(nb, cwd, env=None, timeout=120):
        km = KernelManager(kernel_name=name, kernel_spec_manager=ksm)
        client = NotebookClient(nb, km=km, timeout=timeout, resources={"metadata": {"path": str(cwd)}})
        client.execute(env={**os.environ, **(env or {})})
        return nb

    return run


@pytest.fixture(scope="module")
def sp():
    """The small fake spec of tests/fakes.py (shared by the report tests)."""
    from fakes import spec

    return spec()


@pytest.fixture(scope="module")
def ref(sp):
    """A hand-made reference artifact for `sp`, with known tie sets and truths."""
    from fakes import fake_reference

    return fake_reference(sp)
