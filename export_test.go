package bgtask

// WarmUp is warmUp, for the benchmarks of package bgtask_test.
var WarmUp = warmUp
