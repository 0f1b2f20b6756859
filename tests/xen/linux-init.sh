#!/bin/sh
# shellcheck shell=dash # busybox ash in the guests; ShellCheck 0.9 knows no busybox dialect
# PID 1 of the Linux domUs the Xen tier uses for comparison and as test guests
# (rdinit=/bulkhead-linux-init in their kernel command line), from the initramfs that
# build-dom0.sh makes. `bulkhead.role=` picks what it does:
#   dd     a Linux driver domain: pcifront, nvme, blkback and `xl devd` (the baseline
#          Bulkhead is measured against); with bulkhead.bridge also netback and a bridge
#          over its e1000e; it answers the benchmark's commands (below) too
#   guest  a guest: waits for its xvda and runs a write/read-back check on it
#   bench  a benchmark guest (make bench): xvda and eth0, a DHCP lease, an iperf3 server,
#          then the benchmark's commands (below)
#   blk    a guest of Bulkhead's blkback: negotiated features, 64 MiB of random data with
#          O_DIRECT read back by checksum, ext4 with files verified after a remount,
#          fstrim; a verdict `result: name=linux-blk pass=1` (or pass=0 why="...")
#   demo   make run's guest: ext4 on xvda read back after a remount, a DHCP lease and
#          pings on eth0, then a shell on its console
#   net    a guest of netback: DHCP, pings, a 64 MiB TCP transfer to or from a peer
#   victim disk I/O and pings under attack, figures per phase (tests/hostile)
#   hostile  the hostile frontend agent (tests/hostile)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /proc /sys /dev /run /tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmpfs /run
mkdir -p /var/run/xen /var/lib/xen /var/log/xen
mount -t tmpfs tmpfs /tmp
role=$(sed -n 's/.*bulkhead\.role=\([a-z]*\).*/\1/p' /proc/cmdline)
say() { echo "linux-$role: $*"; }
# What dom0's scenarios check is printed as structured lines (tests/xen/scenarios/
# fields.awk reads them; `say` is prose for people and may change): `result:
# name=linux-ROLE` and key=value fields, free text in double quotes (quote). A role's
# verdict is pass=1, or pass=0 with why=.
result() { echo "result: name=linux-$role $*"; }
quote() { printf '"%s"' "$(printf '%s' "$*" | tr -d '"' | tr '\r\n' '  ')"; }
passed() { result "pass=1"; }
failed() { result "pass=0 why=$(quote "$*")"; }
# received PING-OUTPUT: how many answers ping counted.
received() { echo "$1" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p'; }
t0=$(cut -d' ' -f1 /proc/uptime)

# lease IFACE: DHCP by busybox udhcpc, whose script configures IFACE and writes the lease
# to /tmp/lease as shell assignments.
lease() {
    cat >/tmp/dhcp.sh <<'SCRIPT'
#!/bin/sh
case "$1" in
deconfig)
    ifconfig "$interface" 0.0.0.0 up
    ;;
bound | renew)
    ifconfig "$interface" "$ip" netmask "$subnet" up
    for r in $router; do route add default gw "$r" dev "$interface"; done
    # QEMU's user network with restrict=on sends no router option: its gateway is the
    # DHCP server itself.
    gw=$(echo $router | cut -d' ' -f1)
    echo "IPV4ADDR=$ip IPV4NETMASK=$subnet IPV4GATEWAY=${gw:-$serverid}" >/tmp/lease
    ;;
esac
SCRIPT
    chmod +x /tmp/dhcp.sh
    rm -f /tmp/lease
    ip link set "$1" up
    udhcpc -i "$1" -n -q -t 20 -T 3 -s /tmp/dhcp.sh >/tmp/udhcpc.log 2>&1 && [ -s /tmp/lease ]
}

# progress: every 20 s, this guest's packet and TCP counters (a stalled transfer then
# shows which side stopped); runs in the background until killed.
progress() {
    while sleep 20; do
        say "progress: eth0 rx $(cat /sys/class/net/eth0/statistics/rx_packets) tx $(cat /sys/class/net/eth0/statistics/tx_packets) packets; tcp in/out/retrans $(awk '/^Tcp:/ { t = $11 "/" $12 "/" $13 } END { print t }' /proc/net/snmp); 5001 state/queues $(awk '$2 ~ /:1389$/ || $3 ~ /:1389$/ { print $4, $5 }' /proc/net/tcp | tr '\n' ' ')"
    done
}

