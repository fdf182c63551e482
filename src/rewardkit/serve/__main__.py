"""`python -m rewardkit.serve ARGS` is `rewardkit serve ARGS` (for containers and tests that run a module)."""

from __future__ import annotations

import sys

from rewardkit.cli import app


def main(argv: list[str] | None = None) -> int:
    """Run the server; the exit code (2 for a user error, as the CLI's) is returned, not raised."""
    try:
        app(args=["serve", *(sys.argv[1:] if argv is None else argv)], prog_name="python -m rewardkit.serve")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else int(e.code is not None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
