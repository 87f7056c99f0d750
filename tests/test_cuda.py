"""The CUDA paths on a real GPU: the batched trainer, divergence, `reference run --device cuda` resuming
after a kill, and the training service with --device cuda.

Tolerances: float64 runs on CUDA must match torch.optim.SGD on CUDA within 1e-5 (the algorithm,
not rounding). float32 on CUDA against the CPU trainer: after 2 epochs of ~190 steps at lr 0.1 and
momentum 0.9, rounding differences (different matmul kernels and summation orders) grow through
ReLU flips, so weights and momenta must agree within F32_WEIGHTS (absolute), losses within F32_LOSS
and accuracies within F32_ACC (a few images of 3000 / 500). A run trained alone by the service
runs the kit's own loop on the same device as local training: within ALONE.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason=f"no CUDA device visible to torch {torch.__version__}: these tests need a GPU"),
]

from grader.cli import main  # noqa: E402
from grader.service.server import Quota, ServiceOptions, TrainingService  # noqa: E402
from reference import fmnist, kit, kit_remote, trainer, trainrequest  # noqa: E402
from reference.runstore import store_path  # noqa: E402
from reference.trainer import RunSpec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
D, H, C = 784, 512, 10
F32_WEIGHTS, F32_LOSS, F32_ACC = 2e-3, 2e-3, 1e-2
ALONE = 1e-6
CUDA = torch.device("cuda")
QUOTA = Quota(runs=50, epochs=500)


def random_set(n, n_test, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n + n_test, D, generator=g, dtype=dtype)
    y = torch.randint(0, C, (n + n_test,), generator=g)
    return x[:n], y[:n], x[n:], y[n:]


def plain_sgd(weights, run, x, y, orders, batch_size, epochs):
    """nn.Module + torch.optim.SGD + CrossEntropyLoss on x's device, in the given orders."""
    model = kit.build_mlp(D, C, hidden_dim=H).to(x.dtype).to(x.device)
    with torch.no_grad():
        for p, w in zip(model.parameters(), weights):
            p.copy_(w)
    opt = torch.optim.SGD(model.parameters(), lr=run.lr, momentum=run.momentum)
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(epochs):
        order = orders(epoch).to(x.device)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
    return [p.detach().cpu() for p in model.parameters()]


def worst(a, b) -> float:
    return max((p.cpu() - q.cpu()).abs().max().item() for p, q in zip(a, b))


def history_gap(a: dict, b: dict) -> tuple[float, float]:
    """-> (largest |loss difference|, largest |accuracy difference|) over every epoch."""
    loss = max(abs(x - y) for k in ("loss", "test_loss") for x, y in zip(a[k], b[k], strict=True))
    acc = max(abs(x - y) for k in ("acc", "test_acc") for x, y in zip(a[k], b[k], strict=True))
    return loss, acc


# the batched trainer ------------------------------------------------------------------------

@pytest.mark.parametrize("graphs", [True, False])
def test_batched_runs_on_cuda_match_torch_sgd_on_cuda_float64(graphs):
    """204 samples at S=8, 2 epochs (52 steps); with graphs the second epoch replays captured steps."""
    x, y, xt, yt = random_set(204, 50, dtype=torch.float64)
    runs = [RunSpec(0.1, 0.9, 0), RunSpec(0.03, 0.5, 1), RunSpec(0.2, 0.0, 2)]
    init = [tuple(w.double() for w in trainer.init_generator(r.seed, D, H, C)[1]) for r in runs]
    perm = {(i, e): torch.randperm(204, generator=torch.Generator().manual_seed(100 * i + e))
            for i in range(3) for e in range(2)}
    data = trainer.prepare_data(x, y, xt, yt, dtype=torch.float64, device=CUDA)
    results = trainer.train_runs(data, runs, 8, 2, hidden_dim=H, init=init, graphs=graphs,
                                 orders=lambda e: [perm[(i, e)] for i in range(3)], return_weights=True)
    xc, yc = x.to(CUDA), y.to(CUDA)
    for i, (run, res) in enumerate(zip(runs, results)):
        want = plain_sgd(init[i], run, xc, yc, lambda e: perm[(i, e)], 8, 2)
        assert worst(want, res.weights) < 1e-5, f"run {i}"
        assert not res.diverged and len(res.history["acc"]) == 2


