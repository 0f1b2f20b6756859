# timeout: 1500
# shellcheck shell=dash
# The A/B benchmark's other side (tests/xen/run.sh --ab BASE.elf): bench-bulkhead.sh as
# it is, with the image under comparison (run.sh copies it to /host/base.elf; lib.sh's
# IMAGE) and its figures as side "base".
AB_SIDE=base
. ./bench-bulkhead.sh
