# The long robustness campaign (scripts/robustness-long.sh): at least 200 000 fuzz calls
# from threads and processes (root and an unprivileged user at once), then the heavy
# 16-process stress and many more crash trials. Arguments: [calls] [seed].
calls="${1:-200000}"
seed="${2:-0xd5d5}"
status=0
insmod /dsu/dsu.ko max_segment_pages=16384 || exit 1
echo "robust-long: fuzzing $calls calls, seed $seed"
dsu-fuzz --calls $((calls / 10)) --seed 0x5eed --threads 2 --procs 1 --uid 1000 --gid 1000 --no-cleanup &
user=$!
dsu-fuzz --calls "$calls" --seed "$seed" --threads 2 --procs 4 --no-cleanup || status=1
wait $user || status=1
# Every fuzzer process has exited: nothing may still hold a segment, and DESTROY empties the registry.
dsu-fuzz --calls 0 --procs 1 --threads 1 || status=1
rmmod dsu || status=1
echo "robust-long: heavy stress and crash trials"
DSU_STRESS_ROUNDS=1000 DSU_CRASH_TRIALS=400 dsu-vmtests robust::stress robust::crash || status=1
echo "robust-long: status $status"
exit $status
