"""``python -m bloodnet_ops.cli``: the same as the ``bloodnet`` script."""

from bloodnet_ops.cli import main

main()
