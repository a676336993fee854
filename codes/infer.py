"""Space-time super-resolution of a video file or a folder of frames (thin wrapper over stvsr.infer.cli).

    python codes/infer.py --input in.mp4 --output out.mp4 --model LunaTokis --checkpoint ckpt.pth
    python codes/infer.py -opt options/test/infer_zsm.yml --input in.mp4 --output out.mp4 [--tile 64]
    python codes/infer.py --input frames/ --fps 24 --output out_frames/ --model bicubic

Installed as ``stvsr-infer``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a source checkout: make `stvsr` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from stvsr.infer.cli import main

if __name__ == "__main__":
    sys.exit(main())
