# timeout: 720
# shellcheck shell=dash
# Hostile guests, part 3 (issue 16; hostile-lib.sh says what passing means): the netif
# attacks, then Bulkhead's shutdown with the victim connected. Floods last 5 s; net-norx
# outlasts the shared driver domain's vif-rx-stall=15 (lib.sh).
. ./lib.sh
start_shared_dd
. ./hostile-lib.sh
hostile_run "net-gso 5,net-jumbo 5,net-storm 5,net-norx 20,net-ctrl 5,net-chains" shutdown
