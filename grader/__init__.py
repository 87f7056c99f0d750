"""labgrader's assessment half: sandboxed execution, validation, scoring and reports.

Importing this package must stay cheap (no torch): students' self-checks start from here.
"""

__version__ = "0.1.0"

from pathlib import Path as _Path

SCHEMA_DIR = _Path(__file__).resolve().parent / "schemas"
