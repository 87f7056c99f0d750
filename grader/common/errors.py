"""Errors that reach the user as one line, never as a traceback."""


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line.

    exit_code follows the CLI contract: 1 when input was judged invalid, 2 for usage or I/O.
    """

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code
