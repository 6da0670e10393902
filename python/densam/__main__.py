"""``python -m densam ...``: the same as the ``densam`` command."""

from ._cli import main

main()
