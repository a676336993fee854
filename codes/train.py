"""Train a model from a YAML options file (thin wrapper over :func:`stvsr.train.cli.main`).

python codes/train.py -opt options/train/train_zsm.yml [--set train.lr_G=1e-4] [--auto_resume]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a source checkout: make `stvsr` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from stvsr.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
