"""The training service: wire format, request checks, the kit's delegation, memo, batching, quota (in its own process, as grade runs it, and in this one where a test looks inside the batcher)."""

from __future__ import annotations

import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from grader.service.server import Quota, ServiceOptions, TrainingService
from reference import kit, kit_remote, trainrequest, wire
from reference.trainrequest import RequestError, parse

torch.set_num_threads(min(2, torch.get_num_threads()))
EPOCHS = 2
QUOTA = Quota(runs=50, epochs=500)


def _started(synthetic_data, tmp_path_factory, process: bool):
    options = ServiceOptions(cache_dir=str(tmp_path_factory.mktemp("memo")), gather_s=0.2,
                             threads=torch.get_num_threads(), process=process)
    return TrainingService(options, synthetic_data).start()


@pytest.fixture(scope="module")
def service(synthetic_data, tmp_path_factory):
    """The service as `labgrader grade` runs it: training in its own process."""
    svc = _started(synthetic_data, tmp_path_factory, process=True)
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def inproc(synthetic_data, tmp_path_factory):
    """The same service training in this process, for the tests that look inside its batcher."""
    svc = _started(synthetic_data, tmp_path_factory, process=False)
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def data(synthetic_data):
    return kit.get_data(synthetic_data)


def lab_call(data, *, lr=0.1, momentum=0.9, batch_size=128, epochs=EPOCHS, seed=0, model=None, opt=None, x=None):
    """The lab notebook's own train() call; -> (history, model, optimizer, generator state after)."""
    (x_train, y_train), (x_test, y_test) = data
    torch.manual_seed(seed)
    model = model or kit.build_mlp(784, 10)
    opt = opt or torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    H = kit.train(loss=torch.nn.CrossEntropyLoss(), model=model, x_train=x_train if x is None else x, y_train=y_train,
                  x_test=x_test, y_test=y_test, optim=opt, batch_size=batch_size, n_epochs=epochs)
    return H, model, opt, torch.get_rng_state()


def served(service, synthetic_data, monkeypatch, quota=QUOTA):
    """A session of the service, with the kit pointed at it and get_data's tensors remembered."""
    class Session:
        def __enter__(self):
            self.cm = service.session("test", quota)
            path = self.cm.__enter__()
            monkeypatch.setenv(kit_remote.SOCKET_ENV, str(path))
            self.data = kit.get_data(synthetic_data)
            self.path = str(path)
            return self

        def __exit__(self, *exc):
            monkeypatch.delenv(kit_remote.SOCKET_ENV)
            return self.cm.__exit__(*exc)
    return Session()


def close(a: dict, b: dict, tol=1e-4) -> float:
    return max(abs(x - y) for k in ("acc", "test_acc", "loss", "test_loss") for x, y in zip(a[k], b[k], strict=True))


# the wire -------------------------------------------------------------------------------------

def test_a_frame_round_trips_header_and_tensors():
    t = {"w": torch.arange(6, dtype=torch.float32).view(2, 3), "r": torch.tensor([1, 2, 255], dtype=torch.uint8)}
    header, tensors = wire.read_frame(wire.bytes_reader(wire.encode({"x": 1.5}, t)), max_payload=1000)
    assert header == {"x": 1.5}
    assert torch.equal(tensors["w"], t["w"]) and torch.equal(tensors["r"], t["r"])


@pytest.mark.parametrize("frame, reason", [
    (b"GET / HTTP/1.1\r\n\r\n", "protocol marker"),
    (wire.MAGIC + struct.pack(">I", 1 << 30), "1073741824 bytes, over the limit of 65536"),
    (wire.MAGIC + struct.pack(">I", 5) + b"[1,2]", "must be a JSON object"),
    (wire.MAGIC + struct.pack(">I", 7) + b'{"a":Na', "not valid JSON"),
    (wire.encode({"tensors_note": 1}, {"w": torch.zeros(300)}), "exceed the limit of 1000 bytes"),
])
def test_a_bad_frame_is_refused_with_its_reason_before_reading_more(frame, reason):
    with pytest.raises(wire.WireError, match=reason):
        wire.read_frame(wire.bytes_reader(frame), max_payload=1000)


