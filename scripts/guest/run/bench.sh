# The benchmark (scripts/bench): loads the module, runs dsu-bench with the arguments given
# and prints its raw figures for the host, each JSON line prefixed with "DSU-BENCH " (the
# runner keeps such lines out of the console view; scripts/bench extracts them from the log).
# Module parameters can be given as arguments of the form param:name=value (first).
# `heap ...`, `heap-pause ...` and `snapshot ...` (after the parameters) run those tables instead.
params=""
for a in "$@"; do
    case "$a" in param:*) params="$params ${a#param:}"; shift ;; *) break ;; esac
done
# shellcheck disable=SC2086
insmod /dsu/dsu.ko $params || exit 1
cd /tmp || exit 1
case "$1" in
    heap | heap-pause | snapshot)
        # The shared heap's tables (markdown on stdout; no JSON).
        dsu-bench "$@"
        status=$?
        rmmod dsu || status=1
        exit $status
        ;;
esac
dsu-bench --json /tmp/dsu-bench.json "$@"
status=$?
if [ -f /tmp/dsu-bench.json ]; then
    sed 's/^/DSU-BENCH /' /tmp/dsu-bench.json
fi
rmmod dsu || status=1
exit $status
