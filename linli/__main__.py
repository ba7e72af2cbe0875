"""Allow ``python -m linli``."""

from linli.cli import main

main()
