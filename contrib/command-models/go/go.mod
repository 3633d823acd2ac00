module example.com/mlops-go-model

go 1.19
