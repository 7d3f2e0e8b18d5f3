"""``python -m vmci.cli``: the same as the installed ``vmci`` command."""

from vmci.cli import main

main()
