"""Thin wrapper: see ``stvsr.data.demo`` (run with --help for the options)."""

import sys

from stvsr.data.demo import main

if __name__ == "__main__":
    sys.exit(main())