def test_graph_replays_compute_what_eager_steps_compute():
    x, y, xt, yt = random_set(700, 100, seed=2, dtype=torch.float64)
    data = trainer.prepare_data(x, y, xt, yt, dtype=torch.float64, device=CUDA)
    runs = [RunSpec(0.05, 0.9, 3), RunSpec(0.1, 0.5, 4)]
    graphed = trainer.train_runs(data, runs, 16, 3, graphs=True, return_weights=True)
    eager = trainer.train_runs(data, runs, 16, 3, graphs=False, return_weights=True)
    for a, b in zip(graphed, eager):
        assert worst(a.weights, b.weights) < 1e-9 and worst(a.momenta, b.momenta) < 1e-9
        assert history_gap(a.history, b.history)[0] < 1e-9


def test_float32_on_cuda_matches_the_cpu_trainer_over_two_epochs(synthetic_data):
    x_train, y_train, x_test, y_test, _ = fmnist.load_arrays(synthetic_data, download=False)
    runs = [RunSpec(0.1, 0.9, 0), RunSpec(0.03, 0.9, 1), RunSpec(0.1, 0.5, 2)]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        on_cpu = trainer.train_runs(trainer.prepare_data(x_train, y_train, x_test, y_test), runs, 32, 2,
                                    return_weights=True)
    finally:
        torch.set_num_threads(before)
    on_cuda = trainer.train_runs(trainer.prepare_data(x_train, y_train, x_test, y_test, device=CUDA), runs, 32, 2,
                                 return_weights=True)
    for a, b in zip(on_cpu, on_cuda):
        assert not a.diverged and not b.diverged
        loss, acc = history_gap(a.history, b.history)
        assert loss < F32_LOSS and acc < F32_ACC
        assert worst(a.weights, b.weights) < F32_WEIGHTS and worst(a.momenta, b.momenta) < F32_WEIGHTS
        assert all(w.device.type == "cpu" for w in b.weights)


def test_a_poisoned_run_diverges_at_its_epoch_on_cuda_and_its_batch_mate_trains_on():
    """Run 1's epoch-1 order visits an image of infinite pixels: it diverges in epoch 1 exactly."""
    x, y, xt, yt = random_set(256, 64, seed=8)
    x = torch.cat([x, torch.full((1, D), math.inf)])
    y = torch.cat([y, torch.tensor([3])])
    clean = torch.randperm(256, generator=torch.Generator().manual_seed(1))
    poisoned = torch.cat([torch.tensor([256]), clean[1:]])

    def orders(e):
        return [torch.cat([clean, clean[:1]]), torch.cat([poisoned if e == 1 else clean, clean[:1]])]

    data = trainer.prepare_data(x, y, xt, yt, device=CUDA)
    runs = [RunSpec(0.05, 0.9, 0), RunSpec(1.0, 0.9, 1)]
    healthy, bad = trainer.train_runs(data, runs, 32, 3, orders=orders, return_weights=True)
    alone = trainer.train_runs(data, runs[:1], 32, 3, orders=lambda e: orders(e)[:1], return_weights=True)[0]
    assert (bad.diverged, bad.diverged_epoch) == (True, 1)
    assert bad.history["loss"][1:] == [None, None] and bad.history["test_loss"][1:] == [None, None]
    assert bad.history["acc"][1:] == [0.1, 0.1] and bad.history["test_acc"][1:] == [0.1, 0.1]
    assert math.isfinite(bad.history["loss"][0])
    assert not healthy.diverged and all(torch.isfinite(w).all() for w in healthy.weights)
    loss, acc = history_gap(healthy.history, alone.history)
    assert loss < F32_LOSS and acc < F32_ACC and worst(healthy.weights, alone.weights) < F32_WEIGHTS


def test_a_huge_learning_rate_diverges_in_epoch_0_on_cuda():
    x, y, xt, yt = random_set(400, 100, seed=0)
    data = trainer.prepare_data(x, y, xt, yt, device=CUDA)
    together = trainer.train_runs(data, [RunSpec(1e20, 0.9, 1), RunSpec(0.05, 0.9, 2)], 32, 2)
    assert together[0].diverged and together[0].diverged_epoch == 0
    assert together[0].history == {"acc": [0.1, 0.1], "test_acc": [0.1, 0.1], "loss": [None, None],
                                   "test_loss": [None, None]}
    assert not together[1].diverged and all(math.isfinite(v) for v in together[1].history["loss"])


