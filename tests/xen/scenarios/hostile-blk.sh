# timeout: 900
# Hostile guests, part 1 (issue 16; hostile-lib.sh says what passing means): the blkif
# attacks. Floods last 5 s (each is at full speed from its first second); state flapping
# 30 s (30 connections at the paced rate, three refills of a guest's warning-log budget);
# the grant flood is held until the victim's extra disk and vif came and went (at most
# 120 s).
. ./lib.sh
start_shared_dd
. ./hostile-lib.sh
hostile_run "blk-invalid 5,blk-ahead,blk-requests,blk-rw-requests,blk-discard,blk-revoke,blk-flap 30,\
blk-values,blk-notify 5,blk-pgrants 120"
