#!/usr/bin/env bash
# On this workplace's lent GPU machine: unpack nnU-Net's packages from .gpu_deps/site.tar.xz (see
# bench/README.md), put a copy of this checkout's package on the path and run a check script.
# Usage there: bash bench/gpu_device_launch.sh OUT_DIR [SCRIPT (default bench/gpu_check.sh)]
set -u
DEST=$1 SCRIPT=${2:-bench/gpu_check.sh}
rm -rf /tmp/pkg
mkdir -p /tmp/site /tmp/pkg/cosam_nn /tmp/wbin
[ -d /tmp/site/nnunetv2 ] || tar -C /tmp/site -xJf .gpu_deps/site.tar.xz || exit 1
sed -i '1s|^#!.*python.*$|#!/usr/bin/env python3|' /tmp/site/bin/*
cp -r cosam_nn/. /tmp/pkg/cosam_nn/ && cp -r trainers /tmp/pkg/cosam_nn/trainers && cp -r dataset_conversion /tmp/pkg/cosam_nn/dataset_conversion
for c in "cosam_make_synthetic synthetic" "cosam_convert_meply dataset_conversion.Dataset501_Meply" "cosam_trainer_dir trainer_dir"; do
  set -- $c  # overwrites $1 and $2: kept in DEST and SCRIPT above
  printf '#!/bin/sh\nexec python3 -P -c "import sys; from cosam_nn.%s import main; sys.exit(main())" "$@"\n' "$2" > /tmp/wbin/$1
  chmod +x /tmp/wbin/$1
done
export PYTHONPATH=/tmp/pkg:/tmp/site PATH=/tmp/wbin:/tmp/site/bin:$PATH
cosam_trainer_dir
bash "$SCRIPT" "$DEST"
