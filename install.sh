#!/usr/bin/env bash
# Installs stvsr (editable) into the Python of ${PYTHON:-python}.
#
#   bash install.sh          # the package and its runtime dependencies
#   bash install.sh --test   # the same, plus the test dependencies (pytest)
#
# A torch >= 2.1 that already imports is kept. Otherwise torch==${STVSR_TORCH_VERSION:-2.13.0} is
# installed first: pinned, because an unpinned `torch` pulls the newest multi-gigabyte CUDA build; on
# the machines of this project pip finds the local CPU wheel of 2.13.0 through its find-links.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
PYTHON="${PYTHON:-python}"
TORCH_VERSION="${STVSR_TORCH_VERSION:-2.13.0}"

usage() {
  sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

target="."
for arg in "$@"; do
  case "$arg" in
    --test) target=".[test]" ;;
    -h | --help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument '$arg' (the only option is --test)" >&2; exit 2 ;;
  esac
done

# Prints the torch version and succeeds when torch >= 2.1 imports; prints why not and fails otherwise.
check_torch() {
  "$PYTHON" - <<'EOF'
import re
import sys

try:
    import torch
except Exception as exc:  # not installed, or broken
    print(f"torch does not import ({type(exc).__name__}: {exc})")
    sys.exit(1)
match = re.match(r"(\d+)\.(\d+)", torch.__version__)
if match is None or (int(match.group(1)), int(match.group(2))) < (2, 1):
    print(f"torch {torch.__version__} is older than 2.1")
    sys.exit(1)
print(f"torch {torch.__version__}")
EOF
}

if status="$(check_torch)"; then
  echo "install.sh: keeping the installed ${status}"
else
  echo "install.sh: ${status}; installing torch==${TORCH_VERSION}"
  "$PYTHON" -m pip install "torch==${TORCH_VERSION}"
fi

echo "install.sh: pip install -e \"${target}\""
"$PYTHON" -m pip install -e "${target}"
