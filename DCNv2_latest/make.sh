#!/usr/bin/env bash
# Prebuilds the deformable-convolution extension into site-packages as the module `stvsr_dcn_ext`,
# for the Python of ${PYTHON:-python} and the torch installed there (no build isolation: the
# extension must be compiled against that torch). Extra arguments go to pip (e.g. -v).
#
#   bash DCNv2_latest/make.sh               # build and install
#   python -m pip uninstall stvsr_dcn_ext   # remove it (stvsr then builds just in time again)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python}"
"$PYTHON" -m pip install --no-build-isolation "$@" "$here"
"$PYTHON" -c "import torch, stvsr_dcn_ext as m; print(f'stvsr_dcn_ext built (CUDA kernels: {m.with_cuda()}): {m.__file__}')"