# The benchmark's commands (tests/xen/scenarios/bench-lib.sh sends them): dom0 writes
# "N VERB ARGS" to this domain's data/cmd, the answer is one console line
# "result: name=linux-ROLE cmd=N key=value ...". fio comes from the
# linux-initrd-fio.img ramdisk.
#   fio DISK RW BS DEPTH SECS    O_DIRECT, libaio, over 64 MiB: iops= mibs= p50us= p99us=
#                                (completion latency; the reads' or the writes' figures)
#   tcp HOST STREAMS SECS [-R]   iperf3 to HOST's server (-R: HOST sends): mbits= as
#                                the receiver counted
#   udp HOST SECS [RATE]         64-byte datagrams, RATE a second (none: no limit): pps=
#                                received, sent_pps= sent, lost_pct=
#   ping HOST COUNT              COUNT pings 0.1 s apart: p50ms= p99ms= lost=
#   mem                          used_kib= (free's "used": no page cache, no ramdisk)
#   quiesce                      the NVMe and the NIC let go by their drivers (they reset
#                                them), so a destroy leaves them quiet for the next owner
bench_fio() {
    LD_LIBRARY_PATH=/opt/fio/lib /opt/fio/fio --name=bench --filename="$1" --direct=1 \
        --ioengine=libaio --rw="$2" --bs="$3" --iodepth="$4" --size=64M --runtime="$5" \
        --time_based --minimal --percentile_list=50:99 >/tmp/fio.out 2>&1 || { echo "error=fio:$(tail -1 /tmp/fio.out | tr ' ' _)"; return; }
    # Terse format 3: the reads' bandwidth (KiB/s), IOPS and completion-latency
    # percentiles (us) are fields 7, 8 and 18-37; the writes' 48, 49 and 59-78.
    tail -1 /tmp/fio.out | awk -F';' '{
        b = ($8 + 0 > 0) ? 7 : 48
        p50 = p99 = 0
        for (i = b + 11; i < b + 31; i++) {
            split($i, kv, "=")
            if (kv[1] ~ /^50\.0*%$/) p50 = kv[2]
            if (kv[1] ~ /^99\.0*%$/) p99 = kv[2]
        }
        printf "iops=%d mibs=%.1f p50us=%d p99us=%d\n", $(b + 1), $b / 1024, p50, p99
    }'
}
bench_tcp() {
    # shellcheck disable=SC2086 # $4: an optional flag (-R), absent or one word
    iperf3 -c "$1" -P "$2" -t "$3" -f m $4 >/tmp/iperf.out 2>&1 || { echo "error=iperf3:$(tail -1 /tmp/iperf.out | tr ' ' _)"; return; }
    # The last receiver line: the streams' sum when there are several.
    # retr=: the sender's retransmitted segments (its "Retr" column; for BENCH_PROBE).
    awk '/receiver/ { for (i = 2; i <= NF; i++) if ($i == "Mbits/sec") v = $(i - 1) }
        /sender/ { for (i = 2; i <= NF; i++) if ($i == "Mbits/sec") r = $(i + 1) }
        END { print "mbits=" v " retr=" r }' /tmp/iperf.out
}
bench_udp() {
    # RATE: datagrams a second, as iperf3's bit rate of their 64-byte payloads (0: none).
    iperf3 -c "$1" -u -l 64 -b $((${3:-0} * 512)) -t "$2" >/tmp/iperf.out 2>&1 || { echo "error=iperf3:$(tail -1 /tmp/iperf.out | tr ' ' _)"; return; }
    # The "lost/total" datagrams of the receiver's line (pps=, taken by its socket) and
    # of the sender's (sent_pps=, what it sent); lost_pct=: the receiver's share lost.
    awk -v secs="$2" '/receiver|sender/ { for (i = 2; i <= NF; i++) if ($i ~ /^[0-9]+\/[0-9]+$/) { split($i, lt, "/"); if (/receiver/) { got = 1; v = int((lt[2] - lt[1]) / secs); l = lt[2] > 0 ? lt[1] * 100 / lt[2] : 100 } else s = int(lt[2] / secs) } }
        END { if (got) printf "pps=%d sent_pps=%d lost_pct=%.2f\n", v, s, l; else print "error=iperf3:no-receiver-figures" }' /tmp/iperf.out
}
bench_ping() {
    ping -c "$2" -i 0.1 -W 2 "$1" 2>&1 | sed -n 's/.*time=\([0-9.]*\) ms.*/\1/p' | sort -n | awk -v want="$2" '
        { t[NR] = $1 }
        END {
            if (NR == 0) { print "error=no-replies"; exit }
            i50 = int(NR * 0.5 + 0.999); i99 = int(NR * 0.99 + 0.999)
            printf "p50ms=%s p99ms=%s lost=%d\n", t[i50], t[i99], want - NR
        }'
}
# next_command SECONDS: wait for a new "N VERB ARGS" in this domain's data/cmd (dom0
# writes it), looking every SECONDS at first and less often the longer nothing comes
# (up to 1.6 s): each look forks xenstore-read, which under nested TCG costs a
# PV guest tens of ms, and a guest waiting out another guest's workload at 0.2 s took a
# third of a vCPU from the emulated machine (measured, BENCH_PROBE=1). CMD holds it.
next_command() {
    local wait=$1 n=0
    while :; do
        CMD=$(xenstore-read data/cmd 2>/dev/null)
        if [ -n "$CMD" ] && [ "$CMD" != "${LAST_CMD:-}" ]; then
            LAST_CMD=$CMD
            return 0
        fi
        sleep "$wait"
        n=$((n + 1))
        # Double every 5 looks while that stays within 1.6 s (from 0.2 s: 1.6 s after 3 s).
        [ $((n % 5)) -eq 0 ] && wait=$(awk -v w="$wait" 'BEGIN { print (w * 2 <= 1.6 ? w * 2 : w) }')
    done
}
# counters: the `counters` command's fields, each file read once: interrupts, context
# switches and CPU time by kind (/proc/stat); of the interrupts, Xen event channels,
# netfront's TX-completion and RX events (a Linux driver domain: netback's) and blkfront's
# (blkback's) (/proc/interrupts); TCP segments, UDP datagrams taken by sockets and dropped
# for a full socket buffer (/proc/net/snmp); packets and drops of its eth* (a guest's
# netfront) and vif* (a Linux driver domain's netback) interfaces (/proc/net/dev).
counters() {
    awk '/^intr / { printf "intr=%s ", $2 } /^ctxt / { printf "ctxt=%s ", $2 }
        /^cpu / { printf "user=%s sys=%s idle=%s irq=%s softirq=%s steal=%s ", $2 + $3, $4, $5 + $6, $7, $8, $9 }' /proc/stat
    awk '{ n = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i }
        /xen-dyn|xen-percpu/ { e += n } /-tx$/ { tx += n } /-rx$/ { rx += n } /blkif/ { blk += n }
        END { printf "evt=%d evtx=%d evrx=%d evblk=%d ", e, tx, rx, blk }' /proc/interrupts
    # Each of Tcp: and Udp: is a line of names, then a line of values.
    awk '/^(Tcp|Udp):/ {
            if (!($1 in named)) { named[$1] = 1; for (i = 1; i <= NF; i++) key[$1 i] = $i; next }
            for (i = 1; i <= NF; i++) {
                k = key[$1 i]
                if (k == "InSegs" || k == "OutSegs") printf "%s=%s ", k, $i
                if ($1 == "Udp:" && (k == "InDatagrams" || k == "RcvbufErrors")) printf "Udp%s=%s ", k, $i
            }
        }' /proc/net/snmp
    sed 's/:/ /' /proc/net/dev | awk '$1 ~ /^(eth|vif)/ { p = substr($1, 1, 3); rx[p] += $3; rxd[p] += $5; tx[p] += $11; txd[p] += $13 }
        END { for (p in rx) printf "%s_rx=%d %s_rxdrop=%d %s_tx=%d %s_txdrop=%d ", p, rx[p], p, rxd[p], p, tx[p], p, txd[p] }'
}
# cpu_ticks: this guest's CPU time so far by kind, 1/100 s: user (nice too), system,
# idle (iowait too), softirq, steal (runnable, but Xen ran another vCPU).
cpu_ticks() { awk '/^cpu / { print $2 + $3, $4, $5 + $6, $8, $9 }' /proc/stat; }
# during T0: what this guest's CPU did since cpu_ticks gave T0, as answer fields: a
# workload's answer carries them, so a benchmark guest that was not running can be told
# waiting for I/O (idle) from waiting for a physical CPU (steal).
during() {
    echo "$1" | awk -v now="$(cpu_ticks)" '{ split(now, b, " ")
        printf "cpu_user=%d cpu_sys=%d cpu_idle=%d cpu_softirq=%d cpu_steal=%d", b[1] - $1, b[2] - $2, b[3] - $3, b[4] - $4, b[5] - $5 }'
}
bench_commands() {
    local t0
    while next_command 0.2; do
        # shellcheck disable=SC2086 # split the command into its words
        set -- $CMD
        n=$1 verb=$2
        shift 2
        t0=$(cpu_ticks)
        case "$verb" in
        fio) r=$(bench_fio "$@") ;;
        tcp) r=$(bench_tcp "$@") ;;
        udp) r=$(bench_udp "$@") ;;
        ping) r=$(bench_ping "$@") ;;
        mem) r=$(free -k | awk '/^Mem:/ { print "used_kib=" $3 }') ;;
        # What the guest's kernel did so far (BENCH_PROBE: deltas around a workload).
        counters)
            r=$(counters) ;;
        quiesce)
            for d in /sys/bus/pci/drivers/e1000e/0000:* /sys/bus/pci/drivers/nvme/0000:*; do
                [ -e "$d" ] && echo "${d##*/}" >"${d%/*}/unbind"
            done
            r="ok=1" ;;
        *) r="error=unknown-command:$verb" ;;
        esac
        case "$verb" in fio | tcp | udp | ping) r="$r $(during "$t0")" ;; esac
        result "cmd=$n $r"
    done
}

