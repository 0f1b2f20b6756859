# timeout: 900
# shellcheck shell=dash
# Hostile guests, part 2 (issue 16; hostile-lib.sh says what passing means): the blkif
# attacks that flood the driver domain. State flapping 10 s (the pacing's burst of 8
# connections, then one a second; each maps and unmaps the ring, the driver domain's
# exposure to the nested-TCG fault: at 30 s it met the fault in 3 of 5 attempts,
# docs/triple-fault-2026-12-02.md); an event storm 5 s; the grant flood is held until the
# victim's extra disk and vif came and went (at most 120 s).
. ./lib.sh
start_shared_dd
. ./hostile-lib.sh
hostile_run "blk-flap 10,blk-notify 5,blk-pgrants 120"
