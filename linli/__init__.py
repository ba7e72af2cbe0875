"""The `linli` command-line tool and the benchmarks."""