case "$role" in
dd)
    mount -t xenfs xenfs /proc/xen
    for m in xen-privcmd xen-evtchn xen-gntdev xen-gntalloc xen-pcifront nvme xen-blkback; do modprobe $m; done
    i=0
    until [ -b /dev/nvme0n1 ]; do i=$((i + 1)); [ $i -gt 120 ] && { say "no /dev/nvme0n1"; break; }; sleep 0.5; done
    say "nvme: $(cat /sys/block/nvme0n1/size 2>/dev/null) sectors, partitions: $(find /sys/block/nvme0n1/ -maxdepth 1 -name 'nvme0n1p*' | wc -l)"
    for t in stat xenstore-read xenstore-write xl; do command -v $t >/dev/null || say "missing tool: $t"; done
    # devd's messages go to the console so the test log shows hotplug problems.
    (xl devd -F 2>&1 | sed 's/^/linux-dd devd: /' >/dev/console) &
    if grep -q "bulkhead.bridge" /proc/cmdline; then
        # Networks too: netback, and a bridge over the passed-through NIC that the guests'
        # vifs join (their hotplug script, below, which `xl devd` runs).
        for m in e1000e xen-netback bridge; do modprobe $m; done
        i=0
        # shellcheck disable=SC2012 # sysfs interface names: plain names
        until nic=$(ls /sys/bus/pci/drivers/e1000e/*/net 2>/dev/null | head -1) && [ -n "$nic" ]; do
            i=$((i + 1)); [ $i -gt 120 ] && { say "no e1000e interface"; break; }; sleep 0.5
        done
        { brctl addbr br0 && brctl addif br0 "$nic" && ip link set "$nic" up && ip link set br0 up; } \
            || say "cannot bridge $nic"
        # shellcheck disable=SC2012 # sysfs interface names: plain names
        say "bridge br0 over $nic: $(ls /sys/class/net/br0/brif 2>/dev/null | tr '\n' ' ')"
        mkdir -p /etc/xen/scripts
        cat >/etc/xen/scripts/bulkhead-vif <<'VIF'
#!/bin/sh
# A vif's hotplug (libxl: "online"/"offline", $vif its name): into the bridge.
vif=${vif:-vif$(echo "$XENBUS_PATH" | awk -F/ '{ print $(NF - 1) "." $NF }')}
case "$1" in
online | add)
    brctl addif br0 "$vif" && ip link set "$vif" up || exit 1
    xenstore-write "$XENBUS_PATH/hotplug-status" connected ;;
esac
VIF
        chmod 755 /etc/xen/scripts/bulkhead-vif
    fi
    say "ready after $(cut -d' ' -f1 /proc/uptime) s of uptime (init started at $t0 s)"
    result "step=ready"
    # The benchmark's commands (the raw NVMe figure, memory in use).
    [ -x /opt/fio/fio ] && bench_commands
    ;;
guest)
    modprobe xen-blkfront
    i=0
    until [ -b /dev/xvda ]; do i=$((i + 1)); [ $i -gt 120 ] && { failed "no /dev/xvda"; break; }; sleep 1; done
    if [ -b /dev/xvda ]; then
        say "xvda: $(cat /sys/block/xvda/size) sectors"
        # A cheap pattern (reading /dev/urandom under nested TCG has crashed guests).
        seq 1 40000 >/tmp/pattern
        dd if=/tmp/pattern of=/dev/xvda bs=4096 oflag=direct conv=fsync 2>/dev/null
        sz=$(wc -c </tmp/pattern)
        dd if=/dev/xvda bs=4096 iflag=direct count=$(( (sz + 4095) / 4096 )) 2>/dev/null | head -c "$sz" >/tmp/back
        if cmp -s /tmp/pattern /tmp/back; then say "disk ok: $sz bytes written with O_DIRECT and read back equal"; passed; else failed "read back differs"; fi
    fi
    ;;
demo)
    # make run's guest (tests/xen/scenarios/demo.sh): an ext4 file system on the disk
    # Bulkhead serves from its NVMe, written, remounted and read back; a DHCP lease and
    # pings through Bulkhead's switch and e1000e; then a shell on its console for
    # `xl console demo`. A line for people and a result line (step=) per check, then the
    # verdict.
    fail() { failed "$*"; exec sleep 100000; }
    for m in xen-blkfront xen-netfront ext4; do modprobe $m; done
    i=0
    until [ -b /dev/xvda ] && [ -e /sys/class/net/eth0 ]; do i=$((i + 1)); [ $i -gt 240 ] && fail "no xvda or eth0"; sleep 0.5; done
    say "xvda: $(($(cat /sys/block/xvda/size) / 2048)) MiB; eth0: MAC $(cat /sys/class/net/eth0/address)"
    t=$(cut -d' ' -f1 /proc/uptime)
    mkfs.ext4 -q -F /dev/xvda >/dev/null 2>&1 || fail "mkfs.ext4 on xvda failed"
    mkdir -p /mnt
    mount -t ext4 /dev/xvda /mnt || fail "mount failed"
    cp -a /lib/modules /mnt/files || fail "copying files onto xvda failed"
    (cd /mnt && find files -type f | sort | xargs sha256sum) >/tmp/sums
    umount /mnt || fail "umount failed"
    # Read back from the disk, not from this guest's page cache.
    echo 3 >/proc/sys/vm/drop_caches
    mount -t ext4 /dev/xvda /mnt || fail "remount failed"
    (cd /mnt && sha256sum -c -s /tmp/sums) || fail "files differ after the remount"
    say "disk: ext4 made on xvda, $(wc -l </tmp/sums) files ($(du -sk /mnt/files | cut -f1) KiB) written, read back equal after a remount ($(awk -v a="$t" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.1f", b - a }') s)"
    result "step=disk files=$(wc -l </tmp/sums) equal=1"
    ip link set lo up
    lease eth0 || fail "no DHCP lease: $(tail -3 /tmp/udhcpc.log)"
    eval "$(cat /tmp/lease)"
    say "lease: $IPV4ADDR/$IPV4NETMASK, gateway $IPV4GATEWAY (QEMU's user network, through Bulkhead's switch and e1000e)"
    result "step=lease addr=$IPV4ADDR gateway=$IPV4GATEWAY"
    out=$(ping -c 3 -W 5 "$IPV4GATEWAY" 2>&1) || fail "cannot ping the gateway: $out"
    say "ping: $IPV4GATEWAY $(echo "$out" | grep 'packets transmitted'), round trip $(echo "$out" | grep 'min/avg/max' | sed 's/.*= //')"
    result "step=ping to=$IPV4GATEWAY received=$(received "$out")"
    passed
    # The shell `xl console demo` reaches (Ctrl-] leaves it).
    while :; do setsid -c sh -i </dev/hvc0 >/dev/hvc0 2>&1 || sleep 100000; done
    ;;
blk)
    fail() { failed "$*"; exec sleep 100000; }
    modprobe xen-blkfront
    modprobe ext4
    i=0
    until [ -b /dev/xvda ]; do i=$((i + 1)); [ $i -gt 120 ] && fail "no /dev/xvda"; sleep 1; done
    me=$(sed -n 's/.*bulkhead\.name=\([a-z0-9]*\).*/\1/p' /proc/cmdline)
    say "xvda: $(cat /sys/block/xvda/size) sectors, ro=$(cat /sys/block/xvda/ro)"
    say "$(dmesg | grep -m1 'blkfront: xvda:' | sed 's/^\[[^]]*\] //')"
    # What blkfront negotiated, as the block layer shows it: more than 11 segments a
    # request only with indirect descriptors, a write-back cache only with flush.
    result "step=xvda sectors=$(cat /sys/block/xvda/size) ro=$(cat /sys/block/xvda/ro) max_segments=$(cat /sys/block/xvda/queue/max_segments) max_hw_sectors_kb=$(cat /sys/block/xvda/queue/max_hw_sectors_kb) discard_max_bytes=$(cat /sys/block/xvda/queue/discard_max_bytes) write_cache=$(cut -d' ' -f2 /sys/block/xvda/queue/write_cache)"
    # bulkhead.attach-only: only the runtime attaches below (blkback-cycles; blkback ran
    # the disk checks on the same kind of disk).
    if grep -q "bulkhead.attach-only" /proc/cmdline; then
        say "ready for attaches (disk checks skipped: bulkhead.attach-only)"
        result "step=ready"
    else
        # The disk must start out empty: a second guest served the same blocks would not.
        # (bulkhead.reused: a scenario that knowingly reuses a partition.)
        if ! grep -q "bulkhead.reused" /proc/cmdline; then
            [ "$(dd if=/dev/xvda bs=1M count=1 iflag=direct 2>/dev/null | tr -d '\000' | wc -c)" = 0 ] \
                || fail "the disk does not start out empty"
        else
            say "not checked that the disk starts out empty: it is reused (bulkhead.reused)"
        fi
        t=$(date +%s)
        /bulkhead-prng "$me" 67108864 >/tmp/rand || fail "no random data"
        want=$(sha256sum </tmp/rand | cut -d' ' -f1)
        dd if=/tmp/rand of=/dev/xvda bs=1M oflag=direct conv=fsync 2>/dev/null || fail "O_DIRECT write failed"
        rm /tmp/rand
        echo 3 >/proc/sys/vm/drop_caches
        got=$(dd if=/dev/xvda bs=1M count=64 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
        [ "$got" = "$want" ] || fail "64 MiB read back with a different sha256 ($got, wrote $want)"
        say "raw ok: 64 MiB random written with O_DIRECT, read back with the same sha256 $want ($(( $(date +%s) - t )) s)"
        mkfs.ext4 -q -F -E nodiscard /dev/xvda >/dev/null 2>&1 || fail "mkfs.ext4 failed"
        mkdir -p /mnt
        mount -t ext4 /dev/xvda /mnt || fail "mount failed"
        cp -a /lib/modules /mnt/files || fail "copy failed"
        echo "$me" >/mnt/owner
        (cd /mnt && find files owner -type f | sort | xargs sha256sum) >/tmp/sums
        sync || fail "sync failed"
        umount /mnt || fail "umount failed"
        echo 3 >/proc/sys/vm/drop_caches
        mount -t ext4 /dev/xvda /mnt || fail "remount failed"
        (cd /mnt && sha256sum -c -s /tmp/sums) || fail "files differ after the remount"
        [ "$(cat /mnt/owner)" = "$me" ] || fail "the filesystem belongs to $(cat /mnt/owner), not $me"
        say "ext4 ok: $(wc -l </tmp/sums) files ($(du -sk /mnt/files | cut -f1) KiB) verified after a remount"
        trimmed=$(fstrim -v /mnt 2>&1) || fail "fstrim failed: $trimmed"
        say "fstrim ok: $trimmed"
        umount /mnt
        passed
    fi
    # Disks attached later (xl block-attach) show up as xvdb: report what each one is, and
    # that a read-only one refuses writes.
    n=0
    while :; do
        until [ -b /dev/xvdb ]; do sleep 0.5; done
        n=$((n + 1))
        ro=$(cat /sys/block/xvdb/ro)
        if dd if=/dev/xvdb bs=4096 count=1 iflag=direct 2>/dev/null | wc -c | grep -q '^4096$'; then r=ok; else r=failed; fi
        if [ "$ro" = 1 ]; then
            if dd if=/dev/zero of=/dev/xvdb bs=4096 count=1 oflag=direct conv=notrunc 2>/dev/null; then w=accepted; else w=refused; fi
        else
            w=writable
        fi
        result "step=attach n=$n sectors=$(cat /sys/block/xvdb/size) ro=$ro read=$r write=$w"
        while [ -b /dev/xvdb ]; do sleep 0.5; done
        # The xenbus device goes after the disk; a new attach of the same vdev before
        # that is not probed (Linux's xenbus sees the node still there).
        while [ -e /sys/bus/xen/devices/vbd-51728 ]; do sleep 0.5; done
        result "step=detached n=$n"
    done
    ;;
bench)
    mount -t xenfs xenfs /proc/xen
    modprobe xen-blkfront
    modprobe xen-netfront
    i=0
    until [ -b /dev/xvda ] && [ -e /sys/class/net/eth0 ]; do i=$((i + 1)); [ $i -gt 240 ] && { failed "no xvda or eth0"; exec sleep 100000; }; sleep 0.5; done
    ip link set lo up
    lease eth0 || { failed "no DHCP lease: $(tail -1 /tmp/udhcpc.log)"; exec sleep 100000; }
    eval "$(cat /tmp/lease)"
    # An IPv6 address on dom0's outer test network (fd00::/64: dom0's iperf3 server, the
    # "outside", is fd00::200): QEMU's user network on the same hub would answer IPv4 TCP
    # to any outside address itself.
    ip6=$(sed -n 's/.*bulkhead\.ip6=\([0-9a-f:]*\).*/\1/p' /proc/cmdline)
    ip -6 addr add "$ip6/64" dev eth0 || { failed "cannot add $ip6"; exec sleep 100000; }
    sleep 3 # duplicate address detection
    xenstore-write data/ip "$IPV4ADDR"
    iperf3 -s -D || { failed "iperf3 -s"; exec sleep 100000; }
    say "ready: xvda $(cat /sys/block/xvda/size) sectors, $IPV4ADDR, $ip6"
    result "step=ready addr=$IPV4ADDR ip6=$ip6"
    bench_commands
    ;;
net)
    # A guest of Bulkhead's netback: DHCP from QEMU's user network through Bulkhead's
    # switch and e1000e, ping the gateway, then (bulkhead.net=recv) receive a file on
    # TCP 5001 or (bulkhead.net=send) ping the peer dom0 names in xenstore (data/peer)
    # and send it 16 MiB of pseudo-random data, then the same to a sink in dom0 through
    # the uplink; both sides print the sha256.
    fail() { failed "$*"; exec sleep 100000; }
    mount -t xenfs xenfs /proc/xen
    me=$(sed -n 's/.*bulkhead\.name=\([a-z0-9]*\).*/\1/p' /proc/cmdline)
    part=$(sed -n 's/.*bulkhead\.net=\([a-z]*\).*/\1/p' /proc/cmdline)
    modprobe xen-netfront
    i=0
    until [ -e /sys/class/net/eth0 ]; do i=$((i + 1)); [ $i -gt 120 ] && fail "no eth0"; sleep 1; done
    # shellcheck disable=SC2012 # counting sysfs queue directories
    say "eth0: MAC $(cat /sys/class/net/eth0/address), $(ls -d /sys/class/net/eth0/queues/tx-* | wc -l) tx queue(s), features: $(ethtool -k eth0 2>/dev/null | grep -E '^(tcp-segmentation-offload|scatter-gather):' | tr '\n' ' ')"
    ip link set lo up
    lease eth0 || fail "no DHCP lease: $(tail -3 /tmp/udhcpc.log)"
    eval "$(cat /tmp/lease)"
    [ -n "$IPV4GATEWAY" ] || fail "the lease names no gateway"
    result "step=lease addr=$IPV4ADDR netmask=$IPV4NETMASK gateway=$IPV4GATEWAY"
    xenstore-write data/ip "$IPV4ADDR" || fail "cannot publish the address in xenstore"
    out=$(ping -c 3 -W 5 "$IPV4GATEWAY" 2>&1) || fail "cannot ping the gateway: $out"
    result "step=ping to=$IPV4GATEWAY received=$(received "$out")"
    case "$part" in
    recv)
        # An iperf3 server for load (dd-lifecycle's busy guest).
        iperf3 -s -D -p 5201 || fail "iperf3 -s failed"
        result "step=listening port=5001"
        progress &
        mon=$!
        nc -l -p 5001 >/tmp/recv || fail "nc -l failed"
        kill $mon
        result "step=received bytes=$(wc -c </tmp/recv) sha256=$(sha256sum </tmp/recv | cut -d' ' -f1)"
        ;;
    send)
        i=0
        until peer=$(xenstore-read data/peer 2>/dev/null); do i=$((i + 1)); [ $i -gt 240 ] && fail "no peer address"; sleep 0.5; done
        out=$(ping -c 5 -W 5 "$peer" 2>&1) || fail "cannot ping the peer $peer: $out"
        result "step=ping to=$peer received=$(received "$out")"
        /bulkhead-prng "$me" 16777216 >/tmp/send || fail "no random data"
        result "step=sending bytes=$(wc -c </tmp/send) sha256=$(sha256sum </tmp/send | cut -d' ' -f1)"
        # The receiver may still be starting its listener.
        i=0
        progress &
        mon=$!
        t0=$(cut -d' ' -f1 /proc/uptime)
        until nc "$peer" 5001 </tmp/send; do i=$((i + 1)); [ $i -gt 20 ] && fail "cannot connect to $peer:5001"; sleep 1; t0=$(cut -d' ' -f1 /proc/uptime); done
        t1=$(cut -d' ' -f1 /proc/uptime)
        kill $mon
        result "step=sent ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", (b - a) * 1000 }')"
        say "tx: $(cat /sys/class/net/eth0/statistics/tx_packets) packets $(cat /sys/class/net/eth0/statistics/tx_bytes) bytes"
        # Then out through the uplink to a sink in dom0, over IPv6: QEMU's user network
        # on the same hub (IPv6 off) would otherwise answer the TCP handshake itself.
        i=0
        until sink=$(xenstore-read data/sink 2>/dev/null); do i=$((i + 1)); [ $i -gt 120 ] && fail "no sink address"; sleep 0.5; done
        ip -6 addr add "${sink%::*}::$(echo "$IPV4ADDR" | cut -d. -f4)/64" dev eth0 || fail "cannot add an IPv6 address"
        sleep 3 # duplicate address detection
        result "step=sending-outside to=$sink bytes=$(wc -c </tmp/send) sha256=$(sha256sum </tmp/send | cut -d' ' -f1)"
        i=0
        t0=$(cut -d' ' -f1 /proc/uptime)
        until timeout 150 nc "$sink" 5003 </tmp/send; do
            i=$((i + 1))
            if [ $i -gt 3 ]; then
                say "eth0 rx $(cat /sys/class/net/eth0/statistics/rx_packets) tx $(cat /sys/class/net/eth0/statistics/tx_packets) packets; neighbours: $(ip -6 neigh | tr '\n' ';')"
                say "ping6: $(ping -6 -c 2 -W 3 "$sink" 2>&1 | grep 'packets transmitted')"
                say "tcp: $(grep '^Tcp:' /proc/net/snmp | tail -1)"
                fail "could not send to $sink:5003"
            fi
            sleep 1
            t0=$(cut -d' ' -f1 /proc/uptime)
        done
        t1=$(cut -d' ' -f1 /proc/uptime)
        result "step=sent-outside ms=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", (b - a) * 1000 }')"
        ;;
    esac
    ;;
