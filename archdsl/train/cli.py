"""CLI commands of the training stage (filled in by the training issue)."""


def add_commands(sub) -> None:
    pass
