"""The kernels' lazy torch._dynamo: an optimizer trains without importing it, and computes the same;
the first real use of dynamo (torch.compile, its config, its functions) gets the real module, once.

Each case runs in a fresh interpreter, as a kernel does: this test process may have imported dynamo.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from grader.execution import lazy_dynamo

ROOT = Path(__file__).resolve().parents[1]

TRAIN = '''
import json, sys
import torch
torch.set_num_threads(1)
from reference.kit import build_mlp, train_loop
g = torch.Generator().manual_seed(0)
x, y = torch.rand(640, 784, generator=g), torch.randint(0, 10, (640,), generator=g)
torch.manual_seed(0)
model = build_mlp(784, 10, 32)
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
H = train_loop(torch.nn.CrossEntropyLoss(), model, x, y, x[:128], y[:128], opt, 64, 2, torch.device("cpu"), progress=False)
adam = torch.optim.Adam(model.parameters())
model(x[:8]).sum().backward()
adam.step()
adam.zero_grad()
module = sys.modules.get("torch._dynamo")
out = {"H": H, "weights": [p.detach().flatten().tolist() for p in model.parameters()],
       "dynamo": type(module).__name__ if module is not None else None,
       "submodules": sorted(k for k in sys.modules if k.startswith("torch._dynamo."))}
'''

REAL_USES = {
    "compile a model, then step the optimizer": '''
compiled = torch.compile(model, backend="eager")
opt.zero_grad()
torch.nn.functional.cross_entropy(compiled(x[:16]), y[:16]).backward()
opt.step()
out["result"] = bool(torch.allclose(compiled(x[:4]), model(x[:4])))
''',
    "compile a step that holds the optimizer": '''
@torch.compile(backend="eager")
def step():
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x[:16]), y[:16])
    loss.backward()
    opt.step()
    return loss
out["result"] = all(bool(torch.isfinite(step())) for _ in range(2))
''',
    "import its config": '''
import torch._dynamo.config as config
out["result"] = config is sys.modules["torch._dynamo.config"] and isinstance(config.cache_size_limit, int)
''',
    "from-import its functions": '''
from torch._dynamo import reset, optimize
reset()
out["result"] = callable(optimize) and torch._dynamo.is_compiling() is False
''',
}

AFTER = '''
real = sys.modules["torch._dynamo"]
out["after"] = type(real).__name__
out["same_object"] = torch._dynamo is real
out["finders"] = [type(f).__name__ for f in sys.meta_path]
print(json.dumps(out))
'''


def run(code: str, *, lazy: bool) -> dict:
    prelude = f"exec({lazy_dynamo.startup_code()!r}, {{}})\n" if lazy else ""
    done = subprocess.run([sys.executable, "-c", prelude + code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_optimizer_trains_without_importing_dynamo_and_computes_the_same():
    lazy = run(TRAIN + "print(json.dumps(out))", lazy=True)
    eager = run(TRAIN + "print(json.dumps(out))", lazy=False)
    assert lazy["dynamo"] == "StandIn" and lazy["submodules"] == []
    assert eager["dynamo"] == "module" and eager["submodules"]
    assert lazy["H"] == eager["H"]  # same ops in the same order on one machine: equal by construction
    assert lazy["weights"] == eager["weights"]


@pytest.mark.parametrize("use", list(REAL_USES))
def test_the_first_real_use_gets_the_real_dynamo(use):
    out = run(TRAIN + REAL_USES[use] + AFTER, lazy=True)
    assert out["dynamo"] == "StandIn"  # before the use
    assert out["result"] is True
    assert out["after"] == "module" and out["same_object"] is True
    assert "Finder" not in out["finders"]


def test_the_stand_in_is_installed_once_and_never_over_a_loaded_dynamo():
    code = ('import sys, json\n'
            'import torch._dynamo\n'
            f'exec({lazy_dynamo.startup_code()!r}, {{}})\n'
            'import torch\n'
            'opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)\n'
            'print(json.dumps({"kind": type(sys.modules["torch._dynamo"]).__name__,'
            ' "finders": [type(f).__name__ for f in sys.meta_path]}))')
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"kind": "module", "finders": [f for f in out["finders"] if f != "Finder"]}


def test_the_startup_snippet_leaves_no_names_in_the_students_namespace():
    namespace: dict = {}
    before = dict(sys.modules)
    meta = list(sys.meta_path)
    try:
        exec(lazy_dynamo.startup_code(), namespace)
        assert set(namespace) == {"__builtins__"}
        assert "_labgrader_lazy_dynamo" in sys.modules
    finally:
        sys.meta_path[:] = meta
        for name in set(sys.modules) - set(before):
            del sys.modules[name]
