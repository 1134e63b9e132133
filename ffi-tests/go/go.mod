module rcdn.local/ffitests

go 1.19

require rcdn.local/cdnexample v0.0.0

replace rcdn.local/cdnexample => ../../examples/go
