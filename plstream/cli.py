"""Command-line interface (placeholder until the pipeline lands)."""


def main(argv: list[str] | None = None) -> int:
    return 0