life)
    # The fault-isolation guest: a heartbeat on its console every 2 s whatever happens to
    # its driver domain, and commands from dom0 through xenstore (data/cmd = "N VERB
    # ARGS"), each answered on the console as a result line `cmd=N` with `ok=1` or `ok=0`,
    # and why= for a failure.
    mount -t xenfs xenfs /proc/xen
    modprobe xen-blkfront
    modprobe xen-netfront
    (n=0; while :; do n=$((n + 1)); result "step=heartbeat n=$n"; sleep 2; done) &
    # answer N ok|WHY FIELD...: command N's answer, done or failed for WHY.
    answer() {
        local n=$1 r=$2
        shift 2
        if [ "$r" = ok ]; then result "cmd=$n ok=1 $*"; else result "cmd=$n ok=0 why=$(quote "$r") $*"; fi
    }
    chunk=4194304
    pat() { /bulkhead-prng "life-$1" $chunk; }
    waitdev() { i=0; until [ -e "$1" ]; do i=$((i + 1)); [ $i -gt 120 ] && return 1; sleep 0.5; done; }
    result "step=ready"
    while next_command 0.5; do
        # shellcheck disable=SC2086 # split the command into its words
        set -- $CMD
        n=$1 verb=$2 dev=$3 k=$4
        case "$verb" in
        write)
            waitdev "/dev/$dev" || { answer "$n" "no /dev/$dev"; continue; }
            if pat "$k" | dd of="/dev/$dev" bs=1M seek=$((k * 4)) oflag=direct conv=fsync 2>/dev/null; then
                answer "$n" ok "verb=write dev=$dev chunk=$k sha=$(pat "$k" | sha256sum | cut -c1-16)"
            else
                answer "$n" "write $k on $dev failed" "verb=write dev=$dev chunk=$k"
            fi
            ;;
        verify)
            waitdev "/dev/$dev" || { answer "$n" "no /dev/$dev"; continue; }
            a=$(dd if="/dev/$dev" bs=1M skip=$((k * 4)) count=4 iflag=direct 2>/dev/null | sha256sum | cut -c1-16)
            b=$(pat "$k" | sha256sum | cut -c1-16)
            if [ "$a" = "$b" ]; then answer "$n" ok "verb=verify dev=$dev chunk=$k"; else answer "$n" "chunk $k on $dev reads $a, want $b" "verb=verify dev=$dev chunk=$k"; fi
            ;;
        busy)
            # "busy DISK [PEER PORT]": fio writing DISK and iperf3 to PEER's server (another
            # guest on Bulkhead's switch), in flight when the driver domain goes. fio is
            # capped at 2 MB/s, iperf3 at 8 Mbit/s. Without fio (its ramdisk): a dd loop;
            # without a peer: pings to the gateway.
            if [ -x /opt/fio/fio ]; then
                LD_LIBRARY_PATH=/opt/fio/lib /opt/fio/fio --name=busy --filename="/dev/$dev" --rw=randwrite \
                    --bs=64k --direct=1 --ioengine=libaio --iodepth=2 --rate=2m --offset=40M --size=24M \
                    --time_based --runtime=3600 >/tmp/fio.log 2>&1 &
                disk="fio"
            else
                (j=10; while :; do pat $j | dd of="/dev/$dev" bs=1M seek=$((j * 4)) oflag=direct 2>/dev/null; j=$(( (j + 1) % 6 + 10 )); done) &
                disk="dd"
            fi
            echo $! >/tmp/busy.pids
            if [ -n "$4" ]; then
                : >/tmp/iperf.log
                (while :; do iperf3 -c "$4" -p "${5:-5201}" -t 3600 -b 8M --forceflush >>/tmp/iperf.log 2>&1; sleep 1; done) &
                vif="iperf3 to $4 port ${5:-5201}"
                echo $! >>/tmp/busy.pids
                j=0
                until grep -q "connected to" /tmp/iperf.log; do
                    j=$((j + 1)); [ $j -gt 30 ] && { vif="$vif (not connected: $(tail -1 /tmp/iperf.log))"; break; }
                    sleep 0.5
                done
            else
                (while :; do ping -c 20 -i 0.2 -s 1400 -W 2 10.0.2.2 >/dev/null 2>&1; done) &
                vif="ping"
                echo $! >>/tmp/busy.pids
            fi
            sleep 2
            kill -0 "$(head -1 /tmp/busy.pids)" 2>/dev/null || disk="$disk (exited: $(tail -1 /tmp/fio.log 2>/dev/null))"
            answer "$n" ok "verb=busy dev=$dev disk=$(quote "$disk") vif=$(quote "$vif")"
            ;;
        quiet)
            # shellcheck disable=SC2046 # one pid per word
            kill $(cat /tmp/busy.pids) 2>/dev/null
            killall iperf3 2>/dev/null
            answer "$n" ok "verb=quiet"
            ;;
        read)
            # Must end with data or an error, not hang (timeout says 124).
            waitdev "/dev/$dev" || { answer "$n" "no /dev/$dev"; continue; }
            # In the background: a read stuck in the kernel cannot be killed, and the
            # command loop must go on.
            rm -f /tmp/read.rc
            (dd if="/dev/$dev" of=/dev/null bs=1M count=1 skip=$((k * 4 + 1)) iflag=direct 2>/tmp/read.err; echo $? >/tmp/read.rc) &
            # 60 s (or the command's fifth word) by the clock: loop iterations take far
            # longer than their sleep when the guest is loaded under nested TCG.
            end=$(( $(cut -d. -f1 /proc/uptime) + ${5:-60} ))
            while [ ! -s /tmp/read.rc ] && [ "$(cut -d. -f1 /proc/uptime)" -lt $end ]; do sleep 0.5; done
            rc=$(cat /tmp/read.rc 2>/dev/null || echo 124)
            case $rc in
            0) answer "$n" ok "verb=read dev=$dev read=ok" ;;
            124 | 143) answer "$n" ok "verb=read dev=$dev read=hung" ;;
            *) answer "$n" ok "verb=read dev=$dev read=error error=$(quote "$(tail -1 /tmp/read.err)")" ;;
            esac
            ;;
        net)
            waitdev "/sys/class/net/$dev" || { answer "$n" "no $dev"; continue; }
            # The vifs of driver domains that are gone stay, dead: take them out of routing.
            for o in /sys/class/net/eth*; do
                o=${o##*/}
                [ "$o" = "$dev" ] || { ip addr flush dev "$o"; ip link set "$o" down; } 2>/dev/null
            done
            if lease "$dev"; then
                eval "$(cat /tmp/lease)"
                if ping -c 3 -W 5 "$IPV4GATEWAY" >/dev/null 2>&1; then answer "$n" ok "verb=net dev=$dev addr=$IPV4ADDR"; else answer "$n" "no answer from the gateway" "verb=net dev=$dev"; fi
            else
                answer "$n" "no DHCP lease" "verb=net dev=$dev"
            fi
            ;;
        *) answer "$n" "unknown command $verb" ;;
        esac
    done
    ;;
