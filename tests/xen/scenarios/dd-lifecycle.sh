# timeout: 900
# shellcheck shell=dash
# Fault isolation and lifecycle: Bulkhead (HVM, owning the NVMe and the e1000e) serves a
# Debian guest's disk and vif, and the driver domain is made to fail in every way an
# operator meets. The guest prints a heartbeat throughout and takes commands from dom0
# through xenstore (tests/xen/linux-init.sh, role `life`).
#   1. crash: Bulkhead panics while the guest runs fio on its disk and iperf3 over its vif
#      (to a second guest on the switch);
#      dom0 stays healthy, the guest keeps running, xl shows the driver domain crashed;
#   2. restart after the crash: a new Bulkhead; the disk and vif are attached again
#      (new vdev and vif: the old ones died with their backend) and every block the
#      guest wrote with fsync before the crash reads back;
#   3. destroy mid-I/O: `xl destroy` while fio writes and the guest pings; after a restart,
#      nothing acknowledged is lost;
#   4. clean shutdown: `xl shutdown` with the guest attached finishes in bounded time,
#      the frontends see Closed, and after a restart the flushed writes are all there;
#   5. device fault: the NVMe controller fails (test trigger): the guest's reads end
#      with errors, not a hang, and its network keeps working.
. ./lib.sh
DEVS="00:03.0 00:04.0"
CMDLINE="test-triggers"
life_log=$(console_of life)

# dd_up: start a driver domain and wait until it serves.
dd_up() {
    start_hvm_dd "$DEVS" "$CMDLINE"
    dd_ready 240
}

# keep_log NAME: keep this instance's console (the next one reuses the file).
keep_log() { cp "$log" "/host/out/console/bulkhead-$1.log" 2>/dev/null; }

n=0
T=120
# cmd VERB ARGS: run a command in the guest (waiting up to $T s); its answer, a result
# line cmd=N, goes to $R.
# (Not in a subshell: the command counter must persist.)
cmd() {
    n=$((n + 1))
    xenstore-write "/local/domain/$g/data/cmd" "$n $*" || fail "cannot write the guest's command"
    poll_live "$T" quietly results "$life_log" linux-life "cmd=$n" || fail "the guest did not answer '$*'"
    R=$(results "$life_log" linux-life "cmd=$n" | head -1 | sed 's/.*result: //')
}
# want SPECS VERB ARGS: run the command; its answer must meet SPECS (fields.awk: words
# key=value or key~ERE).
want() {
    local w="$1"
    shift
    cmd "$@"
    if echo "result: $R" | awk -v tag="result: " -v want="$w" -f "$FIELDS_AWK" >/dev/null; then
        echo "    $R"
    else
        fail "wanted '$w' from '$*', the guest said: $R"
    fi
}
heartbeats() { results "$life_log" linux-life step=heartbeat | wc -l; }

dd_up
dd1=$DD_ID
cat >/tmp/life.cfg <<CFG
name = "life"
type = "pv"
kernel = "$(linux_file vmlinux)"
ramdisk = "$(linux_file linux-initrd-fio.img)"
extra = "console=hvc0 rdinit=/bulkhead-linux-init bulkhead.role=life"
memory = 384
vcpus = 1
on_crash = "preserve"
disk = [ 'format=raw,vdev=xvda,access=rw,backend=bulkhead,target=nvme0n1p5' ]
vif = [ 'backend=bulkhead,mac=00:16:3e:d0:00:01' ]
CFG
net_guest_cfg sink 00:16:3e:d0:00:09 recv 1
rm -f "$life_log" "$(console_of sink)"
xl create /tmp/life.cfg || fail "xl create life failed"
xl create /tmp/sink.cfg || fail "xl create sink failed"
g=$(xl domid life)
expect_result "$life_log" 300 "the guest did not start" linux-life step=ready
want "ok=1 dev=eth0" net eth0
want "ok=1 dev=xvda chunk=1" write xvda 1

# The iperf3 server: a second guest on Bulkhead's switch (its own vif; it goes down with
# the first driver domain and is not brought back).
poll_live 300 reached "$(console_of sink)" linux-net listening || fail "the iperf3 guest did not get going"
results "$(console_of sink)" linux-net pass=0 >/dev/null && fail "the iperf3 guest: $(results "$(console_of sink)" linux-net pass=0 | field why)"
peer=$(xenstore-read "/local/domain/$(xl domid sink)/data/ip") || fail "the iperf3 guest published no address"
# busy_check [iperf3]: fio runs in the guest (and its iperf3 client is connected).
busy_check() {
    [ "$(echo "result: $R" | field disk)" = fio ] || fail "fio is not running in the guest: $R"
    [ -z "$1" ] && return 0
    case "$(echo "result: $R" | field vif)" in *"not connected"* | ping) fail "the guest's iperf3 is not connected: $R" ;; esac
}