@pytest.mark.parametrize("tensor", [torch.zeros(2, dtype=torch.bfloat16), np.zeros(2, dtype=">f4"), np.zeros(2, dtype=np.int16)])
def test_a_tensor_of_a_dtype_the_wire_does_not_carry_is_refused_with_its_reason(tensor):
    with pytest.raises(wire.WireError, match="which the wire does not carry"):
        wire.encode({}, {"w": tensor})


def test_a_frame_declaring_an_odd_dtype_or_shape_is_refused():
    body = b'{"tensors":[{"name":"w","dtype":"object","shape":[1]}]}'
    with pytest.raises(wire.WireError, match="dtype 'object'"):
        wire.read_frame(wire.bytes_reader(wire.MAGIC + struct.pack(">I", len(body)) + body), max_payload=10)
    body = b'{"tensors":[{"name":"w","dtype":"uint8","shape":[-1]}]}'
    with pytest.raises(wire.WireError, match="non-negative"):
        wire.read_frame(wire.bytes_reader(wire.MAGIC + struct.pack(">I", len(body)) + body), max_payload=10)


# the request ----------------------------------------------------------------------------------

def _request(**changes):
    torch.manual_seed(0)
    model = kit.build_mlp(784, 10, hidden_dim=16)
    header, tensors = trainrequest.build(data="f" * 40, lr=0.1, momentum=0.9, batch_size=32, epochs=2,
                                         params=list(model.parameters()), rng=torch.get_rng_state())
    for k, v in changes.items():
        (tensors if k in tensors else header)[k] = v
    return header, tensors


def test_a_lab_request_parses_with_its_group_and_a_stable_key():
    req = parse(*_request(), input_dim=784, classes=10)
    assert req.group == (32, 2, 16) and req.lr == 0.1
    assert req.key("t") == parse(*_request(), input_dim=784, classes=10).key("t")
    assert req.key("t") != parse(*_request(lr=0.2), input_dim=784, classes=10).key("t")
    assert req.key("t") != req.key("other-trainer")


@pytest.mark.parametrize("seed", range(5))
def test_the_lab_models_own_initialisation_is_default_and_crafted_weights_are_not(seed):
    torch.manual_seed(seed)
    params = [p.detach().numpy().copy() for p in kit.build_mlp(784, 10).parameters()]
    assert trainrequest.default_init(params)
    huge, copied, scaled, zeros = ([p.copy() for p in params] for _ in range(4))
    huge[0][:] = 1e18
    copied[0][:] = copied[0][seed]
    scaled[0] *= 0.5
    zeros[2][:] = 0.0
    assert not any(trainrequest.default_init(p) for p in (huge, copied, scaled, zeros))


