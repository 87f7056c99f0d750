"""The kit's side of the training service: recognise a standard call, send it, load the answer.

Under `labgrader grade` the sandbox has a Unix socket at $LABGRADER_TRAIN_SOCKET. A call to
train() that is exactly the lab's (the kit's MLP of plain modules, mean cross entropy, plain
SGD with lr and momentum on a fresh optimizer, the very tensors get_data returned,
unchanged) is trained by the service; the answer (history, final weights, momentum buffers,
generator state) is loaded into the student's objects, so the notebook goes on exactly as
after local training. Anything else trains locally, and says why on stderr.
"""

from __future__ import annotations

import os
import socket
import sys
import weakref

import torch
from torch import nn

from reference import wire
from reference.trainrequest import MAX_HIDDEN, RequestError, TrainAnswer, answer_payload, build, parse

SOCKET_ENV = "LABGRADER_TRAIN_SOCKET"
ROLES = ("x_train", "y_train", "x_test", "y_test")

_given: dict = {}


class TrainingServiceError(RuntimeError):
    """The grader's training service refused the request; the message is its reason."""


def socket_path() -> str | None:
    return os.environ.get(SOCKET_ENV) or None


def remember(tensors, fingerprint: str) -> None:
    """Note what get_data returned, so train() can tell the data arrived unchanged."""
    _given.clear()
    _given["fingerprint"] = fingerprint
    _given["tensors"] = [(weakref.ref(t), _stamp(t)) for t in tensors]


def _stamp(t: torch.Tensor) -> tuple:
    """Identity of a tensor's contents: torch's version counter, its storage and an exact integer checksum
    (which also catches writes that bypass the counter, through .numpy() or .data)."""
    return (t._version, t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, _checksum(t))


def _checksum(t: torch.Tensor) -> tuple:
    """The bits summed per row, then the row sums weighted by their place, so that rows shuffled in place
    change it too. Float32 pairs are read as one int64 word: 60,000 images in about 10 ms, not 150."""
    if t.numel() == 0:
        return (0, 0)
    rows = t.reshape(t.shape[0] if t.dim() else 1, -1)
    if t.dtype == torch.float32:
        rows = rows.view(torch.int64) if rows.shape[1] % 2 == 0 and rows.is_contiguous() else rows.view(torch.int32)
    sums = rows.sum(1, dtype=torch.int64)
    place = torch.arange(1, len(sums) + 1, dtype=torch.int64)
    return int(sums.sum()), int((sums * place).sum())


def why_local(loss, model, data, optim, batch_size, n_epochs) -> str | None:
    """None for the lab's standard call; otherwise why it trains in the notebook."""
    checks = (
        lambda: _data_problem(data),
        lambda: _model_problem(model, data[0].shape[1]),
        lambda: _loss_problem(loss),
        lambda: _optim_problem(optim, model),
        lambda: None if _plain_int(batch_size) and batch_size >= 1 else "the batch size is not a positive int",
        lambda: None if _plain_int(n_epochs) and n_epochs >= 1 else "n_epochs is not a positive int",
        lambda: None if torch.is_grad_enabled() else "gradients are disabled",
    )
    for check in checks:
        reason = check()
        if reason:
            return reason
    return None


def _plain_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _data_problem(data) -> str | None:
    given = _given.get("tensors")
    if not given:
        return "the data did not come from get_data()"
    for role, t, (ref, stamp) in zip(ROLES, data, given):
        if ref() is not t:
            return f"{role} is not the tensor get_data() returned"
        if _stamp(t) != stamp:
            return f"{role} was modified after get_data()"
    return None


def _plain(module: nn.Module, cls: type) -> bool:
    """Exactly cls, with its own forward and no hooks or parametrizations."""
    return (type(module) is cls and "forward" not in vars(module)
            and not (module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                     or module._backward_pre_hooks or getattr(module, "parametrizations", None)))


def _model_problem(model, input_dim: int) -> str | None:
    if not (_plain(model, nn.Sequential) and len(model) == 3):
        return "the model is not the kit's build_mlp (Linear, ReLU, Linear)"
    first, act, last = model
    if not (_plain(first, nn.Linear) and _plain(act, nn.ReLU) and _plain(last, nn.Linear)):
        return "the model is not the kit's build_mlp (Linear, ReLU, Linear)"
    if first.bias is None or last.bias is None or first.in_features != input_dim or last.out_features != 10:
        return "the model's layers do not match the data (784 inputs, 10 classes, with biases)"
    if first.out_features > MAX_HIDDEN or last.in_features != first.out_features:
        return f"the hidden layer is not 1 to {MAX_HIDDEN} units"
    if _global_hooks():
        return "global module hooks are registered"
    params = list(model.parameters())
    if len(params) != 4 or list(model.buffers()):
        return "the model has extra parameters or buffers"
    for p in params:
        if type(p) is not nn.Parameter or p.dtype != torch.float32 or p.device.type != "cpu" or not p.requires_grad:
            return "the parameters are not plain float32 CPU parameters"
        if p._backward_hooks or not bool(torch.isfinite(p).all()):
            return "a parameter has hooks or non-finite values"
    return None


