"""Error types shared by the stages."""


class InputError(ValueError):
    """Bad input (config, files, labels, data): retrying cannot help, the message says what to fix."""


class ContractError(InputError):
    """A task received something that does not match its contract (a stage's typed input)."""