def test_the_initialisation_check_runs_blas_on_one_thread(monkeypatch):
    """The grader checks starting weights while notebooks run: BLAS's other threads would spin on the cores
    they need, so the check holds BLAS to one thread, and gives the pool back as it was."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}

    seen = []
    norm = np.linalg.norm
    monkeypatch.setattr(np.linalg, "norm", lambda *a, **k: seen.append(blas_threads()) or norm(*a, **k))
    torch.manual_seed(0)
    params = [p.detach().numpy().copy() for p in kit.build_mlp(784, 10).parameters()]
    with threadpool_limits(2, user_api="blas"):
        assert trainrequest.default_init(params)
        after = blas_threads()
    assert seen and all(s == {1} for s in seen)
    assert after == {2}


def test_parsing_runs_none_of_torchs_kernels_so_the_services_reader_thread_leaves_openmp_alone(monkeypatch):
    """The service's process parses requests in its reader thread; one parallel torch op there throttles
    OpenMP's waits for the main thread's training (benchmarks/RESULTS.md), so the checks use numpy."""
    def refuse(*args, **kwargs):
        raise AssertionError("parse called one of torch's kernels")

    for name in ("isfinite", "isnan", "isinf"):
        monkeypatch.setattr(torch, name, refuse)
    monkeypatch.setattr(torch.Tensor, "all", refuse)
    assert parse(*_request(), input_dim=784, classes=10).group == (32, 2, 16)
    with pytest.raises(RequestError, match="w1 holds non-finite values"):
        parse(*_request(w1=torch.full((16, 784), float("inf"))), input_dim=784, classes=10)


EPYC = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13 64-Core Processor\n\nprocessor\t: 1\n"


def test_the_memo_key_names_the_cpu_kernel_path(monkeypatch):
    """A memo shared across machines must not answer a run with numbers other kernels computed."""
    from grader.common.kernels import cpu_kernel_path, cpu_model
    from grader.service.engine import trainer_name

    assert cpu_model(EPYC) == "AuthenticAMD / AMD EPYC 7B13 64-Core Processor"
    assert cpu_model("") == "unknown vendor / unknown model"
    assert cpu_kernel_path(torch, cpuinfo=EPYC) != cpu_kernel_path(torch, cpuinfo=EPYC.replace("7B13", "9654"))
    req = parse(*_request(), input_dim=784, classes=10)
    cpu = torch.device("cpu")
    keys = {"here": req.key(trainer_name(torch, cpu, torch.float32, 2))}
    capability = torch.backends.cpu.get_cpu_capability()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT" if capability != "DEFAULT" else "AVX2")
    keys["capability"] = req.key(trainer_name(torch, cpu, torch.float32, 2))
    monkeypatch.undo()
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "SSE4_2")
    keys["mkl"] = req.key(trainer_name(torch, cpu, torch.float32, 2))
    monkeypatch.undo()
    keys["threads"] = req.key(trainer_name(torch, cpu, torch.float32, 1))
    assert len(set(keys.values())) == 4, keys
    assert req.key(trainer_name(torch, cpu, torch.float32, 2)) == keys["here"]


@pytest.mark.parametrize("changes, reason", [
    ({"op": "shell"}, "unknown operation 'shell'"),
    ({"lr": -1.0}, "lr must be a finite number from 0 to 1e"),
    ({"lr": "0.1"}, "lr must be a finite number"),
    ({"batch_size": True}, "batch_size must be an integer"),
    ({"epochs": 0}, "epochs must be an integer from 1"),
    ({"b1": torch.full((16,), float("nan"))}, "b1 holds non-finite values"),
    ({"w2": torch.zeros(10, 17)}, r"w2 must be float32 of shape \[10, 16\]"),
    ({"w1": torch.zeros(5000, 784)}, "5000 units; the service trains 1 to 4096"),
    ({"rng": torch.zeros(10, dtype=torch.uint8)}, "rng must be the 5056 bytes"),
])
def test_a_malformed_request_gets_a_reason_naming_the_field(changes, reason):
    with pytest.raises(RequestError, match=reason):
        parse(*_request(**changes), input_dim=784, classes=10)


def test_unknown_and_missing_fields_are_named():
    header, tensors = _request()
    with pytest.raises(RequestError, match="unknown field 'cmd'"):
        parse({**header, "cmd": "rm"}, tensors, input_dim=784, classes=10)
    del header["lr"]
    with pytest.raises(RequestError, match="missing field 'lr'"):
        parse(header, tensors, input_dim=784, classes=10)


# the kit delegating ---------------------------------------------------------------------------

def test_a_run_trained_alone_leaves_history_model_optimizer_and_generator_bit_for_bit_as_local_training(
        service, synthetic_data, data, monkeypatch, capfd):
    """Bit for bit by construction, on any CPU: a run alone is the kit's own loop, run in this process
    with the notebook's thread count and kernels (the sandbox gets the host's KERNEL_VARS)."""
    H_local, m_local, o_local, rng_local = lab_call(data)
    with served(service, synthetic_data, monkeypatch) as s:
        before = service.summary()
        H, m, o, rng = lab_call(s.data)
    assert H == H_local
    for p, q in zip(m.parameters(), m_local.parameters()):
        assert torch.equal(p, q)
    assert o.state_dict()["state"].keys() == o_local.state_dict()["state"].keys()
    for a, b in zip(o.state_dict()["state"].values(), o_local.state_dict()["state"].values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert torch.equal(rng, rng_local)
    assert m.training
    assert service.summary()["trained"] == before["trained"] + 1
    assert "trained by labgrader's training service" in capfd.readouterr().err


def test_an_identical_request_is_answered_from_the_memo_even_by_a_new_service(
        service, synthetic_data, monkeypatch):
    with served(service, synthetic_data, monkeypatch) as s:
        H1 = lab_call(s.data, lr=0.03)[0]
        before = service.summary()
        H2 = lab_call(s.data, lr=0.03)[0]
    assert H1 == H2 and service.summary()["from_memo"] == before["from_memo"] + 1
    fresh = TrainingService(service.options, synthetic_data).start()
    try:
        with served(fresh, synthetic_data, monkeypatch) as s:
            assert lab_call(s.data, lr=0.03)[0] == H1
        assert fresh.summary()["trained"] == 0 and fresh.summary()["from_memo"] == 1
    finally:
        fresh.close()


def test_a_damaged_memo_entry_is_trained_again(service, synthetic_data, monkeypatch):
    with served(service, synthetic_data, monkeypatch) as s:
        H = lab_call(s.data, lr=0.02)[0]
        for entry in Path(service.info['memo_dir']).glob("*/*.lgts"):
            entry.write_bytes(entry.read_bytes()[:100])
        before = service.summary()
        assert close(lab_call(s.data, lr=0.02)[0], H) == 0
    assert service.summary()["trained"] == before["trained"] + 1


@pytest.mark.parametrize("change, why", [
    ("adam", "not a plain torch.optim.SGD"),
    ("subclass", "not the kit's build_mlp"),
    ("hook", "not the kit's build_mlp"),
    ("copied_data", "x_train is not the tensor get_data() returned"),
    ("edited_data", "x_train was modified after get_data()"),
    ("swapped_rows", "x_train was modified after get_data()"),
    ("weight_decay", "options beyond lr and momentum"),
])
def test_any_other_call_trains_in_the_notebook_and_says_why(change, why, service, synthetic_data, monkeypatch, capfd):
    class Mine(torch.nn.Sequential):
        pass

    with served(service, synthetic_data, monkeypatch) as s:
        torch.manual_seed(0)
        model = kit.build_mlp(784, 10)
        kwargs = {}
        if change == "adam":
            kwargs["opt"] = torch.optim.Adam(model.parameters(), lr=0.01)
        elif change == "subclass":
            model = Mine(*model)
        elif change == "hook":
            model[0].register_forward_hook(lambda *a: None)
        elif change == "copied_data":
            kwargs["x"] = s.data[0][0].clone()
        elif change == "edited_data":
            s.data[0][0].numpy()[0, 0] += 0.5
        elif change == "swapped_rows":  # images and labels shuffled alike: every sum over them is the same
            for t in (s.data[0][0], s.data[0][1]):
                t.numpy()[[0, 1]] = t.numpy()[[1, 0]]
        elif change == "weight_decay":
            kwargs["opt"] = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        before = service.summary()
        lab_call(s.data, model=model, epochs=1, **kwargs)
        if change == "edited_data":
            s.data[0][0].numpy()[0, 0] -= 0.5
        if change == "swapped_rows":
            for t in (s.data[0][0], s.data[0][1]):
                t.numpy()[[0, 1]] = t.numpy()[[1, 0]]
    after = service.summary()
    assert (after["trained"], after["from_memo"], after["joined"]) == (before["trained"], before["from_memo"], before["joined"])
    assert why in capfd.readouterr().err.split("training in the notebook: ", 1)[1].splitlines()[0]


def test_concurrent_requests_of_one_batch_size_train_together_and_as_alone(service, synthetic_data, data, monkeypatch):
    alone = {lr: lab_call(data, lr=lr, batch_size=64)[0] for lr in (0.05, 0.07)}
    results = {}

    def student(lr, path):
        answer, _ = kit_remote.exchange(*requests[lr], hidden=512, input_dim=784, path=path)
        results[lr] = answer

    with service.session("a", QUOTA) as pa, service.session("b", QUOTA) as pb, served(service, synthetic_data, monkeypatch):
        requests = {lr: _lab_request(data, lr=lr, batch_size=64) for lr in (0.05, 0.07)}
        before = service.summary()
        threads = [threading.Thread(target=student, args=(lr, p)) for lr, p in ((0.05, pa), (0.07, pb))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    after = service.summary()
    assert after["batches"] == before["batches"] + 1 and after["largest_batch"] >= 2
    for lr in (0.05, 0.07):
        assert results[lr]["ok"] and close(results[lr]["history"], alone[lr]) < 1e-4


def _lab_request(data, *, lr, batch_size):
    torch.manual_seed(0)
    model = kit.build_mlp(784, 10)
    return trainrequest.build(data=kit_remote._given["fingerprint"], lr=lr, momentum=0.9, batch_size=batch_size,
                              epochs=EPOCHS, params=list(model.parameters()), rng=torch.get_rng_state())


def test_an_identical_request_arriving_during_training_joins_it(inproc, synthetic_data, data, monkeypatch):
    answers = {}

    def ask(name, path):
        answers[name] = kit_remote.exchange(*request, hidden=512, input_dim=784, path=path)[0]

    with inproc.session("a", QUOTA) as pa, inproc.session("b", QUOTA) as pb, served(inproc, synthetic_data, monkeypatch):
        header, tensors = _lab_request(data, lr=0.09, batch_size=128)
        request = ({**header, "epochs": 15}, tensors)
        first = threading.Thread(target=ask, args=("a", pa))
        first.start()
        assert _soon(lambda: inproc.batcher.inflight and not inproc.batcher.pending)
        before = inproc.summary()
        ask("b", pb)
        first.join()
    after = inproc.summary()
    assert after["joined"] == before["joined"] + 1 and after["trained"] == before["trained"] + 1
    assert answers["a"]["ok"] and answers["a"]["history"] == answers["b"]["history"]


def test_a_queued_run_nobody_waits_for_any_more_is_not_trained(synthetic_data, data, tmp_path, monkeypatch):
    svc = TrainingService(ServiceOptions(cache_dir=str(tmp_path), gather_s=60, process=False), synthetic_data).start()
    try:
        with served(svc, synthetic_data, monkeypatch):
            request = _lab_request(data, lr=0.08, batch_size=128)
        with svc.session("idle", QUOTA):
            leaving = svc.session("leaving", QUOTA)
            path = leaving.__enter__()
            thread = threading.Thread(target=_ask_quietly, args=(request, path))
            thread.start()
            assert _soon(lambda: svc.batcher.pending)
            leaving.__exit__(None, None, None)
            thread.join(5)
            assert _soon(lambda: svc.batcher.stats["abandoned"] == 1)
        assert svc.summary()["trained"] == 0 and not svc.batcher.pending and not svc.batcher.inflight
    finally:
        svc.close()


def _ask_quietly(request, path):
    try:
        kit_remote.exchange(*request, hidden=512, input_dim=784, path=path)
    except (OSError, EOFError):
        pass


def _soon(condition, wait_s: float = 5.0) -> bool:
    end = time.monotonic() + wait_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_a_request_over_the_quota_is_an_error_naming_the_quota(service, synthetic_data, monkeypatch):
    with served(service, synthetic_data, monkeypatch, quota=Quota(runs=1, epochs=500)) as s:
        lab_call(s.data, lr=0.04)
        with pytest.raises(kit_remote.TrainingServiceError, match="used its quota of 1 training runs"):
            lab_call(s.data, lr=0.04)
    with served(service, synthetic_data, monkeypatch, quota=Quota(runs=9, epochs=3)) as s:
        with pytest.raises(kit_remote.TrainingServiceError, match="quota of 3 training epochs"):
            lab_call(s.data, lr=0.04, epochs=4)
    with served(service, synthetic_data, monkeypatch, quota=Quota(runs=9, epochs=3)) as s:
        with pytest.raises(kit_remote.TrainingServiceError,
                           match=r"1 more epochs \(counted as 4: batch size 32, 512 hidden units\) would exceed"):
            lab_call(s.data, lr=0.04, epochs=1, batch_size=32)


def test_a_short_run_is_served_while_another_sessions_long_run_is_in_the_service(inproc, synthetic_data, data,
                                                                                  monkeypatch):
    """The starvation case: one session's 2,000-epoch run holds another's 1-epoch run for one epoch at most,
    and stops at its next epoch boundary once its notebook has ended."""
    before = inproc.summary()
    with served(inproc, synthetic_data, monkeypatch):
        long_request = _lab_request(data, lr=0.011, batch_size=128)
        long_request = ({**long_request[0], "epochs": 2000}, long_request[1])
        short_request = _lab_request(data, lr=0.012, batch_size=128)
        short_request = ({**short_request[0], "epochs": 1}, short_request[1])
        with inproc.session("attacker", Quota(runs=5, epochs=5000)) as pa:
            attacker = threading.Thread(target=_ask_quietly, args=(long_request, pa))
            attacker.start()
            assert _soon(lambda: inproc.batcher.jobs and inproc.batcher.jobs[0].epoch + _batch_epoch(inproc) >= 1, 30)
            with inproc.session("victim", QUOTA) as pv:
                start = time.monotonic()
                answer, _ = kit_remote.exchange(*short_request, hidden=512, input_dim=784, path=pv)
                waited = time.monotonic() - start
            long_job = inproc.batcher.jobs[0] if inproc.batcher.jobs else None
            assert answer["ok"] and len(answer["history"]["acc"]) == 1
            assert long_job is not None and len(long_job.reqs) == 1 and long_job.reqs[0].epochs == 2000
            assert long_job.epoch < 2000, "the attacker's run had already finished: no starvation was tested"
        attacker.join(10)
        assert _soon(lambda: not inproc.batcher.jobs and not inproc.batcher.inflight, 10)
    after = inproc.summary()
    assert after["abandoned"] == before["abandoned"] + 1 and after["trained"] == before["trained"] + 1
    print(f"victim answered after {waited:.2f} s while the attacker's run was at epoch {long_job.epoch} of 2000")


def _batch_epoch(inproc) -> int:
    job = inproc.batcher.jobs[0] if inproc.batcher.jobs else None
    return job.batch.epoch if job is not None and job.batch is not None else 0


def test_a_session_past_its_training_time_gets_an_error_and_its_run_stops(inproc, synthetic_data, monkeypatch):
    before = inproc.summary()
    with served(inproc, synthetic_data, monkeypatch, quota=Quota(runs=5, epochs=5000, seconds=0.5)) as s:
        with pytest.raises(kit_remote.TrainingServiceError, match=r"used its 0.5 s of training time.*--train-time"):
            lab_call(s.data, lr=0.013, epochs=2000)
        assert _soon(lambda: not inproc.batcher.jobs, 10)
        with pytest.raises(kit_remote.TrainingServiceError, match="--train-time"):
            lab_call(s.data, lr=0.014, epochs=1)
    after = inproc.summary()
    assert after["abandoned"] == before["abandoned"] + 1 and after["trained"] == before["trained"]


def test_a_request_over_the_memory_bound_is_refused_before_training(service, synthetic_data, monkeypatch):
    before = service.summary()
    with served(service, synthetic_data, monkeypatch, quota=Quota(runs=5, epochs=500, memory_mb=16)) as s:
        with pytest.raises(kit_remote.TrainingServiceError, match=r"about \d+ MiB in the training service \(batch size "
                                                                  r"128, 512 hidden units\), over the limit of 16 MiB"):
            lab_call(s.data, lr=0.015, epochs=1)
        torch.manual_seed(0)
        small = kit.build_mlp(784, 10, hidden_dim=8)
        H = lab_call(s.data, lr=0.015, epochs=1, model=small)[0]
    assert len(H["acc"]) == 1
    after = service.summary()
    assert after["trained"] == before["trained"] + 1 and after["refused"] == before["refused"] + 1


def test_garbage_and_oversized_frames_get_their_reason_and_the_service_keeps_serving(
        service, synthetic_data, monkeypatch):
    with served(service, synthetic_data, monkeypatch) as s:
        for junk, reason in ((b"\x00" * 64, "protocol marker"),
                             (wire.MAGIC + struct.pack(">I", 1 << 30), "over the limit of 65536")):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                c.connect(s.path)
                c.sendall(junk)
                header, _ = wire.read_frame(wire.socket_reader(c), max_payload=0)
                assert header["ok"] is False and reason in header["error"]
                assert _closed(c)
        answer, _ = kit_remote.exchange(*_request(), hidden=16, input_dim=784, path=s.path)
        assert answer["ok"] is False and answer["local"] and "not the grader's data set" in answer["reason"]
        H = lab_call(s.data, lr=0.06)[0]
    assert len(H["acc"]) == EPOCHS and service.summary()["refused"] >= 2


def test_a_header_nesting_60000_levels_is_refused_without_a_traceback(service, synthetic_data, monkeypatch, capfd):
    body = b"[" * 60000 + b"]" * 60000
    with pytest.raises(wire.WireError, match="nests too deeply"):
        wire.read_frame(wire.bytes_reader(wire.MAGIC + struct.pack(">I", len(body)) + body), max_payload=0,
                        max_header=1 << 20)
    body = b"[" * 32000 + b"]" * 32000
    with served(service, synthetic_data, monkeypatch) as s:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(s.path)
            c.sendall(wire.MAGIC + struct.pack(">I", len(body)) + body)
            header, _ = wire.read_frame(wire.socket_reader(c), max_payload=0)
        assert header["ok"] is False and "nests too deeply" in header["error"]
        assert len(lab_call(s.data, lr=0.061, epochs=1)[0]["acc"]) == 1
    assert "Traceback" not in capfd.readouterr().err


def _closed(c: socket.socket) -> bool:
    """The service hung up after a frame it could not read (unread bytes make that a reset)."""
    try:
        return c.recv(1) == b""
    except ConnectionResetError:
        return True


def test_the_runs_record_says_whether_a_run_started_from_the_default_initialisation(service, synthetic_data, monkeypatch):
    """Each distinct set of starting weights is checked once; the same weights again get the same verdict."""
    checked = []
    check = trainrequest.default_init
    monkeypatch.setattr(trainrequest, "default_init", lambda params: checked.append(1) or check(params))
    service.inits.clear()
    record: list = []
    with service.session("init", QUOTA, record=record) as path:
        monkeypatch.setenv(kit_remote.SOCKET_ENV, str(path))
        data = kit.get_data(synthetic_data)
        lab_call(data, epochs=1)
        torch.manual_seed(0)
        sabotaged = kit.build_mlp(784, 10)
        with torch.no_grad():
            for p in sabotaged.parameters():
                p.fill_(1e18)
        lab_call(data, lr=0.03, epochs=1, model=sabotaged)
        lab_call(data, lr=0.02, epochs=1)
    monkeypatch.delenv(kit_remote.SOCKET_ENV)
    assert [(r["config"]["lr"], r["init"]) for r in record] == [(0.1, "default"), (0.03, "custom"), (0.02, "default")]
    assert len(checked) == 2


def test_a_diverging_run_is_trained_in_the_notebook(service, synthetic_data, monkeypatch, capfd):
    with served(service, synthetic_data, monkeypatch) as s:
        H = lab_call(s.data, lr=1.0, momentum=100.0, epochs=1)[0]
        lab_call(s.data, lr=1e20, epochs=1)
    err = capfd.readouterr().err
    assert "diverged in epoch 1" in err and "beyond what the service trains (malformed request: lr must be" in err
    assert H["loss"][0] != H["loss"][0]


def test_outside_the_grader_the_kit_trains_locally(data, monkeypatch, capfd):
    monkeypatch.delenv(kit_remote.SOCKET_ENV, raising=False)
    H = lab_call(data, epochs=1)[0]
    assert len(H["acc"]) == 1 and "training service" not in capfd.readouterr().err


def test_an_unreachable_service_falls_back_to_local_training(synthetic_data, data, monkeypatch, tmp_path, capfd):
    monkeypatch.setenv(kit_remote.SOCKET_ENV, str(tmp_path / "gone.sock"))
    fresh = kit.get_data(synthetic_data)
    H = lab_call(fresh, epochs=1)[0]
    assert len(H["acc"]) == 1 and "not reachable" in capfd.readouterr().err


def _two_sessions_runs(synthetic_data, tmp_path, monkeypatch, trainers: int) -> tuple[list, bool]:
    """Two sessions' runs of different batch sizes, given to a batcher with `trainers` trainers;
    -> (their answers, whether epochs of the two ever trained at the same time)."""
    from grader.service import batcher as batcher_module
    from grader.service.engine import open_engine

    epochs, lock = [], threading.Lock()
    turn = batcher_module.Batcher._turn

    def timed_turn(self, job):
        start = time.monotonic()
        try:
            return turn(self, job)
        finally:
            with lock:
                epochs.append((job.reqs[0].batch_size, start, time.monotonic()))

    monkeypatch.setattr(batcher_module.Batcher, "_turn", timed_turn)
    engine = open_engine(ServiceOptions(cache_dir=str(tmp_path / f"memo-{trainers}"), gather_s=0.05, process=False,
                                        threads=torch.get_num_threads(), trainers=trainers), synthetic_data)
    try:
        futures = []
        for session, (lr, bs) in (("a", (0.05, 32)), ("b", (0.07, 64))):
            torch.manual_seed(0)
            model = kit.build_mlp(784, 10)
            header, tensors = trainrequest.build(data=engine.fingerprint, lr=lr, momentum=0.9, batch_size=bs, epochs=3,
                                                 params=list(model.parameters()), rng=torch.get_rng_state().numpy())
            req = parse(header, tensors, input_dim=engine.input_dim, classes=engine.classes)
            futures.append(engine.batcher.submit(req, session)[0])
        answers = [f.result(timeout=120) for f in futures]
    finally:
        engine.batcher.close()
    overlapped = any(a[0] != b[0] and a[1] < b[2] and b[1] < a[2] for a in epochs for b in epochs)
    return answers, overlapped


def test_two_sessions_runs_train_side_by_side_with_two_trainers_and_compute_the_same(synthetic_data, tmp_path,
                                                                                     monkeypatch):
    """Two trainers take the two jobs at once (instead of an epoch of each in turn); each job is still
    trained alone by the kit's loop, so the numbers are those of one trainer, bit for bit."""
    side_by_side, overlapped = _two_sessions_runs(synthetic_data, tmp_path, monkeypatch, trainers=2)
    in_turn, overlapped_one = _two_sessions_runs(synthetic_data, tmp_path, monkeypatch, trainers=1)
    assert overlapped and not overlapped_one
    for a, b in zip(side_by_side, in_turn, strict=True):
        assert isinstance(a, trainrequest.TrainAnswer) and isinstance(b, trainrequest.TrainAnswer), (a, b)
        assert a.history == b.history and len(a.history["acc"]) == 3
        assert all(torch.equal(x, y) for x, y in zip(a.params, b.params, strict=True))
