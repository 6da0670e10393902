"""The ``densam`` console script: replaces this Python process with the bundled binary, so the
command line, exit codes, signals and output are exactly the binary's."""

from __future__ import annotations

import os
import sys

from ._runtime import RuntimeSetupError, binary, environment


def main() -> None:
    """Entry point of the ``densam`` command installed by the wheel."""
    try:
        exe = binary()
        env = environment()
    except RuntimeSetupError as e:
        print(f"densam: error: {e.message}", file=sys.stderr)
        sys.exit(e.exit_code or 1)
    sys.stdout.flush()
    sys.stderr.flush()
    # argv[0] "densam": clap names the program after it in usage and help texts.
    os.execve(exe, ["densam", *sys.argv[1:]], env)


if __name__ == "__main__":
    main()
