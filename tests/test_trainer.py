"""The batched trainer against the plain way (nn.Module + torch.optim.SGD), divergence, grouping."""

import math

import pytest
import torch
from torch import nn

from reference import kit, trainer
from reference.trainer import RunSpec

D, H, C = 784, 512, 10


@pytest.fixture
def one_thread():
    """The sweep's CPU setting: single-threaded ops (the CI runs these tests a second time with other
    kernel paths; a run still agrees with itself beside others only within WEIGHT_TOL, see above)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# A run trained beside others against the same run alone. The batched matmuls round each float32
# product sum once, but the order of the summation (and with it the last bit) is the BLAS kernel's
# choice, which depends on the CPU (AVX-512, AVX2, a generic path), the thread count and the batch
# shape: bit-for-bit equality is not a property of the code. Measured differences after 16-32 steps
# are <= 2.3e-8 in weights and <= 1.7e-8 in losses (Xeon AVX-512 and ATEN_CPU_CAPABILITY=default
# MKL_ENABLE_INSTRUCTIONS=AVX2, 1 and 2 threads, 3 and 9 runs per batch); the bounds below leave a
# 40x margin and stay 1000x under what one step of another run's gradient or momentum would add
# (lr * grad ~ 1e-3). An accuracy may move by one sample whose two top logits tie within rounding.
WEIGHT_TOL = 1e-6
LOSS_REL_TOL = 1e-6


def assert_same_run(a, b, n, n_test):
    """Two RunResults of one run agree within float32 rounding of the kernels (see above)."""
    for key, count in (("acc", n), ("test_acc", n_test)):
        assert all(abs(x - y) <= 1 / count + 1e-12 for x, y in zip(a.history[key], b.history[key], strict=True)), key
    for key in ("loss", "test_loss"):
        assert b.history[key] == pytest.approx(a.history[key], rel=LOSS_REL_TOL), key
    if a.weights is not None or b.weights is not None:
        worst = max((x - y).abs().max().item() for x, y in zip(a.weights, b.weights, strict=True))
        assert worst <= WEIGHT_TOL, f"max |weight difference| {worst:g}"


def random_set(n, n_test, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n + n_test, D, generator=g, dtype=dtype)
    y = torch.randint(0, C, (n + n_test,), generator=g)
    return x[:n], y[:n], x[n:], y[n:]


def plain_sgd(weights, run, x, y, orders, batch_size, epochs):
    """The reference way: an nn.Module, torch.optim.SGD, CrossEntropyLoss (mean), the given batch orders."""
    model = kit.build_mlp(D, C, hidden_dim=H).to(x.dtype)
    with torch.no_grad():
        for p, w in zip(model.parameters(), weights):
            p.copy_(w)
    opt = torch.optim.SGD(model.parameters(), lr=run.lr, momentum=run.momentum)
    loss_fn = nn.CrossEntropyLoss()
    steps = 0
    for epoch in range(epochs):
        order = orders(epoch)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            opt.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
            steps += 1
    return [p.detach() for p in model.parameters()], steps


def test_seed_gives_build_mlp_weights_and_the_kits_first_shuffle():
    torch.manual_seed(7)
    model = kit.build_mlp(D, C)
    first_shuffle = torch.randperm(1000)
    g, weights = trainer.init_generator(7, D, H, C)
    for p, w in zip(model.parameters(), weights):
        assert torch.equal(p.detach(), w)
    assert torch.equal(torch.randperm(1000, generator=g), first_shuffle)


def test_three_batched_runs_match_plain_sgd_after_50_steps_float64():
    """float64, so the 1e-5 bound measures the algorithm, not float32 rounding amplified by ReLU flips.

    204 samples at S=8: 25 full minibatches and a partial one of 4 per epoch, 2 epochs = 52 steps.
    """
    x, y, xt, yt = random_set(204, 50, dtype=torch.float64)
    runs = [RunSpec(0.1, 0.9, 0), RunSpec(0.03, 0.5, 1), RunSpec(0.2, 0.0, 2)]
    init = [tuple(w.double() for w in trainer.init_generator(r.seed, D, H, C)[1]) for r in runs]
    perm = {(i, e): torch.randperm(204, generator=torch.Generator().manual_seed(100 * i + e))
            for i in range(3) for e in range(2)}
    data = trainer.prepare_data(x, y, xt, yt, dtype=torch.float64)
    results = trainer.train_runs(data, runs, 8, 2, hidden_dim=H, init=init,
                                 orders=lambda e: [perm[(i, e)] for i in range(3)], return_weights=True)
    for i, (run, res) in enumerate(zip(runs, results)):
        want, steps = plain_sgd(init[i], run, x, y, lambda e: perm[(i, e)], 8, 2)
        assert steps == 52
        worst = max((a - b).abs().max().item() for a, b in zip(want, res.weights))
        assert worst < 1e-5, f"run {i}: max |weight difference| {worst:g}"
        assert not res.diverged and len(res.history["acc"]) == 2


def test_a_seed_alone_reproduces_the_kit_train_history_float64():
    """No hooks: the seed's own init and shuffles give the kit's run, history and weights."""
    x, y, xt, yt = random_set(300, 120, seed=3, dtype=torch.float64)
    run = RunSpec(0.05, 0.9, 11)
    data = trainer.prepare_data(x, y, xt, yt, dtype=torch.float64)
    res = trainer.train_runs(data, [run], 32, 2, hidden_dim=H, return_weights=True)[0]
    torch.manual_seed(run.seed)
    model = kit.build_mlp(D, C).double()
    opt = torch.optim.SGD(model.parameters(), lr=run.lr, momentum=run.momentum)
    history = kit.train(nn.CrossEntropyLoss(), model, x, y, xt, yt, opt, 32, 2)
    assert res.history["acc"] == history["acc"] and res.history["test_acc"] == history["test_acc"]
    for key in ("loss", "test_loss"):  # the kit sums an epoch's losses in float32
        assert res.history[key] == pytest.approx(history[key], rel=1e-6)
    assert max((p.detach() - w).abs().max().item() for p, w in zip(model.parameters(), res.weights)) < 1e-10


def test_a_run_does_not_depend_on_the_runs_beside_it(one_thread):
    x, y, xt, yt = random_set(500, 100, seed=5)
    data = trainer.prepare_data(x, y, xt, yt)
    alone = trainer.train_runs(data, [RunSpec(0.1, 0.9, 4)], 64, 2, return_weights=True)[0]
    together = trainer.train_runs(data, [RunSpec(0.01, 0.9, 1), RunSpec(0.1, 0.9, 4), RunSpec(0.3, 0.9, 9)],
                                  64, 2, return_weights=True)[1]
    assert not together.diverged and not alone.diverged
    assert_same_run(alone, together, 500, 100)


def test_lr_1_momentum_09_run_diverges_at_its_epoch_without_spoiling_a_healthy_run(one_thread):
    """Divergence is forced: run 1's epoch-1 order visits a poisoned image (infinite pixels), so its
    loss turns inf/NaN in epoch 1 exactly; the healthy run's orders never visit it."""
    x, y, xt, yt = random_set(256, 64, seed=8)
    x = torch.cat([x, torch.full((1, D), math.inf)])
    y = torch.cat([y, torch.tensor([3])])
    clean = torch.randperm(256, generator=torch.Generator().manual_seed(1))
    poisoned = torch.cat([torch.tensor([256]), clean[1:]])

    def orders(e):
        return [torch.cat([clean, clean[:1]]), torch.cat([poisoned if e == 1 else clean, clean[:1]])]

    data = trainer.prepare_data(x, y, xt, yt)
    runs = [RunSpec(0.05, 0.9, 0), RunSpec(1.0, 0.9, 1)]
    healthy, bad = trainer.train_runs(data, runs, 32, 3, orders=orders, return_weights=True)
    alone = trainer.train_runs(data, runs[:1], 32, 3, orders=lambda e: orders(e)[:1], return_weights=True)[0]

    assert (bad.diverged, bad.diverged_epoch) == (True, 1)
    assert bad.history["loss"][1:] == [None, None] and bad.history["test_loss"][1:] == [None, None]
    assert bad.history["acc"][1:] == [0.1, 0.1] and bad.history["test_acc"][1:] == [0.1, 0.1]
    assert math.isfinite(bad.history["loss"][0]) and math.isfinite(bad.history["test_loss"][0])
    assert not healthy.diverged
    assert_same_run(alone, healthy, 257, 64)
    assert all(torch.isfinite(w).all() for w in healthy.weights)


