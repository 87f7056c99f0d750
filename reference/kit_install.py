"""Place the lab kit next to a notebook as `src/fmnist_utils.py`, the module the lab imports.

The file is a shim onto `reference.kit`, so every notebook trains with the same code as the
reference sweep. A submission that brings its own fmnist_utils.py keeps it.
"""

from __future__ import annotations

from pathlib import Path

from grader.common.errors import UserError

SHIM = '''"""Lab 7b kit (get_data, build_mlp, train), installed by labgrader; the code is reference.kit."""

from reference.kit import *  # noqa: F401,F403
from reference.kit import __all__  # noqa: F401
'''
PACKAGE_INIT = '"""Helpers for the lab notebooks."""\n'
KIT_FILES = {"src/__init__.py": PACKAGE_INIT, "src/fmnist_utils.py": SHIM}  # relative path -> text, as install_kit writes them


def install_kit(dir, force: bool = False) -> Path:
    """-> the path of DIR/src/fmnist_utils.py; an existing one stays unless force."""
    src = Path(dir) / "src"
    target = src / "fmnist_utils.py"
    if target.exists() and not force:
        return target
    try:
        src.mkdir(parents=True, exist_ok=True)
        init = src / "__init__.py"
        if not init.exists():
            init.write_text(PACKAGE_INIT)
        target.write_text(SHIM)
    except OSError as e:
        raise UserError(f"cannot write the lab kit into {src} ({e.strerror or e})")
    return target


def install_command(args) -> int:
    target = Path(args.dir) / "src" / "fmnist_utils.py"
    existed = target.exists()
    if not Path(args.dir).is_dir():
        raise UserError(f"{args.dir} is not a folder; give the folder that holds the notebook")
    path = install_kit(args.dir, force=args.force)
    if existed and not args.force:
        print(f"kept the existing {path} (use --force to replace it with the lab kit)")
    else:
        print(f"{'replaced' if existed else 'wrote'} {path}: the lab kit (get_data, build_mlp, train) for notebooks in {args.dir}")
    return 0
