"""The project's error type for bad input: `dp` prints it as one clear line, without a traceback."""


class DpError(Exception):
    """An error caused by the user's input (a file, a key, a flag, a message).

    The message names what was wrong (file, key, episode, chunk) and what was expected.
    """
