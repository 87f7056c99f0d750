"""Text that must fit on one line: reasons, table cells, error messages."""


def one_line(text, width: int = 120) -> str:
    """Whitespace collapsed, and cut with an ellipsis past `width` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def json_kind(value) -> str:
    """What a parsed JSON value is, in words a student knows ("a list", "null"), for "it holds ..." reasons."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "null" if value is None else "an object"


def first_line(source, width: int = 40) -> str:
    """A cell's first non-blank line as a student recognises it: control characters shown as '?', clipped."""
    text = source if isinstance(source, str) else "".join(source or [])
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    return one_line("".join(c if c.isprintable() else "?" for c in line), width)


def cell_label(number: int, source=None) -> str:
    """How every message names a student's code cell: its 1-based position among the notebook's code
    cells (the grader's setup cell not counted) and its first line, e.g. `cell 4 «best_lr = max(…»`."""
    line = first_line(source) if source is not None else ""
    return f"cell {number} «{line}»" if line else f"cell {number}"