note "1. crash while the guest runs fio on its disk and iperf3 over its vif"
want "ok=1 dev=xvda" busy xvda "$peer" 5201
busy_check iperf3
sleep 5
xenstore-write "/local/domain/$dd1/control/test-trigger" panic || fail "cannot trigger the panic"
DD_ID=
poll 60 crashed bulkhead || fail "xl does not show the driver domain crashed: $(xl list bulkhead 2>&1 | tail -1)"
events "$log" panic "message~^test-trigger:.panic.requested.by.dom0" >/dev/null || fail "no panic message on Bulkhead's console"
echo "    xl list: $(xl list bulkhead | tail -1)"
dom0_healthy
hb=$(heartbeats)
sleep 6
[ "$(heartbeats)" -gt "$hb" ] || fail "the guest stopped printing its heartbeat after the crash"
xl list life | tail -1 | awk '{ print $5 }' | grep -qE "^[-rb]+$" || fail "the guest is not running: $(xl list life | tail -1)"
# Only a note (Linux blkfront never completes I/O whose backend died, README): 5 s is
# enough to see it does not return.
cmd read xvda 0 5
note "the guest runs on (heartbeat $(heartbeats)); a read of its old disk within 5 s: $R"
keep_log crashed
# The driver domain first: the sink's destroy would otherwise wait out libxl's 10 s for
# its vif's backend, which died with it.
xl destroy bulkhead || fail "xl destroy of the crashed driver domain failed"
xl destroy sink

note "2. restart, attach again, read back what was acknowledged"
dd_up
want "ok=1 verb=quiet" quiet
xl block-attach life "format=raw,vdev=xvdb,access=rw,backend=bulkhead,target=nvme0n1p5" || fail "block-attach after the restart failed"
xl network-attach life backend=bulkhead mac=00:16:3e:d0:00:02 || fail "network-attach after the restart failed"
want "ok=1 dev=xvdb chunk=1" verify xvdb 1
echo "figure: dd-lifecycle: xl create of a new instance after the crash -> the guest's re-attached disk answering: $(( ($(date +%s%N) - DD_T0) / 1000000 )) ms"
want "ok=1 dev=eth1" net eth1

note "3. destroy in the middle of writes"
want "ok=1 dev=xvdb chunk=2" write xvdb 2
want "ok=1 dev=xvdb" busy xvdb
busy_check
sleep 5
DD_ID=
keep_log destroyed
xl destroy bulkhead || fail "xl destroy of the busy driver domain failed"
dom0_healthy
dd_up
want "ok=1 verb=quiet" quiet
xl block-attach life "format=raw,vdev=xvdc,access=rw,backend=bulkhead,target=nvme0n1p5" || fail "block-attach after the destroy failed"
xl network-attach life backend=bulkhead mac=00:16:3e:d0:00:03 || fail "network-attach after the destroy failed"
want "ok=1 dev=xvdc chunk=1" verify xvdc 1
want "ok=1 dev=xvdc chunk=2" verify xvdc 2
echo "figure: dd-lifecycle: xl create of a new instance after the destroy -> the guest's re-attached disk answering: $(( ($(date +%s%N) - DD_T0) / 1000000 )) ms"
want "ok=1 dev=eth2" net eth2

note "4. clean shutdown with the guest attached"
want "ok=1 dev=xvdc chunk=3" write xvdc 3
t0=$(date +%s%N)
out=$(timeout "$(scaled 120)" xl shutdown -w bulkhead 2>&1) || fail "xl shutdown -w did not finish: $out"
t1=$(date +%s%N)
DD_ID=
events "$log" shutdown then=poweroff || fail "Bulkhead did not report its shutdown"
events "$log" nic-down dev=net0 why=shutdown >/dev/null || fail "the e1000e was not reset at shutdown"
events "$log" nvme-down dev=nvme0 why=shutdown flushed=1 >/dev/null || fail "the NVMe was not flushed and shut down"
echo "figure: dd-lifecycle: xl shutdown of Bulkhead with a guest's disk and vif attached: $(( (t1 - t0) / 1000000 )) ms"
state=$(xenstore-read "/local/domain/$g/device/vbd/51744/state" 2>/dev/null)
note "the guest's xvdc frontend state after the shutdown: ${state:-gone}"
keep_log shutdown
dd_up
xl block-attach life "format=raw,vdev=xvdd,access=rw,backend=bulkhead,target=nvme0n1p5" || fail "block-attach after the shutdown failed"
xl network-attach life backend=bulkhead mac=00:16:3e:d0:00:04 || fail "network-attach after the shutdown failed"
for k in 1 2 3; do
    want "ok=1 dev=xvdd chunk=$k" verify xvdd $k
done
want "ok=1 dev=eth3" net eth3

note "5. the NVMe controller fails"
xenstore-write "/local/domain/$DD_ID/control/test-trigger" nvme-fail || fail "cannot trigger the device failure"
expect_event "$log" 30 "Bulkhead did not fail the controller" nvme-failed dev=nvme0
T=100; want "ok=1 read=error" read xvdd 0; T=120
want "ok=1 dev=eth3" net eth3
no_panic "$log"
xl destroy life
# The driver domain is left to dom0-run, which stops it unless this was the run's last
# scenario (its destroy waits out libxl's 10 s for the device model to release the
# passed-through devices, which nothing after it needs).
dom0_healthy
echo "dd-lifecycle: ok"
