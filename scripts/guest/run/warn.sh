# Harness self-test: loads a module that prints a kernel WARNING and a KASAN-style report,
# so that the host runner must fail this run.
insmod /dsu/dsu_warn_test.ko && rmmod dsu_warn_test
exit 0
