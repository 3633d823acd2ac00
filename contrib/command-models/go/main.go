// A model in Go, served by mlops-core's "command" format (docs/command-protocol.md).
// A plain V2 server on MLOPS_MODEL_HOST:MLOPS_MODEL_PORT using only Go's standard library, built
// as a static binary (CGO_ENABLED=0) so the bundle runs in any Linux image with nothing installed.
// The model: scores = x . W^T + b over 4 features and 3 classes, label = argmax(scores).
package main

import (
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"
)

type tensor struct {
	Name     string          `json:"name"`
	Datatype string          `json:"datatype"`
	Shape    []int           `json:"shape"`
	Data     json.RawMessage `json:"data"`
}

type outTensor struct {
	Name     string      `json:"name"`
	Datatype string      `json:"datatype"`
	Shape    []int       `json:"shape"`
	Data     interface{} `json:"data"`
}

type weightsFile struct {
	Weights [][]float64 `json:"weights"`
	Bias    []float64   `json:"bias"`
}

var w weightsFile

func flatten(raw json.RawMessage, out *[]float64) error {
	var num float64
	if err := json.Unmarshal(raw, &num); err == nil {
		*out = append(*out, num)
		return nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return fmt.Errorf("data must be numbers or nested lists of numbers")
	}
	for _, item := range list {
		if err := flatten(item, out); err != nil {
			return err
		}
	}
	return nil
}

func reply(rw http.ResponseWriter, status int, body interface{}) {
	raw, _ := json.Marshal(body)
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(status)
	rw.Write(raw)
}

func infer(name string, body []byte) (map[string]interface{}, error) {
	var req struct {
		ID     *string  `json:"id"`
		Inputs []tensor `json:"inputs"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, fmt.Errorf("bad JSON: %v", err)
	}
	nf := len(w.Weights[0])
	for _, t := range req.Inputs {
		if t.Name != "x" {
			continue
		}
		if len(t.Shape) != 2 || t.Shape[1] != nf {
			return nil, fmt.Errorf("input 'x' must have shape [-1, %d], got %v", nf, t.Shape)
		}
		var flat []float64
		if err := flatten(t.Data, &flat); err != nil {
			return nil, err
		}
		rows := t.Shape[0]
		if len(flat) != rows*nf {
			return nil, fmt.Errorf("input 'x' has %d values for shape %v", len(flat), t.Shape)
		}
		k := len(w.Weights)
		scores := make([]float64, rows*k)
		labels := make([]int64, rows)
		for r := 0; r < rows; r++ {
			best := 0
			for c := 0; c < k; c++ {
				s := w.Bias[c]
				for j := 0; j < nf; j++ {
					s += flat[r*nf+j] * w.Weights[c][j]
				}
				scores[r*k+c] = s
				if s > scores[r*k+best] {
					best = c
				}
			}
			labels[r] = int64(best)
		}
		out := map[string]interface{}{
			"model_name": name,
			"outputs": []outTensor{
				{Name: "scores", Datatype: "FP64", Shape: []int{rows, k}, Data: scores},
				{Name: "label", Datatype: "INT64", Shape: []int{rows}, Data: labels},
			},
		}
		if req.ID != nil {
			out["id"] = *req.ID
		}
		return out, nil
	}
	return nil, fmt.Errorf("missing input 'x' (FP32 [-1, %d])", nf)
}

func main() {
	exe, _ := os.Executable()
	raw, err := os.ReadFile(filepath.Join(filepath.Dir(exe), "weights.json"))
	if err != nil {
		raw, err = os.ReadFile("weights.json")
	}
	if err != nil {
		log.Fatalf("cannot read weights.json: %v", err)
	}
	if err := json.Unmarshal(raw, &w); err != nil || len(w.Weights) == 0 {
		log.Fatalf("bad weights.json: %v", err)
	}
	host, port, name := os.Getenv("MLOPS_MODEL_HOST"), os.Getenv("MLOPS_MODEL_PORT"), os.Getenv("MLOPS_MODEL_NAME")
	if host == "" {
		host = "127.0.0.1"
	}
	if port == "" {
		port = "8000"
	}
	if name == "" {
		name = "model"
	}
	mux := http.NewServeMux()
	ready := func(rw http.ResponseWriter, r *http.Request) { reply(rw, 200, map[string]bool{"ready": true}) }
	mux.HandleFunc("/v2/health/ready", ready)
	mux.HandleFunc("/v2/health/live", ready)
	mux.HandleFunc("/v2/models/"+name+"/infer", func(rw http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			reply(rw, 405, map[string]string{"error": "use POST"})
			return
		}
		var body []byte
		buf := make([]byte, 64<<10)
		for {
			n, err := r.Body.Read(buf)
			body = append(body, buf[:n]...)
			if err != nil {
				break
			}
		}
		out, err := infer(name, body)
		if err != nil {
			reply(rw, 400, map[string]string{"error": err.Error()})
			return
		}
		reply(rw, 200, out)
	})
	log.Fatal(http.ListenAndServe(host+":"+port, mux))
}
