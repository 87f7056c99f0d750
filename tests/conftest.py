"""Shared fixtures: a small synthetic Fashion-MNIST and a kernel of this interpreter."""

from __future__ import annotations

import json
import os
import sys

import pytest

SMALL_TRAIN = 3000
SMALL_TEST = 500


def _private_folder(tmp_path_factory, variable: str, name: str):
    """A fresh folder named by an environment variable for this test session; the old value after it."""
    path = tmp_path_factory.mktemp(name)
    old = os.environ.get(variable)
    os.environ[variable] = str(path)
    yield path
    if old is None:
        os.environ.pop(variable, None)
    else:
        os.environ[variable] = old


@pytest.fixture(scope="session", autouse=True)
def train_memo(tmp_path_factory):
    """The training service's memo for this test session, never the user's own."""
    yield from _private_folder(tmp_path_factory, "LABGRADER_TRAIN_CACHE", "train-memo")


@pytest.fixture(scope="session", autouse=True)
def data_cache_root(tmp_path_factory):
    """Where `grade` keeps the decoded data and font list in this test session, never the user's own."""
    yield from _private_folder(tmp_path_factory, "LABGRADER_DATA_CACHE", "data-cache")


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium driven by Playwright (its own browser download cannot work here)."""
    from playwright.sync_api import sync_playwright

    assert os.access(CHROMIUM, os.X_OK), "the browser tests need Debian's chromium: apt-get install chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


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
