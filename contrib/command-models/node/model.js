// A model in Node.js, served by mlops-core's "command" format (docs/command-protocol.md).
// It is a plain V2 server on MLOPS_MODEL_HOST:MLOPS_MODEL_PORT using only Node's standard library:
//   GET  /v2/health/ready            200 once the weights are loaded
//   POST /v2/models/NAME/infer       V2 JSON request -> V2 JSON response ({"error": ...} with 400 on bad input)
// The model: scores = x . W^T + b over 4 features and 3 classes, label = argmax(scores).
"use strict";
const http = require("http");
const fs = require("fs");
const path = require("path");

const host = process.env.MLOPS_MODEL_HOST || "127.0.0.1";
const port = Number(process.env.MLOPS_MODEL_PORT || 8000);
const name = process.env.MLOPS_MODEL_NAME || "model";
const { weights, bias } = JSON.parse(fs.readFileSync(path.join(__dirname, "weights.json"), "utf8"));
const nFeatures = weights[0].length;

function predict(flat, rows) {
  const scores = new Array(rows * weights.length);
  const labels = new Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let k = 0; k < weights.length; k++) {
      let s = bias[k];
      for (let j = 0; j < nFeatures; j++) s += flat[r * nFeatures + j] * weights[k][j];
      scores[r * weights.length + k] = s;
      if (s > scores[r * weights.length + best]) best = k;
    }
    labels[r] = best;
  }
  return { scores, labels };
}

function flatten(data, out = []) {
  for (const v of data) Array.isArray(v) ? flatten(v, out) : out.push(v);
  return out;
}

function reply(res, status, body) {
  const raw = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(raw) });
  res.end(raw);
}

function infer(body) {
  const input = (body.inputs || []).find((t) => t.name === "x");
  if (!input) throw new Error("missing input 'x' (FP32 [-1, 4])");
  const shape = input.shape || [];
  if (shape.length !== 2 || shape[1] !== nFeatures) throw new Error(`input 'x' must have shape [-1, ${nFeatures}], got [${shape}]`);
  const flat = flatten(input.data).map(Number);
  if (flat.length !== shape[0] * nFeatures || flat.some((v) => !Number.isFinite(v))) throw new Error("input 'x' data does not match its shape or is not numeric");
  const { scores, labels } = predict(flat, shape[0]);
  const out = {
    model_name: name,
    outputs: [
      { name: "scores", datatype: "FP64", shape: [shape[0], weights.length], data: scores },
      { name: "label", datatype: "INT64", shape: [shape[0]], data: labels },
    ],
  };
  if (body.id !== undefined) out.id = body.id;
  return out;
}

const server = http.createServer((req, res) => {
  if (req.method === "GET" && (req.url === "/v2/health/ready" || req.url === "/v2/health/live")) return reply(res, 200, { ready: true });
  if (req.method === "POST" && req.url === `/v2/models/${name}/infer`) {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      try {
        reply(res, 200, infer(JSON.parse(Buffer.concat(chunks).toString("utf8"))));
      } catch (err) {
        reply(res, 400, { error: String(err.message || err) });
      }
    });
    return;
  }
  reply(res, 404, { error: `no route ${req.method} ${req.url}` });
});
server.keepAliveTimeout = 60000;
server.listen(port, host);
process.on("SIGTERM", () => server.close(() => process.exit(0)));
