"""Thin wrapper: see ``stvsr.data.make_lr`` (run with --help for the options)."""

import sys

from stvsr.data.make_lr import main

if __name__ == "__main__":
    sys.exit(main())