def _global_hooks() -> bool:
    from torch.nn.modules import module as m

    names = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
             "_global_backward_pre_hooks", "_global_forward_hooks_always_called")
    return any(getattr(m, n, None) for n in names)


def _loss_problem(loss) -> str | None:
    if not _plain(loss, nn.CrossEntropyLoss):
        return "the loss is not a plain nn.CrossEntropyLoss"
    if loss.reduction != "mean" or loss.weight is not None or loss.label_smoothing != 0.0 or loss.ignore_index != -100:
        return "the loss is not CrossEntropyLoss with its defaults (mean reduction)"
    return None


def _optim_problem(opt, model) -> str | None:
    if type(opt) is not torch.optim.SGD or "step" in vars(opt) or "zero_grad" in vars(opt):
        return "the optimizer is not a plain torch.optim.SGD"
    if len(opt.param_groups) != 1:
        return "the optimizer has several parameter groups"
    g = opt.param_groups[0]
    if [id(p) for p in g["params"]] != [id(p) for p in model.parameters()]:
        return "the optimizer does not hold exactly the model's parameters"
    if any(len(s) for s in opt.state.values()):
        return "the optimizer already has momentum buffers (it was used before)"
    if (g["dampening"] != 0 or g["weight_decay"] != 0 or g["nesterov"] or g["maximize"]
            or g.get("differentiable") or g.get("fused")):
        return "the optimizer uses options beyond lr and momentum"
    if isinstance(g["lr"], torch.Tensor) or isinstance(g["momentum"], torch.Tensor):
        return "lr or momentum is a tensor"
    if opt._optimizer_step_pre_hooks or opt._optimizer_step_post_hooks or _global_optim_hooks():
        return "optimizer hooks are registered"
    return None


def _global_optim_hooks() -> bool:
    from torch.optim import optimizer as o

    return bool(getattr(o, "_global_optimizer_pre_hooks", None) or getattr(o, "_global_optimizer_post_hooks", None))


def note(line: str) -> None:
    print(f"fmnist_utils: {line}", file=sys.stderr)


def train_remote(loss, model, data, optim, batch_size, n_epochs, device=None) -> dict | str:
    """The history after the service trained this call, or why it trains locally (also said on stderr).

    device: where local training would have left the model (the kit's device); the answer is loaded there.

    Raises TrainingServiceError when the service refuses the request (its reason, e.g. the quota).
    """
    reason = why_local(loss, model, data, optim, batch_size, n_epochs)
    if reason:
        return _local(reason)
    params = list(model.parameters())
    g = optim.param_groups[0]
    header, tensors = build(data=_given["fingerprint"], lr=g["lr"], momentum=g["momentum"], batch_size=batch_size,
                            epochs=n_epochs, params=params, rng=torch.get_rng_state())
    try:
        parse(header, tensors, input_dim=params[0].shape[1], classes=10)
    except RequestError as e:
        return _local(f"beyond what the service trains ({e})")
    try:
        answer_header, answer_tensors = exchange(header, tensors, hidden=params[0].shape[0], input_dim=params[0].shape[1])
    except (OSError, EOFError, wire.WireError) as e:
        return _local(f"the training service is not reachable ({e})")
    if not answer_header.get("ok"):
        return _local(str(answer_header.get("reason")))
    try:
        answer = TrainAnswer.from_frame(answer_header, answer_tensors)
    except RequestError as e:
        raise TrainingServiceError(str(e)) from None
    _load(answer, model, optim, params, device)
    note(f"{n_epochs} epoch(s) trained by labgrader's training service ({answer_header.get('served', 'trained')})")
    return {k: list(answer.history[k]) for k in ("acc", "test_acc", "loss", "test_loss")}


def _local(reason: str) -> str:
    note(f"training in the notebook: {reason}")
    return reason


def exchange(header: dict, tensors: dict, *, hidden: int, input_dim: int, path: str | None = None) -> tuple[dict, dict]:
    """One request and its answer over a fresh connection to the service.

    -> the answer, ok or "train it locally"; TrainingServiceError when the service refused it.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path or socket_path()))
        s.sendall(wire.encode(header, tensors))
        answer = wire.read_frame(wire.socket_reader(s), max_payload=answer_payload(hidden, input_dim, 10))
    if not answer[0].get("ok") and not answer[0].get("local"):
        raise TrainingServiceError(f"the training service refused this request: {answer[0].get('error')}")
    return answer


def _load(answer: TrainAnswer, model, optim, params, device=None) -> None:
    """Leave model, optimizer and generator as a local train() leaves them (gradients aside: None):
    on a notebook with a GPU that means the model and its momentum buffers on that device."""
    with torch.no_grad():
        for p, w in zip(params, answer.params):
            p.copy_(w)
            p.grad = None
    if device is not None:
        model.to(device)
    if optim.param_groups[0]["momentum"] != 0:
        for p, m in zip(params, answer.momenta):
            optim.state[p]["momentum_buffer"] = m.to(p.device, copy=True)
    torch.set_rng_state(answer.rng)
    model.train()
