module github.com/bgtask-go/bgtask

go 1.26

require github.com/google/uuid v1.6.0
