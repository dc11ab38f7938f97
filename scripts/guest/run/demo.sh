# The dsu demo (scripts/demo): a Redis-protocol key-value server, examples/kv, whose
# keyspace (in the segment's shared heap) and statistics live in dsu shared globals, is
# updated live v1 -> v2 -> v3 under redis-benchmark load. Runs unattended; exits 0 only if every check passed.
PORT=6379
SEG=kv
N=2000          # redis-benchmark requests per test
KEYS=1000       # keys loaded before the update
cd /tmp || exit 1

bold() { printf '\033[1m%s\033[0m\n' "$*"; }
step() { echo; bold "==> $*"; }
note() { echo "    $*"; }
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null; done
    for p in $pids; do wait "$p" 2>/dev/null; done
    pids=""
}
fail() {
    printf '\033[1;31mDEMO FAILED: %s\033[0m\n' "$*"
    cleanup
    dsuctl destroy $SEG >/dev/null 2>&1
    rmmod dsu 2>/dev/null
    exit 1
}
cli() { redis-cli -p $PORT "$@"; }
info_field() { cli INFO | tr -d '\r' | sed -n "s/^$1://p"; }
# wait_for SECONDS CMD...: retries CMD every 0.2 s until it succeeds.
wait_for() {
    t=$(( $1 * 5 )); shift
    while [ $t -gt 0 ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2; t=$((t - 1))
    done
    return 1
}
# forget PID: drops PID from the list cleanup kills.
forget() {
    rest=""
    for p in $pids; do [ "$p" = "$1" ] || rest="$rest $p"; done
    pids=$rest
}
# gone PID: the process exited (or is a zombie waiting for `wait`).
gone() { [ ! -e "/proc/$1" ] || grep -q ') Z' "/proc/$1/stat" 2>/dev/null; }
# reap PID WHAT SECONDS: waits for PID to exit by itself, fails the demo on a timeout or
# a non-zero status.
reap() {
    wait_for "$3" gone "$1" || fail "$2 did not exit within $3 s"
    wait "$1"; st=$?
    forget "$1"
    [ $st -eq 0 ] || fail "$2 exited with status $st"
}
versions_started_at_least() { [ "$(info_field dsu_versions_started)" -ge "$1" ] 2>/dev/null; }
# bench_table FILE: redis-benchmark's CSV as an aligned table.
bench_table() {
    tr -d '"' < "$1" | awk -F, '$1 != "test" && NF == 8 {
        printf "    %-12s %9s req/s   p50 %8s ms   p99 %8s ms   max %8s ms\n", $1, $2, $5, $7, $8 }'

}
# bench_done PID FILE: redis-benchmark exited 0 and reported no error.
bench_done() {
    reap "$1" "redis-benchmark ($(cat "$2"))" 300
    if grep -qi 'error' "$2"; then fail "redis-benchmark reported errors: $(grep -i error "$2" | head -3)"; fi
}

step "Loading the dsu module; the kv servers will share segment '$SEG' through /dev/dsu"
insmod /dsu/dsu.ko || fail "insmod dsu.ko"
# A connection that races into a closing SO_REUSEPORT listener's queue is moved to the
# other listener instead of being reset.
echo 1 > /proc/sys/net/ipv4/tcp_migrate_req || fail "cannot set net.ipv4.tcp_migrate_req"
note "redis-cli and redis-benchmark are Debian's redis-tools 7.0, unmodified."

step "1. kv_v1 starts and serves port $PORT"
kv_v1 --port $PORT --segment $SEG &
V1=$!; pids="$pids $V1"
wait_for 30 cli PING || fail "kv_v1 does not answer PING"
note "redis-cli PING -> $(cli PING)"

step "2. Loading $KEYS keys with redis-cli --pipe"
seq 1 $KEYS | awk '{printf "SET demo:%d value-%d\r\n", $1, $1}' | redis-cli -p $PORT --pipe | sed 's/^/    /'
note "DBSIZE -> $(cli DBSIZE)    GET demo:42 -> $(cli GET demo:42)    HINCRBY -> $(cli HINCRBY demo:h n 5 2>&1)"
[ "$(cli DBSIZE)" -ge $KEYS ] || fail "DBSIZE below $KEYS after loading"
note "(v1 has no HINCRBY: that comes with v2)"

step "3. kv_v2 starts while redis-benchmark loads kv_v1 (SET, GET, INCR; $N requests each, 10 clients)"
redis-benchmark -p $PORT -t set,get,incr -n $N -r 10000 -c 10 --csv > /tmp/bench1.csv 2>&1 &
B1=$!; pids="$pids $B1"
sleep 3
kv_v2 --port $PORT --segment $SEG &
V2=$!; pids="$pids $V2"
wait_for 60 versions_started_at_least 2 || fail "kv_v2 did not come up"

