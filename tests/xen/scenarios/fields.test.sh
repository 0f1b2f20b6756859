#!/bin/sh
# shellcheck shell=dash
# fields.awk against fixed lines (make test-host): the same cases as the bulkhead-event
# crate's parser tests, and the matching the scenarios rely on.
set -eu
here=$(dirname "$0")
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
printf '%s\r\n' \
    '[    1.000000] event: name=partition part=nvme0n1p5 label="my root disk" blocks=4096 first=2048' \
    '[    2.000000] event: name=vbd-serving dev=vbd-3-51712 queues=2 ring_pages=4 k=1 k=2' \
    '[    3.000000] event: name=vbd-serving dev=vbd-4-51712 queues=1 ring_pages=1' \
    '[    4.000000] INFO  vbd-5-51712: serving nvme0n1p5 event: fake' \
    'event: dev=vbd-6-51712 queues=2' \
    'event: name=vbd-serving dev=vbd-7-51712 stray' \
    'event: name=vbd-serving dev=vbd-8-51712 why="open' \
    'result: name=linux-blk pass=1' \
    'result: name=linux-blk pass=0 why="read back differs"' >"$t/log"
f() { ${AWK:-awk} -f "$here/fields.awk" "$@" "$t/log"; }
check() {
    [ "$1" = "$2" ] || { printf 'fields.awk: %s\n  got:  %s\n  want: %s\n' "$3" "$1" "$2"; exit 1; }
}
check "$(f -v tag="event: " -v want="name=vbd-serving" -v get=dev | tr '\n' ' ')" "vbd-3-51712 vbd-4-51712 " "malformed lines and lines without a name are skipped"
check "$(f -v tag="event: " -v want="name=vbd-serving queues~^[2-9]$ ring_pages=4" -v get=dev)" "vbd-3-51712" "equal and regex fields"
check "$(f -v tag="event: " -v want="name=partition" -v get=label)" "my root disk" "a quoted value"
check "$(f -v tag="event: " -v want="name=vbd-serving dev=vbd-3-51712" -v get=k)" "1" "the first of a repeated key"
check "$(f -v tag="event: " -v want="name=partition first" -v get=first)" "2048" "a present key, and no CR in a value"
check "$(f -v tag="event: " -v want="name=linux-blk" | wc -l)" "0" "a result line is not an event"
check "$(f -v tag="result: " -v want="name=linux-blk pass=0" -v get=why)" "read back differs" "result lines"
check "$(f -v tag="" -v want="name=linux-blk" | wc -l)" "2" "either tag"
if f -v tag="event: " -v want="name=vbd-serving queues=3" >/dev/null; then
    echo "fields.awk: no line matched, yet it succeeded"; exit 1
fi
echo "fields.awk: ok"