def test_sweep_workers_on_their_own_streams_give_the_runs_one_worker_gives(synthetic_data):
    """Three workers capture and replay graphs side by side (each on its own stream); every run matches one worker's."""
    from reference.spec import Config
    from reference.sweep import train_all

    x_train, y_train, x_test, y_test, _ = fmnist.load_arrays(synthetic_data, download=False)
    data = trainer.prepare_data(x_train, y_train, x_test, y_test, device=CUDA)
    jobs = [(Config(lr, bs, mu), seed) for lr, bs, mu in ((0.1, 16, 0.9), (0.05, 32, 0.5), (0.1, 64, 0.9), (0.03, 64, 0.0))
            for seed in (0, 1)]
    got = {}
    for workers in (1, 3):
        out = got[workers] = {}
        train_all(data, jobs, epochs=2, hidden=H, workers=workers, on_run=lambda c, s, res, _: out.__setitem__((c, s), res))
    assert set(got[1]) == set(got[3]) == set(jobs)
    for job in jobs:
        loss, acc = history_gap(got[1][job].history, got[3][job].history)
        assert loss < F32_LOSS and acc < F32_ACC, job


# reference run --device cuda ------------------------------------------------------------------

TINY_SPEC = textwrap.dedent("""
    [assignment]
    id = "7b"
    title = "tiny sweep"
    answer_files = ["7b_ex1.json"]
    preamble = []
    [model]
    input_dim = 784
    hidden_dim = 512
    output_dim = 10
    [training]
    epochs = 2
    seeds = [0, 1]
    dtype = "float32"
    [sweeps.lr]
    vary = "lr"
    values = [0.03, 0.1]
    fixed = { batch_size = 64, momentum = 0.9 }
    [sweeps.batch]
    vary = "batch_size"
    values = [32, 64]
    fixed = { lr = 0.1, momentum = 0.9 }
    [scoring]
    z = 2.0
    near_fraction = 0.5
    [[questions]]
    id = "ex1.a"
    file = "7b_ex1.json"
    key = "a"
    kind = "optimum"
    sweep = "lr"
    metric = "final_train_acc"
    points = 2
""")
RUNS = 6


def run_args(spec, data, out):
    return ["reference", "run", "--spec", str(spec), "--data-dir", str(data), "--device", "cuda", "--out", str(out)]