netcycle)
    # Runtime network-attach/detach: each new eth0 gets a lease and pings the gateway.
    mount -t xenfs xenfs /proc/xen
    modprobe xen-netfront
    result "step=ready"
    n=0
    while :; do
        until [ -e /sys/class/net/eth0 ]; do sleep 0.5; done
        n=$((n + 1))
        if lease eth0; then
            eval "$(cat /tmp/lease)"
            if ping -c 2 -W 5 "$IPV4GATEWAY" >/tmp/ping.log 2>&1; then r=1; else r=0; fi
            result "step=attach n=$n addr=$IPV4ADDR gateway=$IPV4GATEWAY answered=$r"
        else
            result "step=attach n=$n addr=none why=$(quote "no DHCP lease: $(tail -1 /tmp/udhcpc.log)")"
        fi
        while [ -e /sys/class/net/eth0 ]; do sleep 0.5; done
        result "step=detached n=$n"
    done
    ;;
victim)
    # The well-behaved guest of the hostile scenario: its own blkfront and netfront, a
    # DHCP lease, then the probe (tests/hostile): disk I/O and a ping every 100 ms,
    # figures per phase that dom0 names in data/phase.
    modprobe xen-blkfront; modprobe xen-netfront
    i=0
    until [ -b /dev/xvda ] && [ -e /sys/class/net/eth0 ]; do i=$((i + 1)); [ $i -gt 240 ] && { failed "no xvda or eth0"; break; }; sleep 0.5; done
    if lease eth0; then
        eval "$(cat /tmp/lease)"
        xenstore-write "data/victim-mac" "$(cat /sys/class/net/eth0/address)"
        xenstore-write "data/victim-ip" "$IPV4ADDR"
        /bulkhead-hostile victim /dev/xvda "$IPV4GATEWAY"
    else
        failed "no DHCP lease: $(tail -1 /tmp/udhcpc.log)"
    fi
    ;;
hostile)
    # The hostile guest: no blkfront or netfront is loaded, so its vbd and vif wait in
    # Initialising for a frontend; tests/hostile drives them itself through gntalloc,
    # evtchn and xenstore, running the attacks dom0 names in data/attack.
    modprobe xen-evtchn
    # Thousands of pages granted at once (the persistent-grant flood): above gntalloc's
    # default limit of 1024.
    modprobe xen-gntalloc limit=16384
    /bulkhead-hostile agent
    ;;
*)
    say "unknown role"
    ;;
esac
exec sleep 100000
