"""Run in each notebook's kernel at start-up: torch._dynamo is imported when something uses it, not
when torch.optim merely passes through it.

An optimizer's first use imports torch._dynamo (1.3-1.4 s of CPU here, about a quarter of what a
notebook served from the training memo costs) only to call `disable` and `graph_break`, which do
nothing unless torch.compile is tracing, and nothing can trace before dynamo is imported. Until
anything else of it is asked for, a stand-in answers those two; the first other use imports the real
module, which from then on serves everything, the functions the stand-in wrapped included.

The kernel loads this file by its path (the runner's IPython startup snippet, STARTUP), not as
grader.execution.lazy_dynamo, so a student's own `grader` package cannot stand in for it; it is
plain standard library.
"""

import functools
import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
import types

NAME = "torch._dynamo"
_lock = threading.RLock()


def graph_break(msg=""):
    """Force a graph break: nothing to break while no torch.compile traces (none can, without dynamo)."""


def disable(fn=None, recursive=True, **options):
    """torch._dynamo.disable: fn runs as it is until dynamo is imported, then through the real disable."""
    if fn is None:
        return functools.partial(disable, recursive=recursive, **options)
    real_fn = None

    def call(*args, **kwargs):
        nonlocal real_fn
        if real_fn is None:
            real = sys.modules.get(NAME)
            if real is None or isinstance(real, StandIn):
                return fn(*args, **kwargs)
            real_fn = real.disable(fn, recursive, **options)
        return real_fn(*args, **kwargs)

    return functools.wraps(fn)(call) if options.get("wrapping", True) else call


class StandIn(types.ModuleType):
    """torch._dynamo until something asks it for more than `disable` or `graph_break`."""

    def __getattr__(self, name):
        if not self.__dict__.get("_ready") or (name.startswith("__") and name not in ("__path__", "__all__")):
            raise AttributeError(name)  # the import system probing the new module, or a protocol's lookup
        return getattr(load_real(), name)

    def __dir__(self):
        return dir(load_real())


def load_real():
    """Import the real torch._dynamo in the stand-in's place (once; later calls return it)."""
    with _lock:
        current = sys.modules.get(NAME)
        if current is not None and not isinstance(current, StandIn):
            return current
        uninstall()
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(torch.__dict__.get("_dynamo"), StandIn):
            del torch._dynamo
        if current is not None:
            del sys.modules[NAME]
            for name in ("graph_break", "disable"):
                current.__dict__.pop(name, None)
        before = set(sys.modules)
        real = importlib.import_module(NAME)
        loaded = {name for name in sys.modules if name.startswith(NAME + ".")} - before
        if loaded:
            sys.meta_path.insert(0, Loaded(loaded))
        return real


class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers the first `import torch._dynamo` with the stand-in (the import system imports torch first)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != NAME:
            return None
        return importlib.machinery.ModuleSpec(NAME, self)  # no __path__: a submodule's import asks for it, and that loads the real one

    def create_module(self, spec):
        module = StandIn(NAME)
        module.graph_break, module.disable = graph_break, disable
        return module

    def exec_module(self, module):
        module._ready = True


class Loaded(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A submodule whose import loaded the real package (asking the stand-in for its __path__), and
    which that package imported meanwhile, is the module already there, not a second copy."""

    def __init__(self, names):
        self.names = set(names)
        self.specs = {}

    def find_spec(self, fullname, path=None, target=None):
        if target is not None or fullname not in self.names or fullname not in sys.modules:
            return None
        self.names.discard(fullname)
        if not self.names:
            _remove(Loaded)
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        module = sys.modules[spec.name]
        self.specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module):
        own = self.specs.pop(module.__name__, None)
        if own is not None and module.__spec__ is not own:
            try:
                module.__spec__ = own
            except AttributeError:
                pass


def install():
    with _lock:
        if NAME not in sys.modules and not any(isinstance(f, Finder) for f in sys.meta_path):
            sys.meta_path.insert(0, Finder())


def uninstall():
    _remove(Finder)


def _remove(kind) -> None:
    with _lock:
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, kind)]


STARTUP = '''def _labgrader_lazy_dynamo(path):
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("_labgrader_lazy_dynamo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[spec.name] = module
    module.install()
try:
    _labgrader_lazy_dynamo({path!r})
except Exception:
    pass
del _labgrader_lazy_dynamo
'''


def startup_code() -> str:
    """The kernel's startup snippet: this very file, loaded by its path under a name of its own."""
    return STARTUP.format(path=__file__)
