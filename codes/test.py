"""Evaluate a space-time VSR model on Vid4, SPMC or any folder of clips (thin wrapper over stvsr.eval.cli).

    python codes/test.py -opt options/test/test_zsm_vid4.yml
    python codes/test.py --model bicubic --dataroot_GT datasets/Vid4/GT [--tail official_zsm]
    python codes/test.py --model zsm --checkpoint experiments/pretrained_models/xiang2020zooming.pth \
        --dataroot_GT datasets/Vid4/GT --dataroot_LQ datasets/Vid4/BIx4 --save_images
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a source checkout: make `stvsr` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from stvsr.eval.cli import main

if __name__ == "__main__":
    sys.exit(main())
