#!/bin/sh
# Fetch the wheels of scripts/gpu-check-wheels.txt for a machine without network (Python 3.12, Linux x86_64) into
# a folder (default .whl), to carry there with the checkout; run where pip can reach the package index.
set -eu
dest=${1:-.whl}
list=$(dirname "$0")/gpu-check-wheels.txt
mkdir -p "$dest"
sed -e 's/#.*//' -e '/^ *$/d' "$list" | grep -v '^encodec==' | xargs python3 -m pip download -q --no-deps \
    --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dest"
# encodec is pure Python but published as an sdist only.
python3 -m pip wheel -q --no-deps encodec==0.1.1 -w "$dest"
ls -l "$dest"
