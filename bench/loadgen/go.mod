module lookback/bench/loadgen

go 1.22
