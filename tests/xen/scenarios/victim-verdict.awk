# The hostile scenarios' verdict on the victim (hostile-lib.sh):
#   awk -v lib=1 -v max=LIMIT_MS -f fields.awk -f victim-verdict.awk WINDOWS VICTIM
# WINDOWS holds Bulkhead's `loop-window` event lines (control/mark, one per phase), VICTIM
# the victim's `result: name=victim phase=...` lines. Prints one line per failure ("disk
# gap", "ping gap", "disk errors", each with the phase's line) and one "explained:" line
# per gap over the limit that Xen's scheduling covers: Bulkhead's loop window for the
# phase shows its vCPU waiting for a physical CPU, runnable but not run, over that gap.
# What the wait does not cover must be within the limit. The victim's phase starts after
# the mark (dom0 writes the mark first, the victim looks every 200 ms), by an offset
# from 0 to SLACK ms unknown here: the wait counts only where it covers the gap whatever
# the offset. No explanation either when the window has none, or Bulkhead ran more than
# half of it (then its own work, a flood's say, used up its share of the CPUs), or its
# slowest poll ended inside the gap.
BEGIN { SLACK = 500 }

# A gap of `gap` ms from `from` s into phase `m`: "" if within the limit or explained
# (then the explanation is printed), else the failure.
function judge(kind, m, gap, from, line,    w, e, lo, hi, a, b, cover, p) {
    if (gap <= max) return ""
    if (m in WAIT && from != "-" && RUN[m] * 2 <= LEN[m]) {
        w = WAIT[m]; e = WEND[m]
        a = from * 1000; b = a + gap
        # The wait in the victim's time is [e - w - d, e - d] for an offset d in
        # [0, SLACK]: every such interval holds [e - w, e - SLACK].
        lo = e - w; hi = e - SLACK
        cover = (b < hi ? b : hi) - (a > lo ? a : lo)
        if (cover < 0) cover = 0
        # The slowest poll ended (in the victim's time) within [p - SLACK, p]: inside
        # the gap, the gap may be Bulkhead's own.
        p = PEND[m]
        if (POLL[m] > max / 4 && p >= a && p - SLACK <= b) cover = 0
        if (gap - cover <= max) {
            printf "explained: phase %s: %s gap %d ms from %s s; Bulkhead's vCPU waited %d ms for a physical CPU, until %d ms into its window (it ran %d ms of %d): Xen did not run it (%d ms of the gap left, limit %d)\n", m, kind, gap, from, w, e, RUN[m], LEN[m], gap - cover, max
            return ""
        }
    }
    return kind " gap " line
}

FILENAME == ARGV[1] {
    if (parse($0, "event: ", F) && F["name"] == "loop-window") {
        m = F["mark"]
        WAIT[m] = F["cpu_wait_ms"] + 0
        WEND[m] = F["cpu_wait_end_ms"] + 0
        RUN[m] = F["running_ms"] + 0
        LEN[m] = F["length_ms"] + 0
        POLL[m] = F["slowest_poll_ms"] + 0
        PEND[m] = F["poll_end_ms"] + 0
    }
    next
}
{
    if (!parse($0, "result: ", F) || F["name"] != "victim" || !("phase" in F)) next
    m = F["phase"]
    # Before the hostile guest: not judged.
    if (m == "start" || m == "idle") next
    line = $0
    sub(/\r$/, "", line)
    sub(/.*result: /, "", line)
    r = judge("disk", m, F["disk_gap_ms"] + 0, F["disk_gap_from_s"], line)
    if (r != "") bad = bad r "\n"
    r = judge("ping", m, F["ping_gap_ms"] + 0, F["ping_gap_from_s"], line)
    if (r != "") bad = bad r "\n"
    if (F["disk_errors"] + 0 > 0) bad = bad "disk errors " line "\n"
}
END { printf "%s", bad }
