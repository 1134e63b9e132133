module rcdn.local/cdnexample

go 1.19
