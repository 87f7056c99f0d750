"""Text that must fit on one line: reasons, table cells, error messages."""


def one_line(text, width: int = 120) -> str:
    """Whitespace collapsed, and cut with an ellipsis past `width` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"
