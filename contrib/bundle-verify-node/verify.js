#!/usr/bin/env node
// Read and verify an mlops-core bundle from Node.js: the bundle format is language-neutral.
//
//   node verify.js BUNDLE_DIR [--schema PATH]
//
// 1. manifest.json is validated against the published JSON Schema (draft 2020-12, with Ajv);
// 2. no file outside the manifest is present (nothing unverified can be loaded);
// 3. every listed file has the listed size and sha256 (streamed, node:crypto).
// Prints a JSON report on stdout. Exit codes: 0 verified, 1 refused (tampered or invalid), 2 usage error.
"use strict";
const fs = require("fs");
const path = require("path");
const crypto = require("crypto");
const Ajv2020 = require("ajv/dist/2020");

const DEFAULT_SCHEMA = path.join(__dirname, "..", "..", "mlops_core", "schemas", "bundle-manifest.schema.json");

function sha256(file) {
  return new Promise((resolve, reject) => {
    const h = crypto.createHash("sha256");
    fs.createReadStream(file).on("data", (c) => h.update(c)).on("error", reject).on("end", () => resolve(h.digest("hex")));
  });
}

function walk(dir, base = dir, out = []) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) walk(full, base, out);
    else out.push(path.relative(base, full).split(path.sep).join("/"));
  }
  return out;
}

async function verify(bundle, schemaPath) {
  const problems = [];
  const raw = fs.readFileSync(path.join(bundle, "manifest.json"));
  const manifest = JSON.parse(raw.toString("utf8"));
  const ajv = new Ajv2020({ allErrors: true, strict: false });
  const validate = ajv.compile(JSON.parse(fs.readFileSync(schemaPath, "utf8")));
  if (!validate(manifest)) {
    for (const e of validate.errors) problems.push(`manifest ${e.instancePath || "/"} ${e.message}`);
    return { manifest, problems };
  }
  const listed = new Map(manifest.files.map((f) => [f.path, f]));
  for (const rel of walk(bundle)) {
    if (rel !== "manifest.json" && !listed.has(rel)) problems.push(`${rel}: not listed in the manifest`);
  }
  for (const f of manifest.files) {
    if (f.path.split("/").some((p) => p === ".." || p === "." || p === "") || path.isAbsolute(f.path)) {
      problems.push(`${f.path}: unsafe path`);
      continue;
    }
    const file = path.join(bundle, f.path);
    if (!fs.existsSync(file)) { problems.push(`${f.path}: missing`); continue; }
    const size = fs.statSync(file).size;
    if (size !== f.size) { problems.push(`${f.path}: size ${size}, manifest says ${f.size}`); continue; }
    if ((await sha256(file)) !== f.sha256) problems.push(`${f.path}: sha256 does not match (tampered or corrupt)`);
  }
  const digest = "sha256:" + crypto.createHash("sha256").update(raw).digest("hex");
  return { manifest, problems, digest };
}

async function main() {
  const args = process.argv.slice(2);
  let schema = DEFAULT_SCHEMA;
  const i = args.indexOf("--schema");
  if (i >= 0) { schema = args[i + 1]; args.splice(i, 2); }
  if (args.length !== 1) {
    process.stderr.write("usage: node verify.js BUNDLE_DIR [--schema PATH]\n");
    process.exit(2);
  }
  let result;
  try {
    result = await verify(args[0], schema);
  } catch (err) {
    process.stdout.write(JSON.stringify({ bundle: args[0], verified: false, problems: [String(err.message || err)] }) + "\n");
    process.exit(1);
  }
  const { manifest, problems, digest } = result;
  const report = {
    bundle: args[0],
    verified: problems.length === 0,
    format: manifest.format,
    digest,
    files: (manifest.files || []).length,
    signature: manifest.signature || null,
    problems,
  };
  process.stdout.write(JSON.stringify(report) + "\n");
  process.exit(report.verified ? 0 : 1);
}

main();
