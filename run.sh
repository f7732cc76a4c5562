#!/usr/bin/env bash
# ReconBench set-up and entry points. Idempotent: the second run only checks and starts.
#   bash run.sh app    install what is missing, then start the app on the bundled sample
#   bash run.sh test   install what is missing, then run the test suite
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY="$VENV/bin/python"

need_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install_system_packages() {
  # open3d needs libusb-1.0 at import time.
  if ! dpkg -s libusb-1.0-0 >/dev/null 2>&1 && ! /sbin/ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
    echo "[run.sh] installing Debian package libusb-1.0-0" >&2
    need_root apt-get update -qq
    need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null
  fi
}

install_python_packages() {
  if [ ! -x "$PY" ]; then
    echo "[run.sh] creating $VENV" >&2
    python3 -m venv "$VENV"
  fi
  stamp="$VENV/.requirements.sha256"
  want="$(sha256sum requirements.txt | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[run.sh] installing requirements.txt into $VENV (first time: several minutes)" >&2
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q -r requirements.txt
    echo "$want" > "$stamp"
  fi
}

setup() {
  install_system_packages
  install_python_packages
}

case "${1:-}" in
  app)
    setup
    shift
    # Jobs run on Ray: join $RECONBENCH_RAY_ADDRESS, else start (or join) this machine's local instance.
    "$PY" -m core jobs start >/dev/null
    exec "$VENV/bin/streamlit" run app.py "$@"
    ;;
  test)
    setup
    shift
    # One worker per core; a test file stays on one worker so its module fixtures are built once.
    exec "$PY" -m pytest -q -n auto --dist loadfile "$@"
    ;;
  setup)
    setup
    ;;
  *)
    echo "usage: bash run.sh app|test|setup" >&2
    exit 2
    ;;
esac