step "4. dsuctl show $SEG: both versions are bound to the segment (STATE: v2 became ready once it listened)"
if command -v dsuctl >/dev/null; then
    dsuctl show $SEG | sed 's/^/    /' || fail "dsuctl show $SEG"
else
    note "(dsuctl is not in this build: skipped)"
fi

step "5. kv_v1 was notified through /dev/dsu; it drains its connections and retires"
reap $V1 kv_v1 120
bench_done $B1 /tmp/bench1.csv
note "redis-benchmark across the v1 -> v2 update, no failed request:"
bench_table /tmp/bench1.csv
note "INCRBY demo:n 5 -> $(cli INCRBY demo:n 5)   kv_v2 has HINCRBY and LMOVE: HINCRBY demo:h n 5 -> $(cli HINCRBY demo:h n 5)   RPUSH demo:l a b -> $(cli RPUSH demo:l a b)"
[ "$(cli HINCRBY demo:h n 0)" = 5 ] || fail "HINCRBY on v2"

step "6. kv_v3 starts under load: it migrates kv::CMD_STATS from CmdCalls to CmdStats, and the keyspace's lists to rings in place (kv_v2 forwards to it from then on)"
redis-benchmark -p $PORT -t set,get -n $N -r 10000 -c 10 --csv > /tmp/bench2.csv 2>&1 &
B2=$!; pids="$pids $B2"
sleep 2
kv_v3 --port $PORT --segment $SEG &
V3=$!; pids="$pids $V3"
wait_for 60 versions_started_at_least 3 || fail "kv_v3 did not come up"
reap $V2 kv_v2 120
bench_done $B2 /tmp/bench2.csv
note "redis-benchmark across the v2 -> v3 update, no failed request:"
bench_table /tmp/bench2.csv
if command -v dsuctl >/dev/null; then
    note "dsuctl show $SEG: the old and the migrated kv::CMD_STATS side by side"
    dsuctl show $SEG | sed 's/^/    /'
fi

step "7. Final checks against kv_v3"
missing=$(seq 1 $KEYS | awk '{print "GET demo:" $1}' | cli | awk -v n=$KEYS '{ if ($0 != "value-" NR) bad++ } END { print bad + (NR != n ? n : 0) }')
[ "$missing" -eq 0 ] || fail "$missing of the $KEYS keys loaded into v1 do not read back from v3"
note "all $KEYS keys loaded into kv_v1 read back from kv_v3"
[ "$(cli GET demo:n)" = 5 ] || fail "demo:n is $(cli GET demo:n), want 5"
[ "$(cli INCRBY demo:n 5)" = 10 ] || fail "INCRBY on v3"
note "demo:n, INCRBY'd on v2 (5), INCRBY'd again on v3 -> 10"
[ "$(cli HINCRBY demo:h n 5)" = 10 ] || fail "HINCRBY on v3"
[ "$(cli LMOVE demo:l demo:l LEFT RIGHT)" = a ] || fail "LMOVE on v3 (the list v2 made, migrated to a ring)"
note "demo:h HINCRBY'd on v2 and v3 -> 10; demo:l (made by v2, now a ring) rotated by LMOVE -> $(cli LRANGE demo:l 0 -1 | tr '\n' ' ')"
[ "$(info_field dsu_kv_version)" = 3 ] || fail "INFO does not come from kv_v3"
started=$(info_field dsu_versions_started)
total=$(info_field total_commands_processed)
note "INFO: dsu_kv_version 3, dsu_versions_started $started, total_commands_processed $total (counted by v1, v2 and v3 together)"
[ "$total" -gt $((5 * N)) ] || fail "total_commands_processed $total lost the counts of older versions"
# INCRBY ran once on v2 (step 5) and once on v3: the migrated counter holds both.
incrby=$(cli INFO commandstats | tr -d '\r' | grep '^cmdstat_incrby:')
note "INFO commandstats, v3's migrated type (calls kept from v2, time per call new):"
cli INFO commandstats | tr -d '\r' | grep -E '^cmdstat_(set|get|incrby):' | sed 's/^/      /'
note "(calls served before v3 carry no time: v2's counter type had no time field; v3 adds it from its start)"
case "$incrby" in cmdstat_incrby:calls=2,usec=*) ;; *) fail "cmdstat_incrby did not keep v2's count: $incrby" ;; esac

step "Stopping kv_v3 and unloading the module"
cleanup
dsuctl destroy $SEG >/dev/null 2>&1 || true
rmmod dsu || fail "rmmod dsu"
echo
printf '\033[1;32mDEMO PASSED: kv updated v1 -> v2 -> v3 under redis-benchmark load, no failed request, no key lost.\033[0m\n'
exit 0
