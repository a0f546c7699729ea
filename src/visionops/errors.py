"""Error types shared by the stages."""


class InputError(ValueError):
    """Bad input (config, files, labels, data): retrying cannot help, the message says what to fix."""
