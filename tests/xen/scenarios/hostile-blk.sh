# timeout: 900
# shellcheck shell=dash
# Hostile guests, part 1 (issue 16; hostile-lib.sh says what passing means): the blkif
# attacks on requests and values. Floods last 5 s (each is at full speed from its first
# second). Part 2, hostile-blk-floods, has the state flapping, the event storm and the
# grant flood: the attacks that make the most VM exits, apart, so that a retry after the
# nested-TCG fault (docs/testing.md) repeats only their half.
. ./lib.sh
start_shared_dd
. ./hostile-lib.sh
hostile_run "blk-invalid 5,blk-ahead,blk-requests,blk-rw-requests,blk-discard,blk-revoke,blk-values"
