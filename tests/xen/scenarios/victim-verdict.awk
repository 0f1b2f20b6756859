# The hostile scenarios' verdict on the victim (hostile-lib.sh): awk -v max=LIMIT_MS -f
# victim-verdict.awk WINDOWS DETAILS PHASES. Prints one line per failure ("disk gap",
# "ping gap", "disk errors", each with the phase's line) and one "explained:" line per
# gap over the limit that Xen's scheduling covers: Bulkhead's loop window for the phase
# (its `loop window:` line, control/mark) shows its vCPU waiting for a physical CPU,
# runnable but not run, over that gap. What the wait does not cover must be within the
# limit. The victim's phase starts after the mark (dom0 writes the mark first, the
# victim looks every 200 ms), by an offset from 0 to SLACK ms unknown here: the wait
# counts only where it covers the gap whatever the offset. No explanation either when
# the window has none, or Bulkhead ran more than half of it (then its own work, a
# flood's say, used up its share of the CPUs), or its slowest poll ended inside the gap.
BEGIN { SLACK = 500 }
# The guests' consoles end lines with CR LF.
{ sub(/\r$/, "") }

# The phase name of a victim line: after "victim: phase ", up to `end`.
function phase_name(line, end,    s) {
    s = line
    sub(/^victim: phase /, "", s)
    return substr(s, 1, index(s, end) - 1)
}
function mark_of(name,    m) {
    m = name
    gsub(/[^A-Za-z0-9._-]/, "_", m)
    return m
}
function field(line, key,    i, n, kv, f) {
    n = split(line, f, " ")
    for (i = 1; i <= n; i++) {
        split(f[i], kv, "=")
        if (kv[1] == key) return kv[2]
    }
    return ""
}
# A gap of `gap` ms from `from` s into phase `name`: "" if within the limit or explained
# (then the explanation is printed), else the failure.
function judge(kind, name, gap, from, line,    m, w, e, lo, hi, a, b, cover, p) {
    if (gap <= max) return ""
    m = mark_of(name)
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
            printf "explained: phase %s: %s gap %d ms from %s s; Bulkhead's vCPU waited %d ms for a physical CPU, until %d ms into its window (it ran %d ms of %d): Xen did not run it (%d ms of the gap left, limit %d)\n", name, kind, gap, from, w, e, RUN[m], LEN[m], gap - cover, max
            return ""
        }
    }
    return kind " gap " line
}

FILENAME == ARGV[1] {
    if ($0 ~ /loop window: /) {
        m = field($0, "mark")
        WAIT[m] = field($0, "cpu_wait_ms") + 0
        WEND[m] = field($0, "cpu_wait_end_ms") + 0
        RUN[m] = field($0, "running_ms") + 0
        LEN[m] = field($0, "length_ms") + 0
        POLL[m] = field($0, "slowest_poll_ms") + 0
        PEND[m] = field($0, "poll_end_ms") + 0
    }
    next
}
FILENAME == ARGV[2] {
    n = phase_name($0, " detail: ")
    if (match($0, /disk gap from [0-9.-]+/)) { split(substr($0, RSTART, RLENGTH), f, " "); DFROM[n] = f[4] }
    if (match($0, /ping gap from [0-9.-]+/)) { split(substr($0, RSTART, RLENGTH), f, " "); PFROM[n] = f[4] }
    next
}
$0 ~ /phase (start|idle):/ { next }
{
    n = phase_name($0, ": ")
    if (match($0, /errors, longest gap [0-9]+/)) {
        split(substr($0, RSTART, RLENGTH), f, " ")
        r = judge("disk", n, f[4] + 0, (n in DFROM) ? DFROM[n] : "-", $0)
        if (r != "") bad = bad r "\n"
    }
    if (match($0, /\(longest gap [0-9]+ ms\)$/)) {
        split(substr($0, RSTART, RLENGTH), f, " ")
        r = judge("ping", n, f[3] + 0, (n in PFROM) ? PFROM[n] : "-", $0)
        if (r != "") bad = bad r "\n"
    }
    if (match($0, /ops, [0-9]+ errors/)) {
        split(substr($0, RSTART, RLENGTH), f, " ")
        if (f[2] + 0 > 0) bad = bad "disk errors " $0 "\n"
    }
}
END { printf "%s", bad }