def test_a_huge_learning_rate_diverges_on_its_own_and_leaves_its_batch_mate_alone(one_thread):
    x, y, xt, yt = random_set(400, 100, seed=0)
    data = trainer.prepare_data(x, y, xt, yt)
    together = trainer.train_runs(data, [RunSpec(1e20, 0.9, 1), RunSpec(0.05, 0.9, 2)], 32, 2)
    alone = trainer.train_runs(data, [RunSpec(0.05, 0.9, 2)], 32, 2)
    assert together[0].diverged and together[0].diverged_epoch == 0
    assert together[0].history == {"acc": [0.1, 0.1], "test_acc": [0.1, 0.1], "loss": [None, None],
                                   "test_loss": [None, None]}
    assert not together[1].diverged
    assert_same_run(alone[0], together[1], 400, 100)


def test_stop_request_raises_stopped_and_progress_counts_run_epochs():
    x, y, xt, yt = random_set(200, 50)
    data = trainer.prepare_data(x, y, xt, yt)
    ticks = []
    trainer.train_runs(data, [RunSpec(0.1, 0.9, 0), RunSpec(0.1, 0.9, 1)], 50, 3, progress=ticks.append)
    assert sum(ticks) == 6
    with pytest.raises(trainer.Stopped):
        trainer.train_runs(data, [RunSpec(0.1, 0.9, 0)], 50, 3, should_stop=lambda: True)


def test_uint8_pixels_are_scaled_like_the_kit_and_get_a_bias_column():
    x = torch.tensor([[0, 255, 51]], dtype=torch.uint8)
    data = trainer.prepare_data(x, torch.tensor([1]), x, torch.tensor([1]))
    assert data.x_train.tolist() == [[0.0, 1.0, pytest.approx(0.2), 1.0]] and data.input_dim == 3
    assert data.x_train.dtype == torch.float32


def test_a_batch_stepped_an_epoch_at_a_time_with_a_run_leaving_gives_the_others_their_own_numbers(one_thread):
    data = trainer.prepare_data(*random_set(300, 60))
    runs = [RunSpec(0.05, 0.9, 1), RunSpec(0.1, 0.9, 2), RunSpec(0.02, 0.5, 3)]
    whole = trainer.train_runs(data, runs, 32, 3, hidden_dim=64, return_weights=True)
    batch = trainer.EpochBatch(data, runs, 32, 3, hidden_dim=64, return_weights=True)
    batch.step()
    batch.drop(1)
    while not batch.done:
        batch.step()
    stepped = batch.results()
    assert batch.epoch == 3 and len(stepped[1].history["acc"]) == 1
    for i in (0, 2):
        assert stepped[i].history == whole[i].history
        for a, b in zip(stepped[i].weights + stepped[i].momenta, whole[i].weights + whole[i].momenta):
            assert torch.equal(a, b)
