# The VM suite; arguments are test-name filters.
exec dsu-vmtests "$@"
