#!/usr/bin/env bash
# One entry point for the quick start:  bash run.sh demo   |   bash run.sh test
# Both set up the environment first (idempotent: a no-op when already set up) and then run.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
STAMP="$VENV/.sslam-installed"

install_system_packages() {
    # torchcodec (datasets' Audio feature) needs the FFmpeg shared libraries; the audio-classification
    # pipeline needs the ffmpeg command for file paths. Installed with apt when run as root.
    if command -v ffmpeg >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q libavutil; then
        return
    fi
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "[setup] installing ffmpeg (FFmpeg libraries for torchcodec)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ffmpeg >/dev/null
    else
        echo "[setup] warning: ffmpeg is missing and this is not root; install ffmpeg to read audio through datasets" >&2
    fi
}

install_python_packages() {
    local wanted
    wanted="$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$wanted" ]; then
        return
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        echo "[setup] creating $VENV (Python 3.11)"
        python3.11 -m venv "$VENV"
    fi
    echo "[setup] installing Python packages (a few minutes the first time)"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -e .
    echo "$wanted" > "$STAMP"
}

setup() {
    install_system_packages
    install_python_packages
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
}

command="${1:-}"
shift || true
case "$command" in
    setup) setup ;;
    demo) setup; exec "$VENV/bin/sslam" demo "$@" ;;
    test) setup; exec "$VENV/bin/python" -m pytest tests -q "$@" ;;
    *) echo "usage: bash run.sh {demo|test|setup} [args...]" >&2; exit 2 ;;
esac
