# shellcheck shell=dash
# xl network-attach/network-detach at runtime, 10 cycles: each attach must reach
# Connected and work in the guest (a DHCP lease and a gateway ping through Bulkhead's
# switch and e1000e), each detach must be released by Bulkhead and gone in the guest;
# grant mappings, event channels and heap must be the same after cycle 1 and cycle 10.
# (Ten, not the twenty they were: the equality checks need two, the heap check a few;
# each cycle is two xl commands of seconds each under nested TCG.)
. ./lib.sh
start_shared_dd
cat >/tmp/netc.cfg <<CFG
name = "netc"
type = "pv"
kernel = "$(linux_file vmlinux)"
ramdisk = "$(linux_file linux-initrd.img)"
extra = "console=hvc0 rdinit=/bulkhead-linux-init bulkhead.role=netcycle"
memory = 256
vcpus = 1
on_crash = "preserve"
CFG
rm -f "$(console_of netc)"
xl create /tmp/netc.cfg || fail "xl create netc failed"
expect_result "$(console_of netc)" 300 "netc did not start" linux-netcycle step=ready
g=$(xl domid netc)
mac=00:16:3e:c0:00:01
for c in $(seq 1 10); do
    xl network-attach netc backend=bulkhead "mac=$mac" || fail "network-attach $c failed"
    guest_step 120 netc netcycle attach "$c" "attach $c: the guest did not report a working eth0"
    results "$(console_of netc)" linux-netcycle step=attach "n=$c" gateway=10.0.2.2 answered=1 >/dev/null \
        || fail "attach $c: $(results "$(console_of netc)" linux-netcycle step=attach "n=$c")"
    xl network-detach netc "$mac" || fail "network-detach $c failed"
    poll_live 60 at_least_events "$c" "$log" device-released "dev~^vif-$g-[0-9]+$" || fail "detach $c: Bulkhead did not release the vif"
    guest_step 60 netc netcycle detached "$c" "detach $c: the guest still has eth0"
    note "cycle $c: attached (Connected), DHCP and gateway ping in the guest, detached, released, gone in the guest"
done
same_after_cycles "$log" "dev~^vif-$g-[0-9]+$" 8192
events "$log" vif-closed | tail -1
xl destroy netc || fail "xl destroy netc failed"
no_panic "$log"
dom0_healthy
offer_dd
echo "netback-cycles: ok"