def run_json(capsys, argv) -> dict:
    capsys.readouterr()
    assert main(argv + ["--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_reference_run_on_cuda_resumes_after_a_kill(tmp_path, synthetic_data, capsys):
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC)
    whole = run_json(capsys, run_args(spec, synthetic_data, tmp_path / "whole.json"))
    assert (whole["device"], whole["trained"], whole["diverged"]) == ("cuda", RUNS, 0)
    assert whole["device_name"] == torch.cuda.get_device_name()
    out = tmp_path / "ref.json"
    code = textwrap.dedent("""
        import os, signal, sys
        import reference.runstore as rs
        append, stored = rs.RunStore.append, []
        def dying_append(self, record):
            append(self, record)
            stored.append(record)
            if len(stored) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
        rs.RunStore.append = dying_append
        from grader.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    proc = subprocess.run([sys.executable, "-c", code, *run_args(spec, synthetic_data, out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not out.exists() and len(store_path(out).read_text().splitlines()) == 1 + 2
    resumed = run_json(capsys, run_args(spec, synthetic_data, out))
    assert (resumed["trained"], resumed["reused"], resumed["device"]) == (RUNS - 2, 2, "cuda")
    a, b = json.loads((tmp_path / "whole.json").read_text()), json.loads(out.read_text())
    assert a["provenance"]["device"] == b["provenance"]["device"] == "cuda"
    key = lambda r: (json.dumps(r["config"], sort_keys=True), r["seed"])  # noqa: E731
    runs_a, runs_b = sorted(a["runs"], key=key), sorted(b["runs"], key=key)
    assert [key(r) for r in runs_a] == [key(r) for r in runs_b]
    for ra, rb in zip(runs_a, runs_b):
        loss, acc = history_gap(ra["history"], rb["history"])
        assert loss < F32_LOSS and acc < F32_ACC
    again = run_json(capsys, run_args(spec, synthetic_data, out))
    assert (again["trained"], again["reused"]) == (0, RUNS)


# the training service with --device cuda ---------------------------------------------------

@pytest.fixture(scope="module")
def service(synthetic_data, tmp_path_factory):
    svc = TrainingService(ServiceOptions(cache_dir=str(tmp_path_factory.mktemp("memo")), device="cuda",
                                         gather_s=0.3), synthetic_data).start()
    yield svc
    svc.close()


def lab_call(data, *, lr=0.1, momentum=0.9, batch_size=128, epochs=2, seed=0):
    """The lab notebook's own train() call; -> (history, model, optimizer, generator state after)."""
    (x_train, y_train), (x_test, y_test) = data
    torch.manual_seed(seed)
    model = kit.build_mlp(784, 10)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    H = kit.train(loss=torch.nn.CrossEntropyLoss(), model=model, x_train=x_train, y_train=y_train,
                  x_test=x_test, y_test=y_test, optim=opt, batch_size=batch_size, n_epochs=epochs)
    return H, model, opt, torch.get_rng_state()


def momenta(opt, model) -> list:
    return [opt.state[p]["momentum_buffer"] for p in model.parameters()]


def test_the_service_on_cuda_answers_a_standard_request_as_local_cuda_training(
        service, synthetic_data, monkeypatch, capfd):
    assert service.device.type == "cuda"
    H_local, m_local, o_local, rng_local = lab_call(kit.get_data(synthetic_data))
    assert next(m_local.parameters()).device.type == "cuda"
    with service.session("alone", QUOTA) as path:
        monkeypatch.setenv(kit_remote.SOCKET_ENV, str(path))
        data = kit.get_data(synthetic_data)
        before = service.summary()
        H, m, o, rng = lab_call(data)
        monkeypatch.delenv(kit_remote.SOCKET_ENV)
    assert "trained by labgrader's training service" in capfd.readouterr().err
    assert service.summary()["trained"] == before["trained"] + 1
    loss, acc = history_gap(H, H_local)
    assert loss < ALONE and acc < ALONE
    assert all(p.device.type == "cuda" for p in m.parameters()) and m.training
    assert worst(list(m.parameters()), list(m_local.parameters())) < ALONE
    assert worst(momenta(o, m), momenta(o_local, m_local)) < ALONE
    assert all(b.device.type == "cuda" for b in momenta(o, m))
    assert torch.equal(rng, rng_local)


def test_concurrent_requests_train_as_one_batch_on_cuda_and_match_local_cuda_training(service, synthetic_data):
    data = kit.get_data(synthetic_data)
    local = {lr: lab_call(data, lr=lr, batch_size=64) for lr in (0.05, 0.07)}
    fingerprint = service.fingerprint
    requests, answers = {}, {}
    for lr in (0.05, 0.07):
        torch.manual_seed(0)
        model = kit.build_mlp(784, 10)
        requests[lr] = trainrequest.build(data=fingerprint, lr=lr, momentum=0.9, batch_size=64, epochs=2,
                                          params=list(model.parameters()), rng=torch.get_rng_state())

    def student(lr, path):
        answers[lr] = kit_remote.exchange(*requests[lr], hidden=512, input_dim=784, path=path)

    with service.session("a", QUOTA) as pa, service.session("b", QUOTA) as pb:
        before = service.summary()
        threads = [threading.Thread(target=student, args=(lr, p)) for lr, p in ((0.05, pa), (0.07, pb))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    after = service.summary()
    assert after["batches"] == before["batches"] + 1 and after["largest_batch"] >= 2
    for lr in (0.05, 0.07):
        header, tensors = answers[lr]
        assert header["ok"], header
        answer = trainrequest.TrainAnswer.from_frame(header, tensors)
        H_local, m_local, o_local, rng_local = local[lr]
        loss, acc = history_gap(answer.history, H_local)
        assert loss < F32_LOSS and acc < F32_ACC
        assert worst(answer.params, list(m_local.parameters())) < F32_WEIGHTS
        assert worst(answer.momenta, momenta(o_local, m_local)) < F32_WEIGHTS
        assert torch.equal(answer.rng, rng_local)
