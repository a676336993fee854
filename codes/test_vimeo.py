"""Evaluate a space-time VSR model on Vimeo-90K-T Slow / Medium / Fast (thin wrapper over stvsr.eval.vimeo_cli).

    python codes/test_vimeo.py --model bicubic --dataroot_GT vimeo_septuplet/sequences
    python codes/test_vimeo.py --model zsm --checkpoint experiments/pretrained_models/xiang2020zooming.pth \
        --dataroot_GT vimeo_septuplet/sequences --dataroot_LQ vimeo_septuplet_matlabLRx4/sequences
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a source checkout: make `stvsr` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from stvsr.eval.vimeo_cli import main

if __name__ == "__main__":
    sys.exit(main())
