# Structured console lines (the format of the bulkhead-event crate, whose parser this
# follows): after a tag, `event: ` (what the kernel saw happen) or `result: ` (what a
# test checked), space-separated key=value fields, `name` among them; a value in double
# quotes may hold spaces. The first of a repeated key counts; a trailing CR is no part of
# a value (the guests' consoles end lines with CR LF).
#
#   awk -v tag="event: " -v want="name=vbd-serving dev=vbd-3-51712 queues~^[24]$ ring_pages" \
#       [-v get=KEY] -f fields.awk FILE...
#
# prints every line with that tag whose fields meet each of `want`'s words: key=value
# (equal), key~ERE (matches) or key (present); with `get`, prints KEY's value instead.
# An empty tag takes either. Exit status 1 if no line matched, as grep's.
# With -v lib=1 it only defines parse() for another script (awk -f fields.awk -f ...).

# parse(LINE, TAG, F): fill F with the fields after TAG ("" for either) in LINE; 1 if
# LINE is such a line with a name, else 0.
function parse(line, tag, F,    i, t, rest, e, k, q, s, v) {
    split("", F)
    sub(/\r$/, "", line)
    if (tag != "") {
        i = index(line, tag); t = tag
    } else {
        i = index(line, "event: "); t = "event: "
        if (!i) { i = index(line, "result: "); t = "result: " }
    }
    if (!i) return 0
    rest = substr(line, i + length(t))
    while (1) {
        sub(/^ +/, "", rest)
        if (rest == "") break
        e = index(rest, "=")
        if (e <= 1) return 0
        k = substr(rest, 1, e - 1)
        if (k ~ / /) return 0
        rest = substr(rest, e + 1)
        if (substr(rest, 1, 1) == "\"") {
            rest = substr(rest, 2)
            q = index(rest, "\"")
            if (!q) return 0
            v = substr(rest, 1, q - 1)
            rest = substr(rest, q + 1)
        } else {
            s = index(rest, " ")
            if (s) { v = substr(rest, 1, s - 1); rest = substr(rest, s + 1) }
            else { v = rest; rest = "" }
        }
        if (!(k in F)) F[k] = v
    }
    return ("name" in F)
}

lib == "" {
    if (!parse($0, tag, F)) next
    nw = split(want, W, " ")
    for (j = 1; j <= nw; j++) {
        w = W[j]
        p = index(w, "="); r = index(w, "~")
        if (p && (!r || p < r)) {
            k = substr(w, 1, p - 1)
            if (!(k in F) || F[k] != substr(w, p + 1)) next
        } else if (r) {
            k = substr(w, 1, r - 1)
            if (!(k in F) || F[k] !~ substr(w, r + 1)) next
        } else if (!(w in F)) next
    }
    if (get != "") print F[get]
    else { sub(/\r$/, ""); print }
    found = 1
}
END { if (lib == "") exit !found }
